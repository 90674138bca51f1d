"""CLI throughput: ``query`` and ``summary`` on a 1M-event trail, against jq.

The trail is written once per run (events shaped like the ones the Auditor
writes: ids, times, actor, target, attributes, context, source; 4 actors, so
``--actor alice`` keeps about a quarter). Each command runs as a user runs
it, in a child process with stdout to /dev/null, so interpreter start-up
and output are inside the measurement. jq runs the equivalent filter on the
same file when it is installed.

Run: python benchmarks/bench_cli.py (BENCH_CLI_N=200000 for a quick look).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).parent))
from _table import format_table

N = int(os.environ.get("BENCH_CLI_N", "1000000"))
TARGETS = "Target: query and summary scan >= 300k events/s (jq shown for comparison)."

ACTORS = ("alice", "bob", "carol", "mallory")
ACTIONS = (
    ("document.read", "data"),
    ("document.delete", "data"),
    ("permission.grant", "permission"),
    ("user.login", "authentication"),
)
OUTCOMES = ("success",) * 8 + ("failure", "denied")


def write_trail(path: Path, n: int) -> None:
    """Write *n* auditloop-shaped events to *path* (deterministic)."""
    from auditloop._clock import format_rfc3339, uuid7

    rng = random.Random(1)
    start_ns = 1_767_225_600 * 10**9
    with path.open("wb") as stream:
        batch = []
        for i in range(n):
            ns = start_ns + i * 86_400 * 10**9 // n  # one day
            action, category = rng.choice(ACTIONS)
            record = {
                "id": uuid7(ns),
                "time": format_rfc3339(ns),
                "action": action,
                "category": category,
                "outcome": rng.choice(OUTCOMES),
                "actor": {"id": rng.choice(ACTORS), "type": "user"},
                "target": {"id": f"document:{rng.randrange(5000)}", "type": "document"},
                "duration_ms": round(rng.random() * 20, 3),
                "attributes": {"tenant": rng.choice(("acme", "globex"))},
                "context": {"request_id": f"r-{i}"},
                "source": {
                    "service": "docs-api",
                    "host": "web-1",
                    "pid": 4242,
                    "function": "app.documents:handle",
                },
                "schema": "auditloop/1",
            }
            batch.append(orjson.dumps(record))
            if len(batch) == 10_000:
                stream.write(b"\n".join(batch) + b"\n")
                batch = []
        if batch:
            stream.write(b"\n".join(batch) + b"\n")


def _time(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def run() -> list[dict[str, Any]]:
    """Return one row per command: seconds and events scanned per second."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        trail = Path(tmp) / "audit.jsonl"
        write_trail(trail, N)
        cli = [sys.executable, "-m", "auditloop"]
        commands = {
            "auditloop query --actor alice --json": [
                *cli,
                "query",
                str(trail),
                "--actor",
                "alice",
                "--json",
            ],
            "auditloop summary --json": [*cli, "summary", str(trail), "--json"],
        }
        jq = shutil.which("jq")
        if jq:
            commands["jq -c 'select(.actor.id==\"alice\")'"] = [
                jq,
                "-c",
                'select(.actor.id=="alice")',
                str(trail),
            ]
        for name, command in commands.items():
            seconds = min(_time(command) for _ in range(2))
            rows.append(
                {
                    "command": name,
                    "events": N,
                    "seconds": seconds,
                    "events_per_s": round(N / seconds),
                }
            )
    return rows


if __name__ == "__main__":
    print(format_table(run()))
    print(TARGETS)
