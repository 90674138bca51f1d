"""Helpers for the rule tests: drive a RuleEngine directly with wire events."""

from __future__ import annotations

from typing import Any

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
