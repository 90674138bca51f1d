"""In-memory window state per (rule, group), one class per rule kind.

Used by :class:`~auditloop.rules.MemoryStore`. Every class keeps bounded
state and answers the same questions at a time *now* (``add``, ``holds``,
``value``, ``recent``, ``next_change``, ``idle``); the lifecycle fields of
:class:`GroupState` (pending, firing, cooldown) are shared by all kinds.

Time semantics: at time *t* a window of length ``within`` holds the events
with time in ``(t - within, t]``. Events arrive with non-decreasing time in
the common case (an append); a late event that is still inside the window is
inserted in time order.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from auditloop.rules._kinds import (
        Absence,
        Distinct,
        Ratio,
        Rule,
        Sequence,
        Threshold,
    )

__all__ = [
    "FIRING",
    "INACTIVE",
    "PENDING",
    "SUPPRESSED",
    "AbsenceWindow",
    "DistinctWindow",
    "GroupState",
    "RatioWindow",
    "SequenceWindow",
    "Tally",
    "ThresholdWindow",
    "window_factory",
]

Event = Mapping[str, Any]

INACTIVE: Final = 0
PENDING: Final = 1
FIRING: Final = 2
SUPPRESSED: Final = 3  # the condition holds but cooldown blocks firing

_NEG_INF: Final = -math.inf
_SCALARS: Final = frozenset({str, int, float, bool, type(None)})


class Tally:
    """Per-rule counters and derived limits, owned by a store."""

    __slots__ = (
        "evicted",
        "expired",
        "fired",
        "keep",
        "late",
        "overflow",
        "resolved",
        "suppressed",
    )

    def __init__(self, keep: int) -> None:
        #: Most evidence events kept per group.
        self.keep = keep
        self.fired = 0
        self.resolved = 0
        self.suppressed = 0
        self.evicted = 0
        self.expired = 0
        self.late = 0
        self.overflow = 0

    def snapshot(self) -> dict[str, int]:
        """Return the counters as a dict."""
        return {
            "fired": self.fired,
            "resolved": self.resolved,
            "suppressed": self.suppressed,
            "evicted_groups": self.evicted,
            "expired_groups": self.expired,
            "late_events": self.late,
            "overflow": self.overflow,
        }


class GroupState:
    """Lifecycle of one (rule, group): inactive → pending → firing → resolved."""

    __slots__ = ("due", "fired_at", "fired_evidence", "last_fired", "since", "status")

    def __init__(self) -> None:
        self.status = INACTIVE
        #: When the condition started holding (pending since).
        self.since = 0.0
        self.fired_at = 0.0
        #: Time of the last firing, for cooldown; kept across resolutions.
        self.last_fired = _NEG_INF
        #: The deadline currently scheduled for this group, if any.
        self.due: float | None = None
        self.fired_evidence: tuple[Event, ...] = ()

    # Kind-specific windows override these.
    def add(  # noqa: PLR0917 - hot path: positional arguments are cheapest
        self, rule: Any, tally: Tally, ts: float, event: Event, roles: int, now: float
    ) -> bool:
        """Count one matching event; return whether the condition holds at *now*."""
        raise NotImplementedError

    def holds(self, rule: Any, now: float) -> bool:
        """Whether the condition holds at *now*."""
        raise NotImplementedError

    def value(self, rule: Any, now: float) -> float:
        """The alert value at *now* (count, ratio, seconds …)."""
        raise NotImplementedError

    def recent(self, rule: Any, tally: Tally, now: float) -> tuple[Event, ...]:
        """Evidence: the events behind the condition at *now*, newest last."""
        raise NotImplementedError

    def next_change(self, rule: Any, now: float) -> float | None:
        """The earliest later time the condition may change without new events."""
        raise NotImplementedError

    def idle(self, rule: Any, now: float) -> bool:
        """Whether the window is empty at *now* (the group can be forgotten)."""
        raise NotImplementedError


class ThresholdWindow(GroupState):
    """The newest ``at_least`` times (exact for ``count >= at_least``).

    ``events`` holds the newest ``keep`` matching events that may become
    evidence (``None`` until the first one: most groups never come near
    their threshold). :class:`MemoryStore` updates both in its Threshold
    observer, inlined because it runs for every matching event.
    """

    __slots__ = ("events", "quiet", "times")

    def __init__(self, times: deque[float]) -> None:
        super().__init__()
        #: The newest times, at least ``at_least`` of them (the deque may be
        #: shared with other Threshold rules of the same events, group and
        #: window, and then keeps as many as the largest ``at_least``).
        self.times = times
        self.events: deque[Event] | None = None
        #: Events still to come that cannot make the group hold or become
        #: evidence (the observer skips its checks for them).
        self.quiet = 0

    def holds(self, rule: Threshold, now: float) -> bool:
        times = self.times
        at_least = rule.at_least
        return len(times) >= at_least and times[-at_least] > now - rule.within

    def value(self, rule: Threshold, now: float) -> float:
        cutoff = now - rule.within
        return float(min(rule.at_least, sum(1 for ts in self.times if ts > cutoff)))

    def recent(self, rule: Threshold, tally: Tally, now: float) -> tuple[Event, ...]:
        # While the rule holds, the newest at_least events are all in the
        # window, and these are the newest of them.
        return () if self.events is None else tuple(self.events)

    def next_change(self, rule: Threshold, now: float) -> float | None:
        # The count drops below at_least when the at_least-th newest expires.
        if not self.holds(rule, now):
            return None
        return self.times[-rule.at_least] + rule.within

    def idle(self, rule: Threshold, now: float) -> bool:
        return not self.times or self.times[-1] <= now - rule.within


def _recent(
    times: deque[float], events: deque[Event], cutoff: float
) -> tuple[Event, ...]:
    return tuple(e for ts, e in zip(times, events, strict=True) if ts > cutoff)


class RatioWindow(GroupState):
    """Every event time in the window with its flags (bit 0 match, bit 1 of).

    Times and flags live in two parallel deques (no tuple per event, so
    nothing extra for the garbage collector to track). :class:`MemoryStore`
    updates them in its Ratio observer (inlined).
    """

    __slots__ = ("den", "event_times", "events", "flags", "num", "times")

    def __init__(self, keep: int) -> None:
        super().__init__()
        self.times: deque[float] = deque()
        self.flags: deque[int] = deque()
        self.num = 0
        self.den = 0
        self.events: deque[Event] = deque(maxlen=keep)
        self.event_times: deque[float] = deque(maxlen=keep)

    def _evict(self, cutoff: float) -> None:
        times = self.times
        while times and times[0] <= cutoff:
            times.popleft()
            flags = self.flags.popleft()
            self.num -= flags & 1
            self.den -= flags >> 1

    def holds(self, rule: Ratio, now: float) -> bool:
        self._evict(now - rule.within)
        den = self.den
        return den >= rule.min_count and self.num / den > rule.above

    def value(self, rule: Ratio, now: float) -> float:
        self._evict(now - rule.within)
        return self.num / self.den if self.den else 0.0

    def recent(self, rule: Ratio, tally: Tally, now: float) -> tuple[Event, ...]:
        return _recent(self.event_times, self.events, now - rule.within)

    def next_change(self, rule: Ratio, now: float) -> float | None:
        # Any expiry changes the ratio (only re-checked while not inactive).
        self._evict(now - rule.within)
        return self.times[0] + rule.within if self.times else None

    def idle(self, rule: Ratio, now: float) -> bool:
        return not self.times or self.times[-1] <= now - rule.within


class DistinctWindow(GroupState):
    """The ``at_least`` most recently seen values with their latest time.

    Keeping only the newest ``at_least`` values is exact for
    ``distinct >= at_least``: a dropped value is older than every kept one,
    so it leaves the window first. :class:`MemoryStore` updates it in its
    Distinct observer (inlined).
    """

    __slots__ = ("event_times", "events", "newest", "seen")

    def __init__(self, keep: int) -> None:
        super().__init__()
        self.seen: OrderedDict[object, float] = OrderedDict()
        self.newest = _NEG_INF
        self.events: deque[Event] = deque(maxlen=keep)
        self.event_times: deque[float] = deque(maxlen=keep)

    def reorder(self) -> None:
        """Restore time order after a late event (rare)."""
        ordered = sorted(self.seen.items(), key=_second)
        self.seen.clear()
        self.seen.update(ordered)

    def holds(self, rule: Distinct, now: float) -> bool:
        seen = self.seen
        return (
            len(seen) == rule.at_least and next(iter(seen.values())) > now - rule.within
        )

    def value(self, rule: Distinct, now: float) -> float:
        cutoff = now - rule.within
        return float(sum(1 for ts in self.seen.values() if ts > cutoff))

    def recent(self, rule: Distinct, tally: Tally, now: float) -> tuple[Event, ...]:
        return _recent(self.event_times, self.events, now - rule.within)

    def next_change(self, rule: Distinct, now: float) -> float | None:
        if not self.holds(rule, now):
            return None
        return next(iter(self.seen.values())) + rule.within

    def idle(self, rule: Distinct, now: float) -> bool:
        return self.newest <= now - rule.within


def _second(item: tuple[object, float]) -> float:
    return item[1]


class AbsenceWindow(GroupState):
    """The time (and event) of the last matching event."""

    __slots__ = ("event", "last")

    def __init__(self, last: float = _NEG_INF) -> None:
        super().__init__()
        self.last = last
        self.event: Event | None = None

    def add(  # noqa: PLR0917 - hot path: positional arguments are cheapest
        self,
        rule: Absence,
        tally: Tally,
        ts: float,
        event: Event,
        roles: int,
        now: float,
    ) -> bool:
        if ts >= self.last:
            self.last = ts
            if tally.keep:
                self.event = event
        return False  # the store drops events already outside the window

    def holds(self, rule: Absence, now: float) -> bool:
        return self.last <= now - rule.within

    def value(self, rule: Absence, now: float) -> float:
        return now - self.last

    def recent(self, rule: Absence, tally: Tally, now: float) -> tuple[Event, ...]:
        return (self.event,) if self.event is not None else ()

    def next_change(self, rule: Absence, now: float) -> float | None:
        return None if self.holds(rule, now) else self.last + rule.within

    def idle(self, rule: Absence, now: float) -> bool:
        return False  # a watched group stays watched (bounded by max_groups)


class SequenceWindow(GroupState):
    """Per step, the latest start time of a chain that reached that step.

    Keeping the latest start per step is enough to decide whether some chain
    of events matching the steps in order fits in the window: a later start
    can only help.
    """

    __slots__ = ("chains", "starts")

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.starts: list[float] = [_NEG_INF] * steps
        self.chains: list[tuple[Event, ...]] = [()] * steps

    def add(  # noqa: PLR0917 - hot path: positional arguments are cheapest
        self,
        rule: Sequence,
        tally: Tally,
        ts: float,
        event: Event,
        roles: int,
        now: float,
    ) -> bool:
        starts = self.starts
        chains = self.chains
        cutoff = now - rule.within
        # Highest step first, so one event advances a chain by one step only.
        j = roles.bit_length() - 1
        while j >= 0:
            if roles >> j & 1:
                if j == 0:
                    if ts >= starts[0]:
                        starts[0] = ts
                        chains[0] = (event,)
                else:
                    start = starts[j - 1]
                    if start > cutoff and start >= starts[j]:
                        starts[j] = start
                        chains[j] = (*chains[j - 1], event)
            j -= 1
        return starts[-1] > cutoff

    def holds(self, rule: Sequence, now: float) -> bool:
        return self.starts[-1] > now - rule.within

    def value(self, rule: Sequence, now: float) -> float:
        cutoff = now - rule.within
        return float(sum(1 for start in self.starts if start > cutoff))

    def recent(self, rule: Sequence, tally: Tally, now: float) -> tuple[Event, ...]:
        keep = tally.keep
        return self.chains[-1][-keep:] if keep else ()

    def next_change(self, rule: Sequence, now: float) -> float | None:
        return self.starts[-1] + rule.within if self.holds(rule, now) else None

    def idle(self, rule: Sequence, now: float) -> bool:
        return max(self.starts) <= now - rule.within


def window_factory(rule: Rule, keep: int) -> Callable[[], GroupState]:
    """Return the constructor of *rule*'s per-group window state.

    *keep* is the most evidence events a group keeps.
    """
    if rule.kind == "threshold":
        at_least = int(rule.threshold)
        return lambda: ThresholdWindow(deque(maxlen=at_least))
    if rule.kind == "ratio":
        return lambda: RatioWindow(keep)
    if rule.kind == "distinct":
        return lambda: DistinctWindow(keep)
    if rule.kind == "absence":
        return AbsenceWindow
    if rule.kind == "sequence":
        steps = len(rule.matchers)
        return lambda: SequenceWindow(steps)
    raise ValueError(f"unknown rule kind {rule.kind!r}")
