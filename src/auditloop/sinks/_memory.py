"""MemorySink: keeps events in a list, for tests and examples."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import orjson

from auditloop._delivery import Delivery
from auditloop._event import AuditEvent
from auditloop._options import checked_options

__all__ = ["MemorySink"]


class MemorySink:
    """Collects every written event in memory, decoded as :class:`AuditEvent`.

    Unbounded by design: use it in tests, not in production. Delivery is
    synchronous by default, so an event is in :attr:`events` as soon as the
    call that emitted it returns.
    """

    @checked_options
    def __init__(self, *, delivery: Delivery | None = None) -> None:
        self.delivery = delivery if delivery is not None else Delivery(mode="sync")
        self.lines: list[bytes] = []
        self._lock = threading.Lock()

    @property
    def events(self) -> list[AuditEvent]:
        """The events written so far, oldest first."""
        with self._lock:
            lines = list(self.lines)
        return [AuditEvent.from_dict(orjson.loads(line)) for line in lines]

    def clear(self) -> None:
        """Forget every event written so far."""
        with self._lock:
            self.lines.clear()

    def write(self, batch: Sequence[bytes]) -> None:
        """Append *batch*."""
        # Compact copies: orjson's bytes each sit in a 4 KiB allocation.
        compact = [memoryview(line).tobytes() for line in batch]
        with self._lock:
            self.lines.extend(compact)

    def flush(self, timeout: float | None = None) -> None:
        """Nothing to flush."""

    def close(self, timeout: float | None = None) -> None:
        """Nothing to release; the events stay readable."""
