"""FileSink(writer="process"): a helper process writes the file, with the same results.

Everything here is real: helper processes started by the sink, signals sent
to them, file size limits set on them with ``prlimit``, applications killed
with SIGKILL, forks. Each test checks at the end that no helper it started
is still running (see ``_no_helper_left``).
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import gc
import json
import os
import resource
import signal
import subprocess
import sys
import termios
import textwrap
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import auditloop
from auditloop import sinks
from auditloop._delivery import PartialWrite
from auditloop.exceptions import ConfigurationError
from auditloop.sinks import Delivery, FileSink
from fork_helpers import run_child

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="needs /proc, prlimit and os.fork (Linux)"
)

KEY = b"k" * 32
WAIT = 30.0
SYNC = Delivery(mode="sync")
# What a helper's command line holds (the pytest process's own does not).
HELPER_MARK = b"_writer_process import serve"


# -- helpers -------------------------------------------------------------------


def event(i: int) -> bytes:
    """One encoded event of fixed length (for i < 10,000)."""
    return orjson.dumps(
        {"id": f"e{i:04d}", "action": "n", "attributes": {"i": i, "pad": "x" * 200}}
    )


def batch(start: int, stop: int) -> list[bytes]:
    return [event(i) for i in range(start, stop)]


def trail(path: Path) -> list[Path]:
    """The trail's files, oldest first: ``path.N`` … ``path.1``, then *path*."""
    rotated = sorted(
        path.parent.glob(path.name + ".*"), key=lambda p: -int(p.name.split(".")[-1])
    )
    return [*rotated, path]


def records(path: Path) -> list[dict[str, Any]]:
    """Every record of the trail (a torn or malformed line fails the test)."""
    return [
        orjson.loads(line) for p in trail(path) for line in p.read_bytes().splitlines()
    ]


def numbers(path: Path) -> list[int]:
    """The ``i`` of each test event in trail order (notices skipped)."""
    return [r["attributes"]["i"] for r in records(path) if r["action"] == "n"]


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def assert_intact(path: Path) -> None:
    """The chain verifies with no finding, over every line of the trail."""
    result = auditloop.verify(path, key=KEY)
    assert [] == [str(f) for f in result.findings]
    assert len(records(path)) == result.records


def helper_pid(sink: FileSink) -> int:
    process = sink._process
    assert process is not None
    pid = process.pid
    assert pid is not None
    return pid


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone (ENOENT, or ESRCH while reading)
        return None
    return text.rpartition(")")[2].split()  # the name may hold spaces


def alive(pid: int) -> bool:
    """True while *pid* runs (a zombie has exited: it is not alive)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def helper_children() -> list[int]:
    """Helper processes started by this process that are still running."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None or fields[0] == "Z" or int(fields[1]) != me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if HELPER_MARK in cmdline:
            found.append(int(entry.name))
    return found


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Poll *condition* until true; fail after *timeout* seconds (a hang)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        time.sleep(0.005)


def wait_exited(pid: int) -> None:
    wait_until(lambda: not alive(pid), f"process {pid} to exit")


def reap(pid: int) -> None:
    """Reap our exited child *pid* if nobody has (its Popen was dropped)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def assert_reaped(pid: int) -> None:
    """*pid* has exited and was reaped (by the sink that started it)."""
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def bytes_in_pipe(fd: int) -> int:
    """Bytes waiting in the pipe *fd* belongs to (either end)."""
    count = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, count)
    return count[0]


def limit_file_size(pid: int, limit: int) -> tuple[int, int]:
    """Set *pid*'s soft file size limit (a write past it fails with EFBIG:
    Python ignores SIGXFSZ); return the limits before."""
    soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    # Only the soft limit: raising a hard limit again needs CAP_SYS_RESOURCE.
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, hard))
    return soft, hard


def request_pipe(sink: FileSink) -> int:
    """The sink's end of the pipe that carries requests to its helper."""
    process = sink._process
    assert process is not None
    return process._pipes[0]


def request_size(lines: list[bytes]) -> int:
    """Bytes of a write request for *lines* (header, then the joined lines)."""
    from auditloop.sinks._writer_process import _REQUEST

    return _REQUEST.size + len(b"\n".join(lines))


@pytest.fixture(autouse=True)
def _no_helper_left() -> Iterator[None]:
    """Fail a test that leaves a helper running (then end it, for the next)."""
    yield
    deadline = time.monotonic() + 10
    while helper_children() and time.monotonic() < deadline:
        time.sleep(0.01)
    left = helper_children()
    for pid in left:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert [] == left


def chained(path: Path, **options: Any) -> FileSink:
    options.setdefault("writer", "process")
    return FileSink(path, chain=True, key=KEY, **options)


# -- round trip ------------------------------------------------------------------


class TestRoundTrip:
    def test_batches_through_configure_with_rotation_verify(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        sink = chained(path, max_bytes=4000, backups=50)
        pid = helper_pid(sink)
        auditor = auditloop.configure(sinks=[sink])
        for i in range(60):
            auditloop.emit("n", i=i, pad="p" * 100)
            if i % 10 == 9:  # several batches
                assert auditloop.flush(WAIT)
        assert auditloop.shutdown(WAIT)

        stats = auditor.stats()["sinks"]["FileSink"]
        assert list(range(60)) == numbers(path)
        assert len(trail(path)) > 3  # rotated, in the helper
        assert 60 == stats["written"]
        assert {} == stats["dropped"]
        assert_intact(path)
        assert list(range(1, 61)) == [r["seq"] for r in records(path)]
        assert not alive(pid)

    @pytest.mark.parametrize(
        ("max_bytes", "sizes"),
        [
            (3000, [1, 3, 7, 2, 5, 1, 4, 2]),  # rotating
            (None, [2000, 1, 3]),  # a batch far larger than the pipe's buffer
        ],
        ids=["rotating", "large-batch"],
    )
    def test_the_file_is_byte_for_byte_what_the_thread_writer_writes(
        self, tmp_path: Path, max_bytes: int | None, sizes: list[int]
    ) -> None:
        for writer in ("thread", "process"):
            directory = tmp_path / writer
            directory.mkdir()
            sink = chained(
                directory / "audit.jsonl",
                key_id="k1",
                max_bytes=max_bytes,
                backups=50,
                writer=writer,
            )
            start = 0
            for size in sizes:
                sink.write(batch(start, start + size))
                start += size
            sink.close()

        thread, process = files_of(tmp_path / "thread"), files_of(tmp_path / "process")
        assert thread == process
        if max_bytes is not None:
            assert len(process) > 3
        assert list(range(sum(sizes))) == numbers(tmp_path / "process" / "audit.jsonl")
        assert_intact(tmp_path / "process" / "audit.jsonl")

    def test_thread_then_process_then_thread_continue_one_chain(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        start = 0
        for writer in ("thread", "process", "thread"):
            sink = chained(path, max_bytes=3000, backups=50, writer=writer)
            for size in (4, 1, 6):
                sink.write(batch(start, start + size))
                start += size
            sink.close()

        assert list(range(33)) == numbers(path)
        assert list(range(1, 34)) == [r["seq"] for r in records(path)]
        assert len(trail(path)) > 3
        assert_intact(path)

    def test_an_empty_batch_writes_nothing(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        sink = chained(path)
        sink.write(batch(0, 2))
        sink.write([])
        sink.write(batch(2, 3))
        sink.close()

        assert [0, 1, 2] == numbers(path)
        assert_intact(path)


# -- the helper's own events -----------------------------------------------------


def checkpoint_events(memory: sinks.MemorySink) -> list[dict[str, Any]]:
    return [
        dict(e.attributes) for e in memory.events if e.action == "auditloop.checkpoint"
    ]


def assert_heads_match_the_file(path: Path, checkpoints: list[dict[str, Any]]) -> None:
    by_seq = {r["seq"]: r for r in records(path)}
    for checkpoint in checkpoints:
        assert by_seq[checkpoint["count"]]["hash"] == checkpoint["head"]
        assert str(path) == checkpoint["file"]


class TestNotices:
    def test_checkpoints_reach_the_auditor_as_with_the_thread_writer(
        self, tmp_path: Path
    ) -> None:
        seen: dict[str, list[tuple[int, int]]] = {}
        for writer in ("thread", "process"):
            path = tmp_path / writer / "audit.jsonl"
            path.parent.mkdir()
            memory = sinks.MemorySink()
            sink = chained(path, checkpoint_every=3, delivery=SYNC, writer=writer)
            auditor = auditloop.Auditor(sinks=[sink, memory], drop_report_interval=None)
            for i in range(10):
                auditor.emit("n", i=i)
            assert auditor.shutdown(WAIT)

            checkpoints = checkpoint_events(memory)
            assert_heads_match_the_file(path, checkpoints)
            in_file = [
                r for r in records(path) if r["action"] == "auditloop.checkpoint"
            ]
            # Recorded through the Auditor (this process), not by the helper.
            assert {os.getpid()} == {r["source"]["pid"] for r in in_file}
            seen[writer] = [(r["seq"], r["attributes"]["count"]) for r in in_file]
            assert len(checkpoints) == len(in_file)
            assert_intact(path)

        assert seen["thread"] == seen["process"]
        assert len(seen["process"]) >= 3

    @pytest.mark.parametrize("writer", ["thread", "process"])
    def test_retention_deletions_reach_the_auditor(
        self, tmp_path: Path, writer: str
    ) -> None:
        path = tmp_path / "audit.jsonl"
        memory = sinks.MemorySink()
        sink = chained(
            path, max_bytes=1500, retain_files=1, delivery=SYNC, writer=writer
        )
        auditor = auditloop.Auditor(sinks=[sink, memory], drop_report_interval=None)
        for i in range(12):
            auditor.emit("n", i=i, pad="x" * 200)
        assert auditor.shutdown(WAIT)

        seen = [
            e.attributes for e in memory.events if e.action == "auditloop.retention"
        ]
        assert len(seen) >= 2
        assert all(["audit.jsonl.1"] == r["deleted"] for r in seen)
        assert {"retain_files"} == {r["reason"] for r in seen}
        first = records(path.with_name("audit.jsonl.1"))[0]["seq"]
        assert first == seen[-1]["first_seq"]
        assert first > 1
        assert ["audit.jsonl.1"] == sorted(p.name for p in tmp_path.glob("*.*.*"))
        assert_intact(path)  # the records account for the deleted files

    @pytest.mark.parametrize("writer", ["thread", "process"])
    def test_deletions_made_at_start_reach_the_auditor_that_attaches(
        self, tmp_path: Path, writer: str
    ) -> None:
        path = tmp_path / "audit.jsonl"
        old = chained(path, max_bytes=1500, writer="thread")
        for i in range(8):
            old.write([event(i)])
        old.close()
        aged = [p.name for p in trail(path)[:-1]]
        assert len(aged) >= 2
        three_days_ago = time.time() - 3 * 86400
        for name in aged:
            os.utime(path.with_name(name), (three_days_ago, three_days_ago))

        memory = sinks.MemorySink()
        sink = chained(
            path, max_bytes=1500, retain_days=1, delivery=SYNC, writer=writer
        )
        auditor = auditloop.Auditor(sinks=[sink, memory], drop_report_interval=None)
        auditor.emit("n", i=8)
        assert auditor.shutdown(WAIT)

        seen = [
            e.attributes for e in memory.events if e.action == "auditloop.retention"
        ]
        assert [(sorted(aged), "retain_days")] == [
            (sorted(r["deleted"]), r["reason"]) for r in seen
        ]
        assert_intact(path)

    def test_without_an_auditor_the_helper_writes_checkpoints_into_the_file(
        self, tmp_path: Path
    ) -> None:
        seen: dict[str, list[tuple[int, str, int | None]]] = {}
        for writer in ("thread", "process"):
            path = tmp_path / writer / "audit.jsonl"
            path.parent.mkdir()
            sink = chained(path, checkpoint_every=3, writer=writer)
            pid = helper_pid(sink) if writer == "process" else os.getpid()
            for i in range(10):
                sink.write([event(i)])
            sink.close()

            written = records(path)
            system = [r for r in written if r["action"] == "auditloop.checkpoint"]
            assert {pid} == {r["source"]["pid"] for r in system}  # the writer's own
            assert_heads_match_the_file(path, [r["attributes"] for r in system])
            seen[writer] = [
                (r["seq"], r["action"], r["attributes"].get("count")) for r in written
            ]
            assert_intact(path)

        assert seen["thread"] == seen["process"]
        assert 3 <= sum(a == "auditloop.checkpoint" for _, a, _ in seen["process"])

    def test_without_an_auditor_the_helper_writes_retention_into_the_file(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        sink = chained(path, max_bytes=1200, retain_files=1)
        pid = helper_pid(sink)
        for i in range(8):
            sink.write([event(i)])
        sink.close()

        retained = [r for r in records(path) if r["action"] == "auditloop.retention"]
        assert retained
        assert {pid} == {r["source"]["pid"] for r in retained}
        assert {"retain_files"} == {r["attributes"]["reason"] for r in retained}
        assert ["audit.jsonl.1"] == sorted(p.name for p in tmp_path.glob("*.*.*"))
        assert_intact(path)


# -- errors in the helper reach the writer ---------------------------------------


class TestErrors:
    def test_a_write_the_helper_cannot_do_is_raised_here(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        sink = chained(path)
        pid = helper_pid(sink)
        try:
            sink.write(batch(0, 3))
            moved = path.rename(tmp_path / "moved")
            path.mkdir()  # the helper's reopen-if-moved now fails

            with pytest.raises(OSError) as info:
                sink.write(batch(3, 5))

            path.rmdir()
            moved.rename(path)
            sink.write(batch(5, 7))
        finally:
            sink.close()

        assert errno.EISDIR == info.value.errno
        assert not isinstance(info.value, PartialWrite)
        assert [0, 1, 2, 5, 6] == numbers(path)
        assert not alive(pid)
        assert_intact(path)

    def test_through_an_auditor_the_failed_event_is_counted_as_dropped(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        sink = chained(path, delivery=SYNC)
        auditor = auditloop.Auditor(sinks=[sink], drop_report_interval=None)
        auditor.emit("n", i=0)
        moved = path.rename(tmp_path / "moved")
        path.mkdir()
        auditor.emit("n", i=1)  # never raises into the application
        path.rmdir()
        moved.rename(path)
        auditor.emit("n", i=2)
        assert auditor.shutdown(WAIT)

        stats = auditor.stats()["sinks"]["FileSink"]
        assert {"sink_error": 1} == stats["dropped"]
        assert 2 == stats["written"]
        assert 1 == stats["errors"]
        assert "Is a directory" in stats["last_error"]
        assert [0, 2] == numbers(path)
        assert_intact(path)

    def test_a_file_full_before_the_first_line_fails_the_whole_batch(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        sink = chained(path)
        try:
            sink.write(batch(0, 2))
            pid = helper_pid(sink)
            size = path.stat().st_size
            before = limit_file_size(pid, size)
            with pytest.raises(OSError) as info:
                sink.write(batch(2, 4))
            limit_file_size(pid, before[0])
            sink.write(batch(4, 6))  # the chain goes on behind what is on disk
        finally:
            sink.close()

        assert errno.EFBIG == info.value.errno
        assert not isinstance(info.value, PartialWrite)
        assert [0, 1, 4, 5] == numbers(path)
        assert_intact(path)

    def test_fsync_always_reports_the_lines_stored_before_the_file_filled(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        sink = chained(path, fsync="always")
        try:
            sink.write([event(0)])
            first = path.stat().st_size
            sink.write([event(1)])
            size = path.stat().st_size
            line = size - first  # every line of seq 1..9 has this length
            limit = size + line + line // 2  # room for one line and a half
            pid = helper_pid(sink)
            before = limit_file_size(pid, limit)
            with pytest.raises(PartialWrite) as info:
                sink.write(batch(2, 4))
            limit_file_size(pid, before[0])
            sink.write([event(4)])
        finally:
            sink.close()

        assert 1 == info.value.stored
        cause = info.value.__cause__
        assert isinstance(cause, OSError)
        assert errno.EFBIG == cause.errno
        assert [0, 1, 2, 4] == numbers(path)  # no half line left behind
        assert_intact(path)

    def test_through_an_auditor_the_stored_line_counts_as_written(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        sink = chained(path, fsync="always")
        auditor = auditloop.Auditor(sinks=[sink], drop_report_interval=None)

        def queued() -> int:
            count: int = auditor.stats()["sinks"]["FileSink"]["queued"]
            return count

        try:
            auditor.emit("n", i=0)
            assert auditor.flush(WAIT)
            first = path.stat().st_size
            auditor.emit("n", i=1)
            assert auditor.flush(WAIT)
            line = path.stat().st_size - first  # events 0..4 encode alike
            pid = helper_pid(sink)
            os.kill(pid, signal.SIGSTOP)
            try:
                auditor.emit("n", i=2)  # taken by the writer thread, then stuck
                wait_until(lambda: queued() == 0, "the writer to take event 2")
                auditor.emit("n", i=3)
                auditor.emit("n", i=4)  # 3 and 4: the next batch
                assert 2 == queued()
                limit = path.stat().st_size + 2 * line + line // 2
                before = limit_file_size(pid, limit)
            finally:
                os.kill(pid, signal.SIGCONT)
            assert auditor.flush(WAIT)
            limit_file_size(pid, before[0])
        finally:
            assert auditor.shutdown(WAIT)

        stats = auditor.stats()["sinks"]["FileSink"]
        assert [0, 1, 2, 3] == numbers(path)
        assert 1 == stats["dropped"]["sink_error"]  # event 4; 3 counts as written
        assert len(records(path)) == stats["written"]  # with sink_failed & co.
        assert_intact(path)


# -- the helper dies, or the application does ------------------------------------


APP_KILLED = textwrap.dedent(
    """
    import json, os, signal, sys
    sys.path[:] = json.loads(sys.argv[1])
    import auditloop
    from auditloop import sinks

    path, key, flushed, more = sys.argv[2], bytes.fromhex(sys.argv[3]), 40, 40
    sink = sinks.FileSink(path, chain=True, key=key, writer="process")
    auditloop.configure(sinks=[sink])
    for i in range(flushed):
        auditloop.emit("n", i=i)
    if not auditloop.flush(30):
        sys.exit(3)
    for i in range(flushed, flushed + more):
        auditloop.emit("n", i=i)
    print(sink._process.pid, flushed, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)

# The helper is stopped holding a whole request it has not answered when the
# application dies: it must still write it.
APP_KILLED_WHILE_HELPER_HOLDS_A_BATCH = textwrap.dedent(
    """
    import array, fcntl, json, os, signal, sys, termios, threading, time
    sys.path[:] = json.loads(sys.argv[1])
    import orjson
    from auditloop import sinks
    from auditloop.sinks._writer_process import _REQUEST

    path, key = sys.argv[2], bytes.fromhex(sys.argv[3])

    def event(i):
        return orjson.dumps({"id": f"e{i:04d}", "action": "n", "attributes": {"i": i}})

    sink = sinks.FileSink(path, chain=True, key=key, writer="process")
    sink.write([event(i) for i in range(5)])
    helper = sink._process.pid
    os.kill(helper, signal.SIGSTOP)
    pending = [event(i) for i in range(5, 10)]
    threading.Thread(target=sink.write, args=(pending,), daemon=True).start()
    expected = _REQUEST.size + len(b"\\n".join(pending))
    count = array.array("i", [0])
    deadline = time.monotonic() + 30
    while count[0] < expected:  # the whole request is in the pipe
        if time.monotonic() > deadline:
            os.kill(helper, signal.SIGKILL)
            sys.exit(3)
        time.sleep(0.001)
        fcntl.ioctl(sink._process._pipes[0], termios.FIONREAD, count)
    print(helper, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)

# A forked worker that never audits must not keep its parent's helper alive:
# once the parent is gone, the helper's input must end.
APP_KILLED_WITH_A_FORKED_WORKER = textwrap.dedent(
    """
    import json, os, signal, sys, time
    sys.path[:] = json.loads(sys.argv[1])
    import auditloop
    from auditloop import sinks

    path, key = sys.argv[2], bytes.fromhex(sys.argv[3])
    sink = sinks.FileSink(path, chain=True, key=key, writer="process")
    auditloop.configure(sinks=[sink])
    auditloop.emit("n", i=0)
    if not auditloop.flush(30):
        sys.exit(3)
    worker = os.fork()
    if worker == 0:
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # not the test's pipe
        time.sleep(60)  # killed by the test long before
        os._exit(0)
    print(sink._process.pid, worker, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def run_app(script: str, path: Path) -> list[str]:
    """Run *script* in a new interpreter; return what it printed.

    The app ends by killing itself with SIGKILL (checked). Its stderr goes
    to a file: its helper inherits it, and may outlive it.
    """
    errors = path.with_name("app.stderr")
    with errors.open("wb") as stderr:
        app = subprocess.run(
            [sys.executable, "-c", script, json.dumps(sys.path), str(path), KEY.hex()],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            timeout=WAIT,
            check=False,
        )
    assert -signal.SIGKILL == app.returncode, errors.read_text()
    return app.stdout.split()


class TestHelperDeath:
    def test_a_helper_killed_between_batches_is_replaced_and_nothing_is_lost(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        sink = chained(path)
        try:
            sink.write(batch(0, 3))
            first = helper_pid(sink)
            os.kill(first, signal.SIGKILL)
            wait_exited(first)

            sink.write(batch(3, 6))
            second = helper_pid(sink)
            sink.write(batch(6, 7))
        finally:
            sink.close()

        assert first != second
        assert list(range(7)) == numbers(path)
        assert not alive(first)
        assert not alive(second)
        assert_intact(path)

    def test_a_helper_that_cannot_be_replaced_fails_the_write_until_it_can(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        sink = chained(path)
        try:
            sink.write(batch(0, 2))
            first = helper_pid(sink)
            os.kill(first, signal.SIGKILL)
            wait_exited(first)
            moved = path.rename(tmp_path / "moved")
            path.mkdir()  # a new helper cannot open the file

            with pytest.raises(OSError) as info:
                sink.write(batch(2, 4))

            path.rmdir()
            moved.rename(path)
            sink.write(batch(4, 6))  # tries again, and succeeds
            second = helper_pid(sink)
        finally:
            sink.close()

        assert "Is a directory" in str(info.value)
        assert first != second
        assert [0, 1, 4, 5] == numbers(path)
        assert_intact(path)

    def test_a_helper_killed_before_a_flush_fails_it_and_close_is_quiet(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        sink = chained(path, fsync="batch")
        sink.write(batch(0, 2))
        pid = helper_pid(sink)
        os.kill(pid, signal.SIGKILL)
        wait_exited(pid)

        with pytest.raises(OSError) as info:
            sink.flush(WAIT)
        sink.close()  # nothing left to close: no error

        assert errno.EPIPE == info.value.errno
        assert "exited (code -9)" in str(info.value)
        assert_reaped(pid)
        assert [0, 1] == numbers(path)
        assert_intact(path)

    def test_a_replaced_helper_still_hands_its_notices_to_the_auditor(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        memory = sinks.MemorySink()
        sink = chained(path, checkpoint_every=3, delivery=SYNC)
        auditor = auditloop.Auditor(sinks=[sink, memory], drop_report_interval=None)
        try:
            auditor.emit("n", i=0)
            first = helper_pid(sink)
            os.kill(first, signal.SIGKILL)
            wait_exited(first)
            for i in range(1, 5):
                auditor.emit("n", i=i)
            second = helper_pid(sink)
        finally:
            assert auditor.shutdown(WAIT)

        assert first != second
        checkpoints = checkpoint_events(memory)
        assert checkpoints
        in_file = [r for r in records(path) if r["action"] == "auditloop.checkpoint"]
        assert len(checkpoints) == len(in_file)
        assert {os.getpid()} == {r["source"]["pid"] for r in in_file}
        assert_heads_match_the_file(path, checkpoints)
        assert_intact(path)

    def test_deletions_made_by_a_replacement_helper_at_start_are_recorded(
        self, tmp_path: Path
    ) -> None:
        # A new helper sweeps retain_days when it starts (as a new sink
        # does); its deletions must reach the Auditor like any other.
        path = tmp_path / "audit.jsonl"
        memory = sinks.MemorySink()
        sink = chained(path, max_bytes=1500, retain_days=1, delivery=SYNC)
        auditor = auditloop.Auditor(sinks=[sink, memory], drop_report_interval=None)
        try:
            for i in range(8):
                auditor.emit("n", i=i, pad="x" * 200)
            aged = [p.name for p in trail(path)[:-1]]
            assert len(aged) >= 2
            three_days_ago = time.time() - 3 * 86400
            for name in aged:
                os.utime(path.with_name(name), (three_days_ago, three_days_ago))
            first = helper_pid(sink)
            os.kill(first, signal.SIGKILL)
            wait_exited(first)
            auditor.emit("n", i=8)  # starts a new helper, which deletes them
        finally:
            assert auditor.shutdown(WAIT)

        seen = [
            e.attributes for e in memory.events if e.action == "auditloop.retention"
        ]
        assert sorted(aged) == sorted(n for r in seen for n in r["deleted"])
        assert_intact(path)

    def test_a_helper_that_dies_holding_a_request_fails_that_batch_only(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        sink = chained(path)
        try:
            sink.write(batch(0, 2))
            first = helper_pid(sink)
            os.kill(first, signal.SIGSTOP)  # it will never read the request
            failure: list[BaseException] = []

            def write() -> None:
                try:
                    sink.write(batch(2, 4))
                except BaseException as exc:
                    failure.append(exc)

            writer = threading.Thread(target=write)
            try:
                writer.start()
                wait_until(
                    lambda: (
                        bytes_in_pipe(request_pipe(sink)) >= request_size(batch(2, 4))
                    ),
                    "the request to reach the pipe",
                )
            finally:
                os.kill(first, signal.SIGKILL)  # dies with the request unread
            writer.join(WAIT)
            assert not writer.is_alive()

            sink.write(batch(4, 6))
            second = helper_pid(sink)
        finally:
            sink.close()

        assert 1 == len(failure)
        assert isinstance(failure[0], OSError)
        assert errno.EPIPE == failure[0].errno
        assert first != second
        assert [0, 1, 4, 5] == numbers(path)
        assert_intact(path)

    def test_an_application_killed_with_sigkill_leaves_what_it_flushed(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"

        helper, flushed = map(int, run_app(APP_KILLED, path))
        wait_exited(helper)  # it writes what it got, then exits on its own

        got = numbers(path)
        issues: list[auditloop.ReadIssue] = []
        assert len(got) == len(
            list(auditloop.read_events(path, on_error=issues.append))
        )
        assert [] == issues  # no torn line: the helper writes whole requests
        assert list(range(len(got))) == got  # nothing missing in between
        assert len(got) >= flushed
        assert_intact(path)

    def test_a_helper_holding_a_batch_writes_it_after_the_application_died(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        helper = 0
        try:
            [printed] = run_app(APP_KILLED_WHILE_HELPER_HOLDS_A_BATCH, path)
            helper = int(printed)
            assert list(range(5)) == numbers(path)  # the held batch: not yet
            os.kill(helper, signal.SIGCONT)
            wait_exited(helper)
        finally:
            if helper and alive(helper):
                os.kill(helper, signal.SIGKILL)

        assert list(range(10)) == numbers(path)
        assert_intact(path)


# -- flush timeout, signals, close -----------------------------------------------


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    """Keep *pid* stopped (SIGSTOP) for the block.

    Should the block ignore its timeout, the helper is resumed after WAIT
    seconds anyway, so the test fails instead of hanging.
    """
    os.kill(pid, signal.SIGSTOP)
    watchdog = threading.Timer(WAIT, os.kill, (pid, signal.SIGCONT))
    watchdog.start()
    try:
        yield
    finally:
        watchdog.cancel()
        os.kill(pid, signal.SIGCONT)


class TestFlushTimeout:
    def test_a_stopped_helper_times_flush_out_and_the_late_answer_is_skipped(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        sink = chained(path, fsync="batch")
        try:
            sink.write(batch(0, 3))
            pid = helper_pid(sink)
            with stopped(pid), pytest.raises(TimeoutError):
                sink.flush(timeout=0.2)

            # The next answers are each request's own, not one behind: this
            # write fails in the helper and must fail here (not the next).
            moved = path.rename(tmp_path / "moved")
            path.mkdir()
            with pytest.raises(OSError) as info:
                sink.write(batch(3, 5))
            path.rmdir()
            moved.rename(path)
            sink.write(batch(5, 7))
            sink.flush(timeout=WAIT)
            sink.write(batch(7, 8))
            assert pid == helper_pid(sink)  # the same helper all along
        finally:
            sink.close()

        assert errno.EISDIR == info.value.errno
        assert [0, 1, 2, 5, 6, 7] == numbers(path)
        assert_intact(path)

    def test_close_with_a_stopped_helper_times_out_and_the_helper_finishes(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        sink = chained(path, fsync="batch")
        sink.write(batch(0, 3))
        pid = helper_pid(sink)
        with stopped(pid), pytest.raises(TimeoutError):
            sink.close(timeout=0.2)
        wait_exited(pid)  # it closes its sink and exits by itself
        reap(pid)

        with pytest.raises(OSError):
            sink.write(batch(3, 4))  # closed all the same
        assert list(range(3)) == numbers(path)
        assert_intact(path)


class TestSignals:
    @pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
    def test_the_helper_ignores_stop_signals(
        self, tmp_path: Path, signum: signal.Signals
    ) -> None:
        path = tmp_path / "audit.jsonl"
        sink = chained(path)
        try:
            sink.write(batch(0, 2))
            pid = helper_pid(sink)
            for _ in range(3):
                os.kill(pid, signum)
            sink.write(batch(2, 4))
            sink.flush(WAIT)
            assert alive(pid)
            assert pid == helper_pid(sink)
        finally:
            sink.close()

        assert list(range(4)) == numbers(path)
        assert_intact(path)


class TestClose:
    def test_close_ends_the_helper_and_may_be_repeated(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        sink = chained(path)
        sink.write(batch(0, 2))
        pid = helper_pid(sink)

        sink.close()

        assert sink._process is not None
        assert sink._process.pid is None
        assert_reaped(pid)  # exited and reaped
        sink.close()
        sink.flush()  # nothing to flush: no error either
        with pytest.raises(OSError) as info:
            sink.write(batch(2, 3))
        assert errno.EBADF == info.value.errno
        assert [0, 1] == numbers(path)
        assert_intact(path)

    def test_an_auditors_shutdown_ends_the_helper(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        sink = chained(path)
        auditor = auditloop.Auditor(sinks=[sink])
        auditor.emit("n", i=0)
        pid = helper_pid(sink)

        assert auditor.shutdown(WAIT)

        assert_reaped(pid)
        assert [0] == numbers(path)

    def test_a_sink_dropped_without_close_lets_its_helper_exit(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        sink = chained(path)
        sink.write(batch(0, 3))
        pid = helper_pid(sink)

        with warnings.catch_warnings():
            # "subprocess … is still running": the Popen goes before the helper.
            warnings.simplefilter("ignore", ResourceWarning)
            del sink
            gc.collect()
        wait_exited(pid)  # end of input: it closes its sink and exits
        reap(pid)

        assert list(range(3)) == numbers(path)
        assert_intact(path)


# -- configuration ---------------------------------------------------------------


class TestConfiguration:
    def test_an_unknown_writer_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigurationError, match=r"FileSink: writer must be"):
            FileSink(tmp_path / "audit.jsonl", writer="bogus")  # type: ignore[arg-type]
        assert [] == helper_children()

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"fsync": "sometimes"}, "FileSink: fsync must be"),
            ({"max_bytes": 0}, "FileSink: max_bytes must be > 0"),
            ({"chain": True, "checkpoint_every": 1}, "checkpoint_every must be"),
        ],
    )
    def test_bad_options_are_refused_before_a_helper_starts(
        self, tmp_path: Path, options: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(ConfigurationError, match=message):
            FileSink(tmp_path / "audit.jsonl", writer="process", **options)
        assert [] == helper_children()

    def test_an_interpreter_that_cannot_start_is_a_configuration_error(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))

        with pytest.raises(ConfigurationError, match="cannot start the writer"):
            FileSink(tmp_path / "audit.jsonl", writer="process")

    def test_a_helper_that_hangs_at_start_is_killed(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from auditloop.sinks import _writer_process

        pid_file = tmp_path / "pid"
        hanging = tmp_path / "python"
        hanging.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 60\n")
        hanging.chmod(0o700)
        monkeypatch.setattr(sys, "executable", str(hanging))
        monkeypatch.setattr(_writer_process, "_START_TIMEOUT", 1.0)

        with pytest.raises(ConfigurationError, match="cannot start the writer"):
            FileSink(tmp_path / "audit.jsonl", writer="process")

        pid = int(pid_file.read_text())
        assert_reaped(pid)  # killed and reaped, not left to sleep

    def test_a_path_that_is_a_directory_is_refused_with_the_helpers_message(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        path.mkdir()

        with pytest.raises(ConfigurationError) as info:
            FileSink(path, chain=True, key=KEY, writer="process")

        message = str(info.value)
        assert message.startswith(f"FileSink: cannot open {str(path)!r}")
        assert "Is a directory" in message
        wait_until(lambda: not helper_children(), "the refused helper to exit")


# -- fork ------------------------------------------------------------------------


class TestFork:
    def test_a_forked_child_writes_through_a_helper_of_its_own(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "fork.jsonl"
        sink = FileSink(path, writer="process")
        auditor = auditloop.Auditor(sinks=[sink], drop_report_interval=None)
        read_end, write_end = os.pipe()
        try:
            auditor.emit("parent.before")
            assert auditor.flush(WAIT)
            parent_helper = helper_pid(sink)

            def child() -> None:  # pragma: no cover - runs in the child
                os.close(read_end)
                for i in range(3):
                    auditor.emit("child", i=i)
                assert auditor.flush(WAIT)
                os.write(write_end, str(helper_pid(sink)).encode())
                assert auditor.shutdown(WAIT)

            status = run_child(child)
            os.close(write_end)
            write_end = -1
            reported = os.read(read_end, 64)

            auditor.emit("parent.after")
            assert auditor.flush(WAIT)
            assert parent_helper == helper_pid(sink)
        finally:
            os.close(read_end)
            if write_end >= 0:
                os.close(write_end)
            assert auditor.shutdown(WAIT)

        assert 0 == status
        child_helper = int(reported)
        assert child_helper != parent_helper
        assert not alive(child_helper)
        events = [(e.action, e.source["pid"]) for e in auditloop.read_events(path)]
        me = os.getpid()
        assert [("parent.before", me)] == events[:1]
        assert [("parent.after", me)] == events[-1:]
        children = [pid for action, pid in events if action == "child"]
        assert 3 == len(children)
        assert me not in children
        assert 5 == len(events)

    def test_a_forked_worker_does_not_keep_a_dead_applications_helper(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        worker = 0
        try:
            helper, worker = map(int, run_app(APP_KILLED_WITH_A_FORKED_WORKER, path))
            wait_exited(helper)
            assert alive(worker)  # it still runs, and its copy was let go
        finally:
            if worker:
                os.kill(worker, signal.SIGKILL)
                wait_exited(worker)

        assert [0] == numbers(path)
        assert_intact(path)

    def test_a_bare_sink_closed_in_a_forked_child_spares_the_parents_helper(
        self, tmp_path: Path
    ) -> None:
        """Without an Auditor no engine calls the sink's fork hook: the
        module's own at-fork hook must still keep the child off the parent's
        pipes, or the child's close() ends the parent's helper."""
        path = tmp_path / "bare.jsonl"
        sink = FileSink(path, writer="process")
        sink.write([b'{"n":0}'])
        parent_helper = helper_pid(sink)
        try:
            status = run_child(lambda: sink.close(WAIT))
            sink.write([b'{"n":1}'])
            assert parent_helper == helper_pid(sink)
        finally:
            sink.close(WAIT)

        assert 0 == status
        assert [b'{"n":0}', b'{"n":1}'] == path.read_bytes().splitlines()
