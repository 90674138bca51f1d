"""One pass over a trail, counting what ``summary`` and ``report`` show.

Per event the hot loop does two dict updates: one keyed by the
``(action, actor, outcome, category)`` combination and one by
``(minute, outcome)``. Every marginal count (by action, by actor, per hour,
failures per actor ...) is derived afterwards from those far fewer keys.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

from auditloop._cli._common import time_key

__all__ = ["ALERT_ACTION", "NONE", "TrailStats"]

#: Shown (and used as a key) for an event without actor, category, ...
NONE: Final = "-"
#: The action of the events the rule engine emits for firing/resolved alerts.
ALERT_ACTION: Final = "auditloop.alert"
_CANONICAL: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def _text(value: Any) -> str:
    if value is None:
        return NONE
    return value if isinstance(value, str) else str(value)


class TrailStats:
    """Counts over the events of a trail; feed with :meth:`add_all`.

    Not thread-safe. Memory grows with the number of distinct
    (action, actor, outcome, category) combinations and of minutes, not
    with the number of events.
    """

    def __init__(self) -> None:
        self.events = 0
        self._raw: dict[tuple[Any, Any, Any, Any], int] = {}
        self._combos: dict[tuple[str, str, str, str], int] | None = None
        self.minutes: dict[tuple[str, Any], int] = {}
        self.first: str | None = None
        self.last: str | None = None
        self.untimed = 0
        self.alerts: list[dict[str, Any]] = []

    def add_all(self, records: Iterable[dict[str, Any]]) -> None:
        """Count every record of *records*."""
        raw = self._raw
        minutes = self.minutes
        first, last = self.first, self.last
        events = 0
        for record in records:
            events += 1
            get = record.get
            actor = get("actor")
            outcome = get("outcome")
            # Raw values as key; odd types are normalised once per key, later.
            key = (
                get("action"),
                actor.get("id") if actor.__class__ is dict else actor,
                outcome,
                get("category"),
            )
            try:
                raw[key] = raw.get(key, 0) + 1
            except TypeError:  # an unhashable value (a list) in a field
                key = (_text(key[0]), _text(key[1]), _text(key[2]), _text(key[3]))
                raw[key] = raw.get(key, 0) + 1
            when = get("time")
            if not (
                when.__class__ is str
                and len(when) == 27
                and when[26] == "Z"
                and when[10] == "T"
            ):
                when = time_key(when)
                if when is None:
                    self.untimed += 1
                    continue
            if first is None or when < first:
                first = when
            if last is None or when > last:
                last = when
            minute = (when[:16], outcome)
            try:
                minutes[minute] = minutes.get(minute, 0) + 1
            except TypeError:
                minute = (when[:16], _text(outcome))
                minutes[minute] = minutes.get(minute, 0) + 1
            if key[0] == ALERT_ACTION:
                self.alerts.append(record)
        self.events += events
        self.first, self.last = first, last
        self._combos = None
        self._drop_malformed_times()

    def _drop_malformed_times(self) -> None:
        """Count times that only look canonical (the hot loop checks just their
        shape) as untimed, so the charts only ever parse real times."""
        for minute, outcome in list(self.minutes):
            try:
                datetime.fromisoformat(minute + ":00+00:00")
            except ValueError:
                self.untimed += self.minutes.pop((minute, outcome))
        bounds = [self.first, self.last]
        if all(b is None or _CANONICAL.fullmatch(b) for b in bounds):
            return
        minutes = sorted(minute for minute, _outcome in self.minutes)
        self.first = minutes[0] + ":00.000000Z" if minutes else None
        self.last = minutes[-1] + ":59.999999Z" if minutes else None

    @property
    def combos(self) -> dict[tuple[str, str, str, str], int]:
        """Counts per (action, actor, outcome, category), missing values as ``-``."""
        if self._combos is None:
            combos: dict[tuple[str, str, str, str], int] = {}
            for (action, actor, outcome, category), n in self._raw.items():
                key = (_text(action), _text(actor), _text(outcome), _text(category))
                combos[key] = combos.get(key, 0) + n
            self._combos = combos
        return self._combos

    # -- derived counts ------------------------------------------------------

    def by(self, index: int) -> Counter[str]:
        """Counts by action (0), actor (1), outcome (2) or category (3)."""
        counts: Counter[str] = Counter()
        for key, n in self.combos.items():
            counts[key[index]] += n
        return counts

    def rate(self, outcome: str) -> float:
        """The share of events with *outcome* (0.0 for an empty trail)."""
        return self.by(2)[outcome] / self.events if self.events else 0.0

    def actors_by_failures(self, top: int) -> list[dict[str, Any]]:
        """Actors with failed or denied events, most first (ties by name)."""
        rows: dict[str, dict[str, Any]] = {}
        for (_action, actor, outcome, _category), n in self.combos.items():
            row = rows.setdefault(
                actor, {"actor": actor, "failures": 0, "denied": 0, "events": 0}
            )
            row["events"] += n
            if outcome == "failure":
                row["failures"] += n
            elif outcome == "denied":
                row["denied"] += n
        failing = [r for r in rows.values() if r["failures"] or r["denied"]]
        failing.sort(key=lambda r: (-(r["failures"] + r["denied"]), r["actor"]))
        return failing[:top]

    def actor_outcomes(self) -> dict[str, Counter[str]]:
        """Per actor, counts by outcome."""
        result: dict[str, Counter[str]] = {}
        for (_action, actor, outcome, _category), n in self.combos.items():
            result.setdefault(actor, Counter())[outcome] += n
        return result

    def action_outcomes(self) -> dict[str, Counter[str]]:
        """Per action, counts by outcome."""
        result: dict[str, Counter[str]] = {}
        for (action, _actor, outcome, _category), n in self.combos.items():
            result.setdefault(action, Counter())[outcome] += n
        return result

    def per_hour(self) -> dict[str, int]:
        """Events per hour, keyed ``YYYY-MM-DDTHH:00:00Z``, in time order."""
        hours: Counter[str] = Counter()
        for (minute, _outcome), n in self.minutes.items():
            hours[minute[:13] + ":00:00Z"] += n
        return dict(sorted(hours.items()))

    def per_bucket(self, seconds: int) -> dict[float, Counter[str]]:
        """Events per *seconds*-long bucket (keyed by its Unix start), by outcome."""
        buckets: dict[float, Counter[str]] = {}
        starts: dict[str, float] = {}
        for (minute, outcome), n in self.minutes.items():
            start = starts.get(minute)
            if start is None:
                moment = datetime.fromisoformat(minute + ":00+00:00").timestamp()
                start = starts[minute] = moment - moment % seconds
            buckets.setdefault(start, Counter())[_text(outcome)] += n
        return dict(sorted(buckets.items()))
