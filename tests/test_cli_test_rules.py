"""``auditloop test-rules``: rule tests as data, diffs, exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditloop._cli import main

RULES = """\
[[rules]]
name = "permission-storm"
kind = "threshold"
at_least = 5
within = "10m"
group_by = ["actor.id"]
then = ["myapp.not_importable:page"]   # test-rules never imports actions
[rules.match]
action = "permission.*"
"""

PASSING = """\
rule_files = ["rules.toml"]

[[tests]]
name = "storm by alice"
[[tests.events]]
at = "0s"
action = "permission.grant"
actor = "alice"
repeat = 5
every = "1m"
[[tests.expect]]
at = "4m"
firing = [{ rule = "permission-storm", group = { "actor.id" = "alice" } }]
[[tests.expect]]
at = "20m"
resolved = [{ rule = "permission-storm", group = { "actor.id" = "alice" } }]

[[tests]]
name = "four grants are fine"
[[tests.events]]
action = "permission.grant"
actor = "bob"
repeat = 4
every = "1m"
[[tests.expect]]
at = "5m"
firing = []
"""

FAILING = """\
rule_files = ["rules.toml"]

[[tests]]
name = "wrong expectation"
[[tests.events]]
action = "permission.grant"
actor = "bob"
repeat = 3
every = "1m"
[[tests.expect]]
at = "3m"
firing = [{ rule = "permission-storm", group = { "actor.id" = "bob" } }]
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "rules.toml").write_text(RULES)
    (tmp_path / "passing.toml").write_text(PASSING)
    (tmp_path / "failing.toml").write_text(FAILING)
    return tmp_path


class TestTestRules:
    def test_passing_tests_exit_0(
        self, folder: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code = main(["test-rules", str(folder / "passing.toml")])

        assert 0 == code
        assert (
            f"{folder / 'passing.toml'}: SUCCESS: 2 rule test(s) passed\n"
            == capsys.readouterr().out
        )

    def test_a_failing_test_prints_an_expected_got_diff_and_exits_1(
        self, folder: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code = main(["test-rules", str(folder / "failing.toml"), "--color", "never"])

        out = capsys.readouterr().out.splitlines()
        assert 1 == code
        assert (
            f"{folder / 'failing.toml'}: FAILED: 1 of the expectations in 1 test(s)"
            == out[0]
        )
        assert "  wrong expectation:" == out[1]
        assert any(
            "expected: permission-storm {actor.id='bob'}" in line for line in out
        )
        assert any("got:      (none)" in line for line in out)

    def test_several_files_fail_if_one_fails(
        self, folder: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code = main(
            ["test-rules", str(folder / "passing.toml"), str(folder / "failing.toml")]
        )

        out = capsys.readouterr().out
        assert 1 == code
        assert "passing.toml: SUCCESS" in out
        assert "failing.toml: FAILED" in out

    def test_inline_rules_work_too(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        inline = tmp_path / "inline.toml"
        inline.write_text(RULES + PASSING.replace('rule_files = ["rules.toml"]\n', ""))

        code = main(["test-rules", str(inline)])

        assert 0 == code
        assert "SUCCESS: 2 rule test(s) passed" in capsys.readouterr().out

    @pytest.mark.parametrize(
        ("content", "message"),
        [
            (None, "cannot read"),
            ("[[tests]\n", "not valid TOML"),
            (
                'rule_files = ["missing.toml"]\n[[tests]]\n',
                "missing.toml: cannot read rules",
            ),
            ("[[tests]]\nname = 'x'\n", "no rules"),
            ('rule_files = ["rules.toml"]\n', "no tests"),
            (
                (
                    'rule_files = ["rules.toml"]\n[[tests]]\nname = "x"\n'
                    '[[tests.events]]\nat = "1m"\n'
                ),
                "action is required",
            ),
        ],
    )
    def test_an_unusable_file_exits_2_naming_it(
        self,
        folder: Path,
        content: str | None,
        message: str,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        path = folder / "bad.toml"
        if content is not None:
            path.write_text(content)

        code = main(["test-rules", str(path)])

        err = capsys.readouterr().err
        assert 2 == code
        assert err.startswith("auditloop test-rules: error: ")
        assert message in err
