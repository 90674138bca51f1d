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


def unread_requests(sink: FileSink) -> int:
    """Bytes sent to the sink's helper that it has not read yet (the socket's
    send queue, SIOCOUTQ; counted with the kernel's per-message overhead, so
    once it reaches a small request's size, the whole request is queued)."""
    process = sink._process
    assert process is not None
    assert process._socket is not None
    count = array.array("i", [0])
    fcntl.ioctl(process._socket.fileno(), termios.TIOCOUTQ, count)
    return count[0]


def limit_file_size(pid: int, limit: int) -> tuple[int, int]:
    """Set *pid*'s soft file size limit (a write past it fails with EFBIG:
    Python ignores SIGXFSZ); return the limits before."""
    soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    # Only the soft limit: raising a hard limit again needs CAP_SYS_RESOURCE.
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, hard))
    return soft, hard


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
    try:
        pending = [event(i) for i in range(5, 10)]
        threading.Thread(target=sink.write, args=(pending,), daemon=True).start()
        expected = _REQUEST.size + len(b"\\n".join(pending))
        count = array.array("i", [0])
        deadline = time.monotonic() + 30
        while count[0] < expected:  # the whole request is queued (SIOCOUTQ)
            if time.monotonic() > deadline:
                raise TimeoutError("the request never reached the socket")
            time.sleep(0.001)
            fcntl.ioctl(sink._process._socket.fileno(), termios.TIOCOUTQ, count)
    except BaseException:
        os.kill(helper, signal.SIGKILL)  # a stopped helper would never exit
        raise
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


def rotate_age_and_kill_the_helper(
    auditor: auditloop.Auditor, sink: FileSink, path: Path
) -> list[str]:
    """Write rotated files, make them 3 days old and SIGKILL the helper, so
    the next write starts one whose retain_days sweep deletes them; return
    their names."""
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
    return aged


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
            aged = rotate_age_and_kill_the_helper(auditor, sink, path)
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
                    lambda: unread_requests(sink) >= request_size(batch(2, 4)),
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
    def test_a_stopped_helper_lets_flush_return_and_its_late_answer_is_skipped(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        sink = chained(path, fsync="batch")
        try:
            sink.write(batch(0, 3))
            pid = helper_pid(sink)
            with stopped(pid):
                sink.flush(timeout=0.2)  # returns, though nobody answered

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


# -- regressions from the review of the helper -----------------------------------
#
# One test per defect the review of writer="process" found (each fails on the
# version before the fix): what an application relies on, end to end.


def run_python(script: str, path: Path, *args: str, cwd: Path | None = None) -> Any:
    """Run *script* in a new interpreter with this one's ``sys.path``; return
    ``(exit code, printed words, stderr)``.

    argv: the path as JSON, *path*, the test key in hex, then *args*. Its
    stderr goes to a file: a helper inherits it and may outlive the app.
    """
    errors = path.with_name("app.stderr")
    argv = [sys.executable, "-c", script, json.dumps(sys.path), str(path), KEY.hex()]
    with errors.open("wb") as stderr:
        app = subprocess.run(
            [*argv, *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            timeout=WAIT,
            check=False,
            cwd=cwd,
        )
    return app.returncode, app.stdout.split(), errors.read_text()


# At exit, auditloop's atexit shutdown must find the helper still usable. The
# helper is held (stopped) with one batch until the exit hooks start, so a
# backlog is queued when they run; this app's hook resumes it, after any exit
# hook the sink registered (registered later: run first) and before
# auditloop's shutdown (registered earlier, at import: run last).
APP_EXITING_WITH_A_BACKLOG = textwrap.dedent(
    """
    import atexit, json, os, signal, sys, time
    sys.path[:] = json.loads(sys.argv[1])
    import orjson
    import auditloop
    from auditloop import sinks

    path, key, backlog = sys.argv[2], bytes.fromhex(sys.argv[3]), int(sys.argv[4])
    helpers = []
    atexit.register(lambda: [os.kill(pid, signal.SIGCONT) for pid in helpers])
    sink = sinks.FileSink(path, chain=True, key=key, writer="process")
    auditor = auditloop.configure(sinks=[sink], drop_report_interval=None)
    helpers.append(sink._process.pid)
    os.kill(helpers[0], signal.SIGSTOP)
    auditloop.emit("n", i=0)
    deadline = time.monotonic() + 30
    while auditor.stats()["sinks"]["FileSink"]["queued"]:  # the writer took it
        if time.monotonic() > deadline:
            sys.exit(3)
        time.sleep(0.001)
    for i in range(1, backlog):
        auditloop.emit("n", i=i)
    print(helpers[0], flush=True)
    # No shutdown(): the one auditloop runs at exit must write everything.
    """
)


class TestExitWithoutShutdown:
    def test_the_exit_shutdown_writes_every_queued_event(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        backlog = 5_000  # ~10 batches, well within the queue

        code, printed, errors = run_python(
            APP_EXITING_WITH_A_BACKLOG, path, str(backlog)
        )
        assert 0 == code, errors
        [helper] = map(int, printed)
        wait_exited(helper)

        assert list(range(backlog)) == numbers(path)
        assert_intact(path)


class TestRequestIds:
    def test_request_ids_wrap_around_at_32_bits(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        sink = chained(path, fsync="batch")
        process = sink._process
        assert process is not None
        process._next_id = 2**32 - 2  # where a long-running process gets to
        try:
            for start in range(0, 8, 2):
                sink.write(batch(start, start + 2))
            sink.flush(WAIT)
            pid = helper_pid(sink)
        finally:
            sink.close()

        assert process._next_id < 8  # wrapped, and the helper kept up
        assert_reaped(pid)
        assert list(range(8)) == numbers(path)
        assert_intact(path)


# An application that restored SIGPIPE's default action (as command-line
# tools piped into `head` do) talks to a helper that was killed.
APP_SIGPIPE_DEFAULT = textwrap.dedent(
    """
    import json, os, signal, sys, time
    sys.path[:] = json.loads(sys.argv[1])
    import orjson
    from auditloop import sinks

    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    path, key = sys.argv[2], bytes.fromhex(sys.argv[3])

    def event(i):
        return orjson.dumps({"id": f"e{i:04d}", "action": "n", "attributes": {"i": i}})

    def gone(pid):  # a zombie: nobody reaped it yet
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"

    sink = sinks.FileSink(path, chain=True, key=key, fsync="batch", writer="process")
    sink.write([event(0)])
    first = sink._process.pid
    os.kill(first, signal.SIGKILL)  # e.g. the OOM killer
    deadline = time.monotonic() + 30
    while not gone(first):
        if time.monotonic() > deadline:
            sys.exit(3)
        time.sleep(0.001)
    try:
        sink.flush(30)
        failure = "none"
    except OSError as exc:
        failure = f"OSError:{exc.errno}"
    sink.write([event(1)])  # a new helper
    second = sink._process.pid
    sink.close(30)
    print(failure, first, second, flush=True)
    """
)


class TestSigpipe:
    def test_an_application_with_the_default_sigpipe_survives_a_dead_helper(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"

        code, printed, errors = run_python(APP_SIGPIPE_DEFAULT, path)

        assert 0 == code, errors  # not -SIGPIPE: killed by its own audit trail
        failure, first, second = printed
        assert f"OSError:{errno.EPIPE}" == failure  # raised, so counted
        assert first != second
        assert [0, 1] == numbers(path)
        assert_intact(path)


class TestWorkingDirectoryModules:
    def test_a_json_module_in_the_working_directory_is_not_run_by_the_helper(
        self, tmp_path: Path
    ) -> None:
        cwd = tmp_path / "uploads"
        cwd.mkdir()
        ran = tmp_path / "json.py-ran"
        (cwd / "json.py").write_text(
            f"import pathlib\npathlib.Path({str(ran)!r}).write_text('ran')\n"
        )
        path = tmp_path / "audit.jsonl"
        before = Path.cwd()
        os.chdir(cwd)
        try:
            sink = chained(path)
            try:
                sink.write(batch(0, 3))
            finally:
                sink.close()
        finally:
            os.chdir(before)

        assert not ran.exists()
        assert [0, 1, 2] == numbers(path)
        assert_intact(path)


class TestUndecodableNames:
    def test_a_file_name_that_is_not_utf8_works_as_with_the_thread_writer(
        self, tmp_path: Path
    ) -> None:
        name = os.fsdecode(b"caf\xe9.jsonl")  # latin-1: a lone surrogate in str
        for writer in ("thread", "process"):
            directory = tmp_path / writer
            directory.mkdir()
            sink = chained(directory / name, max_bytes=1000, backups=50, writer=writer)
            for start in range(0, 12, 3):
                sink.write(batch(start, start + 3))
            sink.close()

        process = tmp_path / "process"
        assert files_of(tmp_path / "thread") == files_of(process)
        on_disk = [os.fsencode(p.name) for p in process.iterdir()]
        assert b"caf\xe9.jsonl" in on_disk
        assert len(on_disk) > 3  # rotated, under that name too
        assert all(n.startswith(b"caf\xe9.jsonl") for n in on_disk)
        assert list(range(12)) == numbers(process / name)
        assert_intact(process / name)

    def test_an_import_path_that_is_not_utf8_does_not_stop_the_helper(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        library = tmp_path / os.fsdecode(b"lib\xe9")
        library.mkdir()
        monkeypatch.setattr(sys, "path", [*sys.path, str(library)])
        path = tmp_path / "audit.jsonl"

        sink = chained(path)
        try:
            sink.write(batch(0, 2))
        finally:
            sink.close()

        assert [0, 1] == numbers(path)
        assert_intact(path)


class Interrupted(BaseException):
    """What a signal handler raises (as Ctrl-C's KeyboardInterrupt does)."""


class TestInterruptedSend:
    def test_a_signal_handler_raising_mid_request_leaves_later_writes_whole(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        sink = chained(path, delivery=SYNC)
        auditor = auditloop.Auditor(sinks=[sink], drop_report_interval=None)
        # ~3.8 MB per event (strings are cut at 64 KiB): far more than the
        # socket's (or a pipe's) buffer, so sending it blocks while the
        # helper is stopped.
        big: dict[str, Any] = {f"p{k}": "x" * 60_000 for k in range(64)}
        interrupted = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            # Raise once, only while the request is partly sent: inside the
            # sink's send loop, after its first send returned.
            if (
                not interrupted.is_set()
                and frame is not None
                and "_send" == frame.f_code.co_name
                and "sent" in frame.f_locals
            ):
                interrupted.set()
                raise Interrupted

        previous = signal.signal(signal.SIGUSR1, on_signal)
        main = threading.main_thread().ident
        assert main is not None
        finished = threading.Event()

        def interrupt() -> None:  # a signal every 2 ms, until one lands
            while not interrupted.is_set() and not finished.wait(0.002):
                signal.pthread_kill(main, signal.SIGUSR1)

        def later_emits() -> None:
            for i in range(2, 5):
                auditor.emit("n", i=i)
            auditor.emit("n", i=5, **big)  # a big one again: whole, or not at all
            auditor.emit("n", i=6)
            finished.set()

        try:
            auditor.emit("n", i=0)
            first = helper_pid(sink)
            with stopped(first):
                interrupter = threading.Thread(target=interrupt)
                interrupter.start()
                try:
                    with pytest.raises(Interrupted):
                        auditor.emit("n", i=1, **big)
                finally:
                    finished.set()
                    interrupter.join()
            finished.clear()
            emitter = threading.Thread(target=later_emits, daemon=True)
            emitter.start()
            hung = not finished.wait(WAIT)
            if hung:  # free the emitter (its writes fail), then fail
                os.kill(helper_pid(sink), signal.SIGKILL)
            emitter.join(WAIT)
        finally:
            signal.signal(signal.SIGUSR1, previous)
            assert auditor.shutdown(WAIT)

        assert not hung, "the writes after the interrupted one hang"
        stats = auditor.stats()["sinks"]["FileSink"]
        assert {} == stats["dropped"]
        assert b"\x00" not in path.read_bytes()  # no request header in the file
        assert [0, 2, 3, 4, 5, 6] == numbers(path)  # 1: never half written
        assert_intact(path)


class TestRelativePath:
    def test_a_replacement_helper_writes_the_file_resolved_at_construction(
        self, tmp_path: Path
    ) -> None:
        first_dir, second_dir = tmp_path / "a", tmp_path / "b"
        first_dir.mkdir()
        second_dir.mkdir()
        before = Path.cwd()
        os.chdir(first_dir)
        try:
            sink = chained(Path("audit.jsonl"))
            try:
                sink.write(batch(0, 2))
                os.chdir(second_dir)  # e.g. a library or a job changes directory
                sink.write(batch(2, 4))
                first = helper_pid(sink)
                os.kill(first, signal.SIGKILL)
                wait_exited(first)
                sink.write(batch(4, 6))  # a new helper
                second = helper_pid(sink)
            finally:
                sink.close()
        finally:
            os.chdir(before)

        assert first != second
        assert [] == list(second_dir.iterdir())
        assert list(range(6)) == numbers(first_dir / "audit.jsonl")
        assert_intact(first_dir / "audit.jsonl")

    def test_a_replacement_helper_imports_from_the_directory_the_app_started_in(
        self, tmp_path: Path
    ) -> None:
        """sys.path's ``""`` (``python -c``, a REPL, a notebook) means the
        working directory: a replacement helper must still find auditloop
        there after the application changed directory."""
        project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
        project.mkdir()
        elsewhere.mkdir()
        package = Path(auditloop.__file__).parent
        (project / "auditloop").symlink_to(package)
        path = tmp_path / "audit.jsonl"

        code, printed, errors = run_python(
            APP_IMPORTING_FROM_ITS_DIRECTORY, path, str(elsewhere), cwd=project
        )

        assert 0 == code, errors
        first, second, imported = printed
        assert first != second
        assert str(project / "auditloop" / "__init__.py") == imported
        assert [0, 1] == numbers(path)
        assert_intact(path)


# auditloop is importable only through "" (the working directory, where a
# link to the package is): the app changes directory, then its helper dies.
APP_IMPORTING_FROM_ITS_DIRECTORY = textwrap.dedent(
    """
    import json, os, signal, sys, time
    entries = json.loads(sys.argv[1])
    sys.path[:] = ["", *(p for p in entries if not os.path.isdir(f"{p}/auditloop"))]
    import orjson
    import auditloop
    from auditloop import sinks

    path, key, elsewhere = sys.argv[2], bytes.fromhex(sys.argv[3]), sys.argv[4]

    def event(i):
        return orjson.dumps({"id": f"e{i:04d}", "action": "n", "attributes": {"i": i}})

    def gone(pid):
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"

    sink = sinks.FileSink(path, chain=True, key=key, writer="process")
    sink.write([event(0)])
    os.chdir(elsewhere)
    first = sink._process.pid
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not gone(first):
        if time.monotonic() > deadline:
            sys.exit(3)
        time.sleep(0.001)
    sink.write([event(1)])  # a new helper, which must import auditloop
    second = sink._process.pid
    sink.close(30)
    print(first, second, os.path.abspath(auditloop.__file__), flush=True)
    """
)


class TestStartNotices:
    def test_deletions_at_a_replacement_helpers_start_survive_its_failed_write(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from auditloop.sinks._writer_process import WriterProcess

        path = tmp_path / "audit.jsonl"
        memory = sinks.MemorySink()
        sink = chained(path, max_bytes=1500, retain_days=1, delivery=SYNC)
        auditor = auditloop.Auditor(sinks=[sink, memory], drop_report_interval=None)
        start: Callable[..., Any] = WriterProcess._start
        limits: list[tuple[int, int]] = []

        def start_then_fill_the_disk(self: WriterProcess) -> Any:
            started = start(self)
            assert self.pid is not None
            # Its first write fails (EFBIG), as on a full disk.
            limits.append(limit_file_size(self.pid, 1))
            return started

        try:
            aged = rotate_age_and_kill_the_helper(auditor, sink, path)
            monkeypatch.setattr(WriterProcess, "_start", start_then_fill_the_disk)
            auditor.emit("n", i=8, pad="x" * 200)  # new helper: deletes, then fails
            monkeypatch.setattr(WriterProcess, "_start", start)
            [(soft, _)] = limits
            limit_file_size(helper_pid(sink), soft)
            auditor.emit("n", i=9, pad="x" * 200)
        finally:
            assert auditor.shutdown(WAIT)

        stats = auditor.stats()["sinks"]["FileSink"]
        assert {"sink_error": 1} == stats["dropped"]
        assert "File too large" in stats["last_error"]
        seen = [
            e.attributes for e in memory.events if e.action == "auditloop.retention"
        ]
        assert sorted(aged) == sorted(n for r in seen for n in r["deleted"])
        kept = numbers(path)  # the aged files' events are gone, recorded
        assert [i for i in range(kept[0], 10) if i != 8] == kept
        assert_intact(path)


# -- found while writing the regressions ----------------------------------------


class TestInterruptedWait:
    def test_an_interrupt_while_waiting_for_the_answer_leaves_one_writer(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        sink = chained(path, delivery=SYNC)
        auditor = auditloop.Auditor(sinks=[sink], drop_report_interval=None)
        interrupted, written = threading.Event(), threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            # Raise once, while the whole request is sent and its answer awaited.
            if (
                not interrupted.is_set()
                and frame is not None
                and frame.f_code.co_name in ("_answer", "_fill")
            ):
                interrupted.set()
                raise Interrupted

        main = threading.main_thread().ident
        assert main is not None

        def interrupt() -> None:  # a signal every 2 ms, until one lands
            while not interrupted.is_set() and not written.wait(0.002):
                signal.pthread_kill(main, signal.SIGUSR1)

        def next_emit() -> None:  # e.g. the application records the cancel
            auditor.emit("n", i=2)
            written.set()

        def handed_to(pid: int) -> bool:
            """The next request went to the held helper (it was kept)."""
            process = sink._process
            if process is None or process.pid != pid or process._socket is None:
                return False
            with contextlib.suppress(OSError, AssertionError):
                return unread_requests(sink) > 0
            return False

        previous = signal.signal(signal.SIGUSR1, on_signal)
        try:
            auditor.emit("n", i=0)
            first = helper_pid(sink)
            # Busy with the request (a slow disk, a compressing rotation).
            with stopped(first):
                interrupter = threading.Thread(target=interrupt)
                interrupter.start()
                try:
                    with pytest.raises(Interrupted):
                        auditor.emit("n", i=1)
                finally:
                    written.set()
                    interrupter.join()
                written.clear()
                emitter = threading.Thread(target=next_emit, daemon=True)
                emitter.start()
                # Resume it once the next emit went on without it, or was
                # handed to it, or (another fix: it waits) after 5 s.
                deadline = time.monotonic() + 5
                while not (written.is_set() or handed_to(first)):
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.005)
            emitter.join(WAIT)
            assert written.is_set()
            auditor.emit("n", i=3)
        finally:
            signal.signal(signal.SIGUSR1, previous)
            assert auditor.shutdown(WAIT)

        assert [0, 2, 3] == [n for n in numbers(path) if n != 1]  # 1: either
        assert_intact(path)  # one chain: no seq written twice


class TestThreadWriterRelativePath:
    def test_the_thread_writer_keeps_the_file_resolved_at_construction(
        self, tmp_path: Path
    ) -> None:
        first_dir, second_dir = tmp_path / "a", tmp_path / "b"
        first_dir.mkdir()
        second_dir.mkdir()
        before = Path.cwd()
        os.chdir(first_dir)
        try:
            sink = chained(Path("audit.jsonl"), writer="thread")
            try:
                sink.write(batch(0, 2))
                os.chdir(second_dir)
                sink.write(batch(2, 4))
            finally:
                sink.close()
        finally:
            os.chdir(before)

        assert [] == list(second_dir.iterdir())
        assert list(range(4)) == numbers(first_dir / "audit.jsonl")
        assert_intact(first_dir / "audit.jsonl")


# -- second review: regressions ----------------------------------------------------


class TestHeldNoticesAcrossHelpers:
    def test_deletions_held_after_a_failed_write_survive_the_next_helper(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # A replacement helper deletes aged files at start, its first write
        # fails (the notices are held for the next answer), then it dies too:
        # the third helper's answer must still carry the deletions.
        from auditloop.sinks._writer_process import WriterProcess

        path = tmp_path / "audit.jsonl"
        memory = sinks.MemorySink()
        sink = chained(path, max_bytes=1500, retain_days=1, delivery=SYNC)
        auditor = auditloop.Auditor(sinks=[sink, memory], drop_report_interval=None)
        start: Callable[..., Any] = WriterProcess._start

        def start_then_fill_the_disk(self: WriterProcess) -> Any:
            started = start(self)
            assert self.pid is not None
            limit_file_size(self.pid, 1)  # its first write fails (EFBIG)
            return started

        try:
            aged = rotate_age_and_kill_the_helper(auditor, sink, path)
            monkeypatch.setattr(WriterProcess, "_start", start_then_fill_the_disk)
            auditor.emit("n", i=8, pad="x" * 200)  # helper 2: deletes, then fails
            monkeypatch.setattr(WriterProcess, "_start", start)
            second = helper_pid(sink)
            os.kill(second, signal.SIGKILL)
            wait_exited(second)
            auditor.emit("n", i=9, pad="x" * 200)  # helper 3 writes
            third = helper_pid(sink)
        finally:
            assert auditor.shutdown(WAIT)

        assert second != third
        stats = auditor.stats()["sinks"]["FileSink"]
        assert {"sink_error": 1} == stats["dropped"]
        seen = [
            e.attributes for e in memory.events if e.action == "auditloop.retention"
        ]
        assert sorted(aged) == sorted(n for r in seen for n in r["deleted"])
        retention = [r for r in records(path) if r["action"] == "auditloop.retention"]
        assert len(seen) == len(retention)  # recorded in the trail too
        assert 9 == numbers(path)[-1]
        assert_intact(path)  # the deletions are accounted for


class TestOneFilePerHelper:
    def test_a_second_start_request_is_refused_and_opens_nothing(
        self, tmp_path: Path
    ) -> None:
        # The helper may run with more rights than the application later
        # has (it dropped privileges): it must not open another file.
        path, other = tmp_path / "audit.jsonl", tmp_path / "other.jsonl"
        sink = chained(path)
        try:
            sink.write(batch(0, 2))
            process = sink._process
            assert process is not None
            options = dict(process._options, path=os.fsencode(other).hex())
            with pytest.raises(ConfigurationError, match="already started"):
                process._call(b"S", orjson.dumps(options), 0, WAIT)
            sink.write(batch(2, 4))  # the same helper, the same file
        finally:
            sink.close()

        assert not other.exists()
        assert [] == sorted(p.name for p in tmp_path.glob("other*"))
        assert list(range(4)) == numbers(path)
        assert_intact(path)


class TestFlushAsksNothing:
    @pytest.mark.parametrize("helper", ["running", "stopped"])
    def test_flush_zero_with_fsync_never_is_no_request_and_no_error(
        self, tmp_path: Path, helper: str
    ) -> None:
        path = tmp_path / "audit.jsonl"
        memory = sinks.MemorySink()
        sink = chained(path, delivery=SYNC)
        auditor = auditloop.Auditor(sinks=[sink, memory], drop_report_interval=None)
        try:
            auditor.emit("n", i=0)
            process = sink._process
            assert process is not None
            asked = process._next_id
            pid = helper_pid(sink)
            with stopped(pid) if helper == "stopped" else contextlib.nullcontext():
                auditor.flush(0)
            after_flush = process._next_id
            auditor._health.check(auditor)  # what an idle writer thread does
            auditor.emit("n", i=1)
            auditor._health.check(auditor)
        finally:
            assert auditor.shutdown(WAIT)

        assert asked == after_flush  # the helper was asked nothing
        stats = auditor.stats()["sinks"]["FileSink"]
        assert 0 == stats["errors"]
        assert stats["last_error"] is None
        assert [] == [
            e.action for e in memory.events if e.action.startswith("auditloop.sink_")
        ]
        assert [0, 1] == numbers(path)
        assert_intact(path)

    def test_flush_zero_with_fsync_batch_on_a_stopped_helper_is_no_error(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        sink = chained(path, fsync="batch", delivery=SYNC)
        auditor = auditloop.Auditor(sinks=[sink], drop_report_interval=None)
        try:
            auditor.emit("n", i=0)
            pid = helper_pid(sink)
            with stopped(pid):
                auditor.flush(0)  # nobody answers: returns all the same
                sink.flush(0)  # called directly: no raise either
            auditor.emit("n", i=1)  # the late answers are skipped
            assert pid == helper_pid(sink)
        finally:
            assert auditor.shutdown(WAIT)

        stats = auditor.stats()["sinks"]["FileSink"]
        assert 0 == stats["errors"]
        assert {} == stats["dropped"]
        assert [0, 1] == numbers(path)
        assert_intact(path)

    def test_a_deadline_used_up_by_an_earlier_sink_fails_no_healthy_helper(
        self, tmp_path: Path
    ) -> None:
        class SlowFlush:
            """Stands for a slow collector listed first: its flush spends
            the whole shared deadline (it waits for the deadline to pass)."""

            def write(self, batch: Any) -> None:
                pass

            def flush(self, timeout: float | None = None) -> None:
                if timeout is not None:
                    end = time.monotonic() + timeout
                    while time.monotonic() <= end:
                        time.sleep(0.001)

            def close(self, timeout: float | None = None) -> None:
                pass

        path = tmp_path / "audit.jsonl"
        sink = chained(path, fsync="batch", delivery=SYNC)
        auditor = auditloop.Auditor(
            sinks=[SlowFlush(), sink], drop_report_interval=None
        )
        try:
            auditor.emit("n", i=0)
            auditor.flush(0.05)  # the file sink gets what is left: nothing
            auditor.emit("n", i=1)
        finally:
            assert auditor.shutdown(WAIT)

        stats = auditor.stats()["sinks"]["FileSink"]
        assert 0 == stats["errors"]
        assert stats["last_error"] is None
        assert [0, 1] == numbers(path)
        assert_intact(path)


@contextlib.contextmanager
def deleted_working_directory(tmp_path: Path) -> Iterator[None]:
    """Run the block in a working directory that was deleted (a deploy
    removed the release directory); the test's directory comes back after."""
    before = Path.cwd()
    gone = tmp_path / "release-1"
    gone.mkdir()
    os.chdir(gone)
    try:
        gone.rmdir()
        with pytest.raises(FileNotFoundError):
            Path.cwd()
        yield
    finally:
        os.chdir(before)


class TestDeletedWorkingDirectory:
    def test_an_absolute_path_works_and_a_dead_helper_is_replaced(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        with deleted_working_directory(tmp_path):
            sink = chained(path)
            try:
                sink.write(batch(0, 2))
                first = helper_pid(sink)
                os.kill(first, signal.SIGKILL)
                wait_exited(first)
                sink.write(batch(2, 4))  # a new helper, started from here
                second = helper_pid(sink)
            finally:
                sink.close()

        assert first != second
        assert list(range(4)) == numbers(path)
        assert_intact(path)

    def test_a_helper_dying_after_the_directory_went_is_replaced(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        before = Path.cwd()
        release = tmp_path / "release-1"
        release.mkdir()
        os.chdir(release)
        try:
            sink = chained(path, delivery=SYNC)  # made while it exists
            auditor = auditloop.Auditor(sinks=[sink], drop_report_interval=None)
            try:
                auditor.emit("n", i=0)
                release.rmdir()
                first = helper_pid(sink)
                os.kill(first, signal.SIGKILL)
                wait_exited(first)
                for i in range(1, 4):
                    auditor.emit("n", i=i)
            finally:
                assert auditor.shutdown(WAIT)
        finally:
            os.chdir(before)

        stats = auditor.stats()["sinks"]["FileSink"]
        assert {} == stats["dropped"]
        assert 0 == stats["errors"]
        assert list(range(4)) == numbers(path)
        assert_intact(path)

    @pytest.mark.parametrize("writer", ["thread", "process"])
    def test_a_relative_path_is_a_configuration_error(
        self, tmp_path: Path, writer: str
    ) -> None:
        with (
            deleted_working_directory(tmp_path),
            pytest.raises(ConfigurationError, match=r"relative\.jsonl"),
        ):
            FileSink("relative.jsonl", writer=writer)  # type: ignore[arg-type]
        assert [] == helper_children()


class TestAttachToADeadHelper:
    def test_an_auditor_over_a_killed_helper_counts_no_error_and_writes(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        memory = sinks.MemorySink()
        sink = chained(path, checkpoint_every=3, delivery=SYNC)
        sink.write(batch(0, 1))
        first = helper_pid(sink)
        os.kill(first, signal.SIGKILL)
        wait_exited(first)

        auditor = auditloop.Auditor(sinks=[sink, memory], drop_report_interval=None)
        try:
            internal = auditor.stats()["internal_errors"]
            for i in range(1, 5):
                auditor.emit("n", i=i)
            second = helper_pid(sink)
        finally:
            assert auditor.shutdown(WAIT)

        assert 0 == internal
        assert 0 == auditor.stats()["internal_errors"]
        assert first != second
        stats = auditor.stats()["sinks"]["FileSink"]
        assert 0 == stats["errors"]
        assert {} == stats["dropped"]
        assert list(range(5)) == numbers(path)
        # The new helper's checkpoints reach the Auditor (it attached).
        checkpoints = checkpoint_events(memory)
        assert checkpoints
        in_file = [r for r in records(path) if r["action"] == "auditloop.checkpoint"]
        assert len(checkpoints) == len(in_file)
        assert {os.getpid()} == {r["source"]["pid"] for r in in_file}
        assert_intact(path)


class TestLongImportPath:
    def test_a_sys_path_longer_than_one_argument_may_be_starts_the_helper(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Linux caps one argument at 128 KiB (MAX_ARG_STRLEN); Bazel or pex
        # runfiles give hundreds of long entries (they need not exist).
        long = [
            str(tmp_path / f"runfiles-{'x' * 160}" / f"dep_{i:04d}" / "site-packages")
            for i in range(1000)
        ]
        monkeypatch.setattr(sys, "path", [*sys.path, *long])
        assert len(json.dumps(sys.path)) > 128 * 1024

        path = tmp_path / "audit.jsonl"
        sink = chained(path)
        try:
            sink.write(batch(0, 2))
        finally:
            sink.close()

        assert [0, 1] == numbers(path)
        assert_intact(path)


# -- found while writing the second review's regressions --------------------------


class TestNoticesHeldAtStart:
    def test_deletions_held_survive_a_helper_dying_between_start_and_attach(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from auditloop.sinks._writer_process import WriterProcess

        path = tmp_path / "audit.jsonl"
        memory = sinks.MemorySink()
        sink = chained(path, max_bytes=1500, retain_days=1, delivery=SYNC)
        auditor = auditloop.Auditor(sinks=[sink, memory], drop_report_interval=None)
        start: Callable[..., Any] = WriterProcess._start
        call: Callable[..., Any] = WriterProcess._call

        def start_then_fill_the_disk(self: WriterProcess) -> Any:
            started = start(self)
            assert self.pid is not None
            limit_file_size(self.pid, 1)
            return started

        def die_before_attach(self: WriterProcess, op: bytes, *args: Any) -> Any:
            if op == b"A" and self._popen is not None:
                self._popen.kill()  # e.g. the OOM killer, right after S
                self._popen.wait()
            return call(self, op, *args)

        try:
            aged = rotate_age_and_kill_the_helper(auditor, sink, path)
            monkeypatch.setattr(WriterProcess, "_start", start_then_fill_the_disk)
            auditor.emit("n", i=8, pad="x" * 200)  # helper 2: deletes, then fails
            monkeypatch.setattr(WriterProcess, "_start", start)
            second = helper_pid(sink)
            os.kill(second, signal.SIGKILL)
            wait_exited(second)
            monkeypatch.setattr(WriterProcess, "_call", die_before_attach)
            auditor.emit("n", i=9, pad="x" * 200)  # helper 3: S, then dies
            monkeypatch.setattr(WriterProcess, "_call", call)
            auditor.emit("n", i=10, pad="x" * 200)  # helper 4 writes
        finally:
            assert auditor.shutdown(WAIT)

        seen = [
            e.attributes for e in memory.events if e.action == "auditloop.retention"
        ]
        assert sorted(aged) == sorted(n for r in seen for n in r["deleted"])
        assert_intact(path)


class TestStartTimeoutWithALongImportPath:
    def test_a_helper_that_hangs_at_start_is_killed_with_a_long_sys_path(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from auditloop.sinks import _writer_process

        pid_file = tmp_path / "pid"
        hanging = tmp_path / "python"
        hanging.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 60\n")
        hanging.chmod(0o700)
        long = [f"/nonexistent/{'x' * 180}/{i:04d}" for i in range(2000)]
        monkeypatch.setattr(sys, "path", [*sys.path, *long])  # ~400 KB of json
        monkeypatch.setattr(sys, "executable", str(hanging))
        monkeypatch.setattr(_writer_process, "_START_TIMEOUT", 0.5)
        failures: list[BaseException] = []

        def construct() -> None:
            try:
                FileSink(tmp_path / "audit.jsonl", writer="process")
            except BaseException as exc:
                failures.append(exc)

        constructor = threading.Thread(target=construct, daemon=True)
        constructor.start()
        constructor.join(5)  # ten times the start timeout
        hung = constructor.is_alive()
        wait_until(pid_file.exists, "the fake interpreter to start")
        pid = int(pid_file.read_text())
        if hung:  # let the send fail, so the thread ends
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            constructor.join(WAIT)

        assert not hung, "FileSink() blocked past the start timeout"
        assert 1 == len(failures)
        assert isinstance(failures[0], ConfigurationError)
        assert "cannot start the writer" in str(failures[0])
        assert_reaped(pid)
