"""The rule-testing harness, TOML rule tests, and the pytest plugin fixtures."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import auditloop
from auditloop import AuditEvent, rules, sinks
from auditloop.exceptions import RuleError
from auditloop.rules import match
from auditloop.testing import FakeClock, RuleHarness, capture, run_rule_tests

STORM = rules.Threshold(
    "storm",
    match=match(action="permission.*"),
    group_by=["actor.id"],
    at_least=3,
    within="1m",
)
ALICE = {"rule": "storm", "group": {"actor.id": "alice"}}

RULES_TOML = """
[[rules]]
name = "storm"
kind = "threshold"
at_least = 3
within = "1m"
group_by = ["actor.id"]
[rules.match]
action = "permission.*"
"""


class TestRuleHarness:
    def test_feeds_events_at_times_and_asserts_exact_alerts(self) -> None:
        with RuleHarness([STORM]) as harness:
            harness.emit("permission.grant", actor="alice", at="0s")
            harness.emit("permission.grant", actor="alice", at="10s")
            harness.assert_alerts(firing=[])
            harness.emit("permission.grant", actor="alice", at="20s")
            harness.assert_alerts(firing=[ALICE])
            harness.assert_alerts(at="59s", firing=[ALICE])
            harness.advance("1s")
            harness.assert_alerts(resolved=[{**ALICE, "value": 2}])
            assert ["firing", "resolved"] == [a.status for a in harness.alerts]

    def test_a_mismatch_raises_a_readable_expected_got_diff(self) -> None:
        with RuleHarness([STORM]) as harness:
            for t in (0, 1, 2):
                harness.emit("permission.grant", actor="bob", at=t)
            with pytest.raises(AssertionError) as info:
                harness.assert_alerts(firing=[ALICE])
        assert textwrap.dedent(
            """\
            alerts at +2s (2026-01-01T00:00:02.000000Z) differ:
              firing:
                expected: storm {actor.id='alice'}
                got:      storm {actor.id='bob'} value=3
                - missing:    storm {actor.id='alice'}
                + unexpected: storm {actor.id='bob'} value=3"""
        ) == str(info.value)

    def test_values_are_compared_only_when_given(self) -> None:
        with RuleHarness([STORM]) as harness:
            for t in (0, 1, 2):
                harness.emit("permission.grant", actor="alice", at=t)
            assert harness.check(firing=[{**ALICE, "value": 4}]) is not None
            assert harness.check(firing=[("storm", {"actor.id": "alice"})]) is None

    def test_times_are_offsets_datetimes_or_timedeltas_and_only_move_forward(
        self,
    ) -> None:
        start = datetime(2030, 5, 1, tzinfo=UTC)
        with RuleHarness([STORM], start=start) as harness:
            harness.advance_to(timedelta(minutes=2))
            assert 120.0 == harness.elapsed
            harness.advance_to(start + timedelta(minutes=3))
            assert 180.0 == harness.elapsed
            with pytest.raises(ValueError, match="cannot go back in time"):
                harness.advance_to("1m")
            with pytest.raises(ValueError, match="not an offset or a time"):
                harness.advance_to("soon")

    def test_events_go_through_a_real_auditor_with_redaction(self) -> None:
        seen: list[Any] = []
        rule = rules.Threshold(
            "w",
            match=match(where=lambda e: seen.append(e) or True),
            at_least=1,
            within=60,
        )
        with RuleHarness([rule]) as harness:
            harness.emit("login", actor="alice", password="hunter2")
        assert "[REDACTED]" == seen[0]["attributes"]["password"]

    def test_actions_do_not_run_unless_asked(self) -> None:
        called: list[str] = []
        rule = rules.Threshold(
            "a",
            match=match(),
            at_least=1,
            within=60,
            then=[lambda a: called.append(a.rule)],
        )
        with RuleHarness([rule]) as harness:
            harness.emit("x")
        assert [] == called
        with RuleHarness([rule], run_actions=True) as harness:
            harness.emit("x")
            harness.auditor.flush(5)
        assert ["a"] == called

    def test_rules_from_a_toml_file(self, tmp_path: Path) -> None:
        path = tmp_path / "rules.toml"
        path.write_text(RULES_TOML)
        with RuleHarness(path) as harness:
            for t in (0, 1, 2):
                harness.emit("permission.grant", actor="alice", at=t)
            harness.assert_alerts(firing=[ALICE])


def rules_dicts() -> list[dict[str, Any]]:
    return [
        {
            "name": "storm",
            "kind": "threshold",
            "at_least": 3,
            "within": "1m",
            "group_by": ["actor.id"],
            "match": {"action": "permission.*"},
        }
    ]


TESTS_TOML = """
rule_files = ["rules.toml"]

[[tests]]
name = "alice storms"
  [[tests.events]]
  at = "0s"
  action = "permission.grant"
  actor = "alice"
  repeat = 3
  every = "10s"
  [[tests.events]]
  at = "5s"
  action = "permission.grant"
  actor = "bob"
  [[tests.expect]]
  at = "19s"
  firing = []
  [[tests.expect]]
  at = "20s"
  firing = [{ rule = "storm", group = { "actor.id" = "alice" } }]
  [[tests.expect]]
  at = "70s"
  resolved = [{ rule = "storm", group = { "actor.id" = "alice" }, value = 2 }]

[[tests]]
name = "wrong on purpose"
start = 2030-01-01T00:00:00Z
  [[tests.events]]
  action = "permission.grant"
  actor = "carol"
  repeat = 3
  [[tests.expect]]
  at = "0s"
  firing = [{ rule = "storm", group = { "actor.id" = "dave" } }]
"""


class TestRuleTestsInToml:
    def test_runs_every_test_and_reports_failures_promtool_style(
        self, tmp_path: Path
    ) -> None:
        (tmp_path / "rules.toml").write_text(RULES_TOML)
        tests = tmp_path / "tests.toml"
        tests.write_text(TESTS_TOML)
        result = run_rule_tests(tests)
        assert (2, False) == (result.tests, result.ok)
        (failure,) = result.failures
        assert ("wrong on purpose", "0s") == (failure.test, failure.at)
        report = result.report()
        assert report.startswith("FAILED: 1 of the expectations in 2 test(s)")
        assert "- missing:    storm {actor.id='dave'}" in report
        assert "+ unexpected: storm {actor.id='carol'} value=3" in report
        assert "2030-01-01T00:00:00.000000Z" in report

    def test_passing_tests_and_inline_rules(self) -> None:
        data = {
            "rules": rules_dicts(),
            "tests": [
                {
                    "name": "ok",
                    "events": [
                        {"action": "permission.grant", "actor": "a", "repeat": 3}
                    ],
                    "expect": [
                        {
                            "at": 0,
                            "firing": [{"rule": "storm", "group": {"actor.id": "a"}}],
                        }
                    ],
                }
            ],
        }
        result = run_rule_tests(data)
        assert result.ok
        assert "SUCCESS: 1 rule test(s) passed" == str(result)

    def test_actions_of_the_rule_files_are_not_imported(self, tmp_path: Path) -> None:
        (tmp_path / "rules.toml").write_text(
            RULES_TOML.replace("group_by", 'then = ["myapp.alerts:page"]\ngroup_by')
        )
        tests = tmp_path / "tests.toml"
        tests.write_text(TESTS_TOML.split('[[tests]]\nname = "wrong', maxsplit=1)[0])
        assert run_rule_tests(tests).ok

    def test_rules_can_be_passed_in(self) -> None:
        data = {
            "tests": [
                {"events": [{"action": "x"}], "expect": [{"at": "1s", "firing": []}]}
            ]
        }
        assert run_rule_tests(data, rules=[STORM]).ok

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            ({"rules": rules_dicts(), "tests": []}, "no tests"),
            ({"tests": [{"expect": [{"at": 0}]}]}, "no rules"),
            (
                {"rules": rules_dicts(), "tests": [{"events": [{"action": "x"}]}]},
                "no expectations",
            ),
            (
                {
                    "rules": rules_dicts(),
                    "tests": [{"events": [{"at": 0}], "expect": [{"at": 0}]}],
                },
                "action is required",
            ),
            (
                {
                    "rules": rules_dicts(),
                    "tests": [
                        {
                            "events": [{"action": "x", "colour": 1}],
                            "expect": [{"at": 0}],
                        }
                    ],
                },
                "unknown key 'colour'",
            ),
            (
                {"rules": rules_dicts(), "tests": [{"expect": [{"firing": []}]}]},
                "at is required",
            ),
            (
                {"rules": rules_dicts(), "tests": [{"expect": [{"at": "soon"}]}]},
                "not an offset or a time",
            ),
            (
                {
                    "rules": rules_dicts(),
                    "tests": [{"expect": [{"at": 0, "firing": [{"group": {}}]}]}],
                },
                "needs a rule name",
            ),
            ({"rules": rules_dicts(), "bogus": 1}, "unknown top-level key 'bogus'"),
            (
                {"rules": rules_dicts(), "tests": [{"events": 5, "expect": []}]},
                "events must be an array of tables",
            ),
            (
                {
                    "rules": rules_dicts(),
                    "tests": [
                        {"expect": [{"at": 0, "firing": [{"rule": "r", "value": "1"}]}]}
                    ],
                },
                "value must be a number",
            ),
        ],
    )
    def test_bad_test_files(self, data: dict[str, Any], message: str) -> None:
        with pytest.raises(RuleError, match=message):
            run_rule_tests(data)


class TestPytestPlugin:
    def test_audit_events_fixture_captures(
        self, audit_events: list[auditloop.AuditEvent]
    ) -> None:
        auditor = auditloop.Auditor()
        auditor.emit("doc.read", actor="alice")
        assert ["doc.read"] == [e.action for e in audit_events]
        auditor.shutdown()

    def test_rule_harness_fixture_makes_harnesses(
        self,
        rule_harness: Callable[..., RuleHarness],
        audit_events: list[auditloop.AuditEvent],
    ) -> None:
        harness = rule_harness([STORM])
        for t in (0, 1, 2):
            harness.emit("permission.grant", actor="alice", at=t)
        harness.assert_alerts(firing=[ALICE])
        assert ["auditloop.alert"] == [
            e.action for e in audit_events if e.action.startswith("auditloop")
        ]


@pytest.fixture
def berlin_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run the test with the process's local time zone one hour off UTC."""
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


class TestFakeClockNaiveDatetimes:
    def test_naive_start_and_set_are_utc(self, berlin_time: None) -> None:
        clock = FakeClock(datetime(2026, 1, 1))
        auditor = auditloop.Auditor(clock=clock)
        with capture() as events:
            auditor.emit("x")
        clock.set(datetime(2026, 1, 2))

        assert "2026-01-01T00:00:00.000000Z" == events[0].time
        assert datetime(2026, 1, 2, tzinfo=UTC).timestamp() == clock()
        auditor.shutdown()

    def test_harness_reads_naive_datetimes_as_utc(self, berlin_time: None) -> None:
        with RuleHarness([STORM], start=datetime(2030, 5, 1)) as harness:
            assert datetime(2030, 5, 1, tzinfo=UTC).timestamp() == harness.start
            harness.advance_to(datetime(2030, 5, 1, 0, 2))
            assert 120.0 == harness.elapsed


class TestCaptureNeverRaises:
    def test_odd_actor_shapes_are_captured(self) -> None:
        auditor = auditloop.Auditor()
        with capture() as events:
            auditor.emit("x", actor={"id": "a", "roles": 5})
        auditor.shutdown()

        assert [("a", ("5",))] == [
            (e.actor.id, e.actor.roles) for e in events if e.actor is not None
        ]

    def test_a_failing_tap_is_counted_not_raised(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Nothing real makes AuditEvent.from_dict fail any more: simulate it.
        def broken(d: object) -> AuditEvent:
            raise TypeError("broken from_dict")

        memory = sinks.MemorySink()
        auditor = auditloop.Auditor(sinks=[memory])
        monkeypatch.setattr(AuditEvent, "from_dict", broken)
        with capture() as events:
            auditor.emit("x")
        monkeypatch.undo()

        assert ([], 1, 1) == (
            events,
            len(memory.lines),
            auditor.stats()["internal_errors"],
        )
        assert {} == auditor.stats()["dropped"]
        auditor.shutdown()
