"""The rule engine inside an Auditor: alert events, actions, index, memory."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import tracemalloc
from typing import Any

import pytest

import auditloop
from auditloop import rules
from auditloop.exceptions import AuditError, ConfigurationError, RuleError
from auditloop.rules import Alert, match
from auditloop.rules._engine import RuleEngine
from auditloop.sinks import Delivery, MemorySink
from auditloop.testing import FakeClock, capture
from rules_helpers import T0, Feed


def storm(**options: Any) -> rules.Threshold:
    params: dict[str, Any] = {
        "match": match(action="permission.*"),
        "group_by": ["actor.id"],
        "at_least": 3,
        "within": 60,
    }
    params.update(options)
    return rules.Threshold("storm", **params)


def grant_three(
    auditor: auditloop.Auditor, clock: FakeClock, actor: str = "alice"
) -> None:
    for _ in range(3):
        auditor.emit("permission.grant", actor=actor, target="user:1")
        clock.advance(1)


class TestAlertEvents:
    def test_firing_and_resolution_are_audited(self) -> None:
        clock = FakeClock(T0)
        sink = MemorySink()
        auditor = auditloop.Auditor(sinks=[sink], rules=[storm()], clock=clock)
        grant_three(auditor, clock)
        clock.advance(120)
        assert auditor.rules is not None
        auditor.rules.tick()
        alerts = [e for e in sink.events if e.action == "auditloop.alert"]
        assert ["firing", "resolved"] == [e.attributes["status"] for e in alerts]
        firing = alerts[0]
        grants = [e.id for e in sink.events if e.action == "permission.grant"]
        assert {
            "rule": "storm",
            "group": {"actor.id": "alice"},
            "value": 3.0,
            "threshold": 3.0,
            "window": 60.0,
            "evidence": grants,
        } == {
            k: firing.attributes[k]
            for k in ("rule", "group", "value", "threshold", "window", "evidence")
        }
        assert ("auditloop", "system", "rule:storm") == (
            firing.actor.id if firing.actor else None,
            firing.category,
            firing.target.id if firing.target else None,
        )
        assert "2026-01-01T00:01:00.000000Z" == alerts[1].attributes["resolved_at"]
        auditor.shutdown()

    def test_a_rule_on_alerts_sees_other_rules_alerts_but_never_its_own(self) -> None:
        clock = FakeClock(T0)
        sink = MemorySink()
        meta = rules.Threshold(
            "alert-storm", match=match(action="auditloop.alert"), at_least=1, within=600
        )
        greedy = rules.Threshold("everything", match=match(), at_least=1, within=600)
        auditor = auditloop.Auditor(
            sinks=[sink], rules=[storm(), meta, greedy], clock=clock
        )
        grant_three(auditor, clock)
        statuses = [
            (e.attributes["rule"], e.attributes["status"])
            for e in sink.events
            if e.action == "auditloop.alert"
        ]
        # `everything` fires on the first grant; its own alert and storm's
        # feed alert-storm once (it stays firing); nothing loops.
        assert [
            ("everything", "firing"),
            ("alert-storm", "firing"),
            ("storm", "firing"),
        ] == statuses
        assert auditor.rules is not None
        assert 0 == auditor.rules.stats()["alert_events_dropped"]
        auditor.shutdown()

    def test_an_alert_event_refused_by_a_fail_closed_sink_is_counted(self) -> None:
        class Broken:
            delivery = Delivery(mode="sync", on_error="raise")

            def write(self, batch: Any) -> None:
                raise OSError("disk full")

            def flush(self, timeout: float | None = None) -> None:
                pass

            def close(self, timeout: float | None = None) -> None:
                pass

        clock = FakeClock(T0)
        auditor = auditloop.Auditor(sinks=[Broken()], rules=[storm()], clock=clock)
        for _ in range(3):
            with pytest.raises(AuditError):
                auditor.emit("permission.grant", actor="alice")
        assert auditor.rules is not None
        assert 1 == len(auditor.rules.firing())
        assert 1 == auditor.stats()["rules"]["alert_events_failed"]
        auditor.shutdown(1)

    def test_internal_events_match_only_explicit_auditloop_patterns(self) -> None:
        feed = Feed(
            rules.Threshold("any", match=match(action="*"), at_least=1, within=60)
        )
        feed.event(0, "auditloop.dropped")
        assert [] == feed.alerts
        assert not match(action="*")({"action": "auditloop.alert"})
        assert match(action="auditloop.*")({"action": "auditloop.alert"})

    def test_alert_events_are_captured_like_any_event(self) -> None:
        clock = FakeClock(T0)
        auditor = auditloop.Auditor(rules=[storm()], clock=clock)
        with capture() as events:
            grant_three(auditor, clock)
        assert ["auditloop.alert"] == [
            e.action for e in events if e.action.startswith("auditloop")
        ]
        auditor.shutdown()


class TestActions:
    def test_then_and_on_resolve_run_on_another_thread(self) -> None:
        clock = FakeClock(T0)
        seen: list[tuple[str, str]] = []
        caller = threading.get_ident()

        def page(alert: Alert) -> None:
            assert threading.get_ident() != caller
            seen.append((alert.status, alert.rule))

        auditor = auditloop.Auditor(rules=[storm(then=[page])], clock=clock)
        grant_three(auditor, clock)
        clock.advance(300)
        assert auditor.rules is not None
        auditor.rules.tick()
        assert auditor.flush(5)
        assert [("firing", "storm"), ("resolved", "storm")] == seen
        assert {"run": 2, "errors": 0, "dropped": 0} == auditor.stats()["rules"][
            "actions"
        ]
        auditor.shutdown()

    def test_on_resolve_empty_opts_out_of_resolution_notifications(self) -> None:
        clock = FakeClock(T0)
        seen: list[str] = []
        rule = storm(then=[lambda a: seen.append(a.status)], on_resolve=[])
        auditor = auditloop.Auditor(rules=[rule], clock=clock)
        grant_three(auditor, clock)
        clock.advance(300)
        assert auditor.rules is not None
        auditor.rules.tick()
        auditor.flush(5)
        assert ["firing"] == seen
        auditor.shutdown()

    def test_a_raising_action_is_counted_and_audited_and_the_call_is_unaffected(
        self,
    ) -> None:
        clock = FakeClock(T0)
        sink = MemorySink()

        def broken(alert: Alert) -> None:
            raise RuntimeError("pager is down")

        auditor = auditloop.Auditor(
            sinks=[sink], rules=[storm(then=[broken])], clock=clock
        )

        @auditor.audited("permission.grant")
        def grant(user: str) -> str:
            return f"granted {user}"

        with auditloop.bind(actor="alice"):
            assert ["granted a", "granted b", "granted c"] == [grant(u) for u in "abc"]
        assert auditor.flush(5)
        errors = [e for e in sink.events if e.action == "auditloop.rule.error"]
        assert 1 == len(errors)
        assert ({"type": "RuntimeError", "message": "pager is down"}, "failure") == (
            dict(errors[0].error or {}),
            errors[0].outcome,
        )
        assert "broken" in errors[0].attributes["action"]
        assert 1 == auditor.stats()["rules"]["actions"]["errors"]
        auditor.shutdown()

    def test_a_slow_action_does_not_block_the_audited_call(self) -> None:
        clock = FakeClock(T0)
        release = threading.Event()
        started = threading.Event()

        def slow(alert: Alert) -> None:
            started.set()
            release.wait(10)

        auditor = auditloop.Auditor(rules=[storm(then=[slow])], clock=clock)
        grant_three(auditor, clock)
        assert started.wait(5)
        # The action is stuck; events and further alerts still flow.
        grant_three(auditor, clock, actor="bob")
        assert 2 == len(auditor.rules.firing()) if auditor.rules else False
        assert not auditor.flush(0.05)
        release.set()
        assert auditor.flush(5)
        auditor.shutdown()

    def test_an_async_action_runs(self) -> None:
        clock = FakeClock(T0)
        done = threading.Event()
        seen: list[str] = []

        async def notify(alert: Alert) -> None:
            await asyncio.sleep(0)
            seen.append(alert.fingerprint)
            done.set()

        auditor = auditloop.Auditor(rules=[storm(then=[notify])], clock=clock)
        grant_three(auditor, clock)
        assert done.wait(5)
        assert auditor.flush(5)
        assert 1 == len(seen)
        assert 1 == auditor.stats()["rules"]["actions"]["run"]
        auditor.shutdown()

    def test_a_raising_async_action_is_counted(self) -> None:
        clock = FakeClock(T0)

        async def broken(alert: Alert) -> None:
            raise ValueError("nope")

        sink = MemorySink()
        auditor = auditloop.Auditor(
            sinks=[sink], rules=[storm(then=[broken])], clock=clock
        )
        grant_three(auditor, clock)
        assert auditor.flush(5)
        assert 1 == auditor.stats()["rules"]["actions"]["errors"]
        assert ["auditloop.rule.error"] == [
            e.action for e in sink.events if e.action == "auditloop.rule.error"
        ]
        auditor.shutdown()

    def test_shutdown_drains_queued_actions_within_its_timeout(self) -> None:
        clock = FakeClock(T0)
        gate = threading.Event()
        ran: list[str] = []

        def first(alert: Alert) -> None:
            gate.wait(10)
            ran.append("first")

        def second(alert: Alert) -> None:
            ran.append("second")

        auditor = auditloop.Auditor(rules=[storm(then=[first, second])], clock=clock)
        grant_three(auditor, clock)
        gate.set()
        assert auditor.shutdown(5)
        assert ["first", "second"] == ran

    def test_shutdown_timeout_drops_and_counts_what_did_not_start(self) -> None:
        clock = FakeClock(T0)
        gate = threading.Event()

        def stuck(alert: Alert) -> None:
            gate.wait(10)

        auditor = auditloop.Auditor(rules=[storm(then=[stuck, stuck])], clock=clock)
        grant_three(auditor, clock)
        assert not auditor.shutdown(0.05)
        gate.set()
        assert 1 == auditor.stats()["rules"]["actions"]["dropped"]


class TestIndex:
    def test_rules_that_cannot_match_the_action_are_never_consulted(self) -> None:
        calls: list[str] = []

        def where(name: str) -> Any:
            def check(event: Any) -> bool:
                calls.append(name)
                return True

            return check

        many = [
            rules.Threshold(
                f"r{i}",
                match=match(
                    action=f"svc{i}.*" if i % 2 else f"svc{i}.op", where=where(f"r{i}")
                ),
                at_least=1,
                within=60,
            )
            for i in range(200)
        ]
        feed = Feed(*many)
        feed.event(0, "svc7.op")
        feed.event(1, "svc8.op")
        feed.event(2, "unrelated")
        assert ["r7", "r8"] == calls

    def test_where_errors_are_counted_not_raised(self) -> None:
        def bad(event: Any) -> bool:
            raise KeyError("x")

        feed = Feed(rules.Threshold("w", match=match(where=bad), at_least=1, within=60))
        feed.event(0, "act")
        assert ([], 1) == (feed.alerts, feed.engine.stats()["where_errors"])

    def test_a_where_that_emits_an_event_does_not_deadlock(self) -> None:
        clock = FakeClock(T0)
        sink = MemorySink()
        holder: list[auditloop.Auditor] = []

        def emitting(event: Any) -> bool:
            holder[0].emit("inner.event", actor="where")
            return True

        rule = rules.Threshold(
            "w", match=match(action="outer", where=emitting), at_least=1, within=60
        )
        holder.append(auditloop.Auditor(sinks=[sink], rules=[rule], clock=clock))
        worker = threading.Thread(target=lambda: holder[0].emit("outer", actor="a"))
        worker.start()
        worker.join(5)
        assert not worker.is_alive()
        assert ["outer", "inner.event", "auditloop.alert"] == [
            e.action for e in sink.events
        ]
        holder[0].shutdown()

    def test_glob_tuple_and_field_criteria(self) -> None:
        m = match(
            action=("user.login", "permission.*"),
            outcome=("failure", "denied"),
            actor="adm*",
            target="user:*",
        )
        base = {
            "action": "permission.grant",
            "outcome": "denied",
            "actor": {"id": "admin-1"},
            "target": {"id": "user:9"},
        }
        assert m(base)
        assert m({**base, "action": "user.login"})
        assert not m({**base, "action": "user.logout"})
        assert not m({**base, "outcome": "success"})
        assert not m({**base, "actor": {"id": "bob"}})
        assert not m({k: v for k, v in base.items() if k != "target"})

    def test_many_distinct_actions_do_not_grow_the_index_without_bound(self) -> None:
        feed = Feed(storm())
        for i in range(5000):
            feed.event(i, f"action.{i}")
        assert len(feed.engine._index) <= 4096


class TestConfiguration:
    def test_not_a_rule(self) -> None:
        with pytest.raises(ConfigurationError, match=r"rules\[0\]"):
            auditloop.Auditor(rules=["storm"])

    def test_duplicate_names(self) -> None:
        with pytest.raises(
            RuleError, match="rule 'storm': name: used by more than one"
        ):
            auditloop.Auditor(rules=[storm(), storm()])

    def test_bad_store(self) -> None:
        with pytest.raises(ConfigurationError, match="rule_store"):
            auditloop.Auditor(rules=[storm()], rule_store=object())

    def test_unknown_option_names_rule_and_suggests(self) -> None:
        with pytest.raises(
            RuleError,
            match="rule 'x': Threshold has no option 'at_lest'; did you mean 'at_l",
        ):
            rules.Threshold("x", match=match(), at_lest=3, within=60)  # type: ignore[call-arg]


class BatchingStore:
    """A store that applies all updates of one event at once, as a store on a
    server would in one round trip (here it delegates to a MemoryStore)."""

    def __init__(self) -> None:
        self.inner = rules.MemoryStore()
        self.pending: list[tuple[Any, tuple[Any, ...]]] = []
        self.commits = 0

    @property
    def next_due(self) -> float:
        return self.inner.next_due

    def bind(self, rule_list: Any) -> list[Any]:
        def queue(observer: Any) -> Any:
            def observe(*args: Any) -> None:
                self.pending.append((observer, args))

            return observe

        return [queue(observer) for observer in self.inner.bind(rule_list)]

    def commit(self) -> list[rules.Change]:
        self.commits += 1
        changes = [observer(*args) for observer, args in self.pending]
        self.pending.clear()
        return [c for c in changes if c is not None]

    def advance(self, now: float) -> list[rules.Change]:
        return self.inner.advance(now)

    def stats(self) -> dict[str, dict[str, int]]:
        return self.inner.stats()


class TestStoreSeam:
    def test_a_batching_store_gets_one_commit_per_event_and_same_alerts(self) -> None:
        store = BatchingStore()
        assert isinstance(store, rules.Store)
        two = [storm(), rules.Threshold("all", match=match(), at_least=2, within=60)]
        batched, plain = Feed(*two, store=store), Feed(*two)
        for feed in (batched, plain):
            for t in (0, 1, 2, 100):
                feed.event(t, "permission.grant")
        assert plain.transitions() == batched.transitions()
        assert 4 == store.commits
        assert 4 == len(batched.transitions())


class TestTicker:
    def test_production_ticker_resolves_without_events_and_stops(self) -> None:
        resolved = threading.Event()
        rule = storm(
            within=0.2, then=[lambda a: a.status == "resolved" and resolved.set()]
        )
        auditor = auditloop.Auditor(rules=[rule])
        engine = auditor.rules
        assert engine is not None
        thread = engine._ticker_thread
        assert thread is not None
        assert thread.daemon
        for _ in range(3):
            auditor.emit("permission.grant", actor="alice")
        # No further events: only the ticker (every second) can resolve it.
        assert resolved.wait(5)
        auditor.shutdown(1)
        thread.join(5)
        assert not thread.is_alive()

    def test_a_fake_clock_gets_no_ticker(self) -> None:
        auditor = auditloop.Auditor(rules=[storm()], clock=FakeClock(T0))
        assert auditor.rules is not None
        assert auditor.rules._ticker_thread is None
        auditor.shutdown()


class TestBoundedMemory:
    def test_a_million_unique_actors_stay_within_the_cap(self) -> None:
        # 1M events from 1M distinct actors (about 6 s): the group count never
        # exceeds the cap, every eviction is counted, and each group's state
        # is bounded by at_least times and the evidence limit.
        cap = 1000
        engine = RuleEngine(
            [storm(max_groups=cap, within=3600)],
            auditor=None,
            clock=None,
            actions=False,
            ticker=False,
        )
        observe = engine.observe
        for i in range(1_000_000):
            observe(
                {"action": "permission.grant", "actor": {"id": f"u{i}"}}, T0 + i * 0.001
            )
        stats = engine.stats()
        assert (cap, 1_000_000 - cap) == (stats["groups"], stats["evicted_groups"])
        (table,) = engine.store._tables.values()  # type: ignore[attr-defined]
        assert all(
            len(g.times) <= 3 and len(g.events) <= 3 for g in table.groups.values()
        )

    def test_memory_is_flat_once_the_cap_is_reached(self) -> None:
        engine = RuleEngine(
            [storm(max_groups=1000, within=3600)],
            auditor=None,
            clock=None,
            actions=False,
            ticker=False,
        )
        observe = engine.observe
        gc.collect()
        tracemalloc.start()
        warm = 0
        for i in range(40_000):
            observe({"action": "permission.grant", "actor": {"id": f"u{i}"}}, T0 + i)
            if i == 5_000:
                warm, _ = tracemalloc.get_traced_memory()
        current, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert current < warm * 1.1

    def test_idle_groups_are_collected_as_time_passes(self) -> None:
        engine = RuleEngine(
            [storm(within=10)], auditor=None, clock=None, actions=False, ticker=False
        )
        for i in range(5000):
            engine.observe(
                {"action": "permission.grant", "actor": {"id": f"u{i}"}}, T0 + i
            )
        stats = engine.stats()
        # Only the actors of the last ~10 seconds can still have a window.
        assert stats["groups"] <= 12
        assert 5000 == stats["groups"] + stats["expired_groups"]


class TestFork:
    def test_a_forked_child_gets_a_working_engine(self) -> None:
        import os

        clock = FakeClock(T0)
        sink = MemorySink()
        auditor = auditloop.Auditor(sinks=[sink], rules=[storm()], clock=clock)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                grant_three(auditor, clock, actor="child")
                alerts = [e for e in sink.events if e.action == "auditloop.alert"]
                code = 0 if len(alerts) == 1 else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert 0 == os.waitstatus_to_exitcode(status)
        auditor.shutdown()


def test_time_moves_only_forward() -> None:
    feed = Feed(storm())
    feed.event(100, "x")
    feed.tick(50)
    assert T0 + 100 == feed.engine.now
    time.sleep(0)


class TestPublicSurface:
    def test_rules_exports(self) -> None:
        assert sorted(rules.__all__) == rules.__all__
        assert [
            "Absence",
            "Alert",
            "Change",
            "Distinct",
            "Match",
            "MemoryStore",
            "Ratio",
            "RedisStore",
            "Rule",
            "Sequence",
            "Store",
            "Threshold",
            "Transition",
            "Webhook",
            "load",
            "match",
            "register",
            "replay",
            "webhook",
        ] == rules.__all__
        assert all(hasattr(rules, name) for name in rules.__all__)

    def test_testing_exports(self) -> None:
        from auditloop import testing

        assert sorted(testing.__all__) == testing.__all__
        assert {"RuleHarness", "run_rule_tests", "FakeClock", "capture"} <= set(
            testing.__all__
        )
        assert all(hasattr(testing, name) for name in testing.__all__)
