"""Where rules keep per-group state: the :class:`Store` seam and the memory store.

The engine matches events and computes group keys; a store owns everything
that depends on history — the window of every (rule, group), the alert
lifecycle (pending, firing, cooldown) and the deadlines at which a group must
be re-checked without new events — and reports lifecycle changes. A store
shared by several processes (for example one on Redis) implements the same
methods with atomic server-side updates, so a crossing fires exactly once
across the fleet; the rule kinds do not change.
"""

from __future__ import annotations

import heapq
import itertools
import math
from bisect import bisect_right, insort
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Final, NamedTuple, Protocol, runtime_checkable

from auditloop.rules._kinds import Absence, Distinct, Ratio, Rule, Threshold
from auditloop.rules._match import hashable
from auditloop.rules._windows import (
    FIRING,
    INACTIVE,
    PENDING,
    SUPPRESSED,
    AbsenceWindow,
    GroupState,
    Tally,
    window_factory,
)

__all__ = ["Change", "MemoryStore", "Store"]

Event = Mapping[str, Any]

_SCALARS: Final = frozenset({str, int, float, bool, type(None)})
#: Seconds of engine time between sweeps that forget idle groups.
_GC_INTERVAL: Final = 1.0
_INF: Final = math.inf


class Change(NamedTuple):
    """A lifecycle transition reported by a store: a group fired or resolved."""

    rule: Rule
    #: The group key as computed by ``rule.key`` (see ``rule.group_dict``).
    key: Hashable
    #: ``"firing"`` or ``"resolved"``.
    status: str
    #: Event time (Unix seconds) at which the transition happened.
    at: float
    value: float
    #: The events behind the firing, newest last (bounded by ``rule.evidence``).
    evidence: tuple[Event, ...]
    #: When the condition started holding (the start of ``pending``).
    started_at: float
    fired_at: float


#: Counts one matching event for one rule: ``(key, timestamp, event, roles,
#: now) -> Change | None``. ``roles`` has bit *i* set when the event matched
#: ``rule.matchers[i]`` (Ratio: bit 0 ``match``, bit 1 ``of``; Sequence: one
#: bit per step). Events with ``timestamp <= now - rule.within`` are outside
#: the window: they are ignored and counted as late.
Observer = Callable[[Hashable, float, Event, int, float], "Change | None"]


@runtime_checkable
class Store(Protocol):
    """Per-group window and lifecycle state of a set of rules.

    The engine calls every method (and every observer) with its own lock
    held, so a store used by one engine needs no locking of its own. Times
    are event times in Unix seconds; *now* never decreases between calls.

    A store that talks to a server can batch: its observers queue the update
    and return ``None``, and an optional ``commit() -> list[Change]`` method,
    if the store has one, is called once per event after every observer, so
    all the rules an event touches cost one round trip. ``commit()`` is also
    called right after every :meth:`advance` outside an event (a tick), so
    such a store may defer advance's work to ``commit()`` as well. An
    optional ``attach(engine)`` method is called once with the engine, before
    the first ``advance``.
    """

    #: The earliest time at which :meth:`advance` has work (``inf`` if none).
    next_due: float

    def bind(self, rules: Sequence[Rule]) -> Sequence[Observer]:
        """Start (empty) state for *rules*; called once by the engine.

        Returns:
            One observer per rule, in the same order: the function the
            engine calls for each event that rule matched, with the group
            key. It returns the lifecycle transition the event caused, if
            any.
        """

    def advance(self, now: float) -> list[Change]:
        """Re-check every group whose deadline is at or before *now*.

        Returns the transitions in time order, each stamped with the exact
        time it happened (for example when a window emptied), which may be
        earlier than *now*.
        """

    def stats(self) -> dict[str, dict[str, int]]:
        """Counters per rule name (groups, fired, resolved, evictions …)."""


def _insert_late(times: deque[float], timestamp: float) -> None:
    """Insert an out-of-order time, keeping the newest ``maxlen`` times."""
    if len(times) == times.maxlen:
        if timestamp <= times[0]:
            return  # older than every kept time: it cannot change the count
        times.popleft()
    insort(times, timestamp)


class _Table(Tally):
    """The groups of one rule, least recently seen first."""

    __slots__ = ("groups", "new", "rule")

    def __init__(self, rule: Rule) -> None:
        keep = rule.evidence
        if rule.kind in {"threshold", "distinct"}:
            keep = min(keep, int(rule.threshold))
        super().__init__(keep)
        self.rule = rule
        self.groups: OrderedDict[Hashable, GroupState] = OrderedDict()
        self.new: Callable[[], GroupState] = window_factory(rule, keep)


class MemoryStore:
    """The default store: state in this process's memory, bounded per rule.

    Memory per rule is bounded by ``rule.max_groups`` groups, each holding at
    most the kind's window (see the rule classes) and ``rule.evidence``
    events. Beyond ``max_groups`` the least recently seen group is evicted
    (counted as ``evicted_groups``; a firing group evicted this way is
    forgotten without a resolution). Groups whose window is empty and whose
    alert is inactive are forgotten as the clock advances (``expired_groups``).

    Not thread-safe on its own: the engine serialises calls.
    """

    def __init__(self) -> None:
        self.next_due = -_INF
        self._tables: dict[Rule, _Table] = {}
        self._heap: list[tuple[float, int, _Table, Hashable]] = []
        self._seq = itertools.count()
        self._started = False
        self._next_gc = -_INF

    def bind(self, rules: Sequence[Rule]) -> list[Observer]:
        """Start with empty state for *rules*; return their observers."""
        self._tables = {rule: _Table(rule) for rule in rules}
        self._heap = []
        self._started = False
        self._next_gc = -_INF
        self.next_due = -_INF
        return [self._observer(table) for table in self._tables.values()]

    # -- the hot path --------------------------------------------------------

    def _observer(self, table: _Table) -> Observer:
        """Build *table*'s observer, with everything it needs in closure cells."""
        if isinstance(table.rule, Threshold):
            return self._threshold_observer(table, table.rule)
        if isinstance(table.rule, Distinct):
            return self._distinct_observer(table, table.rule)
        if isinstance(table.rule, Ratio):
            return self._ratio_observer(table, table.rule)
        rule = table.rule
        within = rule.within
        max_groups = rule.max_groups
        time_can_fire = rule.time_can_fire
        groups = table.groups
        find = groups.get
        touch = groups.move_to_end
        evict = groups.popitem
        new = table.new
        settle = self._settle
        schedule = self._schedule

        def observe(
            key: Hashable, timestamp: float, event: Event, roles: int, now: float
        ) -> Change | None:
            if timestamp <= now - within:
                table.late += 1
                return None
            group = find(key)
            if group is None:
                group = groups[key] = new()
                if len(groups) > max_groups:
                    evict(last=False)
                    table.evicted += 1
            else:
                touch(key)
            holds = group.add(rule, table, timestamp, event, roles, now)
            if holds or group.status:
                return settle(table, key, group, holds, now)
            if time_can_fire and group.due is None:
                schedule(table, key, group, group.next_change(rule, now))
            return None

        return observe

    def _threshold_observer(self, table: _Table, rule: Threshold) -> Observer:
        """The observer of a Threshold rule, with the window update inlined."""
        within = rule.within
        at_least = rule.at_least
        max_groups = rule.max_groups
        # An event can be evidence only if the window holds at least
        # ``needed`` events (it included) once it is counted: the count rises
        # by at most one per event and only falls as time passes, so each of
        # the newest ``keep`` events at a firing was counted with at least
        # ``at_least - keep + 1`` events in the window. Events counted below
        # that are never kept, which spares memory (and the garbage
        # collector) for the many groups far from their threshold.
        keep = table.keep
        needed = at_least - keep + 1
        # Below ``low`` events in the window a group neither holds nor keeps
        # evidence; a group with ``count`` such events stays below for its
        # next ``low - 1 - count`` events (``quiet``), which skip the checks.
        low = min(needed, at_least)
        groups = table.groups
        find = groups.get
        touch = groups.move_to_end
        evict = groups.popitem
        new = table.new
        settle = self._settle

        def observe(
            key: Hashable, timestamp: float, event: Event, _roles: int, now: float
        ) -> Change | None:
            cutoff = now - within
            if timestamp <= cutoff:
                table.late += 1
                return None
            group = find(key)
            if group is None:
                group = groups[key] = new()
                if len(groups) > max_groups:
                    evict(last=False)
                    table.evicted += 1
            else:
                touch(key)
            times = group.times  # type: ignore[attr-defined]
            if not times or timestamp >= times[-1]:
                times.append(timestamp)  # a full deque drops the oldest
            else:
                _insert_late(times, timestamp)
            quiet = group.quiet  # type: ignore[attr-defined]
            if quiet:
                group.quiet = quiet - 1  # type: ignore[attr-defined]
                if group.status:
                    return settle(table, key, group, False, now)  # noqa: FBT003
                return None
            size = len(times)
            if size < low or times[-low] <= cutoff:
                count = size - bisect_right(times, cutoff)
                group.quiet = low - 1 - count  # type: ignore[attr-defined]
                if group.status:
                    return settle(table, key, group, False, now)  # noqa: FBT003
                return None
            if size >= needed and times[-needed] > cutoff:
                events = group.events  # type: ignore[attr-defined]
                if events is None:  # the first event that may become evidence
                    events = group.events = deque(maxlen=keep)  # type: ignore[attr-defined]
                events.append(event)
            holds = size == at_least and times[0] > cutoff
            if holds or group.status:
                return settle(table, key, group, holds, now)
            return None

        return observe

    def _distinct_observer(self, table: _Table, rule: Distinct) -> Observer:
        """The observer of a Distinct rule, with the window update inlined."""
        within = rule.within
        at_least = rule.at_least
        max_groups = rule.max_groups
        field_value = rule.field_value
        groups = table.groups
        find = groups.get
        touch = groups.move_to_end
        evict = groups.popitem
        new = table.new
        settle = self._settle

        def observe(
            key: Hashable, timestamp: float, event: Event, _roles: int, now: float
        ) -> Change | None:
            if timestamp <= now - within:
                table.late += 1
                return None
            value = field_value(event)
            if value is None:
                return None  # nothing to count
            if value.__class__ not in _SCALARS:
                value = hashable(value)
            group = find(key)
            if group is None:
                group = groups[key] = new()
                if len(groups) > max_groups:
                    evict(last=False)
                    table.evicted += 1
            else:
                touch(key)
            seen = group.seen  # type: ignore[attr-defined]
            old = seen.get(value)
            if old is not None:
                if old >= timestamp:
                    return None  # an older sighting of a value already counted
                del seen[value]
            seen[value] = timestamp
            if timestamp >= group.newest:  # type: ignore[attr-defined]
                group.newest = timestamp  # type: ignore[attr-defined]
            else:
                group.reorder()  # type: ignore[attr-defined]
            if len(seen) > at_least:
                seen.popitem(last=False)
            group.events.append(event)  # type: ignore[attr-defined]
            group.event_times.append(timestamp)  # type: ignore[attr-defined]
            holds = len(seen) == at_least and next(iter(seen.values())) > now - within
            if holds or group.status:
                return settle(table, key, group, holds, now)
            return None

        return observe

    def _ratio_observer(self, table: _Table, rule: Ratio) -> Observer:
        """The observer of a Ratio rule, with the window update inlined."""
        within = rule.within
        above = rule.above
        min_count = rule.min_count
        max_events = rule.max_events
        max_groups = rule.max_groups
        groups = table.groups
        find = groups.get
        touch = groups.move_to_end
        evict = groups.popitem
        new = table.new
        settle = self._settle

        def observe(
            key: Hashable, timestamp: float, event: Event, roles: int, now: float
        ) -> Change | None:
            cutoff = now - within
            if timestamp <= cutoff:
                table.late += 1
                return None
            group = find(key)
            if group is None:
                group = groups[key] = new()
                if len(groups) > max_groups:
                    evict(last=False)
                    table.evicted += 1
            else:
                touch(key)
            times = group.times  # type: ignore[attr-defined]
            flags = group.flags  # type: ignore[attr-defined]
            if not times or timestamp >= times[-1]:
                times.append(timestamp)
                flags.append(roles)
            else:
                at = bisect_right(times, timestamp)
                times.insert(at, timestamp)
                flags.insert(at, roles)
            num = group.num + (roles & 1)  # type: ignore[attr-defined]
            den = group.den + (roles >> 1)  # type: ignore[attr-defined]
            if roles & 1:
                group.events.append(event)  # type: ignore[attr-defined]
                group.event_times.append(timestamp)  # type: ignore[attr-defined]
            if len(times) > max_events:
                times.popleft()
                old = flags.popleft()
                num -= old & 1
                den -= old >> 1
                table.overflow += 1
            while times[0] <= cutoff:
                times.popleft()
                old = flags.popleft()
                num -= old & 1
                den -= old >> 1
            group.num = num  # type: ignore[attr-defined]
            group.den = den  # type: ignore[attr-defined]
            holds = den >= min_count and num / den > above
            if holds or group.status:
                return settle(table, key, group, holds, now)
            return None

        return observe

    # -- lifecycle -------------------------------------------------------------

    def _settle(
        self, table: _Table, key: Hashable, group: GroupState, holds: bool, at: float
    ) -> Change | None:
        """Apply the Prometheus lifecycle at time *at* and schedule a re-check."""
        rule = table.rule
        status = group.status
        change = None
        if holds:
            if status != FIRING:
                if status == INACTIVE:
                    group.since = at
                if at < group.since + rule.for_:
                    group.status = PENDING
                elif at < group.last_fired + rule.cooldown:
                    if status != SUPPRESSED:
                        table.suppressed += 1
                    group.status = SUPPRESSED
                else:
                    group.status = FIRING
                    group.fired_at = group.last_fired = at
                    evidence = group.recent(rule, table, at)
                    group.fired_evidence = evidence
                    table.fired += 1
                    change = Change(
                        rule,
                        key,
                        "firing",
                        at,
                        group.value(rule, at),
                        evidence,
                        group.since,
                        at,
                    )
        elif status:
            if status == FIRING:
                table.resolved += 1
                change = Change(
                    rule,
                    key,
                    "resolved",
                    at,
                    group.value(rule, at),
                    group.fired_evidence,
                    group.since,
                    group.fired_at,
                )
                group.fired_evidence = ()
            group.status = INACTIVE
        status = group.status
        if not status and not rule.time_can_fire:
            # Only events can make an inactive group fire: a re-check still
            # in the heap is stale now.
            group.due = None
        elif status or rule.time_can_fire:
            due = group.next_change(rule, at)
            if status in {PENDING, SUPPRESSED}:
                wait = max(group.since + rule.for_, group.last_fired + rule.cooldown)
                due = wait if due is None else min(due, wait)
            self._schedule(table, key, group, due)
        return change

    def _schedule(
        self, table: _Table, key: Hashable, group: GroupState, due: float | None
    ) -> None:
        """Make sure *group* is re-checked at *due* (keeping an earlier check)."""
        if due is not None and (group.due is None or due < group.due):
            group.due = due
            heapq.heappush(self._heap, (due, next(self._seq), table, key))
            self.next_due = min(self.next_due, due)

    def advance(self, now: float) -> list[Change]:
        """See :meth:`Store.advance`."""
        changes: list[Change] = []
        if not self._started:
            self._started = True
            self._watch_expected(now)
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, _, table, key = heapq.heappop(heap)
            group = table.groups.get(key)
            if group is None or group.due != due:
                continue  # superseded by an earlier deadline, or evicted
            group.due = None
            rule = table.rule
            holds = group.holds(rule, due)
            change = self._settle(table, key, group, holds, due)
            if change is not None:
                changes.append(change)
            if self._forgettable(rule, group, due):
                del table.groups[key]
                table.expired += 1
        if now >= self._next_gc:
            self._next_gc = now + _GC_INTERVAL
            self._collect(now)
        self.next_due = min(heap[0][0] if heap else _INF, self._next_gc)
        return changes

    @staticmethod
    def _forgettable(rule: Rule, group: GroupState, now: float) -> bool:
        return (
            group.status == INACTIVE
            and group.due is None
            and group.last_fired + rule.cooldown <= now
            and group.idle(rule, now)
        )

    def _collect(self, now: float) -> None:
        """Forget idle groups, least recently seen first, until one is not idle."""
        for table in self._tables.values():
            groups = table.groups
            rule = table.rule
            while groups:
                key, group = next(iter(groups.items()))
                if not self._forgettable(rule, group, now):
                    break
                del groups[key]
                table.expired += 1

    def _watch_expected(self, now: float) -> None:
        """Start watching the groups Absence rules expect, from *now*."""
        for table in self._tables.values():
            rule = table.rule
            if not isinstance(rule, Absence):
                continue
            for key in rule.expected:
                if key not in table.groups:
                    group = AbsenceWindow(last=now)
                    table.groups[key] = group
                    self._settle(table, key, group, False, now)  # noqa: FBT003

    def stats(self) -> dict[str, dict[str, int]]:
        """See :meth:`Store.stats`."""
        return {
            rule.name: {"groups": len(table.groups), **table.snapshot()}
            for rule, table in self._tables.items()
        }
