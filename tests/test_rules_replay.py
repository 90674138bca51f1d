"""rules.replay: a recorded trail through rules gives the transitions seen live."""

from __future__ import annotations

from pathlib import Path

import auditloop
from auditloop import rules
from auditloop.rules import Alert, match
from auditloop.sinks import FileSink
from auditloop.testing import FakeClock
from rules_helpers import T0


def rule_set(then: list[object] | None = None) -> list[rules.Rule]:
    actions = list(then or [])
    return [
        rules.Threshold(
            "storm",
            match=match(action="permission.*"),
            group_by=["actor.id"],
            at_least=3,
            within=60,
            then=actions,
        ),
        rules.Ratio(
            "failing",
            match=match(action="user.login", outcome="failure"),
            of=match(action="user.login"),
            group_by=["actor.id"],
            above=0.5,
            min_count=2,
            within=120,
            then=actions,
        ),
        rules.Absence(
            "quiet",
            match=match(action="deploy.heartbeat"),
            within=90,
            then=actions,
        ),
    ]


class TestReplay:
    def test_a_trail_recorded_live_replays_to_the_same_transitions(
        self, tmp_path: Path
    ) -> None:
        clock = FakeClock(T0)
        live: list[Alert] = []
        path = tmp_path / "audit.jsonl"
        auditor = auditloop.Auditor(
            sinks=[FileSink(path)], rules=rule_set(then=[live.append]), clock=clock
        )
        script = [
            (0, "deploy.heartbeat", "ci", "success"),
            (5, "permission.grant", "alice", "success"),
            (6, "permission.grant", "alice", "success"),
            (7, "permission.grant", "alice", "success"),
            (20, "user.login", "bob", "failure"),
            (25, "user.login", "bob", "failure"),
            (30, "permission.grant", "carol", "success"),
            (100, "user.login", "bob", "success"),
            (200, "user.login", "dave", "success"),
            (400, "deploy.heartbeat", "ci", "success"),
        ]
        for at, action, actor, outcome in script:
            clock.set(T0 + at)
            assert auditor.rules is not None
            auditor.rules.tick()  # what the production ticker would do
            auditor.emit(action, actor=actor, outcome=outcome)
        auditor.shutdown(5)
        assert live, "the script should raise alerts"
        replayed = rules.replay(
            auditloop._reader.scan_records(path),
            rule_set(),
        )
        expected = [
            (
                a.rule,
                a.status,
                dict(a.group),
                a.time,
                a.value,
                [e["id"] for e in a.evidence],
            )
            for a in live
        ]
        got = [
            (t.rule, t.status, dict(t.group), t.time, t.value, list(t.evidence))
            for t in replayed
        ]
        assert expected == got

    def test_transition_dicts_have_the_cli_shape(self) -> None:
        events = [
            {
                "id": f"e{i}",
                "time": f"2026-01-01T00:00:0{i}.000000Z",
                "action": "permission.grant",
                "actor": {"id": "alice"},
            }
            for i in range(3)
        ]
        (transition,) = rules.replay(events, rule_set()[:1])
        assert {
            "rule": "storm",
            "status": "firing",
            "group": {"actor.id": "alice"},
            "time": "2026-01-01T00:00:02.000000Z",
            "value": 3.0,
            "evidence": ["e0", "e1", "e2"],
        } == transition.to_dict()

    def test_until_advances_the_clock_at_the_end(self) -> None:
        events = [
            {
                "id": f"e{i}",
                "time": f"2026-01-01T00:00:0{i}.000000Z",
                "action": "permission.grant",
                "actor": {"id": "alice"},
            }
            for i in range(3)
        ]
        transitions = rules.replay(events, rule_set()[:1], until=T0 + 3600)
        assert ["firing", "resolved"] == [t.status for t in transitions]
        assert "2026-01-01T00:01:00.000000Z" == transitions[1].to_dict()["time"]

    def test_events_objects_and_unreadable_records(self) -> None:
        good = auditloop.AuditEvent(
            id="x",
            time="2026-01-01T00:00:00.000000Z",
            action="permission.grant",
            actor=auditloop.Actor("alice"),
        )
        records: list[object] = [
            good,
            good,
            {"action": "permission.grant"},
            "junk",
            good,
        ]
        transitions = rules.replay(records, rule_set()[:1])  # type: ignore[arg-type]
        assert ["firing"] == [t.status for t in transitions]

    def test_replay_runs_no_actions(self) -> None:
        called: list[Alert] = []
        events = [
            {
                "id": f"e{i}",
                "time": f"2026-01-01T00:00:0{i}.000000Z",
                "action": "permission.grant",
                "actor": {"id": "alice"},
            }
            for i in range(3)
        ]
        assert 1 == len(rules.replay(events, rule_set(then=[called.append])[:1]))
        assert [] == called
