"""Rule engine cost: µs per event and peak memory vs. the number of rules.

1M events over 10k actors go through ``RuleEngine.observe`` with 5, 50 and
500 configured rules, of which 3 match every event; the others watch
actions that never occur (half exact names, half globs), which is what most
rules of a real rule set do for any given event. Two mixes of the 3
matching rules are measured:

- ``thresholds``: three Threshold rules grouped by ``actor.id``;
- ``mixed``: a Threshold, a Distinct (targets per actor) and a Ratio
  (failures among an actor's events).

Targets (issue 3): at most 2 µs per event at 50 rules, and the 500-rule row
no more than 1.3x the 5-rule row.

Each event is built fresh, as the Auditor hands it over (so the garbage
collector sees the events rules keep as evidence, as it would in an
application); the cost of building it is measured separately and
subtracted. Time is measured without tracing; peak memory is measured in a
second pass under ``tracemalloc`` (which slows Python down several times)
over ``MEMORY_EVENTS`` events — every actor's groups exist by then, which is
the steady state.

Run ``python benchmarks/bench_rules.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from _table import format_table

from auditloop import rules
from auditloop.rules._engine import RuleEngine

EVENTS = 1_000_000
ACTORS = 10_000
RULE_COUNTS = (5, 50, 500)
#: Event time covered by the run: 1M events over 1 hour is ~280 events/s,
#: so each actor has ~17 events in a 10-minute window.
SPAN_SECONDS = 3600.0
MEMORY_EVENTS = 200_000
START = 1_767_225_600.0
TARGETS = (
    "targets: ≤ 2 µs/event at 50 rules; 500-rule row ≤ 1.3× the 5-rule row (vs_5_rules)"
)
ACTIONS = ("doc.read", "doc.update", "doc.delete", "doc.share")


def matching_rules(mix: str) -> list[rules.Rule]:
    """The three rules that match every event."""
    doc = rules.match(action="doc.*")
    if mix == "thresholds":
        return [
            # Each rule writes its own (equal) match, as users do.
            rules.Threshold(
                f"busy-{n}",
                match=rules.match(action="doc.*"),
                group_by=["actor.id"],
                at_least=n,
                within="10m",
            )
            for n in (25, 30, 35)
        ]
    return [
        rules.Threshold(
            "busy-actor", match=doc, group_by=["actor.id"], at_least=25, within="10m"
        ),
        rules.Distinct(
            "many-targets",
            match=doc,
            field="target.id",
            group_by=["actor.id"],
            at_least=20,
            within="10m",
        ),
        rules.Ratio(
            "failing-actor",
            match=rules.match(action="doc.*", outcome="failure"),
            of=doc,
            group_by=["actor.id"],
            above=0.5,
            min_count=5,
            within="10m",
        ),
    ]


def make_rules(mix: str, count: int) -> list[rules.Rule]:
    """The matching rules plus ``count - 3`` that never match."""
    result = matching_rules(mix)
    for i in range(count - 3):
        action = f"svc{i}.op" if i % 2 else f"svc{i}.*"
        result.append(
            rules.Threshold(
                f"idle-{i}",
                match=rules.match(action=action),
                group_by=["actor.id"],
                at_least=5,
                within="10m",
            )
        )
    return result


class Stream:
    """Pre-drawn random choices; events are built from them on the fly."""

    def __init__(self, size: int, seed: int = 7) -> None:
        rng = random.Random(seed)
        self.actions = [rng.choice(ACTIONS) for _ in range(size)]
        self.outcomes = [
            "failure" if rng.random() < 0.1 else "success" for _ in range(size)
        ]
        self.targets = [f"doc:{rng.randrange(500)}" for _ in range(size)]
        self.actors = [f"user-{i % ACTORS}" for i in range(size)]

    def feed(
        self, observe: Callable[[dict[str, Any], float], None], events: int
    ) -> float:
        """Build and observe *events* events; return the CPU seconds taken."""
        step = SPAN_SECONDS / EVENTS
        actions, outcomes = self.actions, self.outcomes
        targets, actors = self.targets, self.actors
        size = len(actions)
        begin = time.process_time()
        for i in range(events):
            j = i % size
            event = {
                "id": "01970000-0000-7000-8000-000000000000",
                "time": "2026-01-01T00:00:00.000000Z",
                "action": actions[j],
                "outcome": outcomes[j],
                "actor": {"id": actors[j], "type": "user"},
                "target": {"id": targets[j], "type": "doc"},
                "schema": "auditloop/1",
            }
            observe(event, START + i * step)
        return time.process_time() - begin


def _discard(event: dict[str, Any], timestamp: float) -> None:
    pass


def _engine(rule_set: list[rules.Rule]) -> RuleEngine:
    return RuleEngine(rule_set, auditor=None, clock=None, actions=False, ticker=False)


def measure(
    mix: str, count: int, stream: Stream, events: int, memory_events: int, build: float
) -> dict[str, Any]:
    """One row: engine µs/event (build cost subtracted) and peak memory."""
    rule_set = make_rules(mix, count)
    gc.collect()
    engine = _engine(rule_set)
    elapsed = stream.feed(engine.observe, events)
    stats = engine.stats()
    engine.shutdown(0)
    del engine
    gc.collect()
    tracemalloc.start()
    engine = _engine(rule_set)
    stream.feed(engine.observe, memory_events)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    engine.shutdown(0)
    return {
        "mix": mix,
        "rules": count,
        "us_per_event": round((elapsed - build) / events * 1e6, 2),
        "peak_mib": round(peak / 2**20, 1),
        "groups": stats["groups"],
        "alerts": stats["fired"] + stats["resolved"],
    }


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Return one row per (mix, rule count): the ``make bench`` entry point."""
    events = 50_000 if quick else EVENTS
    memory_events = 20_000 if quick else MEMORY_EVENTS
    stream = Stream(min(events, 200_000))
    build = min(stream.feed(_discard, events) for _ in range(2))
    rows = []
    for mix in ("thresholds", "mixed"):
        mix_rows = [
            measure(mix, count, stream, events, memory_events, build)
            for count in RULE_COUNTS
        ]
        base = mix_rows[0]["us_per_event"]
        for row in mix_rows:
            row["vs_5_rules"] = round(row["us_per_event"] / base, 2)
        rows += mix_rows
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    args = parser.parse_args(argv)
    print(format_table(run(quick=args.quick)))
    print(TARGETS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
