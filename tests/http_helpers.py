"""Helpers shared by the HTTPSink tests (not a test module)."""

from __future__ import annotations

from typing import Any

import orjson

import auditloop
from auditloop.sinks import MemorySink
from auditloop.testing import FakeClock

__all__ = ["Sleeper", "ids_of", "make_events"]


def make_events(n: int, **attributes: Any) -> list[bytes]:
    """Return *n* real encoded events (as the delivery engine hands them)."""
    memory = MemorySink()
    auditor = auditloop.Auditor(
        service="billing", sinks=[memory], drop_report_interval=None
    )
    for i in range(n):
        auditor.emit(
            "document.delete", actor="alice", target=f"doc:{i}", n=i, **attributes
        )
    auditor.shutdown(1.0)
    return list(memory.lines)


def ids_of(events: list[bytes]) -> list[str]:
    """The event ids of encoded events, in order."""
    return [orjson.loads(line)["id"] for line in events]


class Sleeper:
    """An injectable ``sleep``: records each delay and advances a FakeClock."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock if clock is not None else FakeClock()
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        self.clock.advance(seconds)
