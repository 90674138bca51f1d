"""The rule engine (placeholder interface; the real engine replaces this file)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from auditloop._auditor import Auditor

__all__ = ["RuleEngine"]


class RuleEngine:
    """Evaluates rules over the event stream of one Auditor."""

    def __init__(
        self,
        rules: Sequence[Any],
        *,
        auditor: Auditor,
        clock: Callable[[], float] | None,
        store: Any = None,
    ) -> None:
        self.rules = list(rules)
        self.auditor = auditor
        self.clock = clock
        self.store = store

    def observe(self, event: dict[str, Any], timestamp: float) -> None:
        """See one processed event at *timestamp* (Unix seconds)."""

    def flush(self, timeout: float | None) -> bool:
        """Wait for queued alert actions."""
        return True

    def shutdown(self, timeout: float | None) -> bool:
        """Run or drop queued alert actions and stop."""
        return True

    def stats(self) -> dict[str, Any]:
        """Counters for ``auditloop.stats()["rules"]``."""
        return {}

    def after_fork_in_child(self) -> None:
        """Reset threads in a forked child."""
