"""Protocols shared across modules: processors and sinks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = ["Processor", "Sink"]


class Processor(Protocol):
    """A structlog-style processor: ``(auditor, method, event_dict) -> event_dict``.

    Raise ``DropEvent`` to drop the event. Return a dict; replace nested dicts
    rather than mutating them in place (they may be shared between events).
    """

    def __call__(
        self, auditor: Any, method: str, event: dict[str, Any]
    ) -> dict[str, Any]: ...


@runtime_checkable
class Sink(Protocol):
    """Where encoded events go. A sink only knows how to write a batch.

    Queueing, batching, overflow, retries of the engine and drop counting are
    the delivery engine's job, shared by every sink; a sink may set a
    ``delivery`` attribute (a :class:`~auditloop.sinks.Delivery`) to choose
    its own policy. The engine calls these methods from one thread at a time.
    """

    def write(self, batch: Sequence[bytes]) -> None:
        """Write *batch*: JSON objects, each one event, without newlines.

        Raise to signal failure; the engine counts the batch as dropped
        (``sink_error``) or, in fail-closed mode, raises ``AuditError``.
        """

    def flush(self, timeout: float | None = None) -> None:
        """Make written events durable or visible, within *timeout* seconds."""

    def close(self, timeout: float | None = None) -> None:
        """Flush and release resources; no ``write`` follows."""
