"""Per-rule stores: ``Threshold(..., store=...)`` keeps that rule's state apart.

The first part uses only MemoryStore objects (no Redis); the last part runs a
real redis-server (the fixture of the RedisStore tests) and real child
processes.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from collections.abc import Hashable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import auditloop
from auditloop import rules
from auditloop.exceptions import ConfigurationError, RuleError
from auditloop.rules import match
from auditloop.rules._engine import RuleEngine
from auditloop.rules._store import Batch, Observer
from auditloop.rules._stores import StoreSet
from auditloop.testing import FakeClock, RuleHarness, capture
from redis_helpers import RedisServer, server_fixture
from rules_helpers import STEPS, T0, Feed, Step, play

GRANT = match(action="permission.*")


def storm(name: str, **options: Any) -> rules.Threshold:
    params: dict[str, Any] = {
        "match": GRANT,
        "group_by": ["actor.id"],
        "at_least": 3,
        "within": 60,
    }
    params.update(options)
    return rules.Threshold(name, **params)


class CountingStore(rules.MemoryStore):
    """A MemoryStore that records the rule names of every bind() call."""

    def __init__(self) -> None:
        super().__init__()
        self.binds: list[list[str]] = []

    def bind(self, rules: Sequence[rules.Rule]) -> list[Observer]:
        self.binds.append([rule.name for rule in rules])
        return super().bind(rules)


class UnhashableStore(rules.MemoryStore):
    """A MemoryStore that compares by value, so it has no hash."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnhashableStore)

    __hash__ = None  # type: ignore[assignment]


class ShortStore(rules.MemoryStore):
    """A broken store: one observer too few."""

    def bind(self, rules: Sequence[rules.Rule]) -> list[Observer]:
        return super().bind(rules)[:-1]


def ignore(
    _key: Hashable,
    _timestamp: float,
    _event: Mapping[str, Any],
    _roles: int,
    _now: float,
) -> None:
    return None


def ignore_all(
    _key: Hashable, _timestamp: float, _event: Mapping[str, Any], _now: float
) -> None:
    return None


class NullStore:
    """A store that counts nothing, with one observer function for every rule."""

    next_due = math.inf

    def bind(self, rules: Sequence[rules.Rule]) -> list[Observer]:
        return [ignore] * len(rules)

    def advance(self, now: float) -> list[rules.Change]:
        return []

    def stats(self) -> dict[str, dict[str, int]]:
        return {}

    def batch(self, observers: Sequence[Observer]) -> Batch:
        return ignore_all


class RaisingStore(NullStore):
    """A store that breaks the rule that stores never raise."""

    def commit(self) -> list[rules.Change]:
        raise RuntimeError("broken store")


def engine_of(*rule_list: rules.Rule, store: Any = None) -> RuleEngine:
    return Feed(*rule_list, store=store).engine


# -- the option -------------------------------------------------------------------

KINDS: dict[str, dict[str, Any]] = {
    "Threshold": {"match": GRANT, "at_least": 1},
    "Ratio": {"match": GRANT, "of": match(), "above": 0.5},
    "Distinct": {"match": GRANT, "field": "target.id", "at_least": 2},
    "Absence": {"match": GRANT},
    "Sequence": {"steps": [GRANT, match(action="user.login")]},
}


class TestOption:
    @pytest.mark.parametrize("kind", sorted(KINDS))
    def test_every_kind_takes_a_store_and_defaults_to_none(self, kind: str) -> None:
        own = rules.MemoryStore()
        factory = getattr(rules, kind)
        with_store = factory("r", within=60, store=own, **KINDS[kind])
        without = factory("r", within=60, **KINDS[kind])
        assert (own, None) == (with_store.store, without.store)

    @pytest.mark.parametrize("bad", ["redis://localhost", object(), rules.MemoryStore])
    def test_something_that_is_not_a_store_is_a_rule_error_naming_it(
        self, bad: object
    ) -> None:
        with pytest.raises(RuleError) as info:
            storm("fleet-storm", store=bad)
        assert str(info.value).startswith(
            "rule 'fleet-storm': store: must implement rules.Store"
        )

    def test_a_misspelt_option_suggests_store(self) -> None:
        with pytest.raises(RuleError, match="did you mean 'store'"):
            storm("x", stores=rules.MemoryStore())

    def test_rules_stay_hashable_whatever_their_store(self) -> None:
        # Rules are dict keys (by identity); stores are told apart by
        # identity too, so even an unhashable store works.
        own = UnhashableStore()
        feed = Feed(storm("a", store=own, at_least=1), storm("b", at_least=1))
        feed.event(0, "permission.grant")
        assert [("a", "firing"), ("b", "firing")] == [
            (rule, status) for rule, status, _, _ in feed.transitions()
        ]
        assert ["a"] == list(own.stats())


# -- where state goes -------------------------------------------------------------


class TestPartition:
    def test_a_rule_keeps_its_state_in_its_own_store_and_the_others_in_the_engines(
        self,
    ) -> None:
        default, own = rules.MemoryStore(), rules.MemoryStore()
        feed = Feed(storm("local"), storm("mine", store=own), store=default)
        for i in range(3):
            feed.event(i, "permission.grant", actor="alice")
        feed.event(3, "permission.grant", actor="bob")
        assert ["local"] == list(default.stats())
        assert ["mine"] == list(own.stats())
        assert (2, 1) == (
            default.stats()["local"]["groups"],
            default.stats()["local"]["fired"],
        )
        assert (2, 1) == (own.stats()["mine"]["groups"], own.stats()["mine"]["fired"])
        assert [
            ("local", "firing", ("alice",), 2.0),
            ("mine", "firing", ("alice",), 2.0),
        ] == feed.transitions()
        # The engine's counters cover both stores.
        per_rule = feed.engine.stats()["rules"]
        assert {"local": 1, "mine": 1} == {n: c["fired"] for n, c in per_rule.items()}
        assert isinstance(feed.engine.store, StoreSet)

    def test_equal_thresholds_in_different_stores_do_not_share_a_cohort(self) -> None:
        # Same criteria, group_by and window: in one MemoryStore they would
        # share one table; in two they must not.
        default, own = rules.MemoryStore(), rules.MemoryStore()
        feed = Feed(
            storm("a"), storm("b", at_least=2, store=own), storm("c"), store=default
        )
        for i in range(3):
            feed.event(i, "permission.grant")
        assert [
            ("b", "firing", ("alice",), 1.0),
            ("a", "firing", ("alice",), 2.0),
            ("c", "firing", ("alice",), 2.0),
        ] == feed.transitions()
        assert (["a", "c"], ["b"]) == (list(default.stats()), list(own.stats()))
        assert 1 == own.stats()["b"]["groups"]

    def test_resolutions_and_absences_are_noticed_in_every_store(self) -> None:
        clock = FakeClock(T0)
        own = rules.MemoryStore()
        heartbeat = rules.Absence(
            "no-deploy", match=match(action="deploy.*"), within=100, store=own
        )
        auditor = auditloop.Auditor(
            rules=[storm("storm", within=10), heartbeat], clock=clock
        )
        assert auditor.rules is not None
        transitions: list[tuple[str, str, float]] = []
        auditor.rules.add_listener(
            lambda a: transitions.append((a.rule, a.status, a.time.timestamp() - T0))
        )
        for _ in range(3):
            auditor.emit("permission.grant", actor="alice")
            clock.advance(1)
        clock.set(T0 + 30)
        auditor.rules.tick()  # the storm's window emptied at 10
        clock.set(T0 + 150)
        auditor.rules.tick()  # no deploy since the start: fired at 100
        auditor.emit("deploy.finished", actor="ci")  # resolves it
        assert [
            ("storm", "firing", 2.0),
            ("storm", "resolved", 10.0),
            ("no-deploy", "firing", 100.0),
            ("no-deploy", "resolved", 150.0),
        ] == transitions
        assert ["no-deploy"] == list(own.stats())
        auditor.shutdown()

    def test_a_deadline_an_event_set_in_one_store_is_kept_at_the_next_event(
        self,
    ) -> None:
        # "blip" fires at 0 and its window empties at 0.5: the event at 0.75
        # must first resolve it, then fire "deploy" — as with one store.
        def run(own: rules.Store | None) -> list[tuple[str, str, Any, float]]:
            feed = Feed(
                storm("deploy", match=match(action="deploy.*"), at_least=1),
                storm("blip", at_least=1, within=0.5, store=own),
            )
            feed.event(0, "permission.grant")
            feed.event(0.75, "deploy.start")
            return feed.transitions()

        assert [
            ("blip", "firing", ("alice",), 0.0),
            ("blip", "resolved", ("alice",), 0.5),
            ("deploy", "firing", ("alice",), 0.75),
        ] == run(rules.MemoryStore())
        assert run(None) == run(rules.MemoryStore())

    def test_transitions_of_one_advance_come_in_time_order_across_stores(
        self,
    ) -> None:
        own = rules.MemoryStore()
        feed = Feed(
            storm("late", within=20),
            storm("early", within=10, store=own),
        )
        for i in range(3):
            feed.event(i, "permission.grant")
        feed.tick(100)  # both resolve in one tick: early's at 10, late's at 20
        assert [
            ("early", "resolved", ("alice",), 10.0),
            ("late", "resolved", ("alice",), 20.0),
        ] == feed.transitions()[2:]


class TestBinding:
    def test_one_store_object_on_several_rules_is_bound_once_with_all_of_them(
        self,
    ) -> None:
        shared = CountingStore()
        default = CountingStore()
        engine_of(
            storm("a", store=shared),
            storm("b"),
            storm("c", store=shared),
            store=default,
        )
        assert ([["a", "c"]], [["b"]]) == (shared.binds, default.binds)

    def test_a_rules_store_that_is_the_engines_store_is_one_store(self) -> None:
        shared = CountingStore()
        engine = engine_of(storm("a", store=shared), storm("b"), store=shared)
        assert [["a", "b"]] == shared.binds
        assert shared is engine.store  # no StoreSet: the store directly

    def test_without_own_stores_the_engine_uses_its_store_directly(self) -> None:
        default = rules.MemoryStore()
        assert default is engine_of(storm("a"), storm("b"), store=default).store
        assert type(engine_of(storm("a")).store) is rules.MemoryStore

    def test_rules_that_all_share_one_own_store_use_it_directly(self) -> None:
        own = CountingStore()
        engine = engine_of(storm("a", store=own), storm("b", store=own))
        assert own is engine.store
        assert [["a", "b"]] == own.binds

    def test_a_store_returning_too_few_observers_is_a_configuration_error(
        self,
    ) -> None:
        broken = ShortStore()
        with pytest.raises(ConfigurationError, match=r"returned 1 observers for 2"):
            engine_of(storm("a"), storm("b", store=broken), storm("c", store=broken))

    def test_batching_is_offered_per_store(self) -> None:
        # MemoryStore batches equal Thresholds of one store; a StoreSet
        # delegates only when every observer is from the same store.
        default, own = rules.MemoryStore(), rules.MemoryStore()
        rule_list = [storm("a"), storm("b", at_least=4), storm("c", store=own)]
        stores = StoreSet(default)
        a, b, c = stores.bind(rule_list)
        assert stores.batch([a, b]) is not None
        assert stores.batch([a, c]) is None
        assert stores.batch([c]) is None  # a one-rule cohort: nothing to batch

    def test_an_observer_object_two_stores_share_is_never_batched(self) -> None:
        one, two = NullStore(), NullStore()
        both = StoreSet(one)
        a, b = both.bind([storm("a"), storm("b", store=two)])
        assert (ignore, ignore) == (a, b)
        assert both.batch([a]) is None  # whose is it? neither's batch is asked
        alone = StoreSet(one)
        a, _ = alone.bind([storm("a"), storm("b", store=rules.MemoryStore())])
        assert ignore_all is alone.batch([a])

    def test_two_redis_stores_on_one_prefix_are_refused(self) -> None:
        one = rules.RedisStore("redis://127.0.0.1:1/0", prefix="app:")
        two = rules.RedisStore("redis://127.0.0.1:1/0", prefix="app:")
        with pytest.raises(ConfigurationError) as info:
            engine_of(storm("a", store=one), storm("b", store=two))
        assert str(info.value).startswith(
            "rule 'b': store: another RedisStore with prefix 'app:' holds rule 'a'"
        )
        # Different prefixes are fine (nothing connects before an event).
        three = rules.RedisStore("redis://127.0.0.1:1/0", prefix="other:")
        engine_of(storm("a", store=one), storm("b", store=three))
        # So are one prefix on two servers, or two databases of one.
        four = rules.RedisStore("redis://127.0.0.1:2/0", prefix="app:")
        five = rules.RedisStore("redis://127.0.0.1:1/1", prefix="app:")
        engine_of(storm("a", store=one), storm("b", store=four), storm("c", store=five))


# -- the same answers as one store --------------------------------------------------


def rule_set(stores: Sequence[rules.Store | None], cooldown: float) -> list[rules.Rule]:
    """One rule of each kind (and two equal Thresholds), with the given stores."""
    doc = match(action="doc.*")
    common: dict[str, Any] = {"group_by": ["actor.id"], "cooldown": cooldown}
    s = iter(stores)
    return [
        rules.Threshold("th", match=doc, at_least=3, within=6, store=next(s), **common),
        rules.Threshold(
            "th2", match=doc, at_least=2, within=6, store=next(s), **common
        ),
        rules.Ratio(
            "ra",
            match=match(action="doc.*", outcome="failure"),
            of=doc,
            above=0.5,
            min_count=2,
            within=5,
            store=next(s),
            **common,
        ),
        rules.Distinct(
            "di",
            match=doc,
            field="target.id",
            at_least=2,
            within=4,
            store=next(s),
            **common,
        ),
        rules.Absence(
            "ab",
            match=match(action="doc.write"),
            within=5,
            expected=["carol"],
            store=next(s),
            **common,
        ),
        rules.Sequence(
            "se",
            steps=[match(action="doc.read"), match(action="doc.write")],
            within=8,
            store=next(s),
            **common,
        ),
    ]


def alerts_of(feed: Feed) -> list[tuple[Any, ...]]:
    """Everything an alert says, in an order defined for same-time alerts."""
    found = [
        (
            a.rule,
            a.status,
            tuple(a.group.values()),
            a.time.timestamp() - T0,
            a.value,
            a.started_at.timestamp() - T0,
            tuple(e["id"] for e in a.evidence),
        )
        for a in feed.alerts
    ]
    # Groups due at the same instant are re-checked in no defined order; each
    # (rule, group)'s own order is kept by the stable sort.
    return sorted(found, key=lambda a: (a[3], a[0], repr(a[2])))


class HandingOverStore(NullStore):
    """A shared store that hands this engine a transition of a rule of
    another configuration (as a replaced engine may get one)."""

    def __init__(self, foreign: rules.Rule) -> None:
        self.foreign = foreign

    def commit(self) -> list[rules.Change]:
        return [rules.Change(self.foreign, ("alice",), "firing", T0, 3.0, (), T0, T0)]


class TestATransitionOfARuleTheEngineLacks:
    def test_is_published_without_running_actions(self) -> None:
        ran: list[rules.Alert] = []
        mine = storm("mine", then=[ran.append])
        engine = RuleEngine(
            [mine],
            auditor=None,
            clock=None,
            store=HandingOverStore(storm("theirs")),
            actions=True,
            ticker=False,
        )
        alerts: list[rules.Alert] = []
        engine.add_listener(alerts.append)
        engine.observe({"id": "e1", "action": "other.thing"}, T0)
        engine.shutdown(5)
        assert ["theirs"] == [alert.rule for alert in alerts]
        assert [] == ran
        assert 0 == engine.stats()["internal_errors"]


class TestAMemberThatRaises:
    def test_costs_only_its_own_changes_and_is_counted(self) -> None:
        engine = engine_of(
            storm("broken", store=RaisingStore()), storm("fine", at_least=1)
        )
        alerts: list[rules.Alert] = []
        engine.add_listener(alerts.append)
        engine.observe(
            {"id": "e1", "action": "permission.grant", "actor": {"id": "alice"}},
            T0,
        )
        assert ["fine"] == [alert.rule for alert in alerts]
        assert 1 == engine.stats()["internal_errors"]


class TestSameAlertsAsOneStore:
    @settings(max_examples=60, deadline=None)
    @given(
        steps=STEPS,
        layout=st.lists(st.sampled_from([0, 1, 2]), min_size=6, max_size=6),
        cooldown=st.sampled_from([0.0, 3.0]),
    )
    def test_random_streams_give_the_same_transitions(
        self,
        steps: list[Step],
        layout: list[int],
        cooldown: float,
    ) -> None:
        # layout: per rule, 0 = the engine's store, 1 or 2 = a shared own store.
        one, two = rules.MemoryStore(), rules.MemoryStore()
        own = [None, one, two]
        single = Feed(*rule_set([None] * 6, cooldown))
        split = Feed(*rule_set([own[i] for i in layout], cooldown))
        feeds = (single, split)
        now = play(steps, *feeds)
        for feed in feeds:
            feed.tick(now + 30)
        assert alerts_of(single) == alerts_of(split)
        counters = ("fired", "resolved", "suppressed", "late_events")
        theirs = single.engine.stats()["rules"]
        mine = split.engine.stats()["rules"]
        assert {n: [theirs[n][c] for c in counters] for n in theirs} == {
            n: [mine[n][c] for c in counters] for n in mine
        }


# -- configure, the harness, load, replay -------------------------------------------


class TestEndToEnd:
    def test_configure_with_a_rule_in_its_own_store(self) -> None:
        own = rules.MemoryStore()
        clock = FakeClock(T0)
        auditloop.configure(
            clock=clock,
            rules=[storm("local"), storm("mine", at_least=2, store=own)],
        )
        with capture() as events:
            for _ in range(3):
                auditloop.emit("permission.grant", actor="alice")
                clock.advance(1)
        alerts = [
            (e.attributes["rule"], e.attributes["status"], e.attributes["value"])
            for e in events
            if e.action == "auditloop.alert"
        ]
        assert [("mine", "firing", 2.0), ("local", "firing", 3.0)] == alerts
        assert {"mine": 1} == {n: c["groups"] for n, c in own.stats().items()}
        per_rule = auditloop.stats()["rules"]["rules"]
        assert ["local", "mine"] == sorted(per_rule)

    def test_the_harness_uses_the_rules_stores(self) -> None:
        own = rules.MemoryStore()
        with RuleHarness([storm("local"), storm("mine", store=own)]) as harness:
            for second in range(3):
                harness.emit("permission.grant", at=second, actor="bob")
            bob = {"actor.id": "bob"}
            harness.assert_alerts(firing=[("local", bob), ("mine", bob)])
            harness.assert_alerts(at="2m", resolved=[("local", bob), ("mine", bob)])
        assert ["mine"] == list(own.stats())

    def test_replay_keeps_every_rule_in_memory(self) -> None:
        own = CountingStore()
        records = [
            {
                "id": f"e{i}",
                "time": f"2026-01-01T00:00:0{i}Z",
                "action": "permission.grant",
                "actor": {"id": "alice"},
            }
            for i in range(3)
        ]
        found = rules.replay(records, [storm("mine", store=own)])
        assert [("mine", "firing")] == [(t.rule, t.status) for t in found]
        assert [] == own.binds  # never touched


class TestLoad:
    BASE: dict[str, Any] = {  # noqa: RUF012 - read only
        "name": "fleet-storm",
        "kind": "threshold",
        "at_least": 3,
        "within": "1m",
        "match": {"action": "permission.*"},
    }

    def test_a_dict_rule_may_hold_a_store_object(self) -> None:
        own = rules.MemoryStore()
        (rule,) = rules.load({"rules": [{**self.BASE, "store": own}]})
        assert own is rule.store
        (rule,) = rules.load({"rules": [self.BASE]}, actions=False)
        assert rule.store is None

    def test_a_store_in_a_toml_file_is_a_rule_error(self, tmp_path: Path) -> None:
        path = tmp_path / "rules.toml"
        path.write_text(
            '[[rules]]\nname = "fleet-storm"\nkind = "threshold"\nat_least = 3\n'
            'within = "1m"\nstore = "redis://redis.internal:6379/0"\n'
            '[rules.match]\naction = "permission.*"\n'
        )
        with pytest.raises(RuleError) as info:
            rules.load(path)
        assert (
            "rule 'fleet-storm': store: cannot be set in a rule file (a store is a "
            "Python object): build the rule in Python with store=..., or use "
            "configure(rule_store=...); got 'redis://redis.internal:6379/0'"
        ) == str(info.value)

    def test_a_dict_rule_with_something_else_as_store_is_the_same_error(
        self,
    ) -> None:
        with pytest.raises(RuleError, match="store: cannot be set in a rule file"):
            rules.load({"rules": [{**self.BASE, "store": {"url": "redis://x"}}]})


# -- with a real redis-server -------------------------------------------------------

_prefixes = itertools.count()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from server_fixture(tmp_path_factory)


def fresh_prefix() -> str:
    return f"per-rule{next(_prefixes)}:"


# One process of the fleet: a Threshold in Redis and the same one in memory;
# emits 3 grants by alice, then prints its alerts and per-rule stats as JSON.
CHILD = """
import json, sys
import auditloop
from auditloop import rules

url, prefix = sys.argv[1], sys.argv[2]
fleet = rules.RedisStore(url, prefix=prefix, timeout=5.0)
common = dict(
    match=rules.match(action="permission.*"),
    group_by=["actor.id"],
    at_least=5,
    within=600,
)
auditor = auditloop.Auditor(
    rules=[
        rules.Threshold("fleet-storm", store=fleet, **common),
        rules.Threshold("local-storm", **common),
    ]
)
alerts = []
auditor.rules.add_listener(
    lambda a: alerts.append([a.rule, a.status, dict(a.group), a.value])
)
for _ in range(3):
    auditor.emit("permission.grant", actor="alice")
stats = auditor.stats()["rules"]["rules"]
auditor.shutdown(timeout=5)
print(json.dumps({"alerts": alerts, "stats": stats, "info": fleet.info()}))
"""


def run_child(server: RedisServer, prefix: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, server.url, prefix],
        capture_output=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")},
    )
    assert 0 == done.returncode, done.stderr.decode()
    return dict(json.loads(done.stdout))


class TestRedis:
    def test_a_redis_rule_counts_across_processes_a_memory_rule_does_not(
        self, redis_server: RedisServer
    ) -> None:
        prefix = fresh_prefix()
        first = run_child(redis_server, prefix)
        second = run_child(redis_server, prefix)
        # 3 + 3 grants: the fleet rule reaches 5 at the second process's
        # second grant; each process's memory rule only ever sees 3.
        assert [] == first["alerts"]
        assert [["fleet-storm", "firing", {"actor.id": "alice"}, 5.0]] == second[
            "alerts"
        ]
        for child in (first, second):
            assert {"groups": 1, "fired": 0} == {
                k: child["stats"]["local-storm"][k] for k in ("groups", "fired")
            }
            assert child["info"]["available"]
        assert 1 == second["stats"]["fleet-storm"]["fired"]
        assert all(
            k.startswith(prefix + "fleet-storm:")
            for k in redis_server.keys(prefix)
            if not k.endswith("due")
        )
        assert redis_server.keys(prefix)

    def test_one_round_trip_per_event_and_store(
        self, redis_server: RedisServer
    ) -> None:
        shared = rules.RedisStore(redis_server.url, prefix=fresh_prefix(), time="event")
        other = rules.RedisStore(redis_server.url, prefix=fresh_prefix(), time="event")
        local = rules.MemoryStore()
        feed = Feed(
            storm("a", store=shared),
            rules.Distinct(
                "b",
                match=GRANT,
                field="target.id",
                group_by=["actor.id"],
                at_least=50,
                within=60,
                store=shared,
            ),
            storm("c"),
            storm("d", at_least=100, store=other),
            store=local,
        )
        feed.event(0, "permission.grant")  # loads the script in both
        before = (shared.info()["round_trips"], other.info()["round_trips"])
        for i in range(40):
            feed.event(i, "permission.grant", target={"id": f"d{i % 7}"})
        for _ in range(10):
            feed.event(39, "unrelated.action")  # matches no rule: no call
        after = (shared.info()["round_trips"], other.info()["round_trips"])
        assert (40, 40) == (after[0] - before[0], after[1] - before[1])
        assert ["c"] == list(local.stats())
        # The memory rule's change comes from its observer, the Redis rule's
        # from the commit after all observers.
        assert [
            ("c", "firing", ("alice",), 1.0),
            ("a", "firing", ("alice",), 1.0),
        ] == feed.transitions()

    def test_the_harness_drives_a_redis_rule_on_event_time(
        self, redis_server: RedisServer
    ) -> None:
        fleet = rules.RedisStore(redis_server.url, prefix=fresh_prefix(), time="event")
        rule_list = [storm("fleet", store=fleet), storm("local", at_least=2)]
        with RuleHarness(rule_list) as harness:
            for second in range(3):
                harness.emit("permission.grant", at=second, actor="carol")
            carol = {"actor.id": "carol"}
            harness.assert_alerts(firing=[("local", carol), ("fleet", carol)])
            harness.assert_alerts(
                at="5m", resolved=[("local", carol), ("fleet", carol)]
            )
        assert 1 == fleet.stats()["fleet"]["resolved"]
