"""RedisStore cost: µs per event and Redis round trips per event.

Events go through ``RuleEngine.observe`` with the 3 matching rules of
``bench_rules.py``'s ``mixed`` set (a Threshold, a Distinct and a Ratio,
grouped by actor) plus 47 rules that never match, once with the in-memory
store and once with a :class:`~auditloop.rules.RedisStore` on a
``redis-server`` this benchmark starts on 127.0.0.1 (no persistence). A row
with only 1 matching rule shows that the round trips do not grow with the
number of matching rules, and a row of bare ``PING`` round trips shows the
floor the network and the client library set on this machine: once
through redis-py's ``Redis.ping()`` (pool checkout, command packing,
response callbacks) and once on a raw socket with ``TCP_NODELAY`` (the
kernel's loopback round trip plus Redis's own work). The store sends its
pre-packed command on one reused connection's socket and reads the reply
itself, so its floor is the raw row, not the redis-py row.

Round trips are counted on the server (``INFO commandstats``: calls of
``FCALL``, ``EVALSHA``, ``EVAL`` and ``FUNCTION LOAD``), not by the client,
and cross-checked with the store's own count; ``server_us_per_event`` is
the Redis CPU those calls took (their ``usec``), the rest of
``us_per_event`` is this process and the network. Time is wall time (the
store waits for the network), per event, including building the event.
The machine may be shared, so every row is the median of ``REPEATS`` runs
(a fresh key prefix each).

Every Redis row is measured twice (column ``cpus``): on an otherwise idle
machine, and with every CPU kept awake by a nice-19 spinner (see
:func:`busy_cpus`). On a virtual machine each round trip wakes two halted
vCPUs (Redis's, then the client's), which costs more than the store's own
work -- compare the two PING rows -- and which a loaded server does not
pay; the ``busy`` rows show the store's cost without it.

Targets (issue 8): at most 1 round trip per event however many rules
match, and at most 150 µs per event on loopback.

Run ``python benchmarks/bench_redis.py`` (``--quick`` for a smoke run).
Needs ``redis-server`` on PATH (``tools/ensure-redis.sh`` installs it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
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
REPEATS = 3
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


def script_calls(url: str) -> tuple[int, int]:
    """Calls of the script commands so far and the server µs they took."""
    import redis

    stats = redis.Redis.from_url(url).info("commandstats")
    names = ("fcall", "evalsha", "eval", "function|load")
    found = [stats.get(f"cmdstat_{name}", {}) for name in names]
    return (
        sum(int(s.get("calls", 0)) for s in found),
        sum(int(s.get("usec", 0)) for s in found),
    )


def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One row: the median of each timing over repeated runs."""
    row = dict(rows[0])
    for name in ("us_per_event", "server_us_per_event"):
        row[name] = round(statistics.median(r[name] for r in rows), 1)
    return row


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
    before = script_calls(url) if url else (0, 0)
    trips = store.info()["round_trips"] if store else 0
    start = time.perf_counter()
    stream.feed(engine.observe, events)
    elapsed = time.perf_counter() - start
    row: dict[str, Any] = {
        "store": store_name,
        "matching_rules": matching,
        "events": events,
        "us_per_event": round(elapsed / events * 1e6, 1),
        "server_us_per_event": 0.0,
        "round_trips_per_event": 0.0,
    }
    if store is not None and url is not None:
        calls, usec = script_calls(url)
        row["round_trips_per_event"] = round((calls - before[0]) / events, 3)
        row["server_us_per_event"] = round((usec - before[1]) / events, 1)
        assert store.info()["round_trips"] - trips == calls - before[0]
    engine.shutdown(0)
    return row


def ping_rows(url: str, events: int) -> list[dict[str, Any]]:
    """The floor: bare PING round trips, via redis-py and on a raw socket."""
    import redis

    client = redis.Redis.from_url(url)
    host, port = (
        client.connection_pool.connection_kwargs["host"],
        int(client.connection_pool.connection_kwargs["port"]),
    )
    raw = socket.create_connection((host, port))
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    raw.settimeout(1.0)

    def raw_ping() -> None:
        raw.sendall(b"*1\r\n$4\r\nPING\r\n")
        if raw.recv(64) != b"+PONG\r\n":
            raise AssertionError("unexpected PING reply")

    rows = []
    for name, ping in (
        ("(PING redis-py)", client.ping),
        ("(PING raw socket)", raw_ping),
    ):
        runs = []
        for _ in range(REPEATS):
            for _ in range(200):
                ping()
            client.config_resetstat()
            start = time.perf_counter()
            for _ in range(events):
                ping()
            elapsed = time.perf_counter() - start
            usec = int(client.info("commandstats")["cmdstat_ping"]["usec"])
            runs.append(
                {
                    "store": name,
                    "matching_rules": 0,
                    "events": events,
                    "us_per_event": round(elapsed / events * 1e6, 1),
                    "server_us_per_event": round(usec / events, 1),
                    "round_trips_per_event": 1.0,
                }
            )
        rows.append(median_row(runs))
    raw.close()
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Return one row per (store, matching rules): the ``make bench`` entry point."""
    events = 2_000 if quick else EVENTS
    stream = Stream(events + 200)
    rows = [
        {
            **median_row(
                [measure("memory", None, 3, stream, events) for _ in range(REPEATS)]
            ),
            "cpus": "idle",
        }
    ]
    with redis_server() as url:
        if url is None:
            print("redis-server not found: RedisStore rows skipped", file=sys.stderr)
            return rows
        for cpus in ("idle", "busy"):
            with busy_cpus() if cpus == "busy" else contextlib.nullcontext():
                found = [
                    median_row(
                        [
                            measure("redis", url, n, stream, events)
                            for _ in range(REPEATS)
                        ]
                    )
                    for n in (3, 1)
                ]
                found += ping_rows(url, events)
            rows += [{**row, "cpus": cpus} for row in found]
    return [{"store": row["store"], "cpus": row["cpus"], **row} for row in rows]


@contextmanager
def busy_cpus() -> Iterator[None]:
    """Keep every CPU awake with a lowest-priority spinning process.

    On a virtual machine an idle vCPU halts, and waking it (for Redis when
    the command arrives, for the client when the reply does) costs tens of
    µs each time -- more than the store's own work. A server under load,
    and the application's own busy workers, do not pay it. The spinners run
    at nice 19, so they take CPU only when nothing else wants it.
    """
    spin = "import os\nos.nice(19)\nwhile True:\n    pass\n"
    spinners = [
        subprocess.Popen([sys.executable, "-c", spin])
        for _ in range(os.cpu_count() or 1)
    ]
    try:
        time.sleep(0.5)  # let them start
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    args = parser.parse_args(argv)
    print(format_table(run(quick=args.quick)))
    print(TARGETS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
