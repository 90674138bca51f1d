"""Threshold, Distinct and Ratio agree with a brute-force reference.

The reference recomputes each window from scratch with the documented
semantics: at time t a window holds the events with time in (t - within, t];
a group's condition is evaluated after each of its events (a transition at
that event's time) and, while the group fires, at every instant an event
leaves the window (a resolution at that exact instant).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from auditloop import rules
from auditloop.rules import match
from rules_helpers import Feed

# (time, group, target value or None, failed?)
Ev = tuple[float, str, str | None, bool]
Condition = Callable[[list[Ev], float], tuple[bool, float]]


def _accumulate(steps: list[tuple[float, str, str | None, bool]]) -> list[Ev]:
    now = 0.0
    result = []
    for step, group, value, failed in steps:
        now += step
        result.append((now, group, value, failed))
    return result


events_strategy = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.0, 0.5, 1.0, 2.0, 5.0]),  # time step, often 0
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from(["x", "y", "z", "w", None]),
        st.booleans(),
    ),
    max_size=60,
).map(_accumulate)


def reference(
    events: list[Ev], within: float, condition: Condition
) -> list[tuple[str, tuple[str], float, float]]:
    """Transitions (status, group, time, value) by recomputing every window."""
    firing: dict[str, bool] = {}
    out: list[tuple[str, tuple[str], float, float]] = []
    instants = sorted({t + within for t, *_ in events})
    done = 0

    def window(seen: list[Ev], group: str, at: float) -> list[Ev]:
        return [e for e in seen if e[1] == group and at - within < e[0] <= at]

    for index, (t, group, _, _) in enumerate(events):
        seen = events[:index]
        while done < len(instants) and instants[done] <= t:
            at = instants[done]
            done += 1
            for g in sorted(firing):
                if firing[g]:
                    holds, value = condition(window(seen, g, at), at)
                    if not holds:
                        firing[g] = False
                        out.append(("resolved", (g,), at, value))
        seen = events[: index + 1]
        holds, value = condition(window(seen, group, t), t)
        if holds and not firing.get(group):
            firing[group] = True
            out.append(("firing", (group,), t, value))
        elif not holds and firing.get(group):
            firing[group] = False
            out.append(("resolved", (group,), t, value))
    return out


def run_engine(rule: rules.Rule, events: list[Ev]) -> list[tuple[Any, ...]]:
    feed = Feed(rule)
    for t, group, value, failed in events:
        fields: dict[str, Any] = {"outcome": "failure" if failed else "success"}
        if value is not None:
            fields["target"] = {"id": value}
        feed.event(t, "act", actor=group, **fields)
    return [
        (
            a.status,
            tuple(a.group.values()),
            a.time.timestamp() - 1_767_225_600.0,
            a.value,
        )
        for a in feed.alerts
    ]


def normalise(transitions: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    # Times are exact multiples of 0.5 in the test data; guard against the
    # float noise of the epoch offset anyway. Transitions of different groups
    # at the same instant have no defined order: sort by (time, group), which
    # keeps each group's own order.
    rounded = [(s, g, round(t, 6), round(v, 9)) for s, g, t, v in transitions]
    return sorted(rounded, key=lambda tr: (tr[2], tr[1]))


windows = st.sampled_from([0.5, 1.0, 2.0, 3.0, 10.0])


class TestAgainstReference:
    @settings(max_examples=250, deadline=None)
    @given(events=events_strategy, at_least=st.integers(1, 5), within=windows)
    def test_threshold(self, events: list[Ev], at_least: int, within: float) -> None:
        rule = rules.Threshold(
            "t",
            match=match(action="act"),
            group_by="actor.id",
            at_least=at_least,
            within=within,
        )

        def condition(window: list[Ev], _at: float) -> tuple[bool, float]:
            return len(window) >= at_least, float(min(len(window), at_least))

        expected = reference(events, within, condition)
        assert normalise(expected) == normalise(run_engine(rule, events))

    @settings(max_examples=250, deadline=None)
    @given(events=events_strategy, at_least=st.integers(1, 4), within=windows)
    def test_distinct(self, events: list[Ev], at_least: int, within: float) -> None:
        rule = rules.Distinct(
            "d",
            match=match(action="act"),
            field="target.id",
            group_by="actor.id",
            at_least=at_least,
            within=within,
        )

        def condition(window: list[Ev], _at: float) -> tuple[bool, float]:
            distinct = {value for _, _, value, _ in window if value is not None}
            return len(distinct) >= at_least, float(min(len(distinct), at_least))

        expected = reference(events, within, condition)
        assert normalise(expected) == normalise(run_engine(rule, events))

    @settings(max_examples=250, deadline=None)
    @given(
        events=events_strategy,
        above=st.sampled_from([0.0, 0.25, 0.5, 0.75]),
        min_count=st.integers(1, 4),
        within=windows,
    )
    def test_ratio(
        self, events: list[Ev], above: float, min_count: int, within: float
    ) -> None:
        rule = rules.Ratio(
            "r",
            match=match(action="act", outcome="failure"),
            of=match(action="act"),
            group_by="actor.id",
            above=above,
            min_count=min_count,
            within=within,
        )

        def condition(window: list[Ev], _at: float) -> tuple[bool, float]:
            failed = sum(1 for *_, f in window if f)
            total = len(window)
            ratio = failed / total if total else 0.0
            return total >= min_count and ratio > above, ratio

        expected = reference(events, within, condition)
        assert normalise(expected) == normalise(run_engine(rule, events))
