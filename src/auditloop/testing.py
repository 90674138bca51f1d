"""Helpers for testing code that audits, shipped as part of the product.

- :func:`capture` collects every event emitted inside a ``with`` block,
  whatever sinks are configured.
- :class:`FakeClock` drives event time (and rule windows) without sleeping.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta

from auditloop._auditor import add_tap, remove_tap
from auditloop._event import AuditEvent

__all__ = ["FakeClock", "capture"]


@contextlib.contextmanager
def capture() -> Iterator[list[AuditEvent]]:
    """Collect the events emitted (by any auditor) while the block runs.

    Events are appended as soon as they are emitted, in their final form
    (after processors and redaction, as encoded for the sinks), so no flush
    is needed. Sinks still receive them as usual.
    """
    events: list[AuditEvent] = []
    add_tap(events)
    try:
        yield events
    finally:
        remove_tap(events)


class FakeClock:
    """A clock that only moves when told to; pass it as ``clock=``.

    Calling it returns Unix time in seconds, like ``time.time``.
    Thread-safe.
    """

    def __init__(self, start: float | datetime = 1_767_225_600.0) -> None:
        self._lock = threading.Lock()
        self._now = start.timestamp() if isinstance(start, datetime) else float(start)

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float | timedelta) -> float:
        """Move the clock forward and return the new time."""
        step = seconds.total_seconds() if isinstance(seconds, timedelta) else seconds
        if step < 0:
            raise ValueError("FakeClock only moves forward")
        with self._lock:
            self._now += step
            return self._now

    def set(self, when: float | datetime) -> None:
        """Jump to *when* (forward only)."""
        target = when.timestamp() if isinstance(when, datetime) else float(when)
        with self._lock:
            if target < self._now:
                raise ValueError("FakeClock only moves forward")
            self._now = target
