"""Helpers for the rule tests: drive a RuleEngine directly with wire events."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from auditloop.rules import Alert, Rule
from auditloop.rules._engine import RuleEngine

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


class Feed:
    """A replay-style engine (no Auditor, no actions) fed event by event."""

    def __init__(self, *rules: Rule, store: Any = None) -> None:
        self.engine = RuleEngine(
            list(rules),
            auditor=None,
            clock=None,
            store=store,
            actions=False,
            ticker=False,
        )
        self.alerts: list[Alert] = []
        self.engine.add_listener(self.alerts.append)
        self.count = 0

    def event(
        self,
        at: float,
        action: str = "act",
        actor: str | None = "alice",
        **fields: Any,
    ) -> dict[str, Any]:
        """Observe one event at T0 + *at*; extra fields go in as given."""
        self.count += 1
        event: dict[str, Any] = {"id": f"e{self.count}", "action": action}
        event["outcome"] = fields.pop("outcome", "success")
        if actor is not None:
            event["actor"] = {"id": actor, "type": "user"}
        event.update(fields)
        self.engine.observe(event, T0 + at)
        # The engine never raises; make sure it did not swallow a bug either.
        assert 0 == self.engine.stats()["internal_errors"]
        return event

    def tick(self, at: float) -> None:
        self.engine.tick(T0 + at)
        assert 0 == self.engine.stats()["internal_errors"]

    def transitions(self) -> list[tuple[str, str, tuple[Any, ...], float]]:
        """(rule, status, group values, seconds after T0) of every alert."""
        return [
            (a.rule, a.status, tuple(a.group.values()), a.time.timestamp() - T0)
            for a in self.alerts
        ]

    def firing(self) -> list[tuple[str, tuple[Any, ...]]]:
        return [(a.rule, tuple(a.group.values())) for a in self.engine.firing()]


#: Random event streams, for feeding two engines alike: per step (seconds
#: after the latest step, < 0: late; action; actor; target; failed?; a tick
#: instead of an event?).
STEPS = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.0, 0.5, 1.0, 2.0, 4.0, 7.0, -1.5]),
        st.sampled_from(["doc.read", "doc.write", "doc.share", "other"]),
        st.sampled_from(["alice", "bob", None]),
        st.sampled_from(["t1", "t2", "t3", None]),
        st.booleans(),
        st.booleans(),
    ),
    max_size=40,
)

Step = tuple[float, str, str | None, str | None, bool, bool]


def play(steps: list[Step], *feeds: Feed) -> float:
    """Feed *steps* (drawn from STEPS) to every feed alike; return the
    latest time (seconds after T0). Each feed is ticked at 0 first: the
    start, from which Absence watches its ``expected`` groups."""
    for feed in feeds:
        feed.tick(0)
    now = 0.0
    for step, action, actor, target, failed, tick in steps:
        at = now + step
        now = max(now, at)
        for feed in feeds:
            if tick:
                feed.tick(at)
            else:
                fields: dict[str, Any] = {"outcome": "failure" if failed else "success"}
                if target is not None:
                    fields["target"] = {"id": target}
                feed.event(at, action, actor=actor, **fields)
    return now
