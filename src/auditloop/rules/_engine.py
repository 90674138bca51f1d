"""The rule engine: match events to rules, drive time, publish alerts.

The Auditor calls :meth:`RuleEngine.observe` for every event after it was
handed to the sinks. The engine

1. advances its clock to the event time (the clock is the newest event time
   seen, or a tick) and lets the store re-check groups whose deadline passed
   — so resolutions are noticed without new events for that group;
2. looks up the rules that can match the event's action in a per-action
   index, so rules that cannot match cost nothing, checks their remaining
   criteria, computes group keys, and lets the store count the event;
3. turns lifecycle changes into :class:`Alert` objects and, still under its
   lock (so they keep the order in which they were decided), tells the
   listeners and queues the rules' actions on a dispatcher thread; then,
   without the lock, the thread that decided them emits each alert as an
   ``auditloop.alert`` event through the Auditor after the current event is
   done (never recursively), in its own context. Alert events decided by
   different threads at nearly the same time may reach the trail in either
   order; each carries its transition's time.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from auditloop._clock import parse_rfc3339, uuid7
from auditloop._counters import Counters
from auditloop._event import AuditEvent
from auditloop.exceptions import AuditError, ConfigurationError, RuleError
from auditloop.rules._alert import Alert, Transition, fingerprint, to_datetime
from auditloop.rules._dispatch import Dispatcher
from auditloop.rules._kinds import Action, Rule
from auditloop.rules._match import INTERNAL_PREFIX, KeyFunction
from auditloop.rules._store import (
    Batch,
    Change,
    MemoryStore,
    Observer,
    Store,
    check_store,
)
from auditloop.rules._stores import StoreSet, stores_of

if TYPE_CHECKING:
    from auditloop._auditor import Auditor

__all__ = ["RuleEngine", "replay"]

Event = Mapping[str, Any]
Residual = Callable[[Event], int]
#: (observer, key function, roles if the action alone decides, residual check)
Entry = tuple[Observer, KeyFunction, int, Residual | None]
#: The entries of the rules an action can match, with their shared key
#: function when there is one and no entry has a residual check (the common
#: case, which then skips the per-entry checks), else ``None``.
#: The third item, when not ``None``, is the store's batch observer for all
#: the entries (see ``Store``): called instead of them, once.
Plan = tuple[KeyFunction | None, tuple[Entry, ...], Batch | None]

#: Distinct actions remembered by the index; beyond it the index starts over
#: (counted), so a stream of unique actions cannot grow memory.
_MAX_ACTIONS: Final = 4096
#: Alert events emitted per observed event at most (alerts about alerts).
_MAX_CASCADE: Final = 100
_SYSTEM_ACTOR: Final = {"id": "auditloop", "type": "system"}


def _is_fake(clock: Callable[[], float] | None) -> bool:
    from auditloop.testing import FakeClock

    return isinstance(clock, FakeClock)


class RuleEngine:
    """Evaluates rules over the event stream of one Auditor (or a replay).

    Thread-safe: :meth:`observe` may be called from any thread; state
    updates are serialised by one lock, actions run on a dispatcher thread.
    Nothing raises into the caller.

    Args:
        rules: rule objects (:class:`Threshold`, :class:`Ratio` …) with
            unique names.
        auditor: where ``auditloop.alert`` and ``auditloop.rule.error``
            events go; ``None`` emits nothing (replay).
        clock: returns Unix seconds; default ``time.time``. The engine's
            time is the newest of the event times seen and the ticks.
        store: per-group state; default a new :class:`MemoryStore`. Rules
            built with their own ``store=`` keep their state there instead.
        actions: run the rules' ``then``/``on_resolve`` actions (replay and
            the test harness turn them off).
        ticker: run a daemon thread that calls :meth:`tick` every
            *tick_interval* seconds, so ``Absence`` fires and groups resolve
            while no events arrive. Default: on, unless *clock* is a
            :class:`~auditloop.testing.FakeClock` (tests call :meth:`tick`).
        tick_interval: seconds between ticks.
        rule_stores: honour the rules' own ``store=``; ``False`` keeps every
            rule's state in *store* (replay).

    Raises:
        ConfigurationError: for an object that is not a rule or a store.
        RuleError: for duplicate rule names.
    """

    def __init__(
        self,
        rules: Sequence[Any],
        *,
        auditor: Auditor | None,
        clock: Callable[[], float] | None,
        store: Any = None,
        actions: bool = True,
        ticker: bool | None = None,
        tick_interval: float = 1.0,
        rule_stores: bool = True,
    ) -> None:
        self.rules: tuple[Rule, ...] = _check_rules(rules)
        self._by_name = {rule.name: rule for rule in self.rules}
        self.auditor = auditor
        self.clock = clock
        self._counters = Counters()  # before the store: it may count into it
        self.store: Store = _check_store(store)
        if rule_stores and any(rule.store is not None for rule in self.rules):
            # Only then: an engine whose rules use one store talks to it
            # directly, at no extra cost per event.
            stores = stores_of(self.rules, self.store)
            self.store = stores[0][0] if len(stores) == 1 else StoreSet(self.store)
        observers = list(self.store.bind(self.rules))
        if len(observers) != len(self.rules):
            raise ConfigurationError(
                f"configure: rule_store.bind() returned {len(observers)} observers "
                f"for {len(self.rules)} rules"
            )
        self._observers = dict(zip(self.rules, observers, strict=True))
        #: Optional per-event hook of batching stores (see Store).
        self._commit: Callable[[], list[Change]] | None = getattr(
            self.store, "commit", None
        )
        #: Optional: a store that can count one event for several rules at
        #: once (see Store).
        self._batch: Callable[[Sequence[Observer]], Batch | None] | None = getattr(
            self.store, "batch", None
        )
        # Optional: a store that reports about itself (store_unavailable)
        # gets the engine, for its auditor.
        attach = getattr(self.store, "attach", None)
        if attach is not None:
            attach(self)
        self._actions = actions
        # Re-entrant: a `where` callable that emits an event must not deadlock.
        self._lock = threading.RLock()
        self._index: dict[object, Plan] = {}
        self._internal_index: dict[str, tuple[Entry, ...]] = {}
        self._now = -math.inf
        self._events = 0
        self._listeners: list[Callable[[Alert], None]] = []
        self._firing: dict[tuple[str, Hashable], Alert] = {}
        self._local = threading.local()
        self._dispatcher = Dispatcher(self._report_action_error)
        self._tick_interval = tick_interval
        self._ticking = (not _is_fake(clock)) if ticker is None else ticker
        self._stop_ticker: threading.Event | None = None
        self._ticker_thread: threading.Thread | None = None
        if clock is not None or self._ticking:
            self.tick()  # the start time: Absence watches expected groups from now
        if self._ticking:
            self._start_ticker()

    # -- the hot path --------------------------------------------------------

    def observe(self, event: Event, timestamp: float) -> None:
        """See one processed event (wire form) at *timestamp* (Unix seconds).

        Never raises: internal errors are counted. Alerts it causes are
        emitted before it returns; their actions run later on the
        dispatcher thread.
        """
        changes: list[Change] | None = None
        alerts: list[Alert] | None = None
        lock = self._lock
        lock.acquire()  # cheaper than `with` on this path
        try:
            self._events += 1
            if timestamp > self._now:
                self._now = now = timestamp
                store = self.store
                if timestamp >= store.next_due:
                    changes = store.advance(timestamp)
            else:
                now = self._now
            plan = self._index.get(event.get("action"))
            if plan is None:
                plan = self._plan_for(event)
            shared_key_function, entries, batch = plan
            if batch is not None and shared_key_function is not None:
                # One call counts the event for every entry (same key).
                found = batch(shared_key_function(event), timestamp, event, now)
                if found:
                    changes = found if changes is None else [*changes, *found]
            elif shared_key_function is not None:
                # Every entry matches and shares the key: no per-entry checks.
                key = shared_key_function(event)
                for observe, _, roles, _ in entries:
                    change = observe(key, timestamp, event, roles, now)
                    if change is not None:
                        if changes is None:
                            changes = [change]
                        else:
                            changes.append(change)
            else:
                changes = self._observe_entries(entries, event, timestamp, now, changes)
            if self._commit is not None:
                committed = self._commit()
                if committed:
                    changes = [*(changes or ()), *committed]
            if changes:
                alerts = self._alerts(changes)
                self._publish(alerts)
        except Exception:
            self._counters.incr("internal_errors")
        finally:
            lock.release()
        if alerts and self.auditor is not None:
            self._emit_alerts(alerts)

    def _observe_entries(
        self,
        entries: tuple[Entry, ...],
        event: Event,
        timestamp: float,
        now: float,
        changes: list[Change] | None,
    ) -> list[Change] | None:
        """Let the rules of *entries* that match *event* count it (lock held)."""
        last_key_function = None
        key = None
        for observe, key_function, mask, residual in entries:
            roles = mask
            if residual is not None:
                try:
                    roles = residual(event)
                except Exception:
                    self._counters.incr("where_errors")
                    continue
                if not roles:
                    continue
            # Entries with the same group_by are adjacent: one key each.
            if key_function is not last_key_function:
                key = key_function(event)
                last_key_function = key_function
            change = observe(key, timestamp, event, roles, now)
            if change is not None:
                if changes is None:
                    changes = [change]
                else:
                    changes.append(change)
        return changes

    def _plan_for(self, event: Event) -> Plan:
        """Compute (and cache, except for internal actions) an action's plan."""
        entries = self._entries_for(event)
        key_functions = {entry[1] for entry in entries}
        shared = None
        if len(key_functions) == 1 and all(entry[3] is None for entry in entries):
            (shared,) = key_functions
        batch = None
        if shared is not None and self._batch is not None:
            batch = self._batch([entry[0] for entry in entries])
        plan = (shared, entries, batch)
        action = event.get("action")
        if not (isinstance(action, str) and action.startswith(INTERNAL_PREFIX)):
            if len(self._index) >= _MAX_ACTIONS:
                self._index.clear()
                self._counters.incr("index_resets")
            self._index[action] = plan
        return plan

    def _entries_for(self, event: Event) -> tuple[Entry, ...]:
        """Compute the entries of the rules an action can match."""
        action = event.get("action")
        if isinstance(action, str) and action.startswith(INTERNAL_PREFIX):
            entries = self._internal_index.get(action)
            if entries is None:
                if len(self._internal_index) >= _MAX_ACTIONS:
                    self._internal_index.clear()
                entries = self._internal_index[action] = self._compute(
                    action, internal=True
                )
            attributes = event.get("attributes")
            own = attributes.get("rule") if isinstance(attributes, Mapping) else None
            # A rule never counts the alerts (or errors) it raised itself.
            skip = self._observers.get(self._by_name.get(own))  # type: ignore[arg-type]
            return tuple(e for e in entries if e[0] is not skip)
        return self._compute(action, internal=False)

    def _compute(self, action: object, *, internal: bool) -> tuple[Entry, ...]:
        entries: list[Entry] = []
        # Rules sharing a key function go next to each other (stable order).
        first_use: dict[KeyFunction, int] = {}
        for index, rule in enumerate(self.rules):
            first_use.setdefault(rule.key, index)
        ordered = sorted(self.rules, key=lambda r: first_use[r.key])
        for rule in ordered:
            roles = 0
            residuals: list[tuple[int, Callable[[Event], bool] | None]] = []
            for bit, matcher in enumerate(rule.matchers):
                if internal and not matcher.internal:
                    continue
                if matcher.action_matches(action):
                    roles |= 1 << bit
                    residuals.append((1 << bit, matcher.residual))
            if roles:
                residual = _residual(residuals, self._counters)
                entries.append((self._observers[rule], rule.key, roles, residual))
        return tuple(entries)

    # -- time ----------------------------------------------------------------

    def tick(self, now: float | datetime | None = None) -> None:
        """Advance the engine's clock to *now* (default: read the clock).

        Groups whose deadline passed are re-checked: Absence rules fire,
        windows empty and alerts resolve, ``for_`` and cooldown periods end.
        The clock never moves back; an earlier *now* only re-checks.
        Thread-safe; never raises.
        """
        if isinstance(now, datetime):
            now = now.timestamp()
        alerts: list[Alert] | None = None
        with self._lock:
            try:
                if now is None:
                    now = (self.clock or time.time)()
                self._now = max(self._now, now)
                if self._now >= self.store.next_due:
                    changes = self.store.advance(self._now)
                    if self._commit is not None:  # a batching store's round trip
                        changes = [*changes, *self._commit()]
                    if changes:
                        alerts = self._alerts(changes)
                        self._publish(alerts)
            except Exception:
                self._counters.incr("internal_errors")
        if alerts and self.auditor is not None:
            self._emit_alerts(alerts)

    @property
    def now(self) -> float:
        """The engine's clock: the newest event time or tick (Unix seconds)."""
        return self._now

    def _start_ticker(self) -> None:
        stop = self._stop_ticker = threading.Event()
        interval = self._tick_interval

        def run() -> None:
            while not stop.wait(interval):
                self.tick()

        self._ticker_thread = threading.Thread(
            target=run, name="auditloop-rule-ticker", daemon=True
        )
        self._ticker_thread.start()

    # -- alerts --------------------------------------------------------------

    def _alerts(self, changes: list[Change]) -> list[Alert]:
        """Build alerts from store changes (engine lock held)."""
        alerts = []
        for change in changes:
            rule = change.rule
            group = rule.group_dict(change.key)
            firing = change.status == "firing"
            alert = Alert(
                id=uuid7(),
                rule=rule.name,
                status="firing" if firing else "resolved",
                group=group,
                value=change.value,
                threshold=rule.threshold,
                window=rule.within,
                started_at=to_datetime(change.started_at),
                fired_at=to_datetime(change.fired_at),
                fingerprint=fingerprint(rule.name, group),
                evidence=change.evidence,
                severity=rule.severity,
                labels=rule.labels,
                resolved_at=None if firing else to_datetime(change.at),
            )
            key = (rule.name, change.key)
            if firing:
                self._firing[key] = alert
            else:
                self._firing.pop(key, None)
            alerts.append(alert)
        return alerts

    def _publish(self, alerts: list[Alert]) -> None:
        """Tell listeners and queue actions (engine lock held).

        Under the lock, so each group's transitions reach its listeners and
        actions (one worker runs them in queue order) in the order they were
        decided, whichever threads decided them. Nothing here blocks:
        listeners must be quick and must not emit events or call back into
        the engine; the dispatcher never blocks.
        """
        for alert in alerts:
            for listener in self._listeners:
                try:
                    listener(alert)
                except Exception:
                    self._counters.incr("listener_errors")
            rule = self._by_name.get(alert.rule)
            # None: a transition a shared store handed to this engine for a
            # rule it lacks (a replaced configuration still shutting down).
            if self._actions and rule is not None:
                actions = rule.then if alert.status == "firing" else rule.on_resolve
                for action in actions:
                    self._dispatcher.submit(action, alert)

    def _emit_alerts(self, alerts: list[Alert]) -> None:
        """Emit *alerts* as ``auditloop.alert`` events (engine lock not held).

        Emitting an alert event re-enters observe() on this thread; the
        alerts that causes are queued here and emitted by the outermost
        call, in a loop instead of a recursion, at most _MAX_CASCADE per
        event observed. Never raises.
        """
        local = self._local
        queue: deque[Alert] | None = getattr(local, "queue", None)
        if queue is not None:
            queue.extend(alerts)
            return
        queue = local.queue = deque(alerts)
        emitted = 0
        try:
            while queue:
                if emitted >= _MAX_CASCADE:
                    self._counters.incr("alert_events_dropped", len(queue))
                    queue.clear()
                    break
                emitted += 1
                self._emit_alert(queue.popleft())
        finally:
            local.queue = None

    def _emit_alert(self, alert: Alert) -> None:
        auditor = self.auditor
        assert auditor is not None
        attributes: dict[str, Any] = {
            "rule": alert.rule,
            "status": alert.status,
            "group": dict(alert.group),
            "value": alert.value,
            "threshold": alert.threshold,
            "window": alert.window,
            "alert_id": alert.id,
            "fingerprint": alert.fingerprint,
            "started_at": alert.to_dict()["started_at"],
            "fired_at": alert.to_dict()["fired_at"],
            "evidence": [str(e.get("id", "")) for e in alert.evidence],
        }
        if alert.labels:
            attributes["labels"] = dict(alert.labels)
        if alert.resolved_at is not None:
            attributes["resolved_at"] = alert.to_dict()["resolved_at"]
        try:
            auditor.emit_from(
                None,
                "auditloop.alert",
                actor=_SYSTEM_ACTOR,
                target={"id": f"rule:{alert.rule}", "type": "rule"},
                outcome="success",
                category="system",
                severity=alert.severity,
                reason=None,
                error=None,
                duration_ms=None,
                attributes=attributes,
            )
        except AuditError:  # a fail-closed sink refused it: counted, not raised
            self._counters.incr("alert_events_failed")
        except Exception:  # pragma: no cover - the Auditor never raises otherwise
            self._counters.incr("internal_errors")

    def _report_action_error(
        self, action: Action, alert: Alert, exc: BaseException
    ) -> None:
        """Emit ``auditloop.rule.error`` for an action that raised."""
        auditor = self.auditor
        if auditor is None:
            return
        name = getattr(action, "__qualname__", None) or repr(action)
        try:
            auditor.emit_from(
                None,
                "auditloop.rule.error",
                actor=_SYSTEM_ACTOR,
                target={"id": f"rule:{alert.rule}", "type": "rule"},
                outcome="failure",
                category="system",
                severity="high",
                reason=None,
                error=exc,
                duration_ms=None,
                attributes={
                    "rule": alert.rule,
                    "action": name,
                    "alert_id": alert.id,
                    "status": alert.status,
                },
            )
        except AuditError:  # a fail-closed sink refused it: counted, not raised
            self._counters.incr("alert_events_failed")
        except Exception:  # pragma: no cover - the Auditor never raises otherwise
            self._counters.incr("internal_errors")

    # -- introspection, listeners --------------------------------------------

    def firing(self) -> list[Alert]:
        """The alerts currently firing (their firing notification), oldest first."""
        with self._lock:
            return list(self._firing.values())

    def add_listener(self, listener: Callable[[Alert], None]) -> None:
        """Call *listener* with every alert, in the thread that caused it.

        Used by :func:`replay` and the test harness; it must be quick and
        must not call back into the engine.
        """
        self._listeners.append(listener)

    def stats(self) -> dict[str, Any]:
        """Counters for ``auditloop.stats()["rules"]``.

        Totals over all rules, per-rule counters under ``"rules"``, and the
        action dispatcher's ``run``/``errors``/``dropped`` under ``"actions"``.
        """
        with self._lock:
            per_rule = self.store.stats()
            firing = len(self._firing)
            events = self._events
        totals: dict[str, int] = {}
        for counts in per_rule.values():
            for name, n in counts.items():
                totals[name] = totals.get(name, 0) + n
        own = self._counters.snapshot()
        actions = self._dispatcher.counters.snapshot()
        return {
            "events": events,
            "firing": firing,
            **totals,
            "where_errors": own.get("where_errors", 0),
            "internal_errors": own.get("internal_errors", 0),
            "alert_events_dropped": own.get("alert_events_dropped", 0),
            "alert_events_failed": own.get("alert_events_failed", 0),
            "actions": {
                "run": actions.get("run", 0),
                "errors": actions.get("errors", 0),
                "dropped": actions.get("dropped", 0),
            },
            "rules": per_rule,
        }

    # -- lifecycle -----------------------------------------------------------

    def flush(self, timeout: float | None) -> bool:
        """Wait up to *timeout* seconds for queued actions to finish.

        Returns True when none is queued or running.
        """
        return self._dispatcher.wait(timeout)

    def shutdown(self, timeout: float | None) -> bool:
        """Stop the ticker, run queued actions within *timeout*, then stop.

        Actions not started in time are dropped and counted; returns True
        when everything ran. Events observed later are still evaluated, but
        their actions are dropped (counted).
        """
        if self._stop_ticker is not None:
            self._stop_ticker.set()
            self._stop_ticker = None
        return self._dispatcher.close(timeout)

    def after_fork_in_child(self) -> None:
        """Fresh lock, dispatcher and ticker in a forked child (state is kept)."""
        self._lock = threading.RLock()
        self._local = threading.local()
        self._dispatcher.after_fork_in_child()
        if self._stop_ticker is not None:
            self._start_ticker()


def _residual(
    residuals: list[tuple[int, Callable[[Event], bool] | None]],
    counters: Counters,
) -> Residual | None:
    """Combine per-matcher residual checks into one function returning roles.

    With one matcher, a ``where`` that raises propagates (the caller counts
    it and skips the event: its only role is lost). With several, it costs
    only its own matcher's bit, counted as a ``where_errors``: a Ratio's
    ``match`` that raises must not take the event out of ``of`` as well.
    """
    if all(check is None for _, check in residuals):
        return None
    if len(residuals) == 1:
        bit, check = residuals[0]
        assert check is not None
        if bit == 1:
            return check  # True is 1: a bool is already the roles mask
        return lambda event: bit if check(event) else 0

    def roles(event: Event) -> int:
        mask = 0
        for bit, check in residuals:
            if check is None:
                mask |= bit
                continue
            try:
                if check(event):
                    mask |= bit
            except Exception:
                counters.incr("where_errors")
        return mask

    return roles


def _check_rules(rules: Sequence[Any]) -> tuple[Rule, ...]:
    if not isinstance(rules, Iterable) or isinstance(rules, str | bytes):
        raise ConfigurationError(
            f"configure: rules must be a list of rules, got {rules!r}"
        )
    checked = tuple(rules)
    seen: set[str] = set()
    for i, rule in enumerate(checked):
        if not isinstance(rule, Rule):
            raise ConfigurationError(
                f"configure: rules[{i}] ({rule!r}) is not a rule; "
                f"use rules.Threshold(...), rules.load(...) …"
            )
        if rule.name in seen:
            raise RuleError(f"rule {rule.name!r}: name: used by more than one rule")
        seen.add(rule.name)
    return checked


def _check_store(store: object) -> Store:
    if store is None:
        return MemoryStore()
    return check_store(store, "configure: rule_store")


def replay(
    records: Iterable[Mapping[str, Any] | AuditEvent],
    rules: Sequence[Rule],
    *,
    start: float | datetime | None = None,
    until: float | datetime | None = None,
) -> list[Transition]:
    """Run *records* through *rules* and return every alert transition.

    Event time drives the clock (records are taken in the order given), so a
    trail recorded live replays to the same transitions; each transition is
    stamped with the event time at which it happened. No action runs and no
    event is emitted. Records without a readable ``time`` are skipped.
    Every rule's state is kept in memory for the replay, also that of rules
    built with their own ``store=`` (a replay never touches a shared store).

    Live, an ``Absence`` rule watches its ``expected`` groups (and, without
    ``group_by``, its single group) from the engine's start; a trail does
    not record when that was, so a replay watches them from *start*, or
    else from the first record's time.

    Args:
        records: wire-form dicts (as read from a JSON-lines trail) or
            :class:`~auditloop.AuditEvent` objects.
        rules: the rules to evaluate.
        start: the clock's start (Unix seconds or datetime): when the live
            engine started, if known. Records older than it are late events
            (counted only if still inside their window).
        until: advance the clock to this time at the end (Unix seconds or
            datetime), so windows that emptied by then resolve.

    Returns:
        The firing and resolved transitions, in the order they happened.

    Raises:
        ConfigurationError: for invalid rules.
    """
    engine = RuleEngine(
        rules,
        auditor=None,
        clock=None,
        store=None,
        actions=False,
        ticker=False,
        rule_stores=False,
    )
    transitions: list[Transition] = []
    engine.add_listener(lambda alert: transitions.append(Transition.from_alert(alert)))
    if start is not None:
        engine.tick(start)
    for record in records:
        event: object = record.to_dict() if isinstance(record, AuditEvent) else record
        if not isinstance(event, Mapping):
            continue
        try:
            timestamp = parse_rfc3339(str(event["time"]))
        except (KeyError, ValueError):
            continue
        engine.observe(event, timestamp)
    if until is not None:
        engine.tick(until)
    engine.shutdown(0)
    return transitions
