"""The Auditor: build → process → encode → deliver → rule match, for one config.

The global functions (``auditloop.emit`` …) use the Auditor made by
``configure()``; an Auditor can also be created and used directly, without
global state.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
import types
import weakref
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, ParamSpec, TypeVar

import orjson

from auditloop._clock import format_rfc3339, seconds_left, uuid7
from auditloop._context import scope_get, scope_with_structlog
from auditloop._counters import Counters
from auditloop._delivery import (
    AsyncDelivery,
    Delivery,
    DeliveryClosed,
    SyncDelivery,
    start_delivery,
)
from auditloop._encode import COUNTERS as ENCODE_COUNTERS
from auditloop._encode import MAX_STRING, encode, to_jsonable
from auditloop._event import AuditEvent, actor_dict, target_dict
from auditloop._options import checked_options
from auditloop._policy import PolicyCache, Skip, gate, load_policy
from auditloop._redact import Redactor
from auditloop._selfaudit import SinkHealth, attach_sinks
from auditloop._types import Processor, Sink
from auditloop.exceptions import AuditError, ConfigurationError, DropEvent

if TYPE_CHECKING:
    from auditloop._capture import Recorder
    from auditloop.rules._engine import RuleEngine

P = ParamSpec("P")
R = TypeVar("R")

_dumps = orjson.dumps
_modules = sys.modules

__all__ = ["Auditor", "add_tap", "remove_tap"]

# Lists that testing.capture() appends to, whatever auditor emits the event.
_taps: list[list[AuditEvent]] = []
_taps_lock = threading.Lock()


def add_tap(events: list[AuditEvent]) -> None:
    """Start appending every emitted event (as written) to *events*."""
    with _taps_lock:
        _taps.append(events)


def remove_tap(events: list[AuditEvent]) -> None:
    """Stop appending to *events*."""
    with _taps_lock:
        for i, tap in enumerate(_taps):
            if tap is events:
                del _taps[i]
                break


def _error_dict(error: object) -> dict[str, str]:
    if isinstance(error, BaseException):
        return {"type": type(error).__qualname__, "message": _str(error)}
    if isinstance(error, Mapping):
        try:
            return {_str(k): _str(v) for k, v in error.items()}
        except Exception:
            return {"type": "error", "message": "<unreadable error mapping>"}
    return {"type": "error", "message": _str(error)}


def _fast_callable(processor: Processor) -> Processor:
    """*processor*, or its bound ``__call__`` when it is an instance of a class
    defining one: calling that costs ~35 ns a call instead of ~85 ns."""
    # As defined, not as getattr returns it: a staticmethod or classmethod
    # __call__ must not be bound to the instance.
    call = next(
        (
            k.__dict__["__call__"]
            for k in type(processor).__mro__
            if "__call__" in k.__dict__
        ),
        None,
    )
    if isinstance(call, types.FunctionType):
        bound: Processor = call.__get__(processor)
        return bound
    return processor


def _str(value: object) -> str:
    try:
        return str(value)
    except Exception:  # a broken __str__ must not lose the event
        return "<unprintable message>"


def _sink_names(sinks: Sequence[Sink]) -> list[str]:
    names = [type(s).__name__ for s in sinks]
    return [
        name if names.count(name) == 1 else f"{name}#{names[:i].count(name) + 1}"
        for i, name in enumerate(names)
    ]


_live_auditors: weakref.WeakSet[Auditor] = weakref.WeakSet()


class Auditor:
    """One audit configuration: sinks, processors, redaction, rules.

    Thread-safe. Methods never raise into the caller, except ``AuditError``
    from a sink whose delivery is fail-closed
    (``Delivery(mode="sync", on_error="raise")``).

    Args:
        service: stamped on every event as ``source.service``.
        sinks: where events go; default: none (use ``testing.capture()``).
        processors: extra processors, run after the built-in ones.
        redact: ``True`` (default) for the default :class:`Redactor`, a
            configured :class:`Redactor`, or ``False`` to turn redaction off.
        rules: rule objects from :mod:`auditloop.rules`.
        rule_store: where rules keep their window state (default: in memory).
        delivery: the default delivery policy for sinks without their own.
        denied: exception types recorded as ``outcome="denied"``.
        clock: a function returning Unix time in seconds (tests inject a
            ``FakeClock``); default: the system clock.
        drop_report_interval: at most one ``auditloop.dropped`` event per
            this many seconds while drops keep happening; ``None``: never.
        trace_context: put the active OpenTelemetry span's ``trace_id`` and
            ``span_id`` in each event's context. ``None`` (default): only if
            the application imported ``opentelemetry.trace`` before this
            configuration; ``True`` requires ``opentelemetry-api``.
        policy: an audit :class:`~auditloop.Policy` (or a list of rule
            dicts, or a TOML file path) choosing per event what is recorded:
            ``none``, ``metadata``, ``request`` or ``full``.

    Raises:
        ConfigurationError: on any invalid argument, naming it.
    """

    #: Contexts inside ``auditloop.suspended()`` right now (any thread).
    suspended_scopes: ClassVar[int] = 0

    @checked_options
    def __init__(
        self,
        *,
        service: str | None = None,
        sinks: Iterable[Sink] = (),
        processors: Iterable[Processor] = (),
        redact: bool | Redactor = True,
        rules: Iterable[Any] = (),
        rule_store: Any = None,
        delivery: Delivery | None = None,
        denied: tuple[type[BaseException], ...] = (PermissionError,),
        clock: Callable[[], float] | None = None,
        drop_report_interval: float | None = 60.0,
        trace_context: bool | None = None,
        policy: object = None,
    ) -> None:
        self.service = service
        self.sinks = self._check_sinks(sinks)
        self.processors = self._check_processors(processors)
        self.redactor = self._check_redact(redact)
        self.denied = self._check_denied(denied)
        if delivery is not None and not isinstance(delivery, Delivery):
            raise ConfigurationError(
                f"configure: delivery must be a sinks.Delivery, got {delivery!r}"
            )
        if clock is not None and not callable(clock):
            raise ConfigurationError(
                f"configure: clock must be callable, got {clock!r}"
            )
        if drop_report_interval is not None and (
            isinstance(drop_report_interval, bool)
            or not isinstance(drop_report_interval, int | float)
            or drop_report_interval < 0
        ):
            raise ConfigurationError(
                "configure: drop_report_interval must be None or a number of "
                f"seconds >= 0, got {drop_report_interval!r}"
            )
        self.clock = clock
        # Rounded to whole microseconds (what the timestamp shows): float
        # seconds times 1e9 can land a nanosecond short of the intended time.
        self._time_ns: Callable[[], int] = (
            time.time_ns
            if clock is None
            else (lambda: round(clock() * 1_000_000) * 1000)
        )
        self._chain: tuple[Processor, ...] = tuple(
            map(
                _fast_callable,
                (
                    *_trace_processors(trace_context),
                    *((self.redactor,) if self.redactor else ()),
                    *self.processors,
                ),
            )
        )
        # Nested dicts (context, source) are shared between events; copy them
        # only when a user processor could mutate them unredacted.
        self._copy_nested = bool(self.processors) and self.redactor is None
        self.policy = load_policy(policy)
        self.policy_cache = PolicyCache(self.policy) if self.policy else None
        self._health = SinkHealth()
        self.source_base = self._make_source_base()
        self.counters = Counters()
        self._drop_report_interval = drop_report_interval
        self._reported_drops: dict[str, dict[str, int]] = {}
        self._last_drop_report = -1e18
        self._report_lock = threading.Lock()
        default_policy = delivery if delivery is not None else Delivery()
        self.deliveries: list[AsyncDelivery | SyncDelivery] = [
            start_delivery(
                sink,
                getattr(sink, "delivery", None) or default_policy,
                name,
                self._on_idle,
            )
            for sink, name in zip(self.sinks, _sink_names(self.sinks), strict=True)
        ]
        self.rules: RuleEngine | None = None
        if not isinstance(rules, Iterable) or isinstance(rules, str | bytes):
            raise ConfigurationError(
                f"configure: rules must be a list of rules, got {rules!r}"
            )
        rule_list = list(rules)
        if rule_list:
            from auditloop.rules._engine import RuleEngine

            self.rules = RuleEngine(
                rule_list, auditor=self, clock=clock, store=rule_store
            )
        self._shut_down = False
        self._successor: Auditor | None = None
        _live_auditors.add(self)
        attach_sinks(self)

    # -- validation (configure time) -----------------------------------------

    @staticmethod
    def _check_sinks(sinks: Iterable[Sink]) -> tuple[Sink, ...]:
        if not isinstance(sinks, Iterable) or isinstance(sinks, str | bytes):  # type: ignore[unreachable]
            raise ConfigurationError(f"configure: sinks must be a list, got {sinks!r}")
        checked = tuple(sinks)
        for i, sink in enumerate(checked):
            missing = [
                m
                for m in ("write", "flush", "close")
                if not callable(getattr(sink, m, None))
            ]
            if missing:
                raise ConfigurationError(
                    f"configure: sinks[{i}] ({sink!r}) is not a sink: "
                    f"it has no {', '.join(missing)} method"
                )
            policy = getattr(sink, "delivery", None)
            if policy is not None and not isinstance(policy, Delivery):
                raise ConfigurationError(
                    f"configure: sinks[{i}].delivery must be a sinks.Delivery, "
                    f"got {policy!r}"
                )
        # Each chained FileSink's checkpoint is a record in every such sink:
        # with checkpoint_every <= their number, checkpoints would cause
        # checkpoints forever.
        chained = [
            (i, sink)
            for i, sink in enumerate(checked)
            if getattr(sink, "chain", False) is True
        ]
        for i, sink in chained:
            every = getattr(sink, "checkpoint_every", None)
            if isinstance(every, int) and every <= len(chained):
                raise ConfigurationError(
                    f"configure: sinks[{i}].checkpoint_every must be more than "
                    f"the {len(chained)} chained sinks (each checkpoint is a "
                    f"record in all of them), got {every}"
                )
        return checked

    @staticmethod
    def _check_processors(processors: Iterable[Processor]) -> tuple[Processor, ...]:
        if not isinstance(processors, Iterable):
            raise ConfigurationError(
                f"configure: processors must be a list, got {processors!r}"
            )
        checked = tuple(processors)
        for i, proc in enumerate(checked):
            if not callable(proc):
                raise ConfigurationError(
                    f"configure: processors[{i}] ({proc!r}) is not callable"
                )
        return checked

    @staticmethod
    def _check_redact(redact: bool | Redactor) -> Redactor | None:
        if redact is True:
            return Redactor()
        if redact is False:
            return None
        if isinstance(redact, Redactor):
            return redact
        raise ConfigurationError(
            f"configure: redact must be True, False or a Redactor, got {redact!r}"
        )

    @staticmethod
    def _check_denied(
        denied: tuple[type[BaseException], ...],
    ) -> tuple[type[BaseException], ...]:
        if not isinstance(denied, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in denied
        ):
            raise ConfigurationError(
                f"configure: denied must be a tuple of exception types, got {denied!r}"
            )
        return denied

    def _make_source_base(self) -> dict[str, Any]:
        base: dict[str, Any] = {"host": _hostname(), "pid": os.getpid()}
        if self.service:
            base = {"service": self.service, **base}
        return base

    def source_for(self, function: str | None) -> dict[str, Any]:
        """Return the ``source`` field for events recorded by *function*."""
        if function is None:
            return self.source_base
        return {**self.source_base, "function": function}

    # -- the hot path --------------------------------------------------------

    def record(  # noqa: PLR0917 - positional on purpose: the hot path
        self,
        method: str,
        action: str,
        outcome: str,
        source: dict[str, Any],
        actor: dict[str, Any] | None,
        target: dict[str, Any] | None,
        category: str | None,
        severity: str | None,
        reason: str | None,
        error: object,
        duration_ms: float | None,
        attributes: dict[str, Any] | None,
    ) -> None:
        """Build one event and send it through processors, sinks, taps and rules.

        This is the hot path, written as one function on purpose (each call
        layer costs ~0.1 µs). Arguments are positional and already in wire
        form (see ``actor_dict``/``target_dict``); a missing actor comes from
        the bound scope. Never raises, except :class:`AuditError` from a
        fail-closed sink.
        """
        try:
            ns = self._time_ns()
            event: dict[str, Any] = {
                "id": uuid7(ns),
                "time": format_rfc3339(ns),
                "action": action,
            }
            if category is not None:
                event["category"] = category
            event["outcome"] = outcome
            if severity is not None:
                event["severity"] = severity
            scope = scope_get()
            if _modules.get("structlog.contextvars") is not None:  # rare: merge
                scope = scope_with_structlog()
            if actor is None:
                actor = scope.actor
            if self.policy_cache is not None or self.suspended_scopes:
                gated = gate(self, method, action, category, actor, attributes)
                if isinstance(gated, Skip):
                    return
                attributes = gated
            if actor is not None:
                event["actor"] = actor
            if target is not None:
                event["target"] = target
            if reason is not None:
                event["reason"] = reason
            if error is not None:
                event["error"] = _error_dict(error)
            if duration_ms is not None:
                event["duration_ms"] = duration_ms
            if attributes:
                event["attributes"] = attributes
            if scope.context:
                event["context"] = (
                    dict(scope.context) if self._copy_nested else scope.context
                )
            event["source"] = dict(source) if self._copy_nested else source
            event["schema"] = "auditloop/1"
            for processor in self._chain:
                try:
                    result: object = processor(self, method, event)
                except DropEvent:
                    self.counters.incr("processor_dropped")
                    return
                except Exception:
                    # A broken processor must not lose the event: skip its change.
                    self.counters.incr("processor_errors")
                    continue
                if result is not event:  # most processors return the same dict
                    if type(result) is dict or isinstance(result, dict):
                        event = result
                    else:  # e.g. a forgotten ``return event``: keep the event
                        self.counters.incr("processor_errors")
            try:
                line = _dumps(event, default=to_jsonable)
            except Exception:
                line = b""
            if not line or len(line) > MAX_STRING:
                line = encode(event)  # the slow, never-failing path
        except Exception:  # defensive: nothing may escape, every loss is counted
            self.counters.incr("internal_errors")
            self.counters.incr("internal_dropped")
            return
        failure: AuditError | None = None
        for delivery in self.deliveries:
            try:
                delivery.put(line)
            except AuditError as exc:  # fail-closed: still deliver elsewhere first
                failure = exc
            except DeliveryClosed:  # configure() replaced us meanwhile
                failure = self._hand_over(line) or failure
                break
        if _taps:
            try:
                self._tap(line)
            except Exception:  # testing.capture() must not raise into the app
                self.counters.incr("internal_errors")
        if self.rules is not None:
            try:
                self.rules.observe(event, ns / 1e9)
            except Exception:
                self.counters.incr("rule_errors")
        if failure is not None:
            raise failure

    @staticmethod
    def _tap(line: bytes) -> None:
        captured = AuditEvent.from_dict(orjson.loads(line))
        for tap in _taps:
            tap.append(captured)

    # -- public methods ------------------------------------------------------

    def emit(
        self,
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
        attributes: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        """Record one event now.

        Keyword arguments other than the named ones become ``attributes``.
        ``source.function`` is the caller's ``module:qualname``. Never raises
        (except ``AuditError`` in fail-closed mode).
        """
        self.emit_from(
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
            attributes={**attributes, **fields} if attributes else fields,
        )

    def emit_from(
        self,
        function: str | None,
        action: str,
        *,
        actor: object,
        target: object,
        outcome: str,
        category: str | None,
        severity: str | None,
        reason: str | None,
        error: object,
        duration_ms: float | None,
        attributes: dict[str, Any],
    ) -> None:
        """:meth:`emit` with an explicit ``source.function`` (for wrappers)."""
        self.record(
            "emit",
            action,
            outcome,
            self.source_for(function),
            actor_dict(actor),
            target_dict(target),
            category,
            severity,
            reason,
            error,
            duration_ms,
            attributes,
        )

    def audited(
        self,
        action: str,
        *,
        target: str | Callable[..., object] | None = None,
        category: str | None = None,
        severity: str | None = None,
        capture: Collection[str] = (),
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Like :func:`auditloop.audited`, recording through this Auditor."""
        from auditloop._capture import make_audited

        return make_audited(
            lambda: self,
            action,
            target=target,
            category=category,
            severity=severity,
            capture=capture,
        )

    def audit(
        self,
        action: str,
        *,
        target: object = None,
        actor: object = None,
        category: str | None = None,
        severity: str | None = None,
        reason: str | None = None,
        **attributes: Any,
    ) -> Recorder:
        """Like :func:`auditloop.audit`, recording through this Auditor."""
        from auditloop._capture import make_audit

        return make_audit(
            lambda: self,
            action,
            target=target,
            actor=actor,
            category=category,
            severity=severity,
            reason=reason,
            attributes=attributes,
        )

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Wait until every event emitted so far is written by its sink.

        Returns within *timeout* seconds (shared by all sinks): True when all
        is written, False when the deadline passed (events stay queued).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        ok = True
        for delivery in self.deliveries:
            ok = delivery.flush(seconds_left(deadline)) and ok
        if self.rules is not None:
            ok = self.rules.flush(seconds_left(deadline)) and ok
        return ok

    def shutdown(
        self,
        timeout: float | None = 5.0,
        keep: Iterable[Sink] = (),
        successor: Auditor | None = None,
    ) -> bool:
        """Deliver what is queued, close the sinks, stop threads.

        Events first, then queued alert callbacks, all within *timeout*
        seconds. What could not be delivered in time is counted as
        ``shutdown_timeout``. Sinks in *keep* are flushed but not closed,
        and events recorded here after shutdown go to *successor* instead of
        being dropped (both used when ``configure()`` replaces this Auditor).
        """
        if self._shut_down:
            # Already stopped (sinks handed on stay open): only wait, within
            # the timeout, for a write that was still running.
            return self.flush(timeout)
        self._shut_down = True
        self._successor = successor
        deadline = None if timeout is None else time.monotonic() + timeout
        kept = {id(sink) for sink in keep}
        ok = True
        for delivery in self.deliveries:
            delivery.hand_over = successor is not None
        for delivery in self.deliveries:
            close = id(delivery.sink) not in kept
            ok = delivery.shutdown(seconds_left(deadline), close_sink=close) and ok
        if self.rules is not None:
            ok = self.rules.shutdown(seconds_left(deadline)) and ok
        return ok

    def _hand_over(self, line: bytes) -> AuditError | None:
        """Deliver *line*, refused by this shut-down Auditor, via its successor.

        An event recorded while ``configure()`` swapped configurations
        reaches the new sinks instead of being lost; a sink kept across both
        may see it twice (readers dedupe on ``id``). Returns the successor's
        fail-closed error, if any.
        """
        successor = self._successor
        if successor is None:  # pragma: no cover - hand_over implies one
            return None
        failure: AuditError | None = None
        for delivery in successor.deliveries:
            try:
                delivery.put(line)
            except AuditError as exc:
                failure = exc
            except DeliveryClosed:  # replaced in turn: follow the chain
                return successor._hand_over(line) or failure
        return failure

    def stats(self) -> dict[str, Any]:
        """Counters: per-sink written/queued/dropped/errors, totals, conversions.

        ``processor_errors`` counts processors that raised or returned
        something other than a dict (their change is skipped);
        ``internal_errors`` counts failures inside auditloop itself (an
        event lost that way is also counted under ``dropped["internal"]``,
        a failing ``testing.capture()`` tap only here).
        """
        sinks = {d.name: d.stats() for d in self.deliveries}
        dropped: dict[str, int] = {}
        for sink_stats in sinks.values():
            for reason, n in sink_stats["dropped"].items():
                dropped[reason] = dropped.get(reason, 0) + n
        own = self.counters.snapshot()
        if own.get("processor_dropped"):
            dropped["processor"] = own["processor_dropped"]
        if own.get("internal_dropped"):
            dropped["internal"] = own["internal_dropped"]
        result: dict[str, Any] = {
            "sinks": sinks,
            "dropped": dropped,
            "conversions": ENCODE_COUNTERS.get("conversions"),
            "processor_errors": own.get("processor_errors", 0),
            "rule_errors": own.get("rule_errors", 0),
            "internal_errors": own.get("internal_errors", 0),
        }
        if self.rules is not None:
            result["rules"] = self.rules.stats()
        return result

    # -- drop reporting ------------------------------------------------------

    def _on_idle(self) -> None:
        """Called by idle writer threads: sink health, then drop reports."""
        self._health.check(self)
        self._report_drops()

    def _report_drops(self) -> None:
        """Emit ``auditloop.dropped`` when drops grew (at most once per interval).

        Called by writer threads when idle. A report that is itself dropped
        shows up in the next report, so a sink that stays broken produces at
        most one report per interval.
        """
        interval = self._drop_report_interval
        if interval is None:
            return
        current = {d.name: d.drops.snapshot() for d in self.deliveries}
        current = {name: counts for name, counts in current.items() if counts}
        if current == self._reported_drops:
            return
        now = time.monotonic()
        if now - self._last_drop_report < interval:
            return
        if not self._report_lock.acquire(blocking=False):
            return
        try:
            new: dict[str, dict[str, int]] = {}
            for name, counts in current.items():
                before = self._reported_drops.get(name, {})
                grown = {r: n - before.get(r, 0) for r, n in counts.items()}
                grown = {r: n for r, n in grown.items() if n}
                if grown:
                    new[name] = grown
            self._reported_drops = current
            self._last_drop_report = now
            self.record(
                "emit",
                "auditloop.dropped",
                "failure",
                self.source_base,
                {"id": "auditloop", "type": "system"},
                None,
                "system",
                "high",
                None,
                None,
                None,
                {"dropped": new, "total": current},
            )
        except AuditError:
            pass  # fail-closed sinks raise to callers, never to writer threads
        finally:
            self._report_lock.release()

    def after_fork_in_child(self) -> None:
        """Refresh the pid stamped on events (deliveries reset themselves)."""
        self.source_base = self._make_source_base()
        self._health = SinkHealth()  # its lock may have been held by a writer
        if self.rules is not None:
            self.rules.after_fork_in_child()


def _trace_processors(enabled: bool | None) -> tuple[Processor, ...]:
    # Auto mode never imports OpenTelemetry itself: only an app that already
    # did gets trace ids, so ``import auditloop`` and the hot path stay lean.
    if enabled is None:
        enabled = "opentelemetry.trace" in sys.modules
    elif not isinstance(enabled, bool):
        raise ConfigurationError(
            f"configure: trace_context must be True, False or None, got {enabled!r}"
        )
    if not enabled:
        return ()
    try:
        from auditloop.integrations.otel import add_trace_context
    except ImportError as exc:
        raise ConfigurationError(f"configure: trace_context=True, but {exc}") from None
    return (add_trace_context,)


def _hostname() -> str:
    try:
        return os.uname().nodename  # what socket.gethostname() returns, without socket
    except AttributeError:  # pragma: no cover - Windows has no os.uname
        import socket

        return socket.gethostname()


def _caller(depth: int) -> str | None:
    try:
        frame = sys._getframe(depth + 1)
    except ValueError:  # pragma: no cover - called from the top of the stack
        return None
    return f"{frame.f_globals.get('__name__', '?')}:{frame.f_code.co_qualname}"


def _after_fork_in_child() -> None:
    for auditor in list(_live_auditors):
        auditor.after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)

#: Seconds all Auditors still running at interpreter exit share to drain.
_EXIT_TIMEOUT = 5.0


def _shutdown_live_auditors() -> None:
    """Drain Auditors used without ``configure()`` at interpreter exit.

    Registered before ``auditloop.shutdown`` (so it runs after it: atexit
    is last-in first-out); Auditors already shut down return at once.
    """
    deadline = time.monotonic() + _EXIT_TIMEOUT
    for auditor in list(_live_auditors):
        auditor.shutdown(seconds_left(deadline))


atexit.register(_shutdown_live_auditors)
