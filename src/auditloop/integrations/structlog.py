"""structlog bridges, both ways.

- :class:`StructlogSink` forwards audit events into the application's
  structlog logger, so they appear in its normal logs, through its
  processors and renderer.
- :func:`audit_events` is a structlog processor that turns log calls
  carrying ``audit=True`` or ``audit_action=...`` into audit events, without
  changing the log line.

Values bound with ``structlog.contextvars.bind_contextvars()`` reach every
audit event's ``context`` without any of this (see ``auditloop.bind``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import orjson
import structlog

from auditloop._config import get_auditor
from auditloop._delivery import Delivery
from auditloop.exceptions import AuditError, ConfigurationError
from auditloop.integrations._bridge import (
    app_caller,
    emit_mapping,
    error_from_exc_info,
    forwarding,
    is_forwarding,
)

if TYPE_CHECKING:
    from structlog.typing import EventDict, WrappedLogger

__all__ = ["StructlogSink", "audit_events"]

_LEVELS: Final = ("debug", "info", "warning", "error", "critical")

#: Keys structlog or its common processors add, never audit attributes.
_NOT_ATTRIBUTES: Final = frozenset(
    {
        "audit",
        "audit_action",
        "event",
        "exc_info",
        "exception",  # format_exc_info's traceback text: the error is recorded
        "level",
        "logger",
        "logger_name",
        "positional_args",
        "stack",
        "stack_info",
        "timestamp",
    }
)
_SKIP_FRAMES: Final = ("structlog", "logging")


class StructlogSink:
    """Writes audit events to a structlog logger, one log call per event.

    Each event is logged as ``logger.<level>(action, audit_event={...})``
    (the whole event as a dict), so it goes through the logger's processors
    like any other log call. The :func:`audit_events` processor ignores
    these calls, so both can be installed at once without a loop.

    Args:
        logger: a structlog logger; default ``structlog.get_logger("auditloop")``.
        level: the log method to call: ``"debug"``, ``"info"`` (default),
            ``"warning"``, ``"error"`` or ``"critical"``.
        delivery: the delivery policy (default: the auditor's, async). The
            logger is called from the delivery thread in async mode.

    Raises:
        ConfigurationError: for an unknown *level*.
    """

    def __init__(
        self,
        logger: Any = None,
        *,
        level: str = "info",
        delivery: Delivery | None = None,
    ) -> None:
        if level not in _LEVELS:
            raise ConfigurationError(
                f"StructlogSink: level must be one of {', '.join(_LEVELS)}; "
                f"got {level!r}"
            )
        self.logger = (
            logger if logger is not None else structlog.get_logger("auditloop")
        )
        self.level = level
        self.delivery = delivery

    def write(self, batch: Sequence[bytes]) -> None:
        """Log each event of *batch*; raises what the logger raises."""
        log = getattr(self.logger, self.level)
        with forwarding():
            for line in batch:
                event = orjson.loads(line)
                log(str(event.get("action", "")), audit_event=event)

    def flush(self, timeout: float | None = None) -> None:
        """Nothing to flush: the logger's own output decides."""

    def close(self, timeout: float | None = None) -> None:
        """Nothing to release: the logger belongs to the application."""


def audit_events(
    logger: WrappedLogger,  # noqa: ARG001 - structlog's processor signature
    method_name: str,  # noqa: ARG001
    event_dict: EventDict,
) -> EventDict:
    """structlog processor: record log calls marked as audit as audit events.

    A log call with ``audit=True`` or an ``audit_action=`` key becomes an
    audit event; other calls pass untouched at the cost of two dict lookups.
    The action is ``audit_action`` if given, else the log message. The keys
    ``actor``, ``target``, ``outcome``, ``category``, ``severity`` and
    ``reason`` fill those event fields; an exception passed as ``exc_info``
    becomes ``error`` (and the outcome ``failure`` unless one is given); the
    other keys become ``attributes``, except keys structlog's processors add
    (``timestamp``, ``level``, ``logger``, private ``_`` keys) and values
    bound with ``structlog.contextvars``, which land in ``context`` anyway.
    ``source.function`` is the application function that logged.

    The event dict is returned unchanged, so the log line stays what it was.
    Place the processor anywhere before the renderer (best before
    ``format_exc_info``: after it, the error is taken from the exception
    being handled, so log it from inside the ``except`` block).

    Raises:
        AuditError: only from a fail-closed sink; nothing else escapes.
    """
    if event_dict.get("audit") is not True and "audit_action" not in event_dict:
        return event_dict
    if is_forwarding():
        return event_dict
    try:
        bound = structlog.contextvars.get_contextvars()
        fields = {
            key: value
            for key, value in event_dict.items()
            if key not in _NOT_ATTRIBUTES
            and not key.startswith("_")
            and not (key in bound and bound[key] is value)
        }
        action = event_dict.get("audit_action") or event_dict.get("event")
        fields["action"] = str(action) if action is not None else "log"
        exc_info = event_dict.get("exc_info")
        if exc_info is None and "exception" in event_dict:
            # format_exc_info (or dict_tracebacks) ran first and replaced
            # exc_info with text; the exception is still the one in flight.
            exc_info = True
        emit_mapping(
            None,
            fields,
            function=app_caller(_SKIP_FRAMES),
            default_action="log",
            error=error_from_exc_info(exc_info),
        )
    except AuditError:
        raise
    except Exception:
        # A log call must never fail because of auditing; the loss is counted.
        get_auditor().counters.incr("processor_errors")
    return event_dict
