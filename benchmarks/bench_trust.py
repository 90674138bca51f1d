"""Cost of the integrity chain per event, and verification speed.

Rows: an audited call written by a plain ``FileSink`` and by a chained one
(HMAC-SHA256 with a key), sealed in the sink's writer thread (the default)
and in a helper process (``writer="process"``), each measured until the
output is written; then ``auditloop.verify`` over a 1M-record trail across
several rotated files. The per-event rows use the same N and are the best
of BENCH_REPEAT runs, taken in turn (plain, chained, chained in a process,
plain, ...), so drift from other load on the machine hits them alike.
Run: python benchmarks/bench_trust.py  (BENCH_N, BENCH_REPEAT, BENCH_VERIFY_N
to change sizes)
"""

from __future__ import annotations

import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).parent))
from _table import format_table

N = int(os.environ.get("BENCH_N", "100000"))
VERIFY_N = int(os.environ.get("BENCH_VERIFY_N", "1000000"))
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
KEY = b"k" * 32


def _per_event(**sink_options: Any) -> float:
    """Microseconds per audited call, until every event is on disk."""
    import auditloop
    from auditloop import sinks

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.jsonl"
        auditloop.configure(
            service="bench",
            sinks=[
                sinks.FileSink(path, max_bytes=64 << 20, backups=100, **sink_options)
            ],
        )

        @auditloop.audited("document.read", target="document:1")
        def handler(i: int) -> int:
            return i

        with auditloop.bind(actor="alice", request_id="r-1"):
            handler(0)
            auditloop.flush(timeout=60)
            gc.collect()
            start = time.perf_counter()
            for i in range(N):
                handler(i)
            auditloop.flush(timeout=60)
            elapsed = time.perf_counter() - start
        auditloop.shutdown(timeout=60)
    return elapsed / N * 1e6


def _write_trail(path: Path, n: int) -> None:
    from auditloop import sinks

    sink = sinks.FileSink(
        path,
        chain=True,
        key=KEY,
        max_bytes=64 << 20,
        backups=1000,
        checkpoint_every=10_000,
    )
    base = {
        "time": "2026-01-01T00:00:00.000000Z",
        "action": "document.read",
        "outcome": "success",
        "actor": {"id": "alice", "type": "user"},
        "target": {"id": "document:1", "type": "document"},
        "context": {"request_id": "r-1"},
        "source": {"service": "bench", "host": "h", "pid": 1, "function": "m:f"},
        "schema": "auditloop/1",
    }
    batch = 1000
    for start in range(0, n, batch):
        sink.write(
            [orjson.dumps({"id": f"e{i}", **base}) for i in range(start, start + batch)]
        )
    sink.close()


def _verify_row() -> dict[str, Any]:
    from auditloop import verify

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.jsonl"
        _write_trail(path, VERIFY_N)
        files = len(list(Path(tmp).iterdir()))
        gc.collect()
        start = time.perf_counter()
        result = verify(path, key=KEY)
        elapsed = time.perf_counter() - start
    return {
        "setup": f"verify {result.records:,} records in {files} files",
        "us_per_op": elapsed / result.records * 1e6,
        "per_s": result.records / elapsed,
        "vs_plain": None,
        "ok": result.ok,
    }


def run() -> list[dict[str, Any]]:
    """Measure plain vs chained FileSink per event, then verification speed."""
    plain = chained = in_process = float("inf")
    for _ in range(REPEAT):  # interleaved, best of each
        plain = min(plain, _per_event())
        chained = min(chained, _per_event(chain=True, key=KEY, key_id="k1"))
        in_process = min(
            in_process,
            _per_event(chain=True, key=KEY, key_id="k1", writer="process"),
        )
    return [
        {
            "setup": "@audited + FileSink",
            "us_per_op": plain,
            "per_s": 1e6 / plain,
            "vs_plain": 1.0,
            "ok": True,
        },
        {
            "setup": "@audited + FileSink(chain=True, key=...)",
            "us_per_op": chained,
            "per_s": 1e6 / chained,
            "vs_plain": chained / plain,
            "ok": None,  # for comparison: the GIL-bound default
        },
        {
            "setup": '... chain=True, key=..., writer="process")',
            "us_per_op": in_process,
            "per_s": 1e6 / in_process,
            "vs_plain": in_process / plain,
            "ok": in_process / plain <= 1.3,
        },
        _verify_row(),
    ]


TARGETS = (
    'targets: chained (writer="process") ≤ 1.30× plain per event; '
    "verify ≥ 200,000 records/s"
)


if __name__ == "__main__":
    print(
        f"per audited call, N={N}, best of {REPEAT}, until output is written; "
        f"verify N={VERIFY_N}"
    )
    print(format_table(run()))
    print(TARGETS)
    print(json.dumps({"n": N, "repeat": REPEAT, "verify_n": VERIFY_N}))
