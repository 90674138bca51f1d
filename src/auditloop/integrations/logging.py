"""Standard library :mod:`logging` bridges, both ways.

- :class:`AuditLogHandler` turns log records carrying
  ``extra={"audit": {...}}`` (or ``extra={"audit": True}``) into audit
  events.
- :class:`LoggingSink` writes audit events to a stdlib logger, for
  applications that log without structlog.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Final, Literal

import orjson

from auditloop._auditor import Auditor
from auditloop._delivery import Delivery
from auditloop._render import render_line
from auditloop.exceptions import AuditError, ConfigurationError
from auditloop.integrations._bridge import (
    emit_mapping,
    error_from_exc_info,
    forwarding,
    is_forwarding,
)

__all__ = ["AuditLogHandler", "LoggingSink"]

_FORMATS: Final = ("json", "pretty")


def _check_level(owner: str, level: int | str) -> int:
    if isinstance(level, bool) or not isinstance(level, int | str):
        raise ConfigurationError(
            f"{owner}: level must be a logging level, got {level!r}"
        )
    if isinstance(level, str):
        number = logging.getLevelNamesMapping().get(level.upper())
        if number is None:
            raise ConfigurationError(
                f"{owner}: level must be a logging level, got {level!r}"
            )
        return number
    return level


def _message(record: logging.LogRecord) -> str:
    """The record's formatted message, or its unformatted ``msg`` if that fails."""
    try:
        return record.getMessage()
    except Exception:  # args that do not fit the format must not lose the event
        try:
            return str(record.msg)
        except Exception:
            return f"<unprintable {type(record.msg).__name__}>"


class AuditLogHandler(logging.Handler):
    """A logging handler that records audit-marked log records as audit events.

    Records without an ``audit`` attribute are ignored, so the handler can sit
    on the root logger next to the application's other handlers. For
    ``extra={"audit": {...}}`` the mapping's ``action``, ``actor``,
    ``target``, ``outcome``, ``category``, ``severity`` and ``reason`` fill
    those event fields and its other keys become ``attributes``; the action
    defaults to the formatted log message (the unformatted ``msg`` when its
    arguments do not fit), which is also the action for
    ``extra={"audit": True}``. A record's exception (``exc_info``) becomes
    ``error`` and the outcome ``failure`` unless one is given.
    ``source.function`` is ``<logger name>:<function name>``.

    Thread-safe; called in the logging thread (the caller's, or a
    ``QueueListener``'s), so bound context is the caller's only when logging
    is synchronous. Records that :class:`LoggingSink` writes are ignored.

    Args:
        level: the handler's threshold, as for any handler.
        auditor: the :class:`~auditloop.Auditor` to record with; default:
            the global one at the time of each record.

    Raises:
        ConfigurationError: for an invalid *level*.
    """

    def __init__(
        self, level: int | str = logging.NOTSET, *, auditor: Auditor | None = None
    ) -> None:
        super().__init__(_check_level("AuditLogHandler", level))
        self.auditor = auditor

    def emit(self, record: logging.LogRecord) -> None:
        """Record *record* as an audit event if it is marked as one.

        Never raises, except ``AuditError`` from a fail-closed sink; other
        failures go to :meth:`logging.Handler.handleError`.
        """
        data = record.__dict__.get("audit")
        if not (data is True or isinstance(data, Mapping)) or is_forwarding():
            return
        try:
            fields = data if isinstance(data, Mapping) else {}
            # The message is only the default action: not formatted (which
            # may fail on mismatched args) when the mapping names one.
            emit_mapping(
                self.auditor,
                fields,
                function=f"{record.name}:{record.funcName}",
                default_action="" if fields.get("action") else _message(record),
                error=error_from_exc_info(record.exc_info),
            )
        except AuditError:
            raise
        except Exception:
            self.handleError(record)


class LoggingSink:
    """Writes audit events to a stdlib logger, one record per event.

    Each record's message is the event as a JSON line (``format="json"``) or
    one readable line (``format="pretty"``), and the decoded event is attached
    as ``record.audit_event`` for structured formatters. Records are skipped
    (not even decoded) while the logger is disabled for *level*.

    Args:
        logger: a :class:`logging.Logger` or a logger name; default
            ``logging.getLogger("auditloop.events")``.
        level: the records' level (default ``INFO``), a number or a name.
        format: ``"json"`` (default) or ``"pretty"``.
        delivery: the delivery policy (default: the auditor's, async). The
            logger is called from the delivery thread in async mode.

    Raises:
        ConfigurationError: for an invalid *logger*, *level* or *format*.
    """

    def __init__(
        self,
        logger: logging.Logger | str | None = None,
        *,
        level: int | str = logging.INFO,
        format: Literal["json", "pretty"] = "json",  # noqa: A002 - as StdoutSink
        delivery: Delivery | None = None,
    ) -> None:
        if logger is None:
            logger = logging.getLogger("auditloop.events")
        elif isinstance(logger, str):
            logger = logging.getLogger(logger)
        elif not isinstance(logger, logging.Logger):
            raise ConfigurationError(
                f"LoggingSink: logger must be a logging.Logger or a name, "
                f"got {logger!r}"
            )
        if format not in _FORMATS:
            raise ConfigurationError(
                f'LoggingSink: format must be "json" or "pretty", got {format!r}'
            )
        self.logger = logger
        self.level = _check_level("LoggingSink", level)
        self.format = format
        self.delivery = delivery

    def write(self, batch: Sequence[bytes]) -> None:
        """Log each event of *batch*; raises what the logger raises."""
        if not self.logger.isEnabledFor(self.level):
            return
        with forwarding():
            for line in batch:
                event = orjson.loads(line)
                message = (
                    line.decode("utf-8")
                    if self.format == "json"
                    else render_line(event)
                )
                self.logger.log(self.level, message, extra={"audit_event": event})

    def flush(self, timeout: float | None = None) -> None:
        """Flush the logger's handlers (and its ancestors')."""
        logger: logging.Logger | None = self.logger
        while logger is not None:
            for handler in logger.handlers:
                handler.flush()
            logger = logger.parent if logger.propagate else None

    def close(self, timeout: float | None = None) -> None:
        """Flush; the logger and its handlers belong to the application."""
        self.flush(timeout)
