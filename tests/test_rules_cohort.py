"""Threshold rules that share a cohort behave exactly as if each ran alone.

``MemoryStore`` lets Threshold rules with the same match, ``group_by``,
``within`` and ``max_groups`` share one table and one window per group (and
the engine counts an event for all of them in one call). Each rule alone is
checked against a brute-force reference in ``test_rules_reference.py``; here
random streams show that rules in a cohort — counted through the engine's
batch call or through their observers one by one — give the same alerts,
evidence and counters as the same rules in separate engines.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from auditloop import rules
from auditloop.rules import match
from rules_helpers import Feed

# (time step, action, actor) or ("tick", step)
Step = tuple[float, str, str]


class OneByOneStore:
    """A MemoryStore without ``batch``: the engine calls every observer."""

    def __init__(self) -> None:
        self.inner = rules.MemoryStore()

    @property
    def next_due(self) -> float:
        return self.inner.next_due

    def bind(self, rule_list: Any) -> list[Any]:
        return list(self.inner.bind(rule_list))

    def advance(self, now: float) -> list[rules.Change]:
        return self.inner.advance(now)

    def stats(self) -> dict[str, dict[str, int]]:
        return self.inner.stats()


steps_strategy = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.0, 0.5, 1.0, 2.0, 5.0, -1.0, -3.0]),  # late too
        st.sampled_from(["act", "act", "act", "other", "tick"]),
        st.sampled_from(["a", "b", "c", "d"]),
    ),
    max_size=80,
)

rule_params = st.tuples(
    st.integers(1, 5),  # at_least
    st.sampled_from([0.0, 1.0]),  # for_
    st.sampled_from([0.0, 2.0]),  # cooldown
    st.sampled_from([0, 1, 3]),  # evidence
)


def make_rules(
    params: list[tuple[int, float, float, int]], within: float, max_groups: int
) -> list[rules.Rule]:
    shared = match(action="act")
    return [
        rules.Threshold(
            f"t{i}",
            match=shared,
            group_by="actor.id",
            at_least=at_least,
            within=within,
            for_=for_,
            cooldown=cooldown,
            evidence=evidence,
            max_groups=max_groups,
        )
        for i, (at_least, for_, cooldown, evidence) in enumerate(params)
    ]


def run(feed: Feed, steps: list[Step]) -> None:
    now = 0.0
    for step, action, actor in steps:
        if action == "tick":
            now += abs(step)
            feed.tick(now)
            continue
        at = now + step  # a negative step is a late event
        now = max(now, at)
        feed.event(at, action, actor=actor)
    feed.tick(now + 100.0)  # every window empties


def outcome(feed: Feed, name: str) -> tuple[list[Any], dict[str, int]]:
    alerts = [
        (
            a.status,
            tuple(a.group.values()),
            a.time.timestamp(),
            a.value,
            tuple(e["id"] for e in a.evidence),
        )
        for a in feed.alerts
        if a.rule == name
    ]
    return alerts, feed.engine.stats()["rules"][name]


class TestCohort:
    @settings(max_examples=200, deadline=None)
    @given(
        steps=steps_strategy,
        params=st.lists(rule_params, min_size=2, max_size=4),
        within=st.sampled_from([1.0, 3.0, 10.0]),
        max_groups=st.sampled_from([1, 2, 10_000]),
    )
    def test_same_as_alone(
        self,
        steps: list[Step],
        params: list[tuple[int, float, float, int]],
        within: float,
        max_groups: int,
    ) -> None:
        together = make_rules(params, within, max_groups)
        batched = Feed(*together)
        one_by_one = Feed(*together, store=OneByOneStore())
        run(batched, steps)
        run(one_by_one, steps)
        for rule in together:
            alone = Feed(rule)
            run(alone, steps)
            expected = outcome(alone, rule.name)
            assert expected == outcome(batched, rule.name)
            assert expected == outcome(one_by_one, rule.name)

    def test_batch_only_for_a_whole_cohort(self) -> None:
        shared = match(action="act")
        store = rules.MemoryStore()
        observers = store.bind(
            [
                rules.Threshold("a", match=shared, at_least=2, within=10),
                rules.Threshold("b", match=shared, at_least=3, within=10),
                # A `where` callable may answer differently per rule: alone.
                rules.Threshold(
                    "c", match=match(action="act", where=bool), at_least=2, within=10
                ),
            ]
        )
        assert callable(store.batch([observers[1], observers[0]]))
        assert None is store.batch(observers[:1])
        assert None is store.batch(observers)

    def test_equal_criteria_written_separately_share_a_cohort(self) -> None:
        store = rules.MemoryStore()
        observers = store.bind(
            [
                rules.Threshold(
                    "a",
                    match=match(action="act", outcome="failure"),
                    at_least=2,
                    within=10,
                ),
                rules.Threshold(
                    "b",
                    match=match(outcome="failure", action=("act",)),
                    at_least=3,
                    within=10,
                ),
            ]
        )

        assert callable(store.batch(observers))

    def test_criteria_key_equality(self) -> None:
        assert (
            match(action="a.*", outcome="failure").criteria_key
            == match(outcome="failure", action=["a.*"]).criteria_key
        )
        assert match(action="a.*").criteria_key != match(action="b.*").criteria_key
        with_where = match(action="a.*", where=lambda e: True)
        other_where = match(action="a.*", where=lambda e: True)
        assert with_where.criteria_key != other_where.criteria_key
        assert with_where.criteria_key == with_where.criteria_key

    def test_stats_count_each_rule(self) -> None:
        shared = match(action="act")
        feed = Feed(
            rules.Threshold(
                "two",
                match=shared,
                group_by="actor.id",
                at_least=2,
                within=10,
                max_groups=2,
            ),
            rules.Threshold(
                "three",
                match=shared,
                group_by="actor.id",
                at_least=3,
                within=10,
                max_groups=2,
            ),
        )
        for i, actor in enumerate(["a", "b", "c", "a", "a"]):
            feed.event(float(i), actor=actor)
        stats = feed.engine.stats()["rules"]
        # c evicted a's first group, then a evicted b: only the second a
        # events count together.
        assert [("two", "firing", ("a",), 4.0)] == feed.transitions()
        assert (2, 2) == (stats["two"]["groups"], stats["two"]["evicted_groups"])
        assert (2, 2) == (stats["three"]["groups"], stats["three"]["evicted_groups"])
        feed.tick(100.0)
        stats = feed.engine.stats()["rules"]
        assert (0, 2) == (stats["two"]["groups"], stats["two"]["expired_groups"])
        assert (0, 2) == (stats["three"]["groups"], stats["three"]["expired_groups"])

    def test_a_group_kept_by_one_rule_is_recreated_for_another(self) -> None:
        shared = match(action="act")
        feed = Feed(
            rules.Threshold(
                "one",
                match=shared,
                group_by="actor.id",
                at_least=1,
                within=1,
                cooldown=50,
            ),
            rules.Threshold(
                "five", match=shared, group_by="actor.id", at_least=5, within=1
            ),
        )
        feed.event(0.0, actor="a")
        feed.tick(2.0)
        stats = feed.engine.stats()["rules"]
        # "five" forgot the idle group; "one" keeps it while cooling down.
        assert (1, 0) == (stats["one"]["groups"], stats["one"]["expired_groups"])
        assert (0, 1) == (stats["five"]["groups"], stats["five"]["expired_groups"])
        for _ in range(5):
            feed.event(3.0, actor="a")
        assert [
            ("one", "firing", ("a",), 0.0),
            ("one", "resolved", ("a",), 1.0),
            ("five", "firing", ("a",), 3.0),
        ] == feed.transitions()
        stats = feed.engine.stats()["rules"]
        assert (1, 1) == (stats["one"]["groups"], stats["one"]["suppressed"])
        assert 1 == stats["five"]["groups"]
