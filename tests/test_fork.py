"""Fork safety: a forked child gets a fresh queue and writer, and no deadlock."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

import auditloop
from auditloop import _clock, sinks
from auditloop._delivery import AsyncDelivery
from fork_helpers import run_child

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

WAIT = 30.0


class ParentBlockedSink(sinks.FileSink):
    """A FileSink whose disk write hangs in the parent, holding its lock."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.parent = os.getpid()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def _write_all(self, data: bytes) -> None:
        if os.getpid() == self.parent:
            self.entered.set()
            self.gate.wait(WAIT)
        super()._write_all(data)


def actions_by_pid(path: Path) -> list[tuple[str, int]]:
    return [(e.action, e.source["pid"]) for e in auditloop.read_events(path)]


class TestFork:
    def test_events_emitted_in_the_child_are_delivered_by_the_child(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "fork.jsonl"
        auditloop.configure(sinks=[sinks.FileSink(path)])
        auditloop.emit("parent.before")
        assert auditloop.flush(WAIT)

        def child() -> None:
            for _ in range(3):
                auditloop.emit("child")
            assert auditloop.shutdown(WAIT)

        assert 0 == run_child(child)
        auditloop.emit("parent.after")
        assert auditloop.flush(WAIT)

        events = actions_by_pid(path)
        parent = os.getpid()
        assert [("parent.before", parent)] == events[:1]
        assert [("parent.after", parent)] == events[-1:]
        children = [pid for action, pid in events if action == "child"]
        assert 3 == len(children)
        assert {children[0]} == set(children)
        assert parent != children[0]

    def test_child_does_not_redeliver_the_parents_queue_nor_deadlock(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "fork.jsonl"
        sink = ParentBlockedSink(path)
        auditor = auditloop.Auditor(
            sinks=[sink], delivery=auditloop.sinks.Delivery(batch_size=1)
        )
        try:
            auditor.emit("parent", i=0)
            assert sink.entered.wait(WAIT)  # the writer holds the sink's lock
            for i in range(1, 5):
                auditor.emit("parent", i=i)  # queued in the parent
            delivery = auditor.deliveries[0]
            assert isinstance(delivery, AsyncDelivery)
            assert 4 == auditor.stats()["sinks"]["ParentBlockedSink"]["queued"]

            def child() -> None:
                assert 0 == auditor.stats()["sinks"]["ParentBlockedSink"]["queued"]
                for i in range(3):
                    auditor.emit("child", i=i)
                assert auditor.shutdown(WAIT)

            assert 0 == run_child(child)
        finally:
            sink.gate.set()
        assert auditor.shutdown(WAIT)

        events = list(auditloop.read_events(path))
        parent_numbers = sorted(
            e.attributes["i"] for e in events if e.action == "parent"
        )
        child_numbers = [e.attributes["i"] for e in events if e.action == "child"]
        assert [0, 1, 2, 3, 4] == parent_numbers
        assert [0, 1, 2] == child_numbers

    def test_sync_delivery_and_locks_held_at_fork_time(self, tmp_path: Path) -> None:
        path = tmp_path / "fork.jsonl"
        auditor = auditloop.Auditor(
            sinks=[
                sinks.FileSink(path, delivery=sinks.Delivery(mode="sync")),
                sinks.MemorySink(delivery=sinks.Delivery()),
            ]
        )
        sync, background = auditor.deliveries
        assert isinstance(background, AsyncDelivery)
        # Locks another parent thread could hold at the moment of the fork.
        held = [_clock._uuid_lock, sync._lock, background.drops._lock]  # type: ignore[union-attr]
        for lock in held:
            lock.acquire()
        try:

            def child() -> None:
                auditor.emit("child")
                assert auditor.shutdown(WAIT)

            status = run_child(child)
        finally:
            for lock in held:
                lock.release()

        assert 0 == status
        assert [("child", pid) for _, pid in actions_by_pid(path)] == actions_by_pid(
            path
        )
        assert os.getpid() != actions_by_pid(path)[0][1]
        auditor.shutdown(WAIT)

    def test_a_sink_whose_fork_hook_raises_does_not_stop_the_others(
        self, tmp_path: Path
    ) -> None:
        class BrokenForkHook(sinks.MemorySink):
            def after_fork_in_child(self) -> None:
                raise RuntimeError("cannot reset")

        path = tmp_path / "fork.jsonl"
        auditor = auditloop.Auditor(sinks=[BrokenForkHook(), sinks.FileSink(path)])
        try:
            auditor.emit("parent")
            assert auditor.flush(WAIT)

            def child() -> None:
                broken = auditor.stats()["sinks"]["BrokenForkHook"]
                assert "cannot reset" in str(broken["last_error"])
                auditor.emit("child")
                assert auditor.shutdown(WAIT)

            assert 0 == run_child(child)
        finally:
            assert auditor.shutdown(WAIT)
        actions = [e.action for e in auditloop.read_events(path)]
        assert ["parent", "child"] == actions
