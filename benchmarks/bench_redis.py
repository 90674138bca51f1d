"""RedisStore cost: µs per event and Redis round trips per event.

Events go through ``RuleEngine.observe`` with the 3 matching rules of
``bench_rules.py``'s ``mixed`` set (a Threshold, a Distinct and a Ratio,
grouped by actor) plus 47 rules that never match, once with the in-memory
store and once with a :class:`~auditloop.rules.RedisStore` on a
``redis-server`` this benchmark starts on 127.0.0.1 (no persistence). A row
with only 1 matching rule shows that the round trips do not grow with the
number of matching rules, and a row of bare ``PING`` round trips shows the
floor the network and the client library set on this machine.

Round trips are counted on the server (``INFO commandstats``: calls of
``EVALSHA`` and ``EVAL``), not by the client, and cross-checked with the
store's own count. Time is wall time (the store waits for the network), per
event, including building the event.

Targets (issue 8): at most 1 round trip per event however many rules
match, and at most 150 µs per event on loopback.

Run ``python benchmarks/bench_redis.py`` (``--quick`` for a smoke run).
Needs ``redis-server`` on PATH (``tools/ensure-redis.sh`` installs it).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from _table import format_table
from bench_rules import Stream, make_rules

from auditloop import rules
from auditloop.rules._engine import RuleEngine

EVENTS = 20_000
TARGETS = (
    "targets: ≤ 1 round trip/event at any number of matching rules; ≤ 150 µs/event"
)


@contextmanager
def redis_server() -> Iterator[str | None]:
    """Start redis-server on a free port; yield its URL (None if missing)."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not shutil.which(binary):
        yield None
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as workdir:
        process = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            import redis

            client = redis.Redis(port=port)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.kill()
            process.wait()


def script_calls(url: str) -> int:
    import redis

    stats = redis.Redis.from_url(url).info("commandstats")
    return sum(
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))
        for name in ("evalsha", "eval")
    )


def measure(
    store_name: str, url: str | None, matching: int, stream: Stream, events: int
) -> dict[str, Any]:
    rule_set = make_rules("mixed", 50)
    if matching == 1:
        rule_set = rule_set[:1] + rule_set[3:]
    store: Any = None
    if store_name == "redis":
        store = rules.RedisStore(url, prefix=f"bench{time.monotonic_ns()}:")
    engine = RuleEngine(
        rule_set, auditor=None, clock=None, store=store, actions=False, ticker=False
    )
    stream.feed(engine.observe, 200)  # connect, load the script
    before = script_calls(url) if url else 0
    trips = store.info()["round_trips"] if store else 0
    start = time.perf_counter()
    stream.feed(engine.observe, events)
    elapsed = time.perf_counter() - start
    row: dict[str, Any] = {
        "store": store_name,
        "matching_rules": matching,
        "events": events,
        "us_per_event": round(elapsed / events * 1e6, 1),
        "round_trips_per_event": 0.0,
    }
    if store is not None and url is not None:
        row["round_trips_per_event"] = round((script_calls(url) - before) / events, 3)
        assert store.info()["round_trips"] - trips == script_calls(url) - before
    engine.shutdown(0)
    return row


def ping_row(url: str, events: int) -> dict[str, Any]:
    """The floor: a bare PING round trip on the same loopback."""
    import redis

    client = redis.Redis.from_url(url)
    for _ in range(200):
        client.ping()
    start = time.perf_counter()
    for _ in range(events):
        client.ping()
    elapsed = time.perf_counter() - start
    return {
        "store": "(PING only)",
        "matching_rules": 0,
        "events": events,
        "us_per_event": round(elapsed / events * 1e6, 1),
        "round_trips_per_event": 1.0,
    }


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Return one row per (store, matching rules): the ``make bench`` entry point."""
    events = 2_000 if quick else EVENTS
    stream = Stream(events + 200)
    rows = [measure("memory", None, 3, stream, events)]
    with redis_server() as url:
        if url is None:
            print("redis-server not found: RedisStore rows skipped", file=sys.stderr)
            return rows
        rows += [measure("redis", url, n, stream, events) for n in (3, 1)]
        rows.append(ping_row(url, events))
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
