"""The disk spool: segments, cursor, limits, crash recovery, SIGKILL, fork."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import auditloop
from auditloop._counters import Counters
from auditloop.sinks import Delivery, HTTPSink
from auditloop.sinks._spool import Record, Spool
from collector import Collector, Reply
from http_helpers import Sleeper, ids_of, make_events


def batch(tag: str, n: int = 3, size: int = 10) -> list[bytes]:
    return [f'{{"id":"{tag}-{i}","pad":"{"x" * size}"}}'.encode() for i in range(n)]


def drain(spool: Spool) -> list[list[bytes]]:
    """Peek and ack every record, oldest first."""
    records = []
    while (record := spool.peek()) is not None:
        records.append(record.events)
        spool.ack(record)
    return records


def next_record(spool: Spool) -> Record:
    record = spool.peek()
    assert record is not None
    return record


def segments(root: Path) -> list[Path]:
    return sorted(root.glob("*/*.seg"))


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Poll *predicate* (state set by other threads) until true or timeout."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def drops() -> Counters:
    return Counters()


class TestSpool:
    def test_records_come_back_in_order_and_acked_ones_stay_gone(
        self, tmp_path: Path, drops: Counters
    ) -> None:
        spool = Spool(tmp_path, 1 << 20, drops)
        batches = [batch(str(i)) for i in range(5)]
        for b in batches:
            assert spool.append(b)
        first = spool.peek()
        assert first is not None
        spool.ack(first)
        second = spool.peek()
        assert second is not None
        spool.ack(second)
        spool.close()

        again = Spool(tmp_path, 1 << 20, drops)
        assert 9 == again.adopt()
        assert batches[2:] == drain(again)
        assert 0 == again.pending_events
        assert [] == segments(tmp_path)
        again.close()
        assert [] == list(tmp_path.iterdir())
        assert {} == drops.snapshot()

    def test_unacked_peek_returns_the_same_record(
        self, tmp_path: Path, drops: Counters
    ) -> None:
        spool = Spool(tmp_path, 1 << 20, drops)
        spool.append(batch("a"))

        first, again = spool.peek(), spool.peek()

        assert first is not None
        assert again is not None
        assert first.events == again.events
        spool.close()

    def test_segments_rotate_and_are_deleted_once_acked(
        self, tmp_path: Path, drops: Counters
    ) -> None:
        spool = Spool(tmp_path, 1 << 20, drops)  # 64 KiB segments
        for i in range(60):
            spool.append(batch(str(i), n=1, size=2000))
        assert 2 <= len(segments(tmp_path))

        records = drain(spool)

        assert 60 == len(records)
        assert [] == segments(tmp_path)
        spool.close()

    def test_full_spool_drops_the_oldest_segments_and_counts_them(
        self, tmp_path: Path, drops: Counters
    ) -> None:
        spool = Spool(tmp_path, 1 << 20, drops)
        for i in range(700):  # ~1.4 MiB into a 1 MiB spool
            spool.append(batch(str(i), n=1, size=2000))

        stats = spool.stats()
        assert stats["bytes"] <= 1 << 20
        assert 700 == spool.pending_events + drops.get("spool_full")
        assert drops.get("spool_full") > 0
        kept = drain(spool)
        assert b'"id":"699-0"' in kept[-1][0]  # the newest survive
        spool.close()

    def test_batch_larger_than_the_spool_is_dropped(
        self, tmp_path: Path, drops: Counters
    ) -> None:
        spool = Spool(tmp_path, 100_000, drops)

        assert spool.append(batch("big", n=3, size=50_000)) is False
        assert {"spool_full": 3} == drops.snapshot()
        spool.close()

    def test_torn_tail_is_cut_and_counted(
        self, tmp_path: Path, drops: Counters
    ) -> None:
        spool = Spool(tmp_path, 1 << 20, drops)
        batches = [batch(str(i), n=4) for i in range(3)]
        for b in batches:
            spool.append(b)
        spool.close()
        (segment,) = segments(tmp_path)
        with segment.open("r+b") as f:
            f.truncate(segment.stat().st_size - 10)

        again = Spool(tmp_path, 1 << 20, drops)
        again.adopt()

        assert batches[:2] == drain(again)
        assert {"spool_corrupt": 4} == drops.snapshot()
        again.close()

    def test_corrupt_record_is_skipped_and_counted(
        self, tmp_path: Path, drops: Counters
    ) -> None:
        spool = Spool(tmp_path, 1 << 20, drops)
        batches = [batch(str(i), n=2) for i in range(3)]
        for b in batches:
            spool.append(b)
        spool.close()
        (segment,) = segments(tmp_path)
        data = bytearray(segment.read_bytes())
        data[data.index(b'"id":"1-0"')] ^= 0xFF
        segment.write_bytes(bytes(data))

        again = Spool(tmp_path, 1 << 20, drops)
        again.adopt()

        assert [batches[0], batches[2]] == drain(again)
        assert {"spool_corrupt": 2} == drops.snapshot()
        again.close()

    def test_a_live_owners_directory_is_not_adopted(
        self, tmp_path: Path, drops: Counters
    ) -> None:
        owner = Spool(tmp_path, 1 << 20, drops)
        owner.append(batch("a"))
        other = Spool(tmp_path, 1 << 20, drops)

        assert 0 == other.adopt()
        owner.close()
        assert 3 == other.adopt()
        other.close()

    def test_stale_setup_directory_is_removed(
        self, tmp_path: Path, drops: Counters
    ) -> None:
        stale = tmp_path / ".tmp-123"
        stale.mkdir()
        (stale / "lock").write_text("")

        Spool(tmp_path, 1 << 20, drops).adopt()

        assert not stale.exists()

    @pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
    def test_forked_child_spools_apart_and_keeps_the_parents_lock(
        self, tmp_path: Path, drops: Counters
    ) -> None:
        spool = Spool(tmp_path, 1 << 20, drops)
        spool.append(batch("parent"))
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            spool.after_fork_in_child()
            ok = spool.append(batch("child", n=2)) and spool.pending_events == 2
            spool.close()
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert 0 == os.waitstatus_to_exitcode(status)

        other = Spool(tmp_path, 1 << 20, drops)
        assert 2 == other.adopt()  # the child's, not the parent's (still locked)
        assert [batch("child", n=2)] == drain(other)
        assert [batch("parent")] == drain(spool)
        other.close()
        spool.close()

    def test_strays_in_the_spool_dir_are_left_alone(
        self, tmp_path: Path, drops: Counters
    ) -> None:
        (tmp_path / "README").write_text("not a spool")
        (tmp_path / "no-lock").mkdir()
        (tmp_path / "0001-1-x-othertag").mkdir()  # another destination's
        empty = tmp_path / "0001-1-x-spool"
        empty.mkdir()
        (empty / "lock").write_text("")

        spool = Spool(tmp_path, 1 << 20, drops)
        assert 0 == spool.adopt()

        assert {"README", "no-lock", "0001-1-x-othertag"} == {
            p.name for p in tmp_path.iterdir()
        }
        spool.close()

    def test_adopting_twice_counts_once(self, tmp_path: Path, drops: Counters) -> None:
        first = Spool(tmp_path, 1 << 20, drops)
        first.append(batch("a"))
        first.close()
        spool = Spool(tmp_path, 1 << 20, drops)
        spool.append(batch("own"))

        assert 3 == spool.adopt()
        assert 0 == spool.adopt()
        assert [batch("a"), batch("own")] == drain(spool)
        spool.close()

    def test_a_record_torn_inside_its_header(
        self, tmp_path: Path, drops: Counters
    ) -> None:
        spool = Spool(tmp_path, 1 << 20, drops)
        spool.append(batch("a"))
        spool.close()
        (segment,) = segments(tmp_path)
        with segment.open("r+b") as f:
            f.truncate(10)

        again = Spool(tmp_path, 1 << 20, drops)
        assert 0 == again.adopt()

        assert {"spool_corrupt": 1} == drops.snapshot()
        assert [] == segments(tmp_path)
        again.close()

    def test_segment_behind_the_cursor_is_removed_on_recovery(
        self, tmp_path: Path, drops: Counters
    ) -> None:
        spool = Spool(tmp_path, 1 << 20, drops)  # 64 KiB segments
        for i in range(40):
            spool.append(batch(str(i), n=1, size=4000))
        first, *_ = segments(tmp_path)
        saved = first.read_bytes()
        # Acknowledge the whole first segment (then deleted), then one record
        # of the second, so that the cursor points into the second.
        acked = 0
        while first.exists():
            spool.ack(next_record(spool))
            acked += 1
        spool.ack(next_record(spool))
        acked += 1
        spool.close()
        first.write_bytes(saved)  # as if the crash came before the unlink

        again = Spool(tmp_path, 1 << 20, drops)

        assert 40 - acked == again.adopt()
        assert not first.exists()
        again.close()

    def test_after_close_appends_are_counted_and_acks_ignored(
        self, tmp_path: Path, drops: Counters
    ) -> None:
        spool = Spool(tmp_path, 1 << 20, drops)
        spool.append(batch("a"))
        record = spool.peek()
        assert record is not None
        spool.ack(record)
        spool.ack(record)  # twice: no effect
        spool.append(batch("b"))
        record = spool.peek()
        assert record is not None
        spool.close()
        spool.close()

        spool.ack(record)
        assert spool.append(batch("c")) is False

        assert {"closed": 3} == drops.snapshot()
        again = Spool(tmp_path, 1 << 20, drops)
        assert 3 == again.adopt()  # "b" was not acknowledged
        again.close()

    def test_evicting_the_held_record_does_not_count_it_when_acked(
        self, tmp_path: Path, drops: Counters
    ) -> None:
        # One segment (the spool is smaller than a segment): making room for
        # "c" deletes it, with "a" in the replayer's hands and "b" behind it.
        spool = Spool(tmp_path, 2500, drops)
        spool.append(batch("a", n=3, size=300))
        held = next_record(spool)
        spool.append(batch("b", n=3, size=300))
        spool.append(batch("c", n=3, size=300))

        assert {"spool_full": 3} == drops.snapshot()  # "b" only
        spool.ack(held)  # "a" was delivered
        kept = drain(spool)

        assert [batch("c", n=3, size=300)] == kept
        assert {"spool_full": 3} == drops.snapshot()  # 3 + 3 + 3: each once
        spool.close()

    def test_evicted_held_record_is_counted_when_released_undelivered(
        self, tmp_path: Path, drops: Counters
    ) -> None:
        spool = Spool(tmp_path, 2500, drops)
        spool.append(batch("a", n=3, size=300))
        held = next_record(spool)
        spool.append(batch("b", n=3, size=300))
        spool.append(batch("c", n=3, size=300))

        spool.release(held, 2)  # one of "a" was delivered, two were not
        spool.release(held)  # again: no effect

        assert {"spool_full": 5} == drops.snapshot()
        assert [batch("c", n=3, size=300)] == drain(spool)
        spool.close()

    def test_a_held_record_peeked_past_is_counted_once_if_evicted(
        self, tmp_path: Path, drops: Counters
    ) -> None:
        spool = Spool(tmp_path, 2500, drops)
        spool.append(batch("a", n=3, size=300))
        next_record(spool)  # held, never sent (e.g. a Retry-After wait)
        spool.append(batch("b", n=3, size=300))
        spool.append(batch("c", n=3, size=300))

        assert [batch("c", n=3, size=300)] == drain(spool)
        assert {"spool_full": 6} == drops.snapshot()
        spool.close()

    def test_a_released_record_that_was_not_evicted_is_replayed(
        self, tmp_path: Path, drops: Counters
    ) -> None:
        spool = Spool(tmp_path, 1 << 20, drops)
        spool.append(batch("a"))
        spool.release(next_record(spool))

        assert [batch("a")] == drain(spool)
        assert {} == drops.snapshot()
        spool.close()

    def test_a_refusal_is_described_instead_of_counted_for_fail_closed(
        self, tmp_path: Path, drops: Counters
    ) -> None:
        spool = Spool(tmp_path, 100, drops)
        lost: list[str] = []

        assert spool.append(batch("big", n=2, size=200), lost) is False
        spool.close()
        assert spool.append(batch("late"), lost) is False

        assert ["2 not spooled (spool_full)", "3 not spooled (closed)"] == lost
        assert {} == drops.snapshot()

    def test_a_refused_write_leaves_no_torn_record(self, tmp_path: Path) -> None:
        # RLIMIT_FSIZE makes the kernel refuse to grow the file (EFBIG), as a
        # full disk would; the spool must count the batch and cut what was
        # written of it.
        script = f"""
import resource, signal, sys
sys.path[:0] = {sys.path!r}
from pathlib import Path
from auditloop._counters import Counters
from auditloop.sinks._spool import Record, Spool
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
drops = Counters()
spool = Spool(Path({str(tmp_path)!r}), 1 << 20, drops)
ok = [spool.append([b'{{"pad":"' + b"x" * 3000 + b'"}}'] * 2) for _ in range(5)]
spool.close()
print(ok, drops.snapshot())
"""
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        )

        assert "[True, True, True, False, False] {'spool_error': 4}" == (
            done.stdout.strip()
        )
        drops = Counters()
        again = Spool(tmp_path, 1 << 20, drops)
        assert 6 == again.adopt()
        assert 3 == len(drain(again))
        assert {} == drops.snapshot()
        again.close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    with Collector(keep_events=True) as server:
        yield server


def fast_sink(url: str, spool_dir: Path, **kwargs: object) -> HTTPSink:
    return HTTPSink(url, spool_dir=spool_dir, backoff=0.01, backoff_max=0.05, **kwargs)  # type: ignore[arg-type]


class TestHTTPSinkSpool:
    def test_outage_spools_without_waiting_then_replays_in_order(
        self, collector: Collector, tmp_path: Path
    ) -> None:
        collector.stop()
        sink = fast_sink(collector.url(), tmp_path)
        auditor = auditloop.Auditor(
            sinks=[sink],
            delivery=Delivery(queue_size=1000),
            drop_report_interval=None,
        )
        for i in range(20_000):
            auditor.emit("x.y", n=i)
        # The queue (1000) is far smaller than the outage's 20k events: they
        # are on disk, not in memory, while the collector is still down.
        assert wait_until(lambda: sink.stats()["spooled"] == 20_000)
        assert 0 == auditor.stats()["sinks"]["HTTPSink"]["queued"]
        assert {} == auditor.stats()["dropped"]

        collector.start()
        assert auditor.flush(timeout=20)

        assert list(range(20_000)) == [e["attributes"]["n"] for e in collector.events]
        assert {} == auditor.stats()["dropped"]
        stats = sink.stats()
        assert 20_000 == stats["replayed"]
        assert 0 == stats["spool"]["pending_events"]
        assert [] == segments(tmp_path)
        auditor.shutdown(5)

    def test_a_batch_leaves_the_spool_only_after_a_2xx(
        self, collector: Collector, tmp_path: Path
    ) -> None:
        collector.faults = lambda n: Reply(503)
        sink = fast_sink(collector.url(), tmp_path)
        events = make_events(3)

        sink.write(events)
        assert wait_until(lambda: len(collector.requests) >= 5)
        assert 3 == sink.stats()["spool"]["pending_events"]
        assert 1 == len(segments(tmp_path))

        collector.faults = None
        sink.flush(10)
        assert set(ids_of(events)) == collector.unique_ids
        assert [] == segments(tmp_path)
        sink.close(5)

    def test_refused_batch_is_counted_and_removed(
        self, collector: Collector, tmp_path: Path
    ) -> None:
        collector.faults = lambda n: Reply(503) if n == 0 else Reply(400)
        sink = fast_sink(collector.url(), tmp_path)

        sink.write(make_events(3))
        sink.flush(10)

        assert {"http_4xx": 3} == sink.drops.snapshot()
        assert 0 == sink.stats()["spool"]["pending_events"]
        sink.close(5)

    def test_retry_after_from_the_writer_delays_the_replay(
        self, collector: Collector, tmp_path: Path
    ) -> None:
        collector.script(Reply(503, {"Retry-After": "5"}))
        sleeper = Sleeper()
        sink = HTTPSink(
            collector.url(), spool_dir=tmp_path, sleep=sleeper, clock=sleeper.clock
        )

        sink.write(make_events(2))
        sink.flush(10)

        assert [5.0] == sleeper.calls
        assert 2 == len(collector.unique_ids)
        sink.close(5)

    def test_retry_after_during_replay(
        self, collector: Collector, tmp_path: Path
    ) -> None:
        collector.script(Reply(503), Reply(429, {"Retry-After": "9"}))
        sleeper = Sleeper()
        sink = HTTPSink(
            collector.url(), spool_dir=tmp_path, sleep=sleeper, clock=sleeper.clock
        )

        sink.write(make_events(2))
        sink.flush(10)

        assert [9.0] == sleeper.calls
        assert 2 == len(collector.unique_ids)
        sink.close(5)

    def test_eviction_during_a_replay_request_counts_each_event_once(
        self, collector: Collector, tmp_path: Path
    ) -> None:
        # The replay request for batch 0 is held inside the collector while
        # batches 1 and 2 fill the (one-segment) spool: making room evicts
        # the segment holding batches 0 and 1, then batch 0 is accepted.
        in_flight, release = threading.Event(), threading.Event()

        def faults(n: int) -> Reply | None:
            if n == 0:
                return Reply(503)  # the direct attempt: batch 0 is spooled
            if n == 1:
                in_flight.set()
                release.wait(20)
            return None

        collector.faults = faults
        sink = fast_sink(collector.url(), tmp_path, spool_max_bytes=25_000)
        batches = [make_events(10, pad="x" * 900) for _ in range(3)]
        sink.write(batches[0])
        assert in_flight.wait(20)
        sink.write(batches[1])
        sink.write(batches[2])
        release.set()
        sink.flush(10)

        assert set(ids_of(batches[0] + batches[2])) == collector.unique_ids
        assert {"spool_full": 10} == sink.drops.snapshot()  # batch 1 only
        assert 30 == len(collector.unique_ids) + sum(sink.drops.snapshot().values())
        sink.close(5)

    def test_new_batches_queue_behind_the_backlog(
        self, collector: Collector, tmp_path: Path
    ) -> None:
        release = threading.Event()
        collector.script(Reply(503), Reply(503))
        sink = HTTPSink(
            collector.url(),
            spool_dir=tmp_path,
            sleep=lambda s: release.wait(10),
        )
        first, second = make_events(2), make_events(2)
        sink.write(first)  # fails → spool; the replay waits for `release`
        sink.write(second)  # must not overtake the backlog

        assert 4 == sink.stats()["spool"]["pending_events"]
        release.set()
        sink.flush(10)
        received = [e["id"] for e in collector.events]
        assert ids_of(first) + ids_of(second) == received
        sink.close(5)

    def test_sinks_for_other_collectors_do_not_take_each_others_batches(
        self, collector: Collector, tmp_path: Path
    ) -> None:
        collector.stop()
        splunk = HTTPSink(collector.url(), format="splunk-hec", spool_dir=tmp_path)
        splunk.write(make_events(2))
        splunk.close(5)
        collector.start()

        ndjson = HTTPSink(collector.url(), spool_dir=tmp_path)
        assert 0 == ndjson.stats()["spool"]["pending_events"]
        ndjson.close(5)
        again = HTTPSink(collector.url(), format="splunk-hec", spool_dir=tmp_path)
        again.flush(10)
        assert 2 == len(collector.unique_ids)
        assert collector.requests[0].path.startswith("/services/collector")
        again.close(5)

    def test_flush_retries_at_once_instead_of_sleeping_out_the_backoff(
        self, collector: Collector, tmp_path: Path
    ) -> None:
        collector.stop()
        sink = HTTPSink(collector.url(), spool_dir=tmp_path, backoff=60)
        events = make_events(3)
        sink.write(events)
        assert wait_until(lambda: sink.stats()["backoff"] >= 15)  # asleep
        collector.start()

        sink.flush(10)

        assert set(ids_of(events)) == collector.unique_ids
        sink.close(5)


_CHILD_EMIT = """
import sys, time
import auditloop
from auditloop.sinks import HTTPSink
url, spool, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
sink = HTTPSink(url, spool_dir=spool, backoff_max=60)
auditor = auditloop.Auditor(service="child", sinks=[sink], drop_report_interval=None)
for i in range(n):
    auditor.emit("bulk.event", n=i)
while sink.stats()["spooled"] < n:
    time.sleep(0.01)
print("spooled", sink.stats()["dropped"], flush=True)
time.sleep(120)
"""

_CHILD_REPLAY = """
import sys
from auditloop.sinks import HTTPSink
sink = HTTPSink(sys.argv[1], spool_dir=sys.argv[2])
sink.flush(60)
print(sink.stats()["spool"]["pending_events"], sink.stats()["dropped"], flush=True)
sink.close(5)
"""


class TestSigkill:
    def test_spool_of_a_killed_process_is_delivered_by_the_next(
        self, tmp_path: Path
    ) -> None:
        n = 50_000
        spool = tmp_path / "spool"
        collector = Collector(keep_events=True)
        collector.start()
        collector.stop()  # the collector is down while the child runs
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD_EMIT, collector.url(), str(spool), str(n)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            assert child.stdout is not None
            assert "spooled {}" == child.stdout.readline().strip()
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(10)
        assert -signal.SIGKILL == child.returncode
        assert segments(spool)

        collector.start()
        try:
            done = subprocess.run(
                [sys.executable, "-c", _CHILD_REPLAY, collector.url(), str(spool)],
                capture_output=True,
                text=True,
                env=env,
                timeout=120,
                check=True,
            )
        finally:
            collector.stop()

        assert "0 {}" == done.stdout.strip()
        assert list(range(n)) == [e["attributes"]["n"] for e in collector.events]
        assert n == len(collector.unique_ids)
        assert [] == list(spool.iterdir())
