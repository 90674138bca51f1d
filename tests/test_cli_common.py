"""The CLI's shared parts: file expansion, time arguments, issues, main()."""

from __future__ import annotations

import argparse
import gzip
import io
import subprocess
import sys
from pathlib import Path

import pytest

from auditloop._cli import main
from auditloop._cli._common import (
    MAX_REPORTED,
    CLIError,
    Issues,
    expand_paths,
    parse_time_arg,
    time_key,
)
from auditloop._reader import ReadIssue

COMMANDS = (
    "demo",
    "tail",
    "query",
    "summary",
    "replay",
    "test-rules",
    "verify",
    "report",
)


def touch(path: Path, text: str = "") -> Path:
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as stream:
            stream.write(text)
    else:
        path.write_text(text)
    return path


class TestExpandPaths:
    def test_rotated_siblings_come_oldest_first(self, tmp_path: Path) -> None:
        base = touch(tmp_path / "audit.jsonl")
        one = touch(tmp_path / "audit.jsonl.1.gz")
        two = touch(tmp_path / "audit.jsonl.2.gz")
        ten = touch(tmp_path / "audit.jsonl.10")
        touch(tmp_path / "audit.jsonl.bak")  # not a rotation
        touch(tmp_path / "other.jsonl.1")

        assert [ten, two, one, base] == expand_paths([str(base)])

    def test_a_shell_glob_in_any_order_reads_each_file_once_in_order(
        self, tmp_path: Path
    ) -> None:
        base = touch(tmp_path / "audit.jsonl")
        one = touch(tmp_path / "audit.jsonl.1")
        two = touch(tmp_path / "audit.jsonl.2.gz")

        names = [str(one), str(base), str(two), str(base)]

        assert [two, one, base] == expand_paths(names)

    def test_groups_keep_the_order_they_are_named_in(self, tmp_path: Path) -> None:
        a = touch(tmp_path / "a.jsonl")
        b = touch(tmp_path / "b.jsonl")
        b1 = touch(tmp_path / "b.jsonl.1")

        assert [b1, b, a] == expand_paths([str(b), str(a)])

    def test_a_rotated_away_live_file_is_fine(self, tmp_path: Path) -> None:
        one = touch(tmp_path / "audit.jsonl.1")

        assert [one] == expand_paths([str(tmp_path / "audit.jsonl")])

    def test_a_missing_file_is_an_error_naming_it(self, tmp_path: Path) -> None:
        with pytest.raises(CLIError, match=r"nope\.jsonl: no such file"):
            expand_paths([str(tmp_path / "nope.jsonl")])

    def test_a_directory_is_an_error(self, tmp_path: Path) -> None:
        with pytest.raises(CLIError, match="is a directory"):
            expand_paths([str(tmp_path)])


class TestParseTimeArg:
    @pytest.mark.parametrize(
        ("text", "seconds"),
        [("90s", 90), ("15m", 900), ("1h", 3600), ("2d", 172800), ("1w", 604800)],
    )
    def test_durations_are_ago(self, text: str, seconds: int) -> None:
        assert 1_000_000.0 - seconds == parse_time_arg(text, now=1_000_000.0)

    @pytest.mark.parametrize(
        "text",
        [
            "2026-01-01T00:00:00Z",
            "2026-01-01T01:00:00+01:00",
            "2026-01-01T00:00:00",
            "2026-01-01",
        ],
    )
    def test_rfc3339_with_or_without_offset(self, text: str) -> None:
        assert 1_767_225_600.0 == parse_time_arg(text)

    @pytest.mark.parametrize("text", ["yesterday", "1y", "-1h", ""])
    def test_anything_else_is_a_usage_error(self, text: str) -> None:
        with pytest.raises(argparse.ArgumentTypeError, match="neither a duration"):
            parse_time_arg(text)

    @pytest.mark.parametrize(
        "text", ["9999-12-31T23:59:59-01:00", "99999999999999999999w"]
    )
    def test_times_out_of_range_are_a_usage_error(self, text: str) -> None:
        with pytest.raises(argparse.ArgumentTypeError, match="out of range"):
            parse_time_arg(text)


class TestTimeKey:
    def test_auditloop_times_pass_through(self) -> None:
        stamp = "2026-01-01T00:00:00.123456Z"

        assert stamp == time_key(stamp)

    def test_other_spellings_are_normalised(self) -> None:
        assert "2026-01-01T00:00:00.500000Z" == time_key("2026-01-01T01:00:00.5+01:00")

    @pytest.mark.parametrize(
        "value", [None, 12, "soon", "", "0001-01-01T00:00:00+01:00"]
    )
    def test_non_times_and_times_out_of_range_give_none(self, value: object) -> None:
        assert time_key(value) is None

    def test_a_27_character_time_with_a_space_is_normalised(self) -> None:
        assert "2026-01-31T09:00:00.000000Z" == time_key("2026-01-31 09:00:00.000000Z")


class TestIssues:
    def test_lines_are_printed_up_to_a_cap_then_counted(self) -> None:
        stream = io.StringIO()
        issues = Issues(stream)

        for n in range(MAX_REPORTED + 7):
            issues.report(ReadIssue("a.jsonl", n + 1, "malformed", "bad"))
        code = issues.close()

        lines = stream.getvalue().splitlines()
        assert 0 == code
        assert "auditloop: a.jsonl:1: malformed line: bad" == lines[0]
        assert MAX_REPORTED + 1 == len(lines)
        assert (
            f"7 more unreadable lines not shown ({MAX_REPORTED + 7} in all)"
            in lines[-1]
        )

    def test_a_file_error_makes_the_exit_code_2(self, tmp_path: Path) -> None:
        stream = io.StringIO()
        issues = Issues(stream)

        issues.file_error(tmp_path / "x.gz", OSError(5, "Input/output error"))

        assert 2 == issues.close()
        assert (
            f"{tmp_path / 'x.gz'}: cannot read: Input/output error" in stream.getvalue()
        )

    def test_control_characters_in_names_are_escaped(self) -> None:
        stream = io.StringIO()

        Issues(stream).report(ReadIssue("a\x1b[2J.jsonl", 1, "malformed", "x"))

        assert "a\\x1b[2J.jsonl:1:" in stream.getvalue()


class TestMain:
    def test_error_messages_escape_control_characters(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        odd = tmp_path / "audit.jsonl.\x1b]0;PWNED\x07"
        odd.mkdir()

        assert 2 == main(["query", str(odd)])

        err = capsys.readouterr().err
        assert "\x1b" not in err
        assert "\\x1b]0;PWNED" in err

    def test_help_lists_every_command_with_examples(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        with pytest.raises(SystemExit) as exited:
            main(["--help"])

        out = capsys.readouterr().out
        assert 0 == exited.value.code
        for command in COMMANDS:
            assert command in out
        assert "exit codes: 0 ok, 1 findings" in out

    @pytest.mark.parametrize("command", COMMANDS)
    def test_every_command_has_help_with_examples(
        self, command: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        with pytest.raises(SystemExit) as exited:
            main([command, "--help"])

        out = capsys.readouterr().out
        assert 0 == exited.value.code
        assert "examples:" in out
        assert f"auditloop {command}" in out

    def test_usage_errors_exit_2(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exited:
            main(["query", "x.jsonl", "--since", "someday"])

        assert 2 == exited.value.code
        assert "neither a duration" in capsys.readouterr().err

    def test_a_missing_file_exits_2_naming_it(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        missing = tmp_path / "missing.jsonl"

        code = main(["summary", str(missing)])

        assert 2 == code
        assert (
            f"auditloop summary: error: {missing}: no such file"
            in capsys.readouterr().err
        )

    def test_python_dash_m_runs_the_cli(self) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "auditloop", "--version"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

        assert 0 == done.returncode
        assert done.stdout.startswith("auditloop ")

    def test_a_closed_pipe_ends_quietly(self, tmp_path: Path) -> None:
        trail = tmp_path / "big.jsonl"
        line = b'{"id":"x","time":"2026-01-01T00:00:00.000000Z","action":"a.b"}\n'
        trail.write_bytes(line * 50_000)
        command = [sys.executable, "-m", "auditloop", "query", str(trail), "--json"]

        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        ) as process:
            assert process.stdout is not None
            process.stdout.readline()
            process.stdout.close()
            _, err = process.communicate(timeout=60)

        assert 0 == process.returncode
        assert b"Traceback" not in err
