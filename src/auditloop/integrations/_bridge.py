"""What the logging bridges share: a loop guard, caller lookup, field mapping.

A sink that forwards audit events into a logger and a handler that turns log
calls into audit events can both be installed in one application; the guard
keeps an event forwarded by one from coming back through the other.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator, Mapping
from types import FrameType
from typing import Any, Final

from auditloop._auditor import Auditor
from auditloop._config import get_auditor

__all__ = [
    "app_caller",
    "emit_mapping",
    "error_from_exc_info",
    "forwarding",
    "is_forwarding",
]


class _Guard(threading.local):
    active = False


_guard: Final = _Guard()
_INTEGRATIONS: Final = "auditloop.integrations"

#: Keys of a mapping that fill the event's own fields; the rest are attributes.
_EVENT_FIELDS: Final = frozenset(
    {"action", "actor", "target", "outcome", "category", "severity", "reason"}
)


@contextlib.contextmanager
def forwarding() -> Iterator[None]:
    """Mark the current thread as forwarding audit events into a logger."""
    previous = _guard.active
    _guard.active = True
    try:
        yield
    finally:
        _guard.active = previous


def is_forwarding() -> bool:
    """Return True while this thread forwards audit events into a logger."""
    return _guard.active


def app_caller(skip: tuple[str, ...]) -> str | None:
    """Return ``module:qualname`` of the nearest caller outside *skip*.

    *skip* names packages (``"structlog"`` skips ``structlog`` and
    ``structlog.stdlib``). Walks the stack, so call it only for the rare log
    calls that become audit events.
    """
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        name = str(frame.f_globals.get("__name__", "?"))
        if name.partition(".")[0] not in skip and not name.startswith(_INTEGRATIONS):
            return f"{name}:{frame.f_code.co_qualname}"
        frame = frame.f_back
    return None


def error_from_exc_info(exc_info: object) -> BaseException | None:
    """Return the exception a logging ``exc_info`` value designates, if any."""
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        error = exc_info[1]
        return error if isinstance(error, BaseException) else None
    if exc_info is True:
        return sys.exc_info()[1]
    return None


def emit_mapping(
    auditor: Auditor | None,
    fields: Mapping[str, Any],
    *,
    function: str | None,
    default_action: str,
    error: BaseException | None,
) -> None:
    """Emit one event whose fields come from a log call.

    ``action``, ``actor``, ``target``, ``outcome``, ``category``,
    ``severity`` and ``reason`` in *fields* fill those event fields; every
    other key becomes an attribute (and a nested ``attributes`` mapping is
    merged in). The outcome defaults to ``failure`` when *error* is set.

    Never raises, except ``AuditError`` from a fail-closed sink.
    """
    attributes: dict[str, Any] = {}
    for key, value in fields.items():
        if key == "attributes" and isinstance(value, Mapping):
            attributes.update(value)
        elif key not in _EVENT_FIELDS:
            attributes[key] = value
    action = fields.get("action")

    def text(key: str) -> str | None:
        value = fields.get(key)
        return None if value is None else str(value)

    (auditor or get_auditor()).emit_from(
        function,
        str(action) if action else default_action,
        actor=fields.get("actor"),
        target=fields.get("target"),
        outcome=text("outcome") or ("success" if error is None else "failure"),
        category=text("category"),
        severity=text("severity"),
        reason=text("reason"),
        error=error,
        duration_ms=None,
        attributes=attributes,
    )
