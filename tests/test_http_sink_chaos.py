"""100k events through injected faults: 500s, 429 + Retry-After, resets, outage.

The outage is made deterministic instead of lasting 10 wall-clock seconds:
the collector is stopped, events are emitted, the test waits until the sink
has seen connections refused, then restarts the collector on the same port.
Retry delays are recorded and scaled down 100× so the test runs in seconds.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import auditloop
from auditloop.sinks import Delivery, HTTPSink
from collector import RESET, Action, Collector, Reply

N = 100_000
BATCH = 500


def chaos(seed: int) -> Callable[[int], Action]:
    """20% 500s, 5% 429 with Retry-After, 5% connections reset mid-body."""
    rng = random.Random(seed)
    lock = threading.Lock()

    def faults(n: int) -> Action:
        with lock:
            r = rng.random()
        if r < 0.20:
            return Reply(500)
        if r < 0.25:
            return Reply(429, {"Retry-After": "1"})
        if r < 0.30:
            return RESET
        return None

    return faults


class ScaledSleep:
    """Records every requested delay; waits a hundredth of it."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        time.sleep(seconds / 100)


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


class TestChaos:
    @pytest.mark.parametrize("spooled", [False, True], ids=["memory", "spool"])
    def test_every_event_arrives_through_faults_and_an_outage(
        self, tmp_path: Path, spooled: bool
    ) -> None:
        emitted: list[str] = []

        def remember_id(auditor: Any, method: str, event: dict[str, Any]) -> Any:
            emitted.append(event["id"])
            return event

        collector = Collector(faults=chaos(seed=4))
        collector.start()
        sleep = ScaledSleep()
        sink = HTTPSink(
            collector.url(),
            backoff=0.5,
            backoff_max=2,
            deadline=3600,
            sleep=sleep,
            spool_dir=tmp_path if spooled else None,
        )
        auditor = auditloop.Auditor(
            sinks=[sink],
            processors=[remember_id],
            delivery=Delivery(batch_size=BATCH, block_timeout=60),
            drop_report_interval=None,
        )
        try:
            for i in range(N // 2):
                auditor.emit("chaos.event", n=i)
            # Let the queue drain first, so the outage's events fit in it
            # (the restart is done by this thread after emitting them).
            assert auditor.flush(timeout=60)
            collector.stop()
            for i in range(N // 2, N // 2 + 5_000):
                auditor.emit("chaos.event", n=i)
            assert wait_until(
                lambda: sink.stats()["failures"].get("connection", 0) >= 3
            )
            collector.start()
            for i in range(N // 2 + 5_000, N):
                auditor.emit("chaos.event", n=i)
            assert auditor.flush(timeout=60)
        finally:
            auditor.shutdown(10)
            collector.stop()

        assert N == len(emitted)
        assert set(emitted) == collector.unique_ids
        assert {} == auditor.stats()["dropped"]
        stats = sink.stats()
        failures = stats["failures"]
        assert failures["http_500"] > 0
        assert failures["http_429"] > 0
        assert collector.resets > 0
        assert 1.0 in sleep.calls  # Retry-After: 1 was honoured
        duplicates = sum(collector.ids.values()) - N
        assert duplicates <= stats["retried"] * BATCH
        if spooled:
            assert stats["spooled"] > 0
            assert 0 == stats["spool"]["pending_events"]
