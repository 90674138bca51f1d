"""The delivery engine: queues, writer threads, overflow, deadlines, fail-closed."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

import auditloop
from auditloop import AuditError, ConfigurationError, sinks
from auditloop._delivery import AsyncDelivery, SyncDelivery, _FlushMarker
from auditloop.sinks import Delivery

WAIT = 10.0  # upper bound for waits that normally end in milliseconds


class RaisingSink:
    """A sink whose every write fails."""

    def __init__(self, delivery: Delivery | None = None) -> None:
        self.delivery = delivery
        self.writes = 0

    def write(self, batch: Sequence[bytes]) -> None:
        self.writes += 1
        raise OSError("disk on fire")

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass


class GateSink:
    """Blocks in ``write`` until its gate opens; records what it got."""

    def __init__(self, delivery: Delivery | None = None) -> None:
        self.delivery = delivery
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.batches: list[list[bytes]] = []
        self.flushes = 0
        self.closed = False
        self.arrived = threading.Event()

    def write(self, batch: Sequence[bytes]) -> None:
        self.entered.set()
        self.gate.wait(60)
        self.batches.append(list(batch))
        self.arrived.set()

    def flush(self, timeout: float | None = None) -> None:
        self.flushes += 1

    def close(self, timeout: float | None = None) -> None:
        self.closed = True

    def numbers(self) -> list[int]:
        records = [orjson.loads(line) for b in self.batches for line in b]
        return [r["attributes"]["i"] for r in records if r["action"] == "n"]


@pytest.fixture
def make() -> Iterator[Callable[..., tuple[auditloop.Auditor, Any]]]:
    """Build Auditors with one sink each; open gates and shut down afterwards."""
    made: list[tuple[auditloop.Auditor, Any]] = []

    def build(sink: Any, **kwargs: Any) -> tuple[auditloop.Auditor, Any]:
        auditor = auditloop.Auditor(sinks=[sink], **kwargs)
        made.append((auditor, sink))
        return auditor, sink

    yield build
    for auditor, sink in made:
        gate = getattr(sink, "gate", None)
        if gate is not None:
            gate.set()
        auditor.shutdown(5)


@contextlib.contextmanager
def stuck_sync_write(auditor: auditloop.Auditor, sink: GateSink) -> Iterator[None]:
    """Run the block while another thread's synchronous write of event 0
    holds *sink*; the write ends after the block.

    Should the block wait for that write, the gate opens after WAIT anyway:
    the block's assertions then fail instead of the test hanging.
    """
    writer = threading.Thread(target=auditor.emit, args=("n",), kwargs={"i": 0})
    writer.start()
    assert sink.entered.wait(WAIT)
    opener = threading.Timer(WAIT, sink.gate.set)
    opener.start()
    try:
        yield
    finally:
        opener.cancel()
        sink.gate.set()
        writer.join(WAIT)


def emit_numbers(auditor: auditloop.Auditor, numbers: range) -> None:
    for i in numbers:
        auditor.emit("n", i=i)


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


class TestFailingSink:
    def test_app_keeps_running_and_drops_are_counted(self, make: Any) -> None:
        memory = sinks.MemorySink()
        failing = RaisingSink(Delivery(batch_size=10))
        auditor = auditloop.Auditor(sinks=[failing, memory], drop_report_interval=None)

        @auditor.audited("work", capture=["n"])
        def work(n: int) -> int:
            return n * 2

        results = [work(n) for n in range(100)]
        assert auditor.flush(WAIT)

        assert [n * 2 for n in range(100)] == results
        assert 100 == len([e for e in memory.events if e.action == "work"])
        # Every event the failing sink got is dropped and counted (auditloop
        # may add its own events, e.g. auditloop.sink_failed, to both sinks).
        stats = auditor.stats()
        dropped = stats["dropped"]["sink_error"]
        assert 100 <= dropped <= len(memory.lines)
        assert {"sink_error"} == set(stats["dropped"])
        sink_stats = stats["sinks"]["RaisingSink"]
        assert (0, {"sink_error": dropped}) == (
            sink_stats["written"],
            sink_stats["dropped"],
        )
        assert sink_stats["errors"] >= 10
        assert "OSError: disk on fire" == sink_stats["last_error"]

        work(100)  # the writer survived its failures
        assert auditor.flush(WAIT)
        assert dropped < auditor.stats()["dropped"]["sink_error"]
        auditor.shutdown(WAIT)

    def test_sync_mode_counts_instead_of_raising(self, make: Any) -> None:
        auditor, _ = make(RaisingSink(Delivery(mode="sync")))

        auditor.emit("a")
        auditor.emit("b")

        assert {"sink_error": 2} == auditor.stats()["dropped"]
        assert "sync" == auditor.stats()["sinks"]["RaisingSink"]["mode"]

    def test_dropped_report_event(self, make: Any) -> None:
        memory = sinks.MemorySink()
        failing = RaisingSink(Delivery(flush_interval=0.01))
        auditor = auditloop.Auditor(sinks=[failing, memory], drop_report_interval=0)
        try:
            auditor.emit("a")
            auditor.emit("b")
            auditor.flush(WAIT)
            wait_until(
                lambda: any(e.action == "auditloop.dropped" for e in memory.events)
            )
        finally:
            auditor.shutdown(WAIT)

        report = next(e for e in memory.events if e.action == "auditloop.dropped")
        assert ("failure", "system", "high") == (
            report.outcome,
            report.category,
            report.severity,
        )
        assert report.actor is not None
        assert ("auditloop", "system") == (report.actor.id, report.actor.type)
        assert {"RaisingSink": {"sink_error": 2}} == report.attributes["dropped"]
        assert {"RaisingSink": {"sink_error": 2}} == report.attributes["total"]

    def test_reports_about_a_failing_sink_do_not_keep_shutdown_busy(self) -> None:
        # Each report fails to be written too, which is a new drop to report.
        failing = RaisingSink(Delivery(flush_interval=0.01))
        auditor = auditloop.Auditor(sinks=[failing], drop_report_interval=0)
        auditor.emit("a")
        wait_until(lambda: failing.writes >= 2)  # a report was attempted

        assert auditor.shutdown(WAIT)
        worker = auditor.deliveries[0]._worker  # type: ignore[union-attr]
        assert worker is not None
        assert not worker.is_alive()

    def test_reports_are_rate_limited(self, make: Any) -> None:
        memory = sinks.MemorySink()
        failing = RaisingSink(Delivery(mode="sync"))
        auditor = auditloop.Auditor(sinks=[failing, memory], drop_report_interval=3600)

        auditor.emit("a")
        auditor._report_drops()
        auditor.emit("b")
        auditor._report_drops()
        auditor._report_drops()

        reports = [e for e in memory.events if e.action == "auditloop.dropped"]
        assert 1 == len(reports)
        auditor.shutdown(WAIT)

    def test_no_report_without_new_drops_or_when_disabled(self, make: Any) -> None:
        memory = sinks.MemorySink()
        quiet = auditloop.Auditor(sinks=[memory], drop_report_interval=0)
        quiet._report_drops()
        failing = RaisingSink(Delivery(mode="sync"))
        disabled = auditloop.Auditor(sinks=[failing, memory], drop_report_interval=None)
        disabled.emit("a")
        disabled._report_drops()

        assert ["a"] == [e.action for e in memory.events]

    def test_a_fail_closed_sink_never_raises_into_the_writer(
        self, make: Any, tmp_path: Path
    ) -> None:
        failing = RaisingSink(Delivery(flush_interval=0.01))
        closed = sinks.FileSink(
            "/dev/full", delivery=Delivery(mode="sync", on_error="raise")
        )
        auditor = auditloop.Auditor(sinks=[failing, closed], drop_report_interval=0)
        try:
            with pytest.raises(AuditError):
                auditor.emit("a")
            wait_until(lambda: failing.writes >= 2)  # the report was attempted
            delivery = auditor.deliveries[0]
            assert isinstance(delivery, AsyncDelivery)
            assert delivery._worker is not None
            assert delivery._worker.is_alive()
        finally:
            auditor.shutdown(WAIT)


class TestOverflow:
    @pytest.mark.parametrize(
        ("overflow", "delivered"),
        [("drop_newest", [0, 1, 2, 3]), ("drop_oldest", [0, 3, 4, 5])],
    )
    def test_drop_policies(
        self, make: Any, overflow: str, delivered: list[int]
    ) -> None:
        policy = Delivery(queue_size=3, batch_size=1, overflow=overflow)  # type: ignore[arg-type]
        auditor, sink = make(GateSink(policy))
        auditor.emit("n", i=0)
        assert sink.entered.wait(WAIT)  # event 0 is being written; queue empty

        started = time.monotonic()
        emit_numbers(auditor, range(1, 6))  # 3 fit, 2 are dropped
        elapsed = time.monotonic() - started
        assert {"queue_full": 2} == auditor.stats()["dropped"]
        assert 3 == auditor.stats()["sinks"]["GateSink"]["queued"]
        sink.gate.set()
        assert auditor.flush(WAIT)

        assert delivered == sink.numbers()
        assert elapsed < WAIT  # never waited for room

    def test_block_drops_after_block_timeout(self, make: Any) -> None:
        policy = Delivery(queue_size=2, batch_size=1, block_timeout=0.05)
        auditor, sink = make(GateSink(policy))
        auditor.emit("n", i=0)
        assert sink.entered.wait(WAIT)

        emit_numbers(auditor, range(1, 4))  # 1, 2 queued; 3 waits, then drops

        assert {"queue_full": 1} == auditor.stats()["dropped"]
        sink.gate.set()
        assert auditor.flush(WAIT)
        assert [0, 1, 2] == sink.numbers()

    def test_block_waits_for_room_and_loses_nothing(self, make: Any) -> None:
        policy = Delivery(queue_size=2, batch_size=1, block_timeout=60)
        auditor, sink = make(GateSink(policy))
        auditor.emit("n", i=0)
        assert sink.entered.wait(WAIT)
        emit_numbers(auditor, range(1, 3))

        producer = threading.Thread(target=emit_numbers, args=(auditor, range(3, 6)))
        producer.start()
        producer.join(0.2)
        assert producer.is_alive()  # blocked: the queue is full, the sink hangs
        sink.gate.set()
        producer.join(WAIT)

        assert not producer.is_alive()
        assert auditor.flush(WAIT)
        assert [0, 1, 2, 3, 4, 5] == sink.numbers()
        assert {} == auditor.stats()["dropped"]

    def test_the_writer_thread_never_blocks_on_its_own_queue(self, make: Any) -> None:
        class ReentrantSink(GateSink):
            def write(self, batch: Sequence[bytes]) -> None:
                if not self.batches:  # a sink that audits its own first write
                    auditor.emit("n", i=100)  # fills the queue
                    auditor.emit("n", i=101)  # full: must drop, not wait 60 s
                super().write(batch)

        policy = Delivery(queue_size=1, batch_size=1, block_timeout=60)
        sink = ReentrantSink(policy)
        auditor, _ = make(sink)

        auditor.emit("n", i=0)
        assert sink.entered.wait(WAIT)  # 100 and 101 were emitted by now
        sink.gate.set()
        assert auditor.flush(WAIT)

        assert [0, 100] == sink.numbers()
        assert {"queue_full": 1} == auditor.stats()["dropped"]

    def test_drop_oldest_never_drops_a_flush_waiter(self, make: Any) -> None:
        policy = Delivery(queue_size=2, batch_size=1, overflow="drop_oldest")
        auditor, sink = make(GateSink(policy))
        auditor.emit("n", i=0)
        assert sink.entered.wait(WAIT)
        assert not auditor.flush(0)  # a flush marker now heads the queue

        emit_numbers(auditor, range(1, 3))  # 1 fits; for 2 the oldest is the marker

        assert {"queue_full": 1} == auditor.stats()["dropped"]
        sink.gate.set()
        assert auditor.flush(WAIT)
        assert [0, 1] == sink.numbers()

    def test_a_queue_smaller_than_a_batch_wakes_the_writer(self, make: Any) -> None:
        policy = Delivery(queue_size=2, batch_size=512, flush_interval=60)
        sink = GateSink(policy)
        sink.gate.set()
        auditor, _ = make(sink)

        emit_numbers(auditor, range(2))

        assert sink.arrived.wait(WAIT)  # no flush() call, no 60 s tick


class TestBatching:
    def test_full_batches_wake_the_writer_without_flush_or_tick(
        self, make: Any
    ) -> None:
        # put() sets the writer's event once per wake-up: a wake-up lost to
        # a race would leave full batches waiting for the 60 s tick.
        sink = GateSink(Delivery(batch_size=10, flush_interval=60))
        sink.gate.set()
        auditor, _ = make(sink)

        def produce(start: int) -> None:
            emit_numbers(auditor, range(start, start + 2000))

        threads = [threading.Thread(target=produce, args=(n * 2000,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        # Every full batch is written without flush(); at most one partial
        # batch (< 10 events) may wait for the tick.
        wait_until(lambda: len(sink.numbers()) > 8000 - 10)

    def test_a_backlog_is_queued_as_compact_copies(self) -> None:
        # orjson returns its bytes in ~4 KiB allocations: a full queue of
        # them would hold ~10x the memory of exact-size copies.
        sink = GateSink()
        delivery = AsyncDelivery(sink, Delivery(batch_size=2), "gate")
        lines = [orjson.dumps({"i": i}) for i in range(5)]
        try:
            delivery.put(lines[0])
            assert sink.entered.wait(WAIT)  # the writer holds line 0
            for line in lines[1:]:
                delivery.put(line)

            queued = list(delivery._queue)
            assert lines[1:] == queued
            assert [False, False, True, True] == [
                q is not line for q, line in zip(queued, lines[1:], strict=True)
            ]
        finally:
            sink.gate.set()
            delivery.shutdown(WAIT)

    def test_batches_never_exceed_batch_size(self, make: Any) -> None:
        sink = GateSink(Delivery(batch_size=4, flush_interval=60))
        sink.gate.set()
        auditor, _ = make(sink)

        emit_numbers(auditor, range(30))
        assert auditor.flush(WAIT)

        assert list(range(30)) == sink.numbers()
        assert max(len(b) for b in sink.batches) <= 4

    def test_a_lone_event_is_written_after_flush_interval(self, make: Any) -> None:
        sink = GateSink(Delivery(flush_interval=0.02))
        sink.gate.set()
        auditor, _ = make(sink)

        auditor.emit("n", i=1)

        assert sink.arrived.wait(WAIT)
        assert [1] == sink.numbers()

    def test_the_writer_starts_with_the_first_event(self, make: Any) -> None:
        auditor, sink = make(GateSink())
        delivery = auditor.deliveries[0]
        assert isinstance(delivery, AsyncDelivery)

        assert delivery._worker is None
        sink.gate.set()
        auditor.emit("n", i=1)
        assert delivery._worker is not None


class TestFlushAndShutdown:
    def test_flush_writes_everything_and_flushes_the_sink(self, make: Any) -> None:
        sink = GateSink(Delivery(flush_interval=60))
        sink.gate.set()
        auditor, _ = make(sink)

        emit_numbers(auditor, range(50))

        assert auditor.flush(WAIT)
        assert list(range(50)) == sink.numbers()
        assert 1 == sink.flushes

    def test_flush_before_any_event_flushes_the_sink(self, make: Any) -> None:
        auditor, sink = make(GateSink())

        assert auditor.flush(WAIT)
        assert 1 == sink.flushes

    def test_flush_returns_within_its_timeout_when_the_sink_hangs(
        self, make: Any
    ) -> None:
        auditor, sink = make(GateSink())
        auditor.emit("n", i=0)
        assert sink.entered.wait(WAIT)

        started = time.monotonic()
        ok = auditor.flush(0.2)
        elapsed = time.monotonic() - started

        assert not ok
        assert elapsed < WAIT  # the sink hangs for 60 s
        sink.gate.set()
        assert auditor.flush(WAIT)  # the events stayed queued and are written
        assert [0] == sink.numbers()

    def test_shutdown_returns_within_its_timeout_and_counts_the_rest(
        self, make: Any
    ) -> None:
        auditor, sink = make(GateSink(Delivery(batch_size=1)))
        auditor.emit("n", i=0)
        assert sink.entered.wait(WAIT)
        emit_numbers(auditor, range(1, 4))

        started = time.monotonic()
        ok = auditor.shutdown(0.2)
        elapsed = time.monotonic() - started

        assert not ok
        assert elapsed < WAIT
        assert {"shutdown_timeout": 4} == auditor.stats()["dropped"]
        assert 0 == auditor.stats()["sinks"]["GateSink"]["queued"]

    @pytest.mark.parametrize("late", ["written", "failed"])
    def test_a_batch_counted_by_a_timed_out_shutdown_is_not_counted_again(
        self, make: Any, late: str
    ) -> None:
        """The write shutdown gave up on may still end: whether it then
        succeeds or fails, its events stay counted once, as shutdown_timeout."""
        sink = GateSink(Delivery(batch_size=1))
        if late == "failed":
            sink.batches = None  # type: ignore[assignment]  # append raises
        auditor, _ = make(sink)
        auditor.emit("n", i=0)
        assert sink.entered.wait(WAIT)

        assert not auditor.shutdown(0.05)
        sink.gate.set()  # the write in flight ends now
        delivery = auditor.deliveries[0]
        assert isinstance(delivery, AsyncDelivery)
        worker = delivery._worker
        assert worker is not None
        worker.join(WAIT)
        assert not worker.is_alive()

        stats = auditor.stats()["sinks"]["GateSink"]
        assert 1 == stats["dropped"]["shutdown_timeout"]
        assert "sink_error" not in stats["dropped"]
        assert 0 == stats["written"]

    def test_a_sync_shutdown_returns_within_its_timeout_past_a_stuck_write(
        self, make: Any
    ) -> None:
        auditor, sink = make(GateSink(Delivery(mode="sync")))
        with stuck_sync_write(auditor, sink):
            assert not auditor.shutdown(0.1)
            assert not sink.closed  # not closed under the running write
        auditor.emit("n", i=1)  # refused: the Auditor is shut down
        assert [0] == sink.numbers()

    def test_a_sync_sink_left_open_by_shutdown_is_closed_when_the_write_ends(
        self, make: Any
    ) -> None:
        auditor, sink = make(GateSink(Delivery(mode="sync")))
        with stuck_sync_write(auditor, sink):
            assert not auditor.shutdown(0.05)
            assert not sink.closed
        assert sink.closed  # by the write that held it, once it ended

    def test_a_sync_flush_shares_its_timeout_with_the_wait_for_the_lock(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """What waiting for a write in another thread used is not given to
        the sink's flush again (a fake clock stands for the wait)."""
        now = [1000.0]
        monkeypatch.setattr("auditloop._delivery.time.monotonic", lambda: now[0])
        given: list[float | None] = []

        class TimedFlushSink(GateSink):
            def flush(self, timeout: float | None = None) -> None:
                given.append(timeout)

        delivery = SyncDelivery(TimedFlushSink(), Delivery(mode="sync"), "t")
        acquire = delivery._acquire

        def slow_acquire(timeout: float | None) -> bool:
            now[0] += 0.75  # the lock was held for 0.75 s
            return acquire(timeout)

        monkeypatch.setattr(delivery, "_acquire", slow_acquire)
        assert delivery.flush(1.0)
        assert [0.25] == given

    def test_a_flush_waiting_when_shutdown_gives_up_returns_false_at_once(
        self, make: Any
    ) -> None:
        auditor, sink = make(GateSink(Delivery(batch_size=1)))
        auditor.emit("n", i=0)
        assert sink.entered.wait(WAIT)
        auditor.emit("n", i=1)
        result: list[bool] = []
        # Waits far longer than the test: only shutdown can release it in time.
        flusher = threading.Thread(target=lambda: result.append(auditor.flush(3600)))
        flusher.start()
        delivery = auditor.deliveries[0]
        assert isinstance(delivery, AsyncDelivery)
        wait_until(
            lambda: any(isinstance(i, _FlushMarker) for i in list(delivery._queue))
        )

        assert not auditor.shutdown(0.05)
        flusher.join(WAIT)
        assert not flusher.is_alive()
        assert [False] == result
        sink.gate.set()  # let the stranded writer thread end

    def test_an_abandoned_batch_is_counted_before_the_sink_gives_it_up(
        self, make: Any
    ) -> None:
        """An abandon() that lets the write return at once (as HTTPSink's
        does) must find the batch counted: else the writer counts it as
        written and the event is lost without a count."""

        class GivingUpSink(GateSink):
            def abandon(self) -> None:
                self.gate.set()  # the write returns, delivering nothing
                worker.join(WAIT)  # and the writer gets to count it first

        sink = GivingUpSink(Delivery(batch_size=1))
        auditor, _ = make(sink)
        auditor.emit("n", i=0)
        assert sink.entered.wait(WAIT)
        delivery = auditor.deliveries[0]
        assert isinstance(delivery, AsyncDelivery)
        worker = delivery._worker
        assert worker is not None

        assert not auditor.shutdown(0.05)
        stats = auditor.stats()["sinks"]["GivingUpSink"]
        assert 1 == stats["dropped"].get("shutdown_timeout")
        assert 0 == stats["written"]

    def test_deadline_is_shared_by_all_sinks(self) -> None:
        hanging = [GateSink(), GateSink()]
        auditor = auditloop.Auditor(sinks=hanging)
        try:
            auditor.emit("n", i=0)
            for sink in hanging:
                assert sink.entered.wait(WAIT)

            started = time.monotonic()
            assert not auditor.flush(0.3)
            assert not auditor.shutdown(0.3)
            elapsed = time.monotonic() - started
        finally:
            for sink in hanging:
                sink.gate.set()

        assert elapsed < WAIT
        assert {"GateSink#1", "GateSink#2"} == set(auditor.stats()["sinks"])

    def test_global_flush_and_shutdown_honour_timeouts(self) -> None:
        sink = GateSink()
        auditloop.configure(sinks=[sink])
        try:
            auditloop.emit("n", i=0)
            assert sink.entered.wait(WAIT)
            started = time.monotonic()
            assert not auditloop.flush(0.2)
            assert not auditloop.shutdown(0.2)
            assert time.monotonic() - started < WAIT
        finally:
            sink.gate.set()

    def test_shutdown_writes_what_is_queued_then_closes(self, make: Any) -> None:
        sink = GateSink(Delivery(flush_interval=60, batch_size=1000))
        sink.gate.set()
        auditor, _ = make(sink)
        emit_numbers(auditor, range(10))

        assert auditor.shutdown(WAIT)

        assert list(range(10)) == sink.numbers()
        assert sink.closed
        delivery = auditor.deliveries[0]
        assert isinstance(delivery, AsyncDelivery)
        assert delivery._worker is not None
        assert not delivery._worker.is_alive()

    def test_shutdown_of_an_unused_sink_closes_it(self, make: Any) -> None:
        auditor, sink = make(GateSink())

        assert auditor.shutdown(WAIT)
        assert sink.closed

    def test_events_after_shutdown_are_counted_as_closed(self, make: Any) -> None:
        async_sink = GateSink()
        async_sink.gate.set()
        sync_sink = sinks.MemorySink()
        auditor = auditloop.Auditor(sinks=[async_sink, sync_sink])
        auditor.emit("n", i=0)
        assert auditor.shutdown(WAIT)

        auditor.emit("n", i=1)

        assert {"closed": 2} == auditor.stats()["dropped"]
        assert [0] == async_sink.numbers()

    def test_a_producer_racing_shutdown_is_counted_not_stranded(
        self, make: Any
    ) -> None:
        class Racing(GateSink):
            def close(self, timeout: float | None = None) -> None:
                # The writer's last act; simulate a producer that passed the
                # closed check just before and appends now, and a flush.
                delivery._queue.append(b'{"action": "n", "attributes": {"i": 9}}')
                assert not delivery.flush(0)
                super().close(timeout)

        sink = Racing()
        sink.gate.set()
        auditor, _ = make(sink)
        delivery = auditor.deliveries[0]
        assert isinstance(delivery, AsyncDelivery)
        auditor.emit("n", i=0)

        assert auditor.shutdown(WAIT)
        assert {"closed": 1} == auditor.stats()["dropped"]
        assert 0 == auditor.stats()["sinks"]["Racing"]["queued"]

    def test_flush_and_shutdown_after_shutdown_return_at_once(self, make: Any) -> None:
        sink = GateSink()
        sink.gate.set()
        auditor, _ = make(sink)
        auditor.emit("n", i=0)
        assert auditor.shutdown(WAIT)

        started = time.monotonic()
        assert auditor.flush(30)
        assert auditor.shutdown(30)
        assert time.monotonic() - started < WAIT

    def test_sync_flush_and_shutdown_after_shutdown(self) -> None:
        memory = sinks.MemorySink()
        auditor = auditloop.Auditor(sinks=[memory])
        auditor.emit("a")
        assert auditor.shutdown(WAIT)

        assert auditor.flush(WAIT)
        assert auditor.shutdown(WAIT)

    def test_a_raising_idle_hook_never_kills_the_writer(self) -> None:
        def broken_hook() -> None:
            raise RuntimeError("hook bug")

        sink = GateSink(Delivery(flush_interval=0.01))
        sink.gate.set()
        delivery = AsyncDelivery(sink, sink.delivery or Delivery(), "gate", broken_hook)
        delivery.put(b'{"action": "n", "attributes": {"i": 0}}')
        assert delivery.flush(WAIT)
        delivery.put(b'{"action": "n", "attributes": {"i": 1}}')
        assert delivery.flush(WAIT)

        assert [0, 1] == sink.numbers()
        assert delivery.errors >= 1
        assert "RuntimeError: hook bug" == delivery.last_error
        assert delivery.shutdown(WAIT)

    def test_without_an_idle_hook(self) -> None:
        sink = GateSink()
        sink.gate.set()
        delivery = AsyncDelivery(sink, Delivery(), "gate")

        delivery.put(b'{"action": "n", "attributes": {"i": 0}}')

        assert delivery.shutdown(WAIT)
        assert [0] == sink.numbers()

    def test_a_sink_failing_to_flush_or_close_is_counted(self, make: Any) -> None:
        class BadFlush(GateSink):
            def flush(self, timeout: float | None = None) -> None:
                raise OSError("flush failed")

            def close(self, timeout: float | None = None) -> None:
                raise OSError("close failed")

        sink = BadFlush()
        sink.gate.set()
        auditor, _ = make(sink)
        auditor.emit("n", i=0)

        assert auditor.flush(WAIT)  # flush returns; the failure is counted
        assert auditor.shutdown(WAIT)
        stats = auditor.stats()["sinks"]["BadFlush"]
        assert 2 == stats["errors"]
        assert "OSError: close failed" == stats["last_error"]

    def test_sync_sink_flush_and_close_failures(self) -> None:
        class Bad(RaisingSink):
            def flush(self, timeout: float | None = None) -> None:
                raise OSError("flush failed")

            def close(self, timeout: float | None = None) -> None:
                raise OSError("close failed")

        auditor = auditloop.Auditor(sinks=[Bad(Delivery(mode="sync"))])

        assert not auditor.flush(WAIT)
        assert not auditor.shutdown(WAIT)
        assert "OSError: close failed" == auditor.stats()["sinks"]["Bad"]["last_error"]

    def test_sync_shutdown_gives_flush_and_close_one_deadline(self) -> None:
        class Hanging(RaisingSink):
            """flush() waits its whole timeout (a collector that never answers)."""

            close_timeout: float | None = -1.0

            def flush(self, timeout: float | None = None) -> None:
                threading.Event().wait(timeout)

            def close(self, timeout: float | None = None) -> None:
                self.close_timeout = timeout

        sink = Hanging(Delivery(mode="sync"))
        auditor = auditloop.Auditor(sinks=[sink])

        auditor.shutdown(0.2)

        assert 0.0 == sink.close_timeout  # flush used it all; close gets the rest

    def test_shutdown_while_the_writer_still_pops_never_raises(self, make: Any) -> None:
        class Slow(GateSink):
            """One event per write, each a little slow: at the deadline the
            writer is still taking events out of the queue shutdown() counts."""

            def write(self, batch: Sequence[bytes]) -> None:
                time.sleep(0.0001)

        interval = sys.getswitchinterval()
        for _ in range(3):
            auditor, _ = make(Slow(Delivery(batch_size=1, queue_size=50_000)))
            emit_numbers(auditor, range(20_000))
            sys.setswitchinterval(1e-6)  # switch threads while shutdown counts
            try:
                assert not auditor.shutdown(0.02)  # and no RuntimeError
            finally:
                sys.setswitchinterval(interval)
            assert auditor.stats()["dropped"]["shutdown_timeout"] > 0

    def test_a_sink_error_with_a_broken_str_is_counted_and_the_writer_lives(
        self, make: Any
    ) -> None:
        class Unprintable(Exception):
            def __str__(self) -> str:
                raise ValueError("no")

        class FailsOnce(GateSink):
            failed = False

            def write(self, batch: Sequence[bytes]) -> None:
                if not self.failed:
                    self.failed = True
                    raise Unprintable
                self.batches.append(list(batch))

        auditor, sink = make(FailsOnce(Delivery(batch_size=1)))
        auditor.emit("n", i=0)
        assert auditor.flush(WAIT)
        auditor.emit("n", i=1)

        assert auditor.flush(WAIT)
        assert [1] == sink.numbers()
        stats = auditor.stats()["sinks"]["FailsOnce"]
        assert {"sink_error": 1} == stats["dropped"]
        assert "Unprintable: <unprintable message>" == stats["last_error"]


class TestFailClosed:
    @pytest.fixture
    def full_disk(self) -> sinks.FileSink:
        # /dev/full accepts the open and fails every write with ENOSPC.
        return sinks.FileSink(
            "/dev/full", delivery=Delivery(mode="sync", on_error="raise")
        )

    def test_audited_caller_gets_audit_error(self, full_disk: sinks.FileSink) -> None:
        memory = sinks.MemorySink()
        auditloop.configure(sinks=[memory, full_disk])
        ran: list[str] = []

        @auditloop.audited("money.transfer")
        def transfer() -> str:
            ran.append("transfer")
            return "done"

        with pytest.raises(AuditError, match="FileSink") as info:
            transfer()

        assert ["transfer"] == ran
        assert isinstance(info.value.__cause__, OSError)
        assert "No space left" in str(info.value)
        assert ["money.transfer"] == [e.action for e in memory.events]
        assert {"sink_error": 1} == auditloop.stats()["dropped"]

    def test_a_failing_call_still_raises_audit_error(
        self, full_disk: sinks.FileSink
    ) -> None:
        auditloop.configure(sinks=[full_disk])

        @auditloop.audited("x")
        def fail() -> None:
            raise KeyError("original")

        with pytest.raises(AuditError) as info:
            fail()

        assert isinstance(info.value.__context__, KeyError)

    def test_audit_block_emit_and_async(self, full_disk: sinks.FileSink) -> None:
        import asyncio

        auditloop.configure(sinks=[full_disk])

        @auditloop.audited("a")
        async def coro() -> None:
            pass

        with pytest.raises(AuditError), auditloop.audit("block"):
            pass
        with pytest.raises(AuditError):
            auditloop.emit("one-shot")
        with pytest.raises(AuditError):
            asyncio.run(coro())

    def test_a_closed_fail_closed_sink_raises(self) -> None:
        memory = sinks.MemorySink(delivery=Delivery(mode="sync", on_error="raise"))
        auditor = auditloop.Auditor(sinks=[memory])
        auditor.shutdown(WAIT)

        with pytest.raises(AuditError, match="closed"):
            auditor.emit("late")

    def test_a_subclass_whose_disk_write_fails(self, tmp_path: Path) -> None:
        class BrokenDisk(sinks.FileSink):
            def _write_all(self, data: bytes) -> None:
                raise OSError(5, "Input/output error")

        sink = BrokenDisk(
            tmp_path / "a.jsonl", delivery=Delivery(mode="sync", on_error="raise")
        )
        auditloop.configure(sinks=[sink])

        with pytest.raises(AuditError, match="Input/output error"):
            auditloop.emit("x")

    def test_raise_needs_sync_mode(self) -> None:
        with pytest.raises(ConfigurationError, match="on_error"):
            Delivery(on_error="raise")


class TestPolicyValidation:
    @pytest.mark.parametrize(
        ("kwargs", "named"),
        [
            ({"queue_size": -1}, "queue_size"),
            ({"queue_size": 0}, "queue_size"),
            ({"queue_size": "10"}, "queue_size"),
            ({"queue_size": True}, "queue_size"),
            ({"batch_size": 0}, "batch_size"),
            ({"flush_interval": 0}, "flush_interval"),
            ({"block_timeout": -1}, "block_timeout"),
            ({"overflow": "drop_all"}, "overflow"),
            ({"mode": "eventually"}, "mode"),
            ({"on_error": "ignore"}, "on_error"),
            ({"queue_sise": 5}, "queue_sise"),
        ],
    )
    def test_bad_values_name_the_argument(
        self, kwargs: dict[str, Any], named: str
    ) -> None:
        with pytest.raises(ConfigurationError, match=named):
            Delivery(**kwargs)

    def test_defaults(self) -> None:
        policy = Delivery()

        assert ("async", "count", 10_000, "block", 5.0) == (
            policy.mode,
            policy.on_error,
            policy.queue_size,
            policy.overflow,
            policy.block_timeout,
        )
        assert 0 == Delivery(block_timeout=0).block_timeout

    def test_configure_level_default_policy(self) -> None:
        memory = sinks.MemorySink()
        raw = GateSink()
        auditor = auditloop.Auditor(sinks=[raw, memory], delivery=Delivery(mode="sync"))

        assert isinstance(auditor.deliveries[0], SyncDelivery)
        assert isinstance(auditor.deliveries[1], SyncDelivery)  # its own policy
        with pytest.raises(ConfigurationError, match="delivery"):
            auditloop.Auditor(delivery="sync")  # type: ignore[arg-type]


class TestStats:
    def test_per_sink_counters_and_sink_stats(self, make: Any) -> None:
        class Counting(GateSink):
            def stats(self) -> dict[str, int]:
                return {"own": 1}

        sink = Counting()
        sink.gate.set()
        auditor, _ = make(sink)
        emit_numbers(auditor, range(3))
        assert auditor.flush(WAIT)

        assert {
            "mode": "async",
            "written": 3,
            "queued": 0,
            "dropped": {},
            "errors": 0,
            "last_error": None,
            "sink": {"own": 1},
        } == auditor.stats()["sinks"]["Counting"]

    def test_a_raising_sink_stats_is_reported_not_raised(self, make: Any) -> None:
        class Broken(GateSink):
            def stats(self) -> dict[str, int]:
                raise RuntimeError("no stats")

        auditor, _ = make(Broken())

        assert {"error": "RuntimeError: no stats"} == (
            auditor.stats()["sinks"]["Broken"]["sink"]
        )


class TestExit:
    @pytest.mark.parametrize("global_config", [True, False])
    def test_queued_events_are_written_at_interpreter_exit(
        self, tmp_path: Path, global_config: bool
    ) -> None:
        path = tmp_path / "exit.jsonl"
        script = textwrap.dedent(
            f"""
            import auditloop
            from auditloop import sinks
            sink = sinks.FileSink({str(path)!r}, delivery=sinks.Delivery(
                flush_interval=60, batch_size=100_000))
            if {global_config!r}:
                auditloop.configure(sinks=[sink])
                emit = auditloop.emit
            else:
                emit = auditloop.Auditor(sinks=[sink]).emit
            for i in range(500):
                emit("exit.test", i=i)
            """
        )

        subprocess.run([sys.executable, "-c", script], check=True, timeout=60)

        numbers = [e.attributes["i"] for e in auditloop.read_events(path)]
        assert list(range(500)) == numbers
