"""Regressions found in review: each test failed before its fix.

The RedisStore ones are in test_redis_store.py (TestReviewRegressions), the
``--start`` option of ``auditloop replay`` in test_cli_replay.py.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import auditloop
from auditloop import rules
from auditloop.exceptions import ConfigurationError, RuleError
from auditloop.rules import Alert, match
from auditloop.sinks import MemorySink
from auditloop.testing import FakeClock, RuleHarness
from rules_helpers import T0, Feed


def raises_without(name: str) -> Any:
    """A ``where`` reading ``attributes[name]``: KeyError when it is missing."""
    return lambda event: event["attributes"][name]


class TestWhereRaisingCostsOnlyItsOwnMatcher:
    def test_a_ratio_keeps_the_event_in_of_when_match_where_raises(self) -> None:
        bad_password = rules.Ratio(
            "bad-passwords",
            match=match(
                action="user.login",
                where=lambda e: e["attributes"]["cause"] == "bad_password",
            ),
            of=match(action="user.login"),
            above=0.5,
            min_count=4,
            within="5m",
            group_by=["actor.id"],
        )
        feed = Feed(bad_password)
        for i in range(9):  # successes: no "cause", so `where` raises
            feed.event(i, "user.login", actor="alice")
        for i in range(4):
            feed.event(
                10 + i,
                "user.login",
                actor="alice",
                outcome="failure",
                attributes={"cause": "bad_password"},
            )
        # 4 failures of 13 logins = 0.31, not above 0.5.
        assert [] == feed.transitions()
        assert 9 == feed.engine.stats()["where_errors"]

    def test_a_sequence_step_that_raises_does_not_hide_the_others(self) -> None:
        sequence = rules.Sequence(
            "two-steps",
            steps=[
                match(action="x", where=raises_without("first")),
                match(action="x", where=raises_without("second")),
            ],
            within=60,
        )
        feed = Feed(sequence)
        feed.event(1, "x", attributes={"first": True})  # step 2 raises
        feed.event(2, "x", attributes={"first": False, "second": True})
        assert [("two-steps", "firing", (), 2.0)] == feed.transitions()
        assert 1 == feed.engine.stats()["where_errors"]


def transition_time(event: auditloop.AuditEvent) -> str:
    attributes = event.attributes
    return str(attributes.get("resolved_at") or attributes["fired_at"])


class TestNotificationOrder:
    def test_a_resolution_decided_meanwhile_is_delivered_after_its_firing(
        self,
    ) -> None:
        # Thread A's event fires the group; while A is between deciding and
        # delivering, thread B's tick resolves it. Actions and alert events
        # must still see firing, then resolved.
        clock = FakeClock(T0)
        sink = MemorySink()
        statuses: list[str] = []
        rule = rules.Threshold(
            "flap",
            match=match(action="x"),
            at_least=1,
            within=10,
            then=[lambda alert: statuses.append(alert.status)],
        )
        auditor = auditloop.Auditor(sinks=[sink], rules=[rule], clock=clock)
        engine = auditor.rules
        assert engine is not None
        in_listener = threading.Event()
        b_done = threading.Event()

        def listener(alert: Alert) -> None:
            if alert.status == "firing":
                in_listener.set()
                # Before the fix B got through here; now B waits for the
                # engine lock, and this times out.
                b_done.wait(0.3)

        engine.add_listener(listener)

        def resolve() -> None:
            in_listener.wait(10)
            engine.tick(T0 + 20)
            b_done.set()

        b = threading.Thread(target=resolve)
        b.start()
        auditor.emit("x", actor="a")
        b.join(10)
        assert auditor.flush(10)
        assert ["firing", "resolved"] == statuses
        # Alert events from two threads may reach the trail in either order;
        # each carries its transition's time.
        alert_events = [e for e in sink.events if e.action == "auditloop.alert"]
        assert ["firing", "resolved"] == [
            e.attributes["status"] for e in sorted(alert_events, key=transition_time)
        ]
        auditor.shutdown(5)

    def test_alerts_about_alerts_are_still_bounded(self) -> None:
        # Two rules feeding on each other's alerts: the cascade stops.
        clock = FakeClock(T0)
        ping = rules.Threshold(
            "ping", match=match(action=("x", "auditloop.alert")), at_least=1, within=1
        )
        pong = rules.Threshold(
            "pong", match=match(action="auditloop.alert"), at_least=1, within=1
        )
        sink = MemorySink()
        auditor = auditloop.Auditor(sinks=[sink], rules=[ping, pong], clock=clock)
        auditor.emit("x", actor="a")
        alerts = [e for e in sink.events if e.action == "auditloop.alert"]
        assert 2 == len(alerts)
        auditor.shutdown(5)


class TestIdleGroupsBehindACoolingGroup:
    @pytest.mark.parametrize("cohort", [False, True])
    def test_expire_so_the_cooling_group_is_not_evicted(self, cohort: bool) -> None:
        storm = rules.Threshold(
            "storm",
            match=match(action="a"),
            group_by=["actor.id"],
            at_least=2,
            within=10,
            cooldown="1h",
            max_groups=100,
        )
        # A second Threshold counting the same events shares a cohort table.
        twin = rules.Threshold(
            "twin",
            match=match(action="a"),
            group_by=["actor.id"],
            at_least=50,
            within=10,
            max_groups=100,
        )
        with RuleHarness([storm, twin] if cohort else [storm]) as harness:
            harness.emit("a", at=0, actor="hot")
            harness.emit("a", at=1, actor="hot")  # fires; resolves at 11
            for i in range(150):  # one-off actors, one every 4 s
                harness.emit("a", at=20 + 4 * i, actor=f"u{i}")
            harness.emit("a", at=1000, actor="hot")  # within the cooldown
            harness.emit("a", at=1001, actor="hot")
            stats = harness.engine.stats()["rules"]["storm"]
            hot = [
                a.status
                for a in harness.alerts
                if a.rule == "storm" and a.group["actor.id"] == "hot"
            ]
        assert ["firing", "resolved"] == hot
        assert (0, 1) == (stats["evicted_groups"], stats["suppressed"])


class TestTypedValues:
    def test_true_one_and_one_point_zero_are_three_distinct_values(self) -> None:
        feed = Feed(
            rules.Distinct(
                "di",
                match=match(action="a"),
                field="attributes.v",
                at_least=3,
                within=60,
            )
        )
        for at, value in ((1, 1), (2, True), (3, 1.0)):
            feed.event(at, "a", attributes={"v": value})
        assert [("di", "firing", (), 3.0)] == feed.transitions()

    def test_true_and_one_are_different_groups(self) -> None:
        feed = Feed(
            rules.Threshold(
                "th",
                match=match(action="a"),
                group_by=["attributes.code"],
                at_least=2,
                within=60,
            )
        )
        feed.event(1, "a", attributes={"code": 1})
        feed.event(2, "a", attributes={"code": True})
        assert [] == feed.transitions()
        feed.event(3, "a", attributes={"code": True})
        # The alert's group holds the plain value, not the wrapper.
        assert [{"attributes.code": True}] == [a.group for a in feed.alerts]
        assert bool is type(feed.alerts[0].group["attributes.code"])

    def test_keys_and_json(self) -> None:
        from auditloop.rules._match import Typed, hashable, plain, to_json

        assert Typed(1.0) == hashable(1.0)
        assert hashable(1.0) != hashable(1)
        assert hashable(True) != hashable(1)
        assert hashable(float("nan")) == hashable(float("nan"))
        assert [True, 1.0, 1, "x"] == [plain(hashable(v)) for v in (True, 1.0, 1, "x")]
        assert b"[true,1.0,1]" == to_json((hashable(True), hashable(1.0), 1))
        assert b"1180591620717411303424" == to_json(2**70)
        assert '[{"a":1180591620717411303424}]' == hashable([{"a": 2**70}])

    def test_a_big_int_group_is_counted_exactly(self) -> None:
        feed = Feed(
            rules.Threshold(
                "th",
                match=match(action="a"),
                group_by=["attributes.acct"],
                at_least=2,
                within=60,
            )
        )
        feed.event(1, "a", attributes={"acct": [2**70]})
        feed.event(2, "a", attributes={"acct": [2**70]})
        assert [{"attributes.acct": "[1180591620717411303424]"}] == [
            a.group for a in feed.alerts
        ]


class TestLoadErrors:
    @pytest.mark.parametrize("kind", [["threshold"], {"a": 1}, None, 3])
    def test_a_kind_that_is_not_a_string(self, kind: object) -> None:
        with pytest.raises(RuleError, match=r"rule 's': kind: must be a string"):
            rules.load({"rules": [{"name": "s", "kind": kind}]})

    def test_an_array_kind_in_a_toml_file(self, tmp_path: Path) -> None:
        path = tmp_path / "rules.toml"
        path.write_text(
            '[[rules]]\nname = "storm"\nkind = ["threshold"]\nat_least = 5\n'
            'within = "10m"\n[rules.match]\naction = "permission.*"\n'
        )
        with pytest.raises(RuleError, match=r"rule 'storm': kind: must be a string"):
            rules.load(path)

    @pytest.mark.parametrize("field", ["then", "where"])
    def test_a_module_that_raises_while_importing(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field: str
    ) -> None:
        name = f"review_broken_{field}"
        (tmp_path / f"{name}.py").write_text(
            "raise RuntimeError('missing PAGER_TOKEN')\n"
        )
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.delitem(sys.modules, name, raising=False)
        rule: dict[str, Any] = {
            "name": "s",
            "kind": "threshold",
            "at_least": 1,
            "within": 5,
            "match": {"action": "a"},
        }
        if field == "then":
            rule["then"] = [f"{name}:page"]
            where = "then"
        else:
            rule["match"]["where"] = f"{name}:check"
            where = r"match\.where"
        with pytest.raises(
            RuleError,
            match=rf"rule 's': {where}: .*{name}.* raised RuntimeError: "
            "missing PAGER_TOKEN",
        ):
            rules.load({"rules": [rule]})


class TestReplayStart:
    def test_an_absence_watched_from_start_fires_as_it_did_live(self) -> None:
        rule = rules.Absence(
            "no-deploys", match=match(action="deploy.finished"), within=3600
        )
        with RuleHarness([rule]) as harness:  # the engine starts at T0
            harness.emit("user.login", at="30m", actor="alice")
            harness.advance_to("3h")
            live = [(a.status, a.time) for a in harness.alerts]
        trail = [{"id": "e1", "time": "2026-01-01T00:30:00Z", "action": "user.login"}]
        replayed = rules.replay(trail, [rule], start=T0, until=T0 + 3 * 3600)
        assert [("firing", T0 + 3600)] == [(s, t.timestamp()) for s, t in live]
        assert live == [(t.status, t.time) for t in replayed]
        # Without start the replay can only watch from the first record.
        late = rules.replay(trail, [rule], until=T0 + 3 * 3600)
        assert [T0 + 5400] == [t.time.timestamp() for t in late]


class TestActionsThatExit:
    def test_sys_exit_in_an_action_is_an_error_and_later_actions_run(self) -> None:
        ran: list[str] = []

        def bad(alert: Alert) -> None:
            sys.exit(1)

        rule = rules.Threshold(
            "t",
            match=match(action="x"),
            group_by=["actor.id"],
            at_least=1,
            within=60,
            then=[bad, lambda alert: ran.append(alert.group["actor.id"])],
        )
        sink = MemorySink()
        auditor = auditloop.Auditor(sinks=[sink], rules=[rule], clock=FakeClock(T0))
        auditor.emit("x", actor="a")
        assert auditor.flush(10)
        auditor.emit("x", actor="b")
        assert auditor.flush(10)
        assert ["a", "b"] == ran
        assert {"run": 2, "errors": 2, "dropped": 0} == auditor.stats()["rules"][
            "actions"
        ]
        errors = [e for e in sink.events if e.action == "auditloop.rule.error"]
        assert ["SystemExit", "SystemExit"] == [
            (e.error or {}).get("type") for e in errors
        ]
        assert auditor.shutdown(5)

    def test_sys_exit_in_a_coroutine_action_keeps_the_loop_running(self) -> None:
        ran: list[str] = []

        async def bad(alert: Alert) -> None:
            await asyncio.sleep(0)
            raise SystemExit(1)

        async def good(alert: Alert) -> None:
            ran.append(alert.group["actor.id"])

        rule = rules.Threshold(
            "t",
            match=match(action="x"),
            group_by=["actor.id"],
            at_least=1,
            within=60,
            then=[bad, good],
        )
        auditor = auditloop.Auditor(sinks=[], rules=[rule], clock=FakeClock(T0))
        auditor.emit("x", actor="a")
        assert auditor.flush(10)
        auditor.emit("x", actor="b")
        assert auditor.flush(10)
        assert ["a", "b"] == sorted(ran)
        assert 2 == auditor.stats()["rules"]["actions"]["errors"]
        assert auditor.shutdown(5)


class TestShutdownTimeout:
    def test_a_blocked_event_loop_does_not_stretch_the_timeout(self) -> None:
        started = threading.Event()
        release = threading.Event()

        async def blocking(alert: Alert) -> None:
            started.set()
            release.wait(30)  # blocks the loop thread (a common mistake)

        rule = rules.Threshold(
            "t", match=match(action="x"), at_least=1, within=60, then=[blocking]
        )
        auditor = auditloop.Auditor(sinks=[], rules=[rule], clock=FakeClock(T0))
        try:
            auditor.emit("x", actor="a")
            assert started.wait(10)
            begin = time.monotonic()
            assert not auditor.shutdown(timeout=0.2)
            elapsed = time.monotonic() - begin
        finally:
            release.set()
        # Before the fix: 0.2 s plus a fixed 1 s join of the loop thread.
        assert elapsed < 0.8


class TestWebhookPort:
    @pytest.mark.parametrize(
        ("port", "reason"),
        [("99999", "out of range"), ("abc", "could not be cast"), ("0", "port 0")],
    )
    def test_an_invalid_port_is_a_configuration_error(
        self, port: str, reason: str
    ) -> None:
        with pytest.raises(ConfigurationError, match=rf"webhook: url: .*{reason}"):
            rules.webhook(f"http://alerts.example:{port}/hook", secret="s")

    def test_a_valid_port_is_accepted(self) -> None:
        assert 8443 == rules.webhook("https://h:8443/x", secret="s")._parts.port
