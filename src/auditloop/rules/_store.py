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

from auditloop.exceptions import ConfigurationError
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
    ThresholdWindow,
    window_factory,
)

__all__ = ["Batch", "Change", "MemoryStore", "Store", "check_store"]

Event = Mapping[str, Any]

#: Distinct values that are their own dict key (see ``hashable``: a bool or
#: float is not).
_SCALARS: Final = frozenset({str, int, type(None)})
#: Seconds of engine time between sweeps that forget idle groups.
_GC_INTERVAL: Final = 1.0
_INF: Final = math.inf
#: ``needed`` of a Threshold rule that keeps no evidence: never reached.
_BIG: Final = 2**62


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
#: Counts one event for several rules at once (see ``Store``): ``(key,
#: timestamp, event, now) -> changes or None``.
Batch = Callable[[Hashable, float, Event, float], "list[Change] | None"]
#: A cohort's counting function, an observer that counts the event for all
#: members: it fills the cohort's ``stash`` (see ``_Cohort``) and returns the
#: first member's change.
_Count = Observer


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

    An optional ``batch(observers) -> Batch | None`` method lets a store
    count an event for several rules in one call: the engine offers it the
    observers it always calls together, unconditionally and with the same
    key, for an action; if it returns a function ``(key, timestamp, event,
    now) -> list[Change] | None``, the engine calls that instead of those
    observers, and it must do what they would have done, in their order.
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


def check_store(
    store: object, where: str, error: type[ConfigurationError] = ConfigurationError
) -> Store:
    """Return *store* if it implements :class:`Store`.

    Raises:
        ConfigurationError: (or *error*) starting with *where* otherwise.
    """
    if not isinstance(store, Store):
        raise error(
            f"{where} must implement rules.Store "
            f"(bind, observe, advance, stats, next_due), got {store!r}"
        )
    return store


def _insert_late(times: deque[float], timestamp: float) -> None:
    """Insert an out-of-order time, keeping the newest ``maxlen`` times."""
    if len(times) == times.maxlen:
        if timestamp <= times[0]:
            return  # older than every kept time: it cannot change the count
        times.popleft()
    insort(times, timestamp)


class _Table(Tally):
    """The groups of one rule, least recently seen first.

    A Threshold rule keeps its groups in its :class:`_Cohort` instead (shared
    with the Threshold rules that count the same events): ``groups`` stays
    empty, ``count`` counts them, and :meth:`find`, :meth:`drop` and
    :meth:`size` work for both.
    """

    __slots__ = ("cohort", "count", "groups", "index", "new", "rule")

    def __init__(self, rule: Rule) -> None:
        keep = rule.evidence
        if rule.kind in {"threshold", "distinct"}:
            keep = min(keep, int(rule.threshold))
        super().__init__(keep)
        self.rule = rule
        self.groups: OrderedDict[Hashable, GroupState] = OrderedDict()
        self.new: Callable[[], GroupState] = window_factory(rule, keep)
        self.cohort: _Cohort | None = None
        #: This rule's slot in its cohort's records.
        self.index = 0
        #: This rule's groups in its cohort.
        self.count = 0

    def find(self, key: Hashable) -> GroupState | None:
        """The state of group *key*, if the rule has one."""
        cohort = self.cohort
        if cohort is None:
            return self.groups.get(key)
        record = cohort.groups.get(key)
        if record is None:
            return None
        state = record[self.index]
        # A light (int) state has no deadline, so no caller needs it.
        return state if isinstance(state, GroupState) else None

    def drop(self, key: Hashable) -> None:
        """Forget the (existing) group *key*."""
        cohort = self.cohort
        if cohort is None:
            del self.groups[key]
        else:
            cohort.drop(self, key)

    def size(self) -> int:
        """How many groups the rule holds."""
        return len(self.groups) if self.cohort is None else self.count


class _Cohort:
    """Threshold rules that count exactly the same events in the same groups.

    Rules with the same ``group_by``, the same :class:`Match` objects (free of
    ``where`` callables and ``auditloop.*`` actions, so the engine always
    calls their observers for the same events with the same key), the same
    ``within`` and the same ``max_groups`` share one table: one lookup and
    one least-recently-seen update per event for all of them, and one deque
    of the newest times (as many as the largest ``at_least``: exact for each
    of them). Each rule keeps its own lifecycle and evidence per group.

    A record is ``[times, state of member 1, state of member 2, …]``. A
    member's state is a :class:`ThresholdWindow` once the group has been
    close to the threshold (evidence, lifecycle), before that just an int
    (the window's ``quiet`` count: most groups never get close, and one
    object less per group is memory the hot path does not have to touch),
    and ``None`` where the member has no group (it expired or was evicted
    for that member only); a record none of whose members has a group is
    deleted.
    Since all members see the same events, each member's recency order is
    the shared order restricted to its groups, so eviction stays exact.
    """

    __slots__ = ("absent", "done", "event", "groups", "members", "stash", "width")

    def __init__(self, members: list[_Table]) -> None:
        self.members = members
        self.groups: OrderedDict[Hashable, list[Any]] = OrderedDict()
        self.width = max(int(table.rule.threshold) for table in members)
        #: The event the first-called member counted for all members, the
        #: members that have returned their change for it (bits) and those
        #: changes.
        self.event: object = None
        self.done = 0
        self.stash: list[Change | None] = [None] * len(members)
        #: ``None`` slots in the records (none in the steady state).
        self.absent = 0
        for i, table in enumerate(members):
            table.cohort = self
            table.index = i + 1

    def drop(self, table: _Table, key: Hashable) -> None:
        """Forget *table*'s group *key*; delete the record once it is unused."""
        record = self.groups[key]
        record[table.index] = None
        table.count -= 1
        self.absent += 1
        unused = record.count(None)
        if unused == len(record) - 1:
            del self.groups[key]
            self.absent -= unused

    def evict(self, table: _Table) -> None:
        """Evict *table*'s least recently seen group (counted)."""
        index = table.index
        for key, record in self.groups.items():
            if record[index] is not None:
                self.drop(table, key)
                break
        table.evicted += 1


def _cohort_key(rule: Rule) -> Hashable:
    """Rules with equal keys see the same events: they may share a cohort."""
    if isinstance(rule, Threshold) and all(
        m.deterministic and not m.internal for m in rule.matchers
    ):
        criteria = tuple(m.criteria_key for m in rule.matchers)
        return (rule.key, criteria, rule.within, rule.max_groups)
    return ("alone", rule)


def _member_observer(
    cohort: _Cohort,
    j: int,
    count: _Count,
) -> Observer:
    """The observer of member *j* of *cohort* (see ``_cohort_observers``)."""
    bit = 1 << j
    stash = cohort.stash

    def observe(
        key: Hashable, timestamp: float, event: Event, _roles: int, now: float
    ) -> Change | None:
        if event is cohort.event and not cohort.done & bit:
            cohort.done |= bit  # counted by another member: return our change
            return stash[j]
        cohort.event = event
        cohort.done = bit
        count(key, timestamp, event, 0, now)
        return stash[j]

    return observe


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
        self._members: dict[Observer, tuple[_Cohort, int, _Count]] = {}
        self._heap: list[tuple[float, int, _Table, Hashable]] = []
        self._seq = itertools.count()
        self._started = False
        self._next_gc = -_INF

    def bind(self, rules: Sequence[Rule]) -> list[Observer]:
        """Start with empty state for *rules*; return their observers."""
        self._tables = {rule: _Table(rule) for rule in rules}
        self._members = {}
        self._heap = []
        self._started = False
        self._next_gc = -_INF
        self.next_due = -_INF
        cohorts: dict[Hashable, list[_Table]] = {}
        for table in self._tables.values():
            if isinstance(table.rule, Threshold):
                cohorts.setdefault(_cohort_key(table.rule), []).append(table)
        observers: dict[_Table, Observer] = {}
        for members in cohorts.values():
            observers.update(self._cohort_observers(_Cohort(members)))
        return [
            observers.get(table) or self._observer(table)
            for table in self._tables.values()
        ]

    # -- the hot path --------------------------------------------------------

    def _observer(self, table: _Table) -> Observer:
        """Build *table*'s observer, with everything it needs in closure cells."""
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

    def _cohort_observers(self, cohort: _Cohort) -> dict[_Table, Observer]:
        """Build the observers of *cohort*'s Threshold rules.

        The first member called for an event counts it for every member and
        keeps their changes; the others return theirs. The engine calls all
        members for the same events (see :class:`_Cohort`), so each event is
        counted once; the same event object observed again is counted again.
        """
        members = cohort.members
        first = members[0].rule
        within = first.within
        max_groups = first.max_groups
        width = cohort.width
        groups = cohort.groups
        find = groups.get
        touch = groups.move_to_end
        evict = cohort.evict
        stash = cohort.stash
        settle = self._settle
        nones: list[Change | None] = [None] * len(members)
        # Per member: an event can be evidence only if the window holds at
        # least ``needed`` events (it included) once it is counted: the count
        # rises by at most one per event and only falls as time passes, so
        # each of the newest ``keep`` events at a firing was counted with at
        # least ``at_least - keep + 1`` events in the window. Events counted
        # below that are never kept, which spares memory (and the garbage
        # collector) for the many groups far from their threshold. Below
        # ``low`` events in the window a group neither holds nor keeps
        # evidence; a group with ``count`` such events stays below for its
        # next ``low - 1 - count`` events (``quiet``), which skip the checks.
        params = []
        for j, table in enumerate(members):
            at_least = int(table.rule.threshold)
            keep = table.keep
            needed = at_least - keep + 1 if keep else _BIG
            params.append(
                (j, table, table.index, at_least, needed, min(needed, at_least), keep)
            )
        plan = tuple(params)
        fresh = [0] * len(members)

        def count(
            key: Hashable, timestamp: float, event: Event, _roles: int, now: float
        ) -> Change | None:
            cutoff = now - within
            if timestamp <= cutoff:
                for table in members:
                    table.late += 1
                stash[:] = nones
                return None
            record = find(key)
            if record is None:
                times: deque[float] = deque(maxlen=width)
                record = groups[key] = [times, *fresh]
                for table in members:
                    table.count += 1
                    if table.count > max_groups:
                        evict(table)
            else:
                touch(key)
                times = record[0]
                if cohort.absent:  # maybe a member's group expired or was evicted
                    for table in members:
                        if record[table.index] is None:
                            record[table.index] = 0
                            cohort.absent -= 1
                            table.count += 1
                            if table.count > max_groups:
                                evict(table)
            if not times or timestamp >= times[-1]:
                times.append(timestamp)  # a full deque drops the oldest
            else:
                _insert_late(times, timestamp)
            size = len(times)
            for j, table, index, at_least, needed, low, keep in plan:
                group = record[index]
                if group.__class__ is int:  # light: inactive, no evidence yet
                    if group:
                        record[index] = group - 1
                        stash[j] = None
                        continue
                    if size < low or times[-low] <= cutoff:
                        record[index] = low - 1 - (size - bisect_right(times, cutoff))
                        stash[j] = None
                        continue
                    group = record[index] = ThresholdWindow(times)
                quiet = group.quiet
                if quiet:
                    group.quiet = quiet - 1
                    stash[j] = (
                        settle(table, key, group, False, now)  # noqa: FBT003
                        if group.status
                        else None
                    )
                elif size < low or times[-low] <= cutoff:
                    group.quiet = low - 1 - (size - bisect_right(times, cutoff))
                    stash[j] = (
                        settle(table, key, group, False, now)  # noqa: FBT003
                        if group.status
                        else None
                    )
                else:
                    if size >= needed and times[-needed] > cutoff:
                        events = group.events
                        if events is None:  # the first that may become evidence
                            events = group.events = deque(maxlen=keep)
                        events.append(event)
                    holds = size >= at_least and times[-at_least] > cutoff
                    stash[j] = (
                        settle(table, key, group, holds, now)
                        if holds or group.status
                        else None
                    )
            return stash[0]

        if len(members) == 1:
            return {members[0]: count}  # it returns the first member's change
        observers = {
            table: _member_observer(cohort, j, count) for j, table in enumerate(members)
        }
        for j, observer in enumerate(observers.values()):
            self._members[observer] = (cohort, j, count)
        return observers

    def batch(self, observers: Sequence[Observer]) -> Batch | None:
        """Count events for *observers* in one call, if they form one cohort.

        See :class:`Store`: returns ``None`` unless *observers* are exactly
        the observers of the rules of one cohort (in any order).
        """
        found = [self._members.get(observer) for observer in observers]
        if len(found) < 2 or any(item is None for item in found):
            return None
        members = [item for item in found if item is not None]
        cohort, _, count = members[0]
        order = tuple(j for _, j, _ in members)
        if any(item[0] is not cohort for item in members) or sorted(order) != list(
            range(len(cohort.members))
        ):
            return None
        stash = cohort.stash

        def observe_all(
            key: Hashable, timestamp: float, event: Event, now: float
        ) -> list[Change] | None:
            cohort.event = None  # the member observers did not see this one
            count(key, timestamp, event, 0, now)
            if any(stash):
                return [c for c in (stash[j] for j in order) if c is not None]
            return None

        return observe_all

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
            group = table.find(key)
            if group is None or group.due != due:
                continue  # superseded by an earlier deadline, or evicted
            group.due = None
            rule = table.rule
            holds = group.holds(rule, due)
            change = self._settle(table, key, group, holds, due)
            if change is not None:
                changes.append(change)
            if self._forgettable(rule, group, due):
                table.drop(key)
                table.expired += 1
        if now >= self._next_gc:
            self._next_gc = now + _GC_INTERVAL
            self._collect(now)
        self.next_due = min(heap[0][0] if heap else _INF, self._next_gc)
        return changes

    @staticmethod
    def _settled(rule: Rule, group: GroupState, now: float) -> bool:
        """Inactive, not due for a re-check and not cooling down."""
        return (
            group.status == INACTIVE
            and group.due is None
            and group.last_fired + rule.cooldown <= now
        )

    @classmethod
    def _forgettable(cls, rule: Rule, group: GroupState, now: float) -> bool:
        """:meth:`_settled`, and its window is empty."""
        return cls._settled(rule, group, now) and group.idle(rule, now)

    def _collect(self, now: float) -> None:
        """Forget idle groups, least recently seen first, until one is not idle.

        A group whose window is empty but which must be kept (cooling down,
        or due for a re-check) is stepped over, not stopped at: else one
        group cooling down for an hour at the head would keep every idle
        group behind it, and they would fill ``max_groups`` and evict it.
        The sweep stops at the first group with events in its window (the
        ones behind it were seen later), so it costs the groups it forgets
        plus those it steps over: groups that fired within their cooldown.
        """
        for table in self._tables.values():
            groups = table.groups
            rule = table.rule
            cohort = table.cohort
            if cohort is not None:
                if table.count:
                    self._collect_member(table, cohort, now)
                continue
            idle = []
            for key, group in groups.items():
                if not group.idle(rule, now):
                    break
                if self._settled(rule, group, now):
                    idle.append(key)
            for key in idle:
                del groups[key]
                table.expired += 1

    def _collect_member(self, table: _Table, cohort: _Cohort, now: float) -> None:
        """:meth:`_collect` for a cohort member: its groups in shared order."""
        rule = table.rule
        index = table.index
        cutoff = now - rule.within
        idle = []
        for key, record in cohort.groups.items():
            group = record[index]
            if group is None:
                continue
            if group.__class__ is int:  # light: inactive, so idle decides
                times = record[0]
                if times and times[-1] > cutoff:
                    break
            elif not group.idle(rule, now):
                break
            elif not self._settled(rule, group, now):
                continue  # kept (cooling down...), but no reason to stop
            idle.append(key)
        for key in idle:
            cohort.drop(table, key)
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
            rule.name: {"groups": table.size(), **table.snapshot()}
            for rule, table in self._tables.items()
        }
