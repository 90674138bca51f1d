"""Global configuration: one Auditor behind a lock, and the module-level API.

``configure()`` may be called again at any time (tests do): the new Auditor
replaces the old one atomically, and the old one is flushed and shut down.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable, Collection
from typing import Any, ParamSpec, TypeVar

from auditloop._auditor import Auditor, _caller
from auditloop._capture import Recorder, TargetSpec, make_audit, make_audited
from auditloop._selfaudit import announce_configured

__all__ = [
    "audit",
    "audited",
    "configure",
    "emit",
    "flush",
    "get_auditor",
    "shutdown",
    "stats",
]

P = ParamSpec("P")
R = TypeVar("R")

#: Seconds the previous Auditor gets to deliver its queue on reconfiguration.
_HANDOVER_TIMEOUT = 5.0


class _Global:
    lock = threading.RLock()
    auditor: Auditor | None = None
    implicit: Auditor | None = None  # the default made before configure()


def get_auditor() -> Auditor:
    """Return the configured Auditor (or, before ``configure()``, a default one
    that writes JSON lines to standard output, so no event is lost unseen)."""
    auditor = _Global.auditor
    if auditor is None:
        with _Global.lock:
            if _Global.auditor is None:
                from auditloop.sinks import StdoutSink

                _Global.auditor = _Global.implicit = Auditor(sinks=[StdoutSink()])
            auditor = _Global.auditor
    return auditor


def _configurer(factory: Callable[P, Auditor]) -> Callable[P, Auditor]:
    def configure(*args: P.args, **kwargs: P.kwargs) -> Auditor:
        """Configure global auditing; takes exactly :class:`Auditor`'s arguments.

        Validates everything first: on a :class:`ConfigurationError` the
        previous configuration stays in place. Otherwise the new Auditor
        replaces the previous one, which is flushed and shut down (sinks
        passed again are kept open). Thread-safe.

        Returns:
            The new global :class:`Auditor`.
        """
        new = factory(*args, **kwargs)
        with _Global.lock:
            old, _Global.auditor = _Global.auditor, new
        if old is not None:
            if old is not _Global.implicit:
                # Recorded by the configuration being replaced: its trail
                # shows the change, even when the new one audits nothing.
                announce_configured(old, new)
            old.shutdown(_HANDOVER_TIMEOUT, keep=new.sinks, successor=new)
        return new

    return configure


configure = _configurer(Auditor)


def audited(
    action: str,
    *,
    target: TargetSpec = None,
    category: str | None = None,
    severity: str | None = None,
    capture: Collection[str] = (),
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Record every call of the decorated function as an audit event.

    Works on functions, ``async def`` functions, generator and async
    generator functions, methods, staticmethods, classmethods,
    ``functools.partial`` objects and callable instances; keeps the
    signature and type. The return value is never changed and an exception
    is re-raised as the very same object, after recording
    ``outcome="failure"`` (``"denied"`` for ``PermissionError`` and the
    configured ``denied`` types) with ``error.type``/``error.message``. A
    generator is recorded once, when it finishes; one closed before the end
    records ``success`` with ``attributes.closed_early`` (see docs/api.md).

    Args:
        action: the dotted action name, e.g. ``"document.delete"``.
        target: a string, or a callable receiving the call's arguments by
            name and returning the target (``lambda doc_id, **_: ...``).
        category: the event category.
        severity: the event severity.
        capture: parameter names whose values go into ``attributes``;
            include ``"return"`` to record the return value too.

    Raises:
        ConfigurationError: at decoration time, for a bad action, target or
            a capture name that is not a parameter.
    """
    return make_audited(
        get_auditor,
        action,
        target=target,
        category=category,
        severity=severity,
        capture=capture,
    )


def audit(
    action: str,
    *,
    target: object = None,
    actor: object = None,
    category: str | None = None,
    severity: str | None = None,
    reason: str | None = None,
    **attributes: Any,
) -> Recorder:
    """Record the enclosed block as one audit event (``with`` or ``async with``).

    The yielded :class:`Recorder` adjusts the event: ``rec.set(**attrs)``,
    ``rec.target = ...``, ``rec.outcome = ...``, ``rec.reason = ...``. The
    event is emitted on exit; an exception records ``failure`` (or
    ``denied``) and propagates unchanged, except ``GeneratorExit`` (a
    generator closed early around the block): ``success`` with
    ``attributes.closed_early``.
    """
    return make_audit(
        get_auditor,
        action,
        target=target,
        actor=actor,
        category=category,
        severity=severity,
        reason=reason,
        attributes=attributes,
    )


def emit(
    action: str,
    *,
    actor: object = None,
    target: object = None,
    outcome: str = "success",
    category: str | None = None,
    severity: str | None = None,
    reason: str | None = None,
    error: object = None,
    duration_ms: float | None = None,
    **attributes: Any,
) -> None:
    """Record one event now; extra keyword arguments become ``attributes``.

    Never raises (except ``AuditError`` from a fail-closed sink).
    """
    get_auditor().emit_from(
        _caller(1),
        action,
        actor=actor,
        target=target,
        outcome=outcome,
        category=category,
        severity=severity,
        reason=reason,
        error=error,
        duration_ms=duration_ms,
        attributes=attributes,
    )


def flush(timeout: float | None = 5.0) -> bool:
    """Wait up to *timeout* seconds until every emitted event is written.

    Returns True when everything was written in time.
    """
    auditor = _Global.auditor
    return True if auditor is None else auditor.flush(timeout)


def shutdown(timeout: float | None = 5.0) -> bool:
    """Deliver what is queued and stop, within *timeout* seconds.

    Runs automatically at interpreter exit. Events emitted afterwards go to
    a fresh default configuration.
    """
    with _Global.lock:
        auditor, _Global.auditor = _Global.auditor, None
    return True if auditor is None else auditor.shutdown(timeout)


def stats() -> dict[str, Any]:
    """Return delivery and drop counters of the global configuration."""
    return get_auditor().stats()


atexit.register(shutdown)
