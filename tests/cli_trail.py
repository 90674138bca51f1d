"""A generated audit trail for the CLI tests, with its expected contents.

The trail is written by the real pipeline (Auditor → FileSink with rotation
and gzip); what each event should contain is remembered independently, so
tests compare the CLI's counts with values computed here, not by the CLI.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from auditloop import Auditor
from auditloop.sinks import Delivery, FileSink
from auditloop.testing import FakeClock

START = datetime(2026, 1, 1, tzinfo=UTC)
ACTORS = ("alice", "bob", "carol", "mallory")
ACTIONS = (
    ("document.read", "data"),
    ("document.delete", "data"),
    ("permission.grant", "permission"),
    ("user.login", "authentication"),
)
OUTCOMES = ("success", "success", "success", "failure", "denied")
TENANTS = ("acme", "globex")
GARBAGE = (b"this is not json", b"[1, 2, 3]", b'{"unterminated": ')
TORN = b'{"id": "torn", "time": "2026-01-0'


@dataclass(frozen=True)
class Expected:
    """What the generator emitted for one event."""

    time: datetime
    actor: str
    action: str
    category: str
    outcome: str
    tenant: str
    target: str

    @property
    def stamp(self) -> str:
        return self.time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Trail:
    base: Path
    files: list[Path]
    events: list[Expected] = field(default_factory=list)
    garbage_lines: int = 0


def make_trail(
    directory: Path,
    *,
    n: int = 600,
    seed: int = 7,
    step: timedelta = timedelta(seconds=23),
    max_bytes: int | None = 30_000,
    garbage: bool = True,
    rule_list: Sequence[object] = (),
) -> Trail:
    """Write *n* events (rotated and gzipped when *max_bytes*), then damage the
    live file with garbage lines and a torn last line when *garbage*.

    With *rule_list*, the alerts the rules raise are in the trail too (as
    ``auditloop.alert`` events, not in ``Trail.events``)."""
    rng = random.Random(seed)
    base = directory / "audit.jsonl"
    clock = FakeClock(START)
    sink = FileSink(
        base,
        max_bytes=max_bytes,
        backups=100,
        compress=True,
        delivery=Delivery(mode="sync"),
    )
    auditor = Auditor(service="cli-test", sinks=[sink], clock=clock, rules=rule_list)
    trail = Trail(base=base, files=[])
    for _ in range(n):
        actor = rng.choice(ACTORS)
        action, category = rng.choice(ACTIONS)
        outcome = rng.choice(OUTCOMES)
        tenant = rng.choice(TENANTS)
        target = f"document:{rng.randrange(40)}"
        moment = datetime.fromtimestamp(clock(), UTC)
        auditor.emit(
            action,
            actor=actor,
            target=target,
            outcome=outcome,
            category=category,
            tenant=tenant,
        )
        trail.events.append(
            Expected(moment, actor, action, category, outcome, tenant, target)
        )
        clock.advance(step)
    auditor.shutdown(timeout=5)
    if garbage:
        with base.open("ab") as stream:
            for line in GARBAGE:
                stream.write(line + b"\n")
            stream.write(TORN)
        trail.garbage_lines = len(GARBAGE) + 1
    rotated = sorted(
        directory.glob("audit.jsonl.*"), key=lambda p: -int(p.name.split(".")[2])
    )
    trail.files = [*rotated, base]
    return trail


def make_chained(
    directory: Path, key: bytes, *, n: int = 120, max_bytes: int | None = None
) -> Path:
    """Write *n* events to a hash-chained trail (rotated when *max_bytes*)."""
    base = directory / "chained.jsonl"
    clock = FakeClock(START)
    sink = FileSink(
        base,
        chain=True,
        key=key,
        key_id="k1",
        max_bytes=max_bytes,
        backups=100,
        compress=True,
        delivery=Delivery(mode="sync"),
    )
    auditor = Auditor(service="cli-test", sinks=[sink], clock=clock)
    for i in range(n):
        auditor.emit("document.read", actor=ACTORS[i % 4], target=f"document:{i}")
        clock.advance(30)
    auditor.shutdown(timeout=5)
    return base
