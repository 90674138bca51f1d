"""Self-audit: auditloop records changes to auditing itself.

- ``configure()`` replacing a configuration emits ``auditloop.configured``
  (what changed, never secrets) through the configuration being replaced,
  so the trail that changes records the change;
- :class:`suspended` pauses recording in one context and leaves
  ``auditloop.suspended``/``auditloop.resumed`` events;
- sink failures and recoveries emit ``auditloop.sink_failed`` and
  ``auditloop.sink_recovered``;
- sinks report their own deletions and checkpoints through the *sink hook*:
  an Auditor calls ``sink.attach_auditor(notify)`` on every sink that has
  that method, and ``notify(action, attributes)`` records an ``auditloop.*``
  event through that Auditor.

Every such event has the actor in scope (the ``bind()`` actor of whoever
configured or suspended), or ``{"id": "auditloop", "type": "system"}`` for
events auditloop's own threads notice.
"""

from __future__ import annotations

import contextvars
import os
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

from auditloop._delivery import after_sync_write
from auditloop.exceptions import AuditError

if TYPE_CHECKING:
    from auditloop._auditor import Auditor
    from auditloop._delivery import AsyncDelivery, SyncDelivery

__all__ = [
    "SYSTEM_ACTOR",
    "SinkHealth",
    "announce_configured",
    "attach_sinks",
    "current_suspension",
    "describe",
    "suspended",
    "system_event",
]

SYSTEM_ACTOR: Final[Mapping[str, str]] = {"id": "auditloop", "type": "system"}


def system_event(
    auditor: Auditor,
    action: str,
    attributes: Mapping[str, Any],
    *,
    outcome: str = "success",
    severity: str = "info",
    actor: dict[str, Any] | None = None,
) -> None:
    """Record one ``auditloop.*`` event through *auditor*; never raises."""
    try:
        auditor.record(
            "emit",
            action,
            outcome,
            auditor.source_base,
            dict(SYSTEM_ACTOR) if actor is None else actor,
            None,
            "system",
            severity,
            None,
            None,
            None,
            dict(attributes),
        )
    except Exception:  # AuditError from a fail-closed sink: not the caller's
        auditor.counters.incr("internal_errors")


# -- the sink hook -------------------------------------------------------------

Notify = Callable[..., None]


def _notifier(auditor: Auditor) -> Notify:
    # Called by a sink from inside its write(): the event goes through every
    # delivery again. Under a synchronous delivery it is recorded once that
    # write is done (never under its lock), before the caller's emit returns.
    def notify(action: str, attributes: Mapping[str, Any]) -> None:
        def record() -> None:
            system_event(auditor, action, attributes)

        if not after_sync_write(record):
            record()

    return notify


def attach_sinks(auditor: Auditor) -> None:
    """Offer *auditor* to every sink that defines ``attach_auditor(notify)``."""
    for delivery in auditor.deliveries:
        attach = getattr(delivery.sink, "attach_auditor", None)
        if not callable(attach):
            continue
        try:
            attach(_notifier(auditor))
        except Exception:  # a third-party sink's hook must not break configure
            auditor.counters.incr("internal_errors")


# -- sink health -----------------------------------------------------------------


class SinkHealth:
    """Notices sinks failing and recovering; checked by idle writer threads.

    A sink fails when its error count grows; it has recovered when it wrote
    events again while its error count stayed put. Synchronous sinks are
    checked whenever any asynchronous sink's writer is idle.
    """

    __slots__ = ("_lock", "_state")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # name -> (errors seen, written seen, failing, errors when it failed)
        self._state: dict[str, tuple[int, int, bool, int]] = {}

    def check(self, auditor: Auditor) -> None:
        """Emit ``auditloop.sink_failed``/``sink_recovered`` for changes."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            for delivery in auditor.deliveries:
                self._check_one(auditor, delivery)
        finally:
            self._lock.release()

    def _check_one(
        self, auditor: Auditor, delivery: AsyncDelivery | SyncDelivery
    ) -> None:
        errors, written = delivery.errors, delivery.written
        seen_errors, seen_written, failing, errors_at_failure = self._state.get(
            delivery.name, (0, 0, False, 0)
        )
        if errors > seen_errors:
            self._state[delivery.name] = (errors, written, True, errors_at_failure)
            if not failing:
                self._state[delivery.name] = (errors, written, True, seen_errors)
                system_event(
                    auditor,
                    "auditloop.sink_failed",
                    {"sink": delivery.name, "error": delivery.last_error},
                    outcome="failure",
                    severity="high",
                )
        elif failing and written > seen_written:
            self._state[delivery.name] = (errors, written, False, 0)
            system_event(
                auditor,
                "auditloop.sink_recovered",
                {"sink": delivery.name, "errors": errors - errors_at_failure},
            )
        else:
            self._state[delivery.name] = (errors, written, failing, errors_at_failure)


# -- configuration changes -------------------------------------------------------


def _public_url(url: str) -> str:
    """A URL without credentials, query or fragment (they may hold secrets)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _describe_sink(sink: object) -> str:
    name = type(sink).__name__
    path = getattr(sink, "path", None)
    url = getattr(sink, "url", None)
    if path is not None:
        details = [repr(str(path))]
        if getattr(sink, "chain", False):
            key_id = getattr(sink, "key_id", None)
            details.append(f"chain=True, key_id={key_id!r}" if key_id else "chain=True")
        return f"{name}({', '.join(details)})"
    if isinstance(url, str):
        return f"{name}({_public_url(url)!r})"
    return name


def _name(obj: object) -> str:
    name = getattr(obj, "name", None)
    if isinstance(name, str):
        return name
    kind = obj if callable(obj) and hasattr(obj, "__qualname__") else type(obj)
    return f"{getattr(kind, '__module__', '?')}:{getattr(kind, '__qualname__', '?')}"


def describe(auditor: Auditor) -> dict[str, Any]:
    """Summarise *auditor*'s configuration: no keys, passwords or URLs' secrets."""
    engine = auditor.rules
    rules = list(getattr(engine, "rules", ()) or ()) if engine is not None else []
    return {
        "service": auditor.service,
        "sinks": [_describe_sink(s) for s in auditor.sinks],
        "processors": [_name(p) for p in auditor.processors],
        "redact": repr(auditor.redactor) if auditor.redactor is not None else None,
        "rules": [_name(r) for r in rules],
        "policy": auditor.policy.to_dict() if auditor.policy is not None else None,
    }


def announce_configured(old: Auditor, new: Auditor) -> None:
    """Record ``auditloop.configured`` (what changed) through *old*.

    The trail being reconfigured records the change, so even switching
    every sink off leaves a trace there. Never raises.
    """
    try:
        before, after = describe(old), describe(new)
        changed = {
            key: {"from": before[key], "to": after[key]}
            for key in after
            if before.get(key) != after[key]
        }
        old.record(
            "emit",
            "auditloop.configured",
            "success",
            old.source_base,
            None,
            None,
            "configuration",
            "medium",
            None,
            None,
            None,
            {"changed": changed},
        )
    except Exception:  # AuditError from a fail-closed sink must not block configure
        old.counters.incr("internal_errors")


# -- suspension ------------------------------------------------------------------


class _Suspension:
    """One entered ``suspended`` block: its own state, never shared.

    ``parent`` is the suspension that was in effect where the block was
    entered; ``active`` is cleared when the block ends, so a task started
    inside it (which inherited this object with its context) stops being
    suspended then.
    """

    __slots__ = ("active", "owner", "parent", "skipped", "start_ns")

    def __init__(self, owner: object, parent: _Suspension | None) -> None:
        self.owner = owner
        self.parent = parent
        self.active = True
        self.skipped = 0
        self.start_ns = time.perf_counter_ns()


_suspension: contextvars.ContextVar[_Suspension | None] = contextvars.ContextVar(
    "auditloop_suspension", default=None
)
_count_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _count_lock  # noqa: PLW0603 - a fresh lock for the child process
    _count_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def current_suspension() -> _Suspension | None:
    """The suspension in effect in this context, if any.

    The innermost block still running among those this context (or the
    context it was copied from) entered: a block that has ended suspends
    nothing, even in a task that inherited it.
    """
    state = _suspension.get()
    while state is not None and not state.active:
        state = state.parent
    return state


class suspended:  # noqa: N801 - used like a function: ``with suspended(...)``
    """Pause recording in the current context, leaving a trace.

    On entry an ``auditloop.suspended`` event is recorded (with the actor in
    scope and *reason*); inside the block, events recorded in this thread
    or task are skipped and counted; on exit an ``auditloop.resumed`` event
    records how many were skipped and for how long. Tasks started inside
    the block are suspended only while the block lasts. Other threads keep
    auditing. ``auditloop.*`` events are never skipped. Works with ``with``
    and ``async with``; blocks nest, and one instance may be entered by
    several threads or tasks at once (each entry is its own suspension).
    Thread-safe.

    Raises:
        AuditError: on entry, when the ``auditloop.suspended`` event cannot
            be written to a fail-closed sink (then nothing is suspended);
            on a clean exit, when ``auditloop.resumed`` cannot be (the
            suspension has ended all the same).
    """

    __slots__ = ("_open", "_reason")

    def __init__(self, reason: str | None = None) -> None:
        self._reason = reason
        # Entries not yet exited, for an exit from another context than the
        # entry's (which cannot see the entry in its context variable).
        self._open: list[_Suspension] = []

    def _record(self, action: str, attributes: dict[str, Any] | None) -> None:
        from auditloop._config import get_auditor

        auditor = get_auditor()
        auditor.record(
            "emit",
            action,
            "success",
            auditor.source_base,
            None,
            None,
            "system",
            "medium",
            self._reason,
            None,
            None,
            attributes,
        )

    def __enter__(self) -> None:
        from auditloop._auditor import Auditor

        self._record("auditloop.suspended", None)
        state = _Suspension(self, _suspension.get())
        with _count_lock:
            self._open.append(state)
            Auditor.suspended_scopes += 1
        _suspension.set(state)

    def _end(self) -> _Suspension | None:
        """Close this context's innermost entry of this instance, if any."""
        from auditloop._auditor import Auditor

        current = _suspension.get()
        with _count_lock:
            state = current
            while state is not None and (state.owner is not self or not state.active):
                state = state.parent
            if state is None:  # exited in another context than entered
                state = next((s for s in reversed(self._open) if s.active), None)
            if state is None:  # more exits than entries: nothing to end
                return None
            state.active = False
            self._open.remove(state)
            Auditor.suspended_scopes -= 1
        if current is state:
            # set(), not reset(token): a token is only valid in the context
            # that made it, and this may be another task's copy.
            _suspension.set(state.parent)
        return state

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        state = self._end()
        if state is None:
            return
        duration_ms = (time.perf_counter_ns() - state.start_ns) / 1e6
        try:
            self._record(
                "auditloop.resumed",
                {"skipped": state.skipped, "suspended_ms": round(duration_ms, 3)},
            )
        except AuditError:
            if exc is None:
                raise

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)
