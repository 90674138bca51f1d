"""FileSink(writer="process"): a helper process writes the file, with the same results.

Everything here is real: helper processes started by the sink, signals sent
to them, file size limits set on them with ``prlimit``, applications killed
with SIGKILL, forks. Each test checks at the end that no helper it started
is still running (see ``_no_helper_left``).

The tests are grouped by topic. A test written for a defect a review found
says which one in a comment: it fails on the version before the fix.
"""

from __future__ import annotations

import array
import contextlib
import dataclasses
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
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import orjson
import pytest

import auditloop
from auditloop._delivery import PartialWrite
from auditloop.exceptions import ConfigurationError
from auditloop.sinks import Delivery, FileSink, MemorySink, Sink, _writer_process
from auditloop.sinks._writer_process import _REQUEST, WriterProcess
from fork_helpers import run_child

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="needs /proc, prlimit and os.fork (Linux)"
)

KEY = b"k" * 32
WAIT = 30.0
SYNC = Delivery(mode="sync")
WRITERS = ("thread", "process")
# What a helper's command line holds (the pytest process's own does not).
HELPER_MARK = b"_writer_process import serve"


# -- helpers: events and the trail -----------------------------------------------


def event(i: int) -> bytes:
    """One encoded event of fixed length (for i < 10,000)."""
    return orjson.dumps(
        {"id": f"e{i:04d}", "action": "n", "attributes": {"i": i, "pad": "x" * 200}}
    )


def batch(start: int, stop: int) -> list[bytes]:
    return [event(i) for i in range(start, stop)]


def write_batches(sink: FileSink, sizes: Iterable[int], start: int = 0) -> int:
    """Write events *start*, *start* + 1, … in batches of *sizes*; return the
    number of the next event."""
    for size in sizes:
        sink.write(batch(start, start + size))
        start += size
    return start


def chained(path: Path, **options: Any) -> FileSink:
    """A chained FileSink (the process writer unless *options* say otherwise)."""
    options.setdefault("writer", "process")
    return FileSink(path, chain=True, key=KEY, **options)


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


def make_directories(parent: Path, *names: str) -> list[Path]:
    """Create the directories *names* in *parent*; return their paths."""
    made = [parent / name for name in names]
    for directory in made:
        directory.mkdir()
    return made


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def per_writer(tmp_path: Path, name: str = "audit.jsonl") -> Iterator[tuple[str, Path]]:
    """Each writer (thread, then process) with a path in a directory of its
    own, to compare what the two write."""
    for writer in WRITERS:
        (tmp_path / writer).mkdir()
        yield writer, tmp_path / writer / name


def age_rotated_files(path: Path) -> list[str]:
    """Make the trail's rotated files (two at least) 3 days old, so that a
    ``retain_days=1`` sweep deletes them; return their names."""
    aged = [p.name for p in trail(path)[:-1]]
    assert len(aged) >= 2
    three_days_ago = time.time() - 3 * 86400
    for name in aged:
        os.utime(path.with_name(name), (three_days_ago, three_days_ago))
    return aged


def assert_intact(path: Path) -> None:
    """The chain verifies with no finding, over every line of the trail."""
    result = auditloop.verify(path, key=KEY)
    assert [] == [str(f) for f in result.findings]
    assert len(records(path)) == result.records


def assert_trail(path: Path, expected: Iterable[int]) -> None:
    """The trail holds the test events *expected*, in that order (notices
    aside), and its chain is intact."""
    assert list(expected) == numbers(path)
    assert_intact(path)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """Where the test's trail goes (in its own directory)."""
    return tmp_path / "audit.jsonl"


def assert_a_new_sink_writes(path: Path) -> None:
    """A sink made now (with the test's sys.path, cwd, …) starts its helper,
    which writes two events to *path*."""
    with contextlib.closing(chained(path)) as sink:
        sink.write(batch(0, 2))
    assert_trail(path, [0, 1])


# -- helpers: notices (the sink's own events) ------------------------------------


def file_notices(path: Path, kind: str) -> list[dict[str, Any]]:
    """The trail's ``auditloop.<kind>`` records."""
    return [r for r in records(path) if r["action"] == f"auditloop.{kind}"]


def auditor_notices(memory: MemorySink, kind: str) -> list[dict[str, Any]]:
    """The attributes of the ``auditloop.<kind>`` events the Auditor emitted
    (seen by a MemorySink beside the file)."""
    return [
        dict(e.attributes) for e in memory.events if e.action == f"auditloop.{kind}"
    ]


def deletions_told(memory: MemorySink) -> list[str]:
    """The names of the files the Auditor's retention events say were deleted."""
    return sorted(n for r in auditor_notices(memory, "retention") for n in r["deleted"])


def assert_heads_match_the_file(path: Path, checkpoints: list[dict[str, Any]]) -> None:
    by_seq = {r["seq"]: r for r in records(path)}
    for checkpoint in checkpoints:
        assert by_seq[checkpoint["count"]]["hash"] == checkpoint["head"]
        assert str(path) == checkpoint["file"]


def assert_the_auditor_recorded_the_checkpoints(path: Path, memory: MemorySink) -> None:
    """The helper's checkpoints reached the Auditor, which recorded each one
    in the trail (from this process, not the helper)."""
    checkpoints = auditor_notices(memory, "checkpoint")
    in_file = file_notices(path, "checkpoint")
    assert checkpoints
    assert len(checkpoints) == len(in_file)
    assert {os.getpid()} == {r["source"]["pid"] for r in in_file}
    assert_heads_match_the_file(path, checkpoints)


# -- helpers: processes ----------------------------------------------------------


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


def helper_pid(sink: FileSink) -> int:
    process = sink._process
    assert process is not None
    pid = process.pid
    assert pid is not None
    return pid


def kill_helper(sink: FileSink) -> int:
    """SIGKILL the sink's helper (as the OOM killer would) and wait until it
    has exited; return its pid. The sink's next write starts a new one."""
    pid = helper_pid(sink)
    os.kill(pid, signal.SIGKILL)
    wait_exited(pid)
    return pid


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


def request_size(lines: list[bytes]) -> int:
    """Bytes of a write request for *lines* (header, then the joined lines)."""
    return _REQUEST.size + len(b"\n".join(lines))


# -- helpers: failures made to order ---------------------------------------------


def limit_file_size(pid: int, limit: int) -> int:
    """Set *pid*'s soft file size limit (a write past it fails with EFBIG:
    Python ignores SIGXFSZ); return the soft limit before."""
    soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    # Only the soft limit: raising a hard limit again needs CAP_SYS_RESOURCE.
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, hard))
    return soft


@contextlib.contextmanager
def file_size_limit(pid: int, limit: int) -> Iterator[None]:
    """Hold *pid*'s file to *limit* bytes for the block (a full disk)."""
    before = limit_file_size(pid, limit)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):  # the test failed: gone
            limit_file_size(pid, before)


@contextlib.contextmanager
def a_directory_in_place_of(path: Path) -> Iterator[None]:
    """For the block, move the file aside and put a directory at *path*: the
    helper's reopen-if-moved (or a new helper's open) fails with EISDIR.
    The file is back after the block."""
    moved = path.rename(path.with_name("moved"))
    path.mkdir()
    try:
        yield
    finally:
        path.rmdir()
        moved.rename(path)


@contextlib.contextmanager
def helpers_start_on_a_full_disk() -> Iterator[dict[int, int]]:
    """Within the block, each helper the sink starts gets a 1-byte file size
    limit once it has started: it opens the file and sweeps retention, then
    its first write fails (EFBIG), as on a full disk.

    Yields: each such helper's pid, with its soft limit before (to give it
    back).
    """
    start = WriterProcess._start
    started: dict[int, int] = {}

    def start_then_fill_the_disk(self: WriterProcess) -> None:
        start(self)
        assert self.pid is not None
        started[self.pid] = limit_file_size(self.pid, 1)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(WriterProcess, "_start", start_then_fill_the_disk)
        yield started


@contextlib.contextmanager
def helpers_die_before_attach() -> Iterator[None]:
    """Within the block, each helper the sink starts is killed (e.g. by the
    OOM killer) once it answered its start request, before the request that
    attaches it to the Auditor."""
    call = WriterProcess._call

    def die_before_attach(self: WriterProcess, op: bytes, *args: Any) -> Any:
        if op == b"A" and self._popen is not None:
            self._popen.kill()
            self._popen.wait()
        return call(self, op, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(WriterProcess, "_call", die_before_attach)
        yield


def hanging_interpreter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start_timeout: float
) -> Path:
    """Make ``sys.executable`` a program that never answers (it sleeps) and the
    helper's start timeout *start_timeout* seconds; return the file the
    program writes its pid to."""
    pid_file = tmp_path / "pid"
    hanging = tmp_path / "python"
    hanging.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 60\n")
    hanging.chmod(0o700)
    monkeypatch.setattr(sys, "executable", str(hanging))
    monkeypatch.setattr(_writer_process, "_START_TIMEOUT", start_timeout)
    return pid_file


@contextlib.contextmanager
def in_a_deleted_directory(tmp_path: Path) -> Iterator[None]:
    """Run the block in a working directory that was deleted (a deploy
    removed the release directory); the test's directory comes back after."""
    gone = tmp_path / "release-1"
    gone.mkdir()
    with contextlib.chdir(gone):
        gone.rmdir()
        with pytest.raises(FileNotFoundError):
            Path.cwd()
        yield


class Interrupted(BaseException):
    """What a signal handler raises (as Ctrl-C's KeyboardInterrupt does)."""


@contextlib.contextmanager
def interrupted_where(lands: Callable[[FrameType], bool]) -> Iterator[None]:
    """Signal the main thread every 2 ms during the block, until a signal
    lands in a frame *lands* accepts: the handler raises Interrupted there,
    once (elsewhere it returns). The previous SIGUSR1 handler is back after
    the block; the test's own thread must be the main thread."""
    landed, done = threading.Event(), threading.Event()
    main = threading.main_thread().ident
    assert main is not None

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not landed.is_set() and frame is not None and lands(frame):
            landed.set()
            raise Interrupted

    def interrupt() -> None:
        while not landed.is_set() and not done.wait(0.002):
            signal.pthread_kill(main, signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, on_signal)
    interrupter = threading.Thread(target=interrupt)
    try:
        interrupter.start()
        yield
    finally:
        done.set()
        interrupter.join()
        signal.signal(signal.SIGUSR1, previous)


# -- helpers: auditors -----------------------------------------------------------


@contextlib.contextmanager
def auditing(*outputs: Sink) -> Iterator[auditloop.Auditor]:
    """An Auditor over *outputs* for the block, shut down after it (which
    must succeed within WAIT). No drop reports: they would add events."""
    auditor = auditloop.Auditor(sinks=outputs, drop_report_interval=None)
    try:
        yield auditor
    finally:
        assert auditor.shutdown(WAIT)


def file_stats(auditor: auditloop.Auditor) -> dict[str, Any]:
    """The Auditor's delivery counters for its FileSink."""
    stats: dict[str, Any] = auditor.stats()["sinks"]["FileSink"]
    return stats


@dataclasses.dataclass
class AgedTrail:
    """A rotated, chained trail kept ``retain_days=1`` whose rotated files are
    3 days old, written through an Auditor (a MemorySink beside the file sees
    its events); the helper that wrote them was just killed, so the next
    write starts one whose sweep at start deletes them."""

    sink: FileSink
    memory: MemorySink
    auditor: auditloop.Auditor
    aged: list[str]  # the names of the rotated files

    def emit(self, i: int) -> None:
        self.auditor.emit("n", i=i, pad="x" * 200)

    def start_a_helper_on_a_full_disk(self) -> tuple[int, int]:
        """Emit event 8: a new helper starts, deletes the aged files, then
        fails that write (EFBIG); return its pid and its file size limit
        before (to give it back)."""
        with helpers_start_on_a_full_disk() as full:
            self.emit(8)
        [(pid, soft)] = full.items()
        assert pid == helper_pid(self.sink)
        return pid, soft


@contextlib.contextmanager
def an_aged_trail(path: Path) -> Iterator[AgedTrail]:
    """An AgedTrail at *path* for the block; its Auditor is shut down after it."""
    memory = MemorySink()
    sink = chained(path, max_bytes=1500, retain_days=1, delivery=SYNC)
    with auditing(sink, memory) as auditor:
        for i in range(8):
            auditor.emit("n", i=i, pad="x" * 200)
        aged = age_rotated_files(path)
        kill_helper(sink)
        yield AgedTrail(sink, memory, auditor, aged)


# -- helpers: applications in a new interpreter ----------------------------------

# Run before each APP_* script. argv: this interpreter's sys.path as JSON, the
# trail's path, the test key in hex, then the script's own arguments (args).
APP_PRELUDE = textwrap.dedent(
    """
    import json, os, signal, sys, time
    sys.path[:] = json.loads(sys.argv[1])
    path, key, args = sys.argv[2], bytes.fromhex(sys.argv[3]), sys.argv[4:]

    def event(i):
        import orjson
        return orjson.dumps({"id": f"e{i:04d}", "action": "n", "attributes": {"i": i}})

    def wait_until(condition, what):
        deadline = time.monotonic() + 30
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(what)
            time.sleep(0.001)

    def exited(pid):  # a zombie: nobody reaped it yet
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"

    def kill_helper(sink):  # as the OOM killer would
        pid = sink._process.pid
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: exited(pid), "the helper to exit")
        return pid
    """
)


def run_app(
    script: str, path: Path, *args: str, cwd: Path | None = None
) -> tuple[int, list[str], str]:
    """Run APP_PRELUDE then *script* in a new interpreter; return its exit
    code, the words it printed and its stderr.

    Its stderr goes to a file, not a pipe: its helper inherits it, and may
    outlive it.
    """
    errors = path.with_name("app.stderr")
    argv = [sys.executable, "-c", APP_PRELUDE + script, json.dumps(sys.path)]
    with errors.open("wb") as stderr:
        app = subprocess.run(
            [*argv, str(path), KEY.hex(), *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            timeout=WAIT,
            check=False,
            cwd=cwd,
        )
    return app.returncode, app.stdout.split(), errors.read_text()


def run_app_until_it_kills_itself(script: str, path: Path) -> list[int]:
    """Run an app that ends by killing itself with SIGKILL (checked); return
    the numbers it printed."""
    code, printed, errors = run_app(script, path)
    assert -signal.SIGKILL == code, errors
    return [int(word) for word in printed]


# -- writing: what the thread writer writes --------------------------------------


class TestRoundTrip:
    def test_batches_through_configure_with_rotation_verify(self, path: Path) -> None:
        sink = chained(path, max_bytes=4000, backups=50)
        pid = helper_pid(sink)
        auditor = auditloop.configure(sinks=[sink])
        for i in range(60):
            auditloop.emit("n", i=i, pad="p" * 100)
            if i % 10 == 9:  # several batches
                assert auditloop.flush(WAIT)
        assert auditloop.shutdown(WAIT)

        stats = file_stats(auditor)
        assert_trail(path, range(60))
        assert len(trail(path)) > 3  # rotated, in the helper
        assert 60 == stats["written"]
        assert {} == stats["dropped"]
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
        for writer, path in per_writer(tmp_path):
            sink = chained(
                path, key_id="k1", max_bytes=max_bytes, backups=50, writer=writer
            )
            with contextlib.closing(sink):
                write_batches(sink, sizes)

        thread, process = files_of(tmp_path / "thread"), files_of(tmp_path / "process")
        assert thread == process
        if max_bytes is not None:
            assert len(process) > 3
        assert_trail(tmp_path / "process" / "audit.jsonl", range(sum(sizes)))

    def test_thread_then_process_then_thread_continue_one_chain(
        self, path: Path
    ) -> None:
        start = 0
        for writer in ("thread", "process", "thread"):
            with contextlib.closing(
                chained(path, max_bytes=3000, backups=50, writer=writer)
            ) as sink:
                start = write_batches(sink, (4, 1, 6), start)

        assert_trail(path, range(33))
        assert list(range(1, 34)) == [r["seq"] for r in records(path)]
        assert len(trail(path)) > 3

    def test_an_empty_batch_writes_nothing(self, path: Path) -> None:
        with contextlib.closing(chained(path)) as sink:
            sink.write(batch(0, 2))
            sink.write([])
            sink.write(batch(2, 3))

        assert_trail(path, [0, 1, 2])

    def test_a_file_name_that_is_not_utf8_works_as_with_the_thread_writer(
        self, tmp_path: Path
    ) -> None:
        # Review: a file name need not be UTF-8 to reach the helper.
        name = os.fsdecode(b"caf\xe9.jsonl")  # latin-1: a lone surrogate in str
        for writer, path in per_writer(tmp_path, name):
            with contextlib.closing(
                chained(path, max_bytes=1000, backups=50, writer=writer)
            ) as sink:
                write_batches(sink, [3] * 4)

        process = tmp_path / "process"
        assert files_of(tmp_path / "thread") == files_of(process)
        on_disk = [os.fsencode(p.name) for p in process.iterdir()]
        assert b"caf\xe9.jsonl" in on_disk
        assert len(on_disk) > 3  # rotated, under that name too
        assert all(n.startswith(b"caf\xe9.jsonl") for n in on_disk)
        assert_trail(process / name, range(12))


class TestRequests:
    def test_request_ids_wrap_around_at_32_bits(self, path: Path) -> None:
        # Review: a request id wraps around, within the header's 32 bits.
        with contextlib.closing(chained(path, fsync="batch")) as sink:
            process = sink._process
            assert process is not None
            process._next_id = 2**32 - 2  # where a long-running process gets to
            write_batches(sink, [2] * 4)
            sink.flush(WAIT)
            pid = helper_pid(sink)

        assert process._next_id < 8  # wrapped, and the helper kept up
        assert_reaped(pid)
        assert_trail(path, range(8))

    def test_a_second_start_request_is_refused_and_opens_nothing(
        self, tmp_path: Path, path: Path
    ) -> None:
        # Review: one file per helper. It may run with more rights than the
        # application later has (it dropped privileges): it must not open
        # another file.
        other = tmp_path / "other.jsonl"
        with contextlib.closing(chained(path)) as sink:
            sink.write(batch(0, 2))
            process = sink._process
            assert process is not None
            options = dict(process._options, path=os.fsencode(other).hex())
            with pytest.raises(ConfigurationError, match="already started"):
                process._call(b"S", orjson.dumps(options), 0, WAIT)
            sink.write(batch(2, 4))  # the same helper, the same file

        assert not other.exists()
        assert [] == sorted(p.name for p in tmp_path.glob("other*"))
        assert_trail(path, range(4))


# -- notices: checkpoints and retention ------------------------------------------


class TestNotices:
    def test_checkpoints_reach_the_auditor_as_with_the_thread_writer(
        self, tmp_path: Path
    ) -> None:
        seen: dict[str, list[tuple[int, int]]] = {}
        for writer, path in per_writer(tmp_path):
            memory = MemorySink()
            sink = chained(path, checkpoint_every=3, delivery=SYNC, writer=writer)
            with auditing(sink, memory) as auditor:
                for i in range(10):
                    auditor.emit("n", i=i)

            assert_the_auditor_recorded_the_checkpoints(path, memory)
            seen[writer] = [
                (r["seq"], r["attributes"]["count"])
                for r in file_notices(path, "checkpoint")
            ]
            assert_intact(path)

        assert seen["thread"] == seen["process"]
        assert len(seen["process"]) >= 3

    @pytest.mark.parametrize("writer", WRITERS)
    def test_retention_deletions_reach_the_auditor(
        self, tmp_path: Path, path: Path, writer: str
    ) -> None:
        memory = MemorySink()
        sink = chained(
            path, max_bytes=1500, retain_files=1, delivery=SYNC, writer=writer
        )
        with auditing(sink, memory) as auditor:
            for i in range(12):
                auditor.emit("n", i=i, pad="x" * 200)

        seen = auditor_notices(memory, "retention")
        assert len(seen) >= 2
        assert all(["audit.jsonl.1"] == r["deleted"] for r in seen)
        assert {"retain_files"} == {r["reason"] for r in seen}
        first = records(path.with_name("audit.jsonl.1"))[0]["seq"]
        assert first == seen[-1]["first_seq"]
        assert first > 1
        assert ["audit.jsonl.1"] == sorted(p.name for p in tmp_path.glob("*.*.*"))
        assert_intact(path)  # the records account for the deleted files

    @pytest.mark.parametrize("writer", WRITERS)
    def test_deletions_made_at_start_reach_the_auditor_that_attaches(
        self, path: Path, writer: str
    ) -> None:
        with contextlib.closing(chained(path, max_bytes=1500, writer="thread")) as old:
            write_batches(old, [1] * 8)
        aged = age_rotated_files(path)

        memory = MemorySink()
        sink = chained(
            path, max_bytes=1500, retain_days=1, delivery=SYNC, writer=writer
        )
        with auditing(sink, memory) as auditor:
            auditor.emit("n", i=8)

        assert [(sorted(aged), "retain_days")] == [
            (sorted(r["deleted"]), r["reason"])
            for r in auditor_notices(memory, "retention")
        ]
        assert_intact(path)

    def test_without_an_auditor_the_helper_writes_checkpoints_into_the_file(
        self, tmp_path: Path
    ) -> None:
        seen: dict[str, list[tuple[int, str, int | None]]] = {}
        for writer, path in per_writer(tmp_path):
            with contextlib.closing(
                chained(path, checkpoint_every=3, writer=writer)
            ) as sink:
                pid = helper_pid(sink) if writer == "process" else os.getpid()
                write_batches(sink, [1] * 10)

            checkpoints = file_notices(path, "checkpoint")
            assert {pid} == {r["source"]["pid"] for r in checkpoints}  # the writer's
            assert_heads_match_the_file(path, [r["attributes"] for r in checkpoints])
            seen[writer] = [
                (r["seq"], r["action"], r["attributes"].get("count"))
                for r in records(path)
            ]
            assert_intact(path)

        assert seen["thread"] == seen["process"]
        assert 3 <= sum(a == "auditloop.checkpoint" for _, a, _ in seen["process"])

    def test_without_an_auditor_the_helper_writes_retention_into_the_file(
        self, tmp_path: Path, path: Path
    ) -> None:
        with contextlib.closing(chained(path, max_bytes=1200, retain_files=1)) as sink:
            pid = helper_pid(sink)
            write_batches(sink, [1] * 8)

        retained = file_notices(path, "retention")
        assert retained
        assert {pid} == {r["source"]["pid"] for r in retained}
        assert {"retain_files"} == {r["attributes"]["reason"] for r in retained}
        assert ["audit.jsonl.1"] == sorted(p.name for p in tmp_path.glob("*.*.*"))
        assert_intact(path)


class TestNoticesOfAReplacementHelper:
    """A helper started in place of a dead one serves the same Auditor: its
    checkpoints reach it, and so do the deletions its retention sweep makes
    at start, however that helper and the ones after it fare."""

    def test_a_replaced_helper_still_hands_its_notices_to_the_auditor(
        self, path: Path
    ) -> None:
        memory = MemorySink()
        sink = chained(path, checkpoint_every=3, delivery=SYNC)
        with auditing(sink, memory) as auditor:
            auditor.emit("n", i=0)
            first = kill_helper(sink)
            for i in range(1, 5):
                auditor.emit("n", i=i)
            second = helper_pid(sink)

        assert first != second
        assert_the_auditor_recorded_the_checkpoints(path, memory)
        assert_intact(path)

    def test_an_auditor_over_a_killed_helper_counts_no_error_and_writes(
        self, path: Path
    ) -> None:
        # Review: an Auditor attaching to a dead helper is no internal error.
        memory = MemorySink()
        sink = chained(path, checkpoint_every=3, delivery=SYNC)
        sink.write(batch(0, 1))
        first = kill_helper(sink)

        with auditing(sink, memory) as auditor:
            internal = auditor.stats()["internal_errors"]
            for i in range(1, 5):
                auditor.emit("n", i=i)
            second = helper_pid(sink)

        assert 0 == internal
        assert 0 == auditor.stats()["internal_errors"]
        assert first != second
        stats = file_stats(auditor)
        assert 0 == stats["errors"]
        assert {} == stats["dropped"]
        assert_trail(path, range(5))
        # The new helper's checkpoints reach the Auditor (it attached).
        assert_the_auditor_recorded_the_checkpoints(path, memory)

    def test_deletions_made_by_a_replacement_helper_at_start_are_recorded(
        self, path: Path
    ) -> None:
        # A new helper sweeps retain_days when it starts (as a new sink
        # does); its deletions must reach the Auditor like any other.
        with an_aged_trail(path) as old:
            old.auditor.emit("n", i=8)  # starts a new helper, which deletes them

        assert sorted(old.aged) == deletions_told(old.memory)
        assert_intact(path)

    def test_deletions_at_a_replacement_helpers_start_survive_its_failed_write(
        self, path: Path
    ) -> None:
        # Review: a start's notices are kept when the write after it fails.
        with an_aged_trail(path) as old:
            pid, soft = old.start_a_helper_on_a_full_disk()
            limit_file_size(pid, soft)  # room again
            old.emit(9)

        stats = file_stats(old.auditor)
        assert {"sink_error": 1} == stats["dropped"]
        assert "File too large" in stats["last_error"]
        assert sorted(old.aged) == deletions_told(old.memory)
        kept = numbers(path)  # the aged files' events are gone, recorded
        assert [i for i in range(kept[0], 10) if i != 8] == kept
        assert_intact(path)

    def test_deletions_held_after_a_failed_write_survive_the_next_helper(
        self, path: Path
    ) -> None:
        # Review: notices held after a failed write outlive their helper.
        # A replacement helper deletes aged files at start, its first write
        # fails (the notices are held for the next answer), then it dies too:
        # the third helper's answer must still carry the deletions.
        with an_aged_trail(path) as old:
            second, _ = old.start_a_helper_on_a_full_disk()  # helper 2
            kill_helper(old.sink)
            old.emit(9)  # helper 3 writes
            third = helper_pid(old.sink)

        assert second != third
        assert {"sink_error": 1} == file_stats(old.auditor)["dropped"]
        told = auditor_notices(old.memory, "retention")
        assert sorted(old.aged) == deletions_told(old.memory)
        assert len(told) == len(file_notices(path, "retention"))  # in the trail
        assert 9 == numbers(path)[-1]
        assert_intact(path)  # the deletions are accounted for

    def test_deletions_held_survive_a_helper_dying_between_start_and_attach(
        self, path: Path
    ) -> None:
        # Review: notices are kept between a helper's start and attach
        # answers, should it die in between.
        with an_aged_trail(path) as old:
            old.start_a_helper_on_a_full_disk()  # helper 2
            kill_helper(old.sink)
            with helpers_die_before_attach():
                old.emit(9)  # helper 3: starts, then dies
            old.emit(10)  # helper 4 writes

        assert sorted(old.aged) == deletions_told(old.memory)
        assert_intact(path)


# -- errors in the helper reach the writer ---------------------------------------


class TestErrors:
    def test_a_write_the_helper_cannot_do_is_raised_here(self, path: Path) -> None:
        with contextlib.closing(chained(path)) as sink:
            pid = helper_pid(sink)
            sink.write(batch(0, 3))
            with a_directory_in_place_of(path), pytest.raises(OSError) as info:
                sink.write(batch(3, 5))
            sink.write(batch(5, 7))

        assert errno.EISDIR == info.value.errno
        assert not isinstance(info.value, PartialWrite)
        assert_trail(path, [0, 1, 2, 5, 6])
        assert not alive(pid)

    def test_through_an_auditor_the_failed_event_is_counted_as_dropped(
        self, path: Path
    ) -> None:
        with auditing(chained(path, delivery=SYNC)) as auditor:
            auditor.emit("n", i=0)
            with a_directory_in_place_of(path):
                auditor.emit("n", i=1)  # never raises into the application
            auditor.emit("n", i=2)

        stats = file_stats(auditor)
        assert {"sink_error": 1} == stats["dropped"]
        assert 2 == stats["written"]
        assert 1 == stats["errors"]
        assert "Is a directory" in stats["last_error"]
        assert_trail(path, [0, 2])

    def test_a_file_full_before_the_first_line_fails_the_whole_batch(
        self, path: Path
    ) -> None:
        with contextlib.closing(chained(path)) as sink:
            sink.write(batch(0, 2))
            full = path.stat().st_size
            with (
                file_size_limit(helper_pid(sink), full),
                pytest.raises(OSError) as info,
            ):
                sink.write(batch(2, 4))
            sink.write(batch(4, 6))  # the chain goes on behind what is on disk

        assert errno.EFBIG == info.value.errno
        assert not isinstance(info.value, PartialWrite)
        assert_trail(path, [0, 1, 4, 5])

    def test_fsync_always_reports_the_lines_stored_before_the_file_filled(
        self, path: Path
    ) -> None:
        with contextlib.closing(chained(path, fsync="always")) as sink:
            sink.write([event(0)])
            first = path.stat().st_size
            sink.write([event(1)])
            size = path.stat().st_size
            line = size - first  # every line of seq 1..9 has this length
            room = size + line + line // 2  # for one line and a half
            with (
                file_size_limit(helper_pid(sink), room),
                pytest.raises(PartialWrite) as info,
            ):
                sink.write(batch(2, 4))
            sink.write([event(4)])

        assert 1 == info.value.stored
        cause = info.value.__cause__
        assert isinstance(cause, OSError)
        assert errno.EFBIG == cause.errno
        assert_trail(path, [0, 1, 2, 4])  # no half line left behind

    def test_through_an_auditor_the_stored_line_counts_as_written(
        self, path: Path
    ) -> None:
        sink = chained(path, fsync="always")
        with auditing(sink) as auditor:

            def queued() -> int:
                count: int = file_stats(auditor)["queued"]
                return count

            auditor.emit("n", i=0)
            assert auditor.flush(WAIT)
            first = path.stat().st_size
            auditor.emit("n", i=1)
            assert auditor.flush(WAIT)
            line = path.stat().st_size - first  # events 0..4 encode alike
            pid = helper_pid(sink)
            # Room for events 2 and 3, and half of 4.
            with file_size_limit(pid, path.stat().st_size + 2 * line + line // 2):
                with stopped(pid):
                    auditor.emit("n", i=2)  # taken by the writer thread, then stuck
                    wait_until(lambda: queued() == 0, "the writer to take event 2")
                    auditor.emit("n", i=3)
                    auditor.emit("n", i=4)  # 3 and 4: the next batch
                    assert 2 == queued()
                assert auditor.flush(WAIT)

        stats = file_stats(auditor)
        assert_trail(path, [0, 1, 2, 3])
        assert 1 == stats["dropped"]["sink_error"]  # event 4; 3 counts as written
        assert len(records(path)) == stats["written"]  # with sink_failed & co.


# -- the helper dies -------------------------------------------------------------


# An application that restored SIGPIPE's default action (as command-line
# tools piped into `head` do) talks to a helper that was killed.
APP_WITH_THE_DEFAULT_SIGPIPE = textwrap.dedent(
    """
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    from auditloop import sinks

    sink = sinks.FileSink(path, chain=True, key=key, fsync="batch", writer="process")
    sink.write([event(0)])
    first = kill_helper(sink)
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


class TestHelperDeath:
    def test_a_helper_killed_between_batches_is_replaced_and_nothing_is_lost(
        self, path: Path
    ) -> None:
        with contextlib.closing(chained(path)) as sink:
            sink.write(batch(0, 3))
            first = kill_helper(sink)
            sink.write(batch(3, 6))
            second = helper_pid(sink)
            sink.write(batch(6, 7))

        assert first != second
        assert_trail(path, range(7))
        assert not alive(first)
        assert not alive(second)

    def test_a_helper_that_cannot_be_replaced_fails_the_write_until_it_can(
        self, path: Path
    ) -> None:
        with contextlib.closing(chained(path)) as sink:
            sink.write(batch(0, 2))
            first = kill_helper(sink)
            # A new helper cannot open the file.
            with a_directory_in_place_of(path), pytest.raises(OSError) as info:
                sink.write(batch(2, 4))
            sink.write(batch(4, 6))  # tries again, and succeeds
            second = helper_pid(sink)

        assert "Is a directory" in str(info.value)
        assert first != second
        assert_trail(path, [0, 1, 4, 5])

    def test_a_helper_killed_before_a_flush_fails_it_and_close_is_quiet(
        self, path: Path
    ) -> None:
        sink = chained(path, fsync="batch")
        sink.write(batch(0, 2))
        pid = kill_helper(sink)

        with pytest.raises(OSError) as info:
            sink.flush(WAIT)
        sink.close()  # nothing left to close: no error

        assert errno.EPIPE == info.value.errno
        assert "exited (code -9)" in str(info.value)
        assert_reaped(pid)
        assert_trail(path, [0, 1])

    def test_a_helper_that_dies_holding_a_request_fails_that_batch_only(
        self, path: Path
    ) -> None:
        failure: list[BaseException] = []
        with contextlib.closing(chained(path)) as sink:

            def write() -> None:
                try:
                    sink.write(batch(2, 4))
                except BaseException as exc:
                    failure.append(exc)

            sink.write(batch(0, 2))
            first = helper_pid(sink)
            os.kill(first, signal.SIGSTOP)  # it will never read the request
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

        assert 1 == len(failure)
        assert isinstance(failure[0], OSError)
        assert errno.EPIPE == failure[0].errno
        assert first != second
        assert_trail(path, [0, 1, 4, 5])

    def test_an_application_with_the_default_sigpipe_survives_a_dead_helper(
        self, path: Path
    ) -> None:
        # Review: a dead helper must not raise SIGPIPE in the application
        # (a socket pair written with MSG_NOSIGNAL, not a pipe).
        code, printed, errors = run_app(APP_WITH_THE_DEFAULT_SIGPIPE, path)

        assert 0 == code, errors  # not -SIGPIPE: killed by its own audit trail
        failure, first, second = printed
        assert f"OSError:{errno.EPIPE}" == failure  # raised, so counted
        assert first != second
        assert_trail(path, [0, 1])


# -- the application dies, or exits ----------------------------------------------


# The app flushes 40 events, emits 40 more, then is killed (SIGKILL).
APP_KILLED_AFTER_A_FLUSH = textwrap.dedent(
    """
    import auditloop
    from auditloop import sinks

    flushed, more = 40, 40
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
APP_KILLED_WHILE_ITS_HELPER_HOLDS_A_BATCH = textwrap.dedent(
    """
    import array, fcntl, termios, threading
    from auditloop import sinks
    from auditloop.sinks._writer_process import _REQUEST

    def unread(sink):  # bytes the helper has not read (SIOCOUTQ)
        count = array.array("i", [0])
        fcntl.ioctl(sink._process._socket.fileno(), termios.TIOCOUTQ, count)
        return count[0]

    sink = sinks.FileSink(path, chain=True, key=key, writer="process")
    sink.write([event(i) for i in range(5)])
    helper = sink._process.pid
    os.kill(helper, signal.SIGSTOP)
    try:
        pending = [event(i) for i in range(5, 10)]
        threading.Thread(target=sink.write, args=(pending,), daemon=True).start()
        expected = _REQUEST.size + len(b"\\n".join(pending))
        wait_until(lambda: unread(sink) >= expected, "the whole request queued")
    except BaseException:
        os.kill(helper, signal.SIGKILL)  # a stopped helper would never exit
        raise
    print(helper, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


# At exit, auditloop's atexit shutdown must find the helper still usable. The
# helper is held (stopped) with one batch until the exit hooks start, so a
# backlog is queued when they run; this app's hook resumes it, after any exit
# hook the sink registered (registered later: run first) and before
# auditloop's shutdown (registered earlier, at import: run last).
APP_EXITING_WITH_A_BACKLOG = textwrap.dedent(
    """
    import atexit
    import auditloop
    from auditloop import sinks

    backlog = int(args[0])
    helpers = []
    atexit.register(lambda: [os.kill(pid, signal.SIGCONT) for pid in helpers])
    sink = sinks.FileSink(path, chain=True, key=key, writer="process")
    auditor = auditloop.configure(sinks=[sink], drop_report_interval=None)
    helpers.append(sink._process.pid)
    os.kill(helpers[0], signal.SIGSTOP)
    auditloop.emit("n", i=0)
    wait_until(
        lambda: not auditor.stats()["sinks"]["FileSink"]["queued"],
        "the writer to take event 0",
    )
    for i in range(1, backlog):
        auditloop.emit("n", i=i)
    print(helpers[0], flush=True)
    # No shutdown(): the one auditloop runs at exit must write everything.
    """
)


class TestApplicationEnd:
    def test_an_application_killed_with_sigkill_leaves_what_it_flushed(
        self, path: Path
    ) -> None:
        helper, flushed = run_app_until_it_kills_itself(APP_KILLED_AFTER_A_FLUSH, path)
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
        self, path: Path
    ) -> None:
        helper = 0
        try:
            [helper] = run_app_until_it_kills_itself(
                APP_KILLED_WHILE_ITS_HELPER_HOLDS_A_BATCH, path
            )
            assert list(range(5)) == numbers(path)  # the held batch: not yet
            os.kill(helper, signal.SIGCONT)
            wait_exited(helper)
        finally:
            if helper and alive(helper):
                os.kill(helper, signal.SIGKILL)

        assert_trail(path, range(10))

    def test_the_exit_shutdown_writes_every_queued_event(self, path: Path) -> None:
        # Review: no exit-time finalizer may end the helper before auditloop's
        # own exit shutdown has written the backlog.
        backlog = 5_000  # ~10 batches, well within the queue

        code, printed, errors = run_app(APP_EXITING_WITH_A_BACKLOG, path, str(backlog))
        assert 0 == code, errors
        [helper] = map(int, printed)
        wait_exited(helper)

        assert_trail(path, range(backlog))


# -- a slow or stopped helper: flush timeouts ------------------------------------


class TestFlushTimeout:
    def test_a_stopped_helper_lets_flush_return_and_its_late_answer_is_skipped(
        self, path: Path
    ) -> None:
        with contextlib.closing(chained(path, fsync="batch")) as sink:
            sink.write(batch(0, 3))
            pid = helper_pid(sink)
            with stopped(pid):
                sink.flush(timeout=0.2)  # returns, though nobody answered

            # The next answers are each request's own, not one behind: this
            # write fails in the helper and must fail here (not the next).
            with a_directory_in_place_of(path), pytest.raises(OSError) as info:
                sink.write(batch(3, 5))
            sink.write(batch(5, 7))
            sink.flush(timeout=WAIT)
            sink.write(batch(7, 8))
            assert pid == helper_pid(sink)  # the same helper all along

        assert errno.EISDIR == info.value.errno
        assert_trail(path, [0, 1, 2, 5, 6, 7])

    @pytest.mark.parametrize("helper", ["running", "stopped"])
    def test_flush_zero_with_fsync_never_is_no_request_and_no_error(
        self, path: Path, helper: str
    ) -> None:
        # Review: with fsync="never" a flush asks the helper nothing, and a
        # busy helper is no error.
        memory = MemorySink()
        sink = chained(path, delivery=SYNC)
        with auditing(sink, memory) as auditor:
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

        assert asked == after_flush  # the helper was asked nothing
        stats = file_stats(auditor)
        assert 0 == stats["errors"]
        assert stats["last_error"] is None
        assert [] == [
            e.action for e in memory.events if e.action.startswith("auditloop.sink_")
        ]
        assert_trail(path, [0, 1])

    def test_flush_zero_with_fsync_batch_on_a_stopped_helper_is_no_error(
        self, path: Path
    ) -> None:
        sink = chained(path, fsync="batch", delivery=SYNC)
        with auditing(sink) as auditor:
            auditor.emit("n", i=0)
            pid = helper_pid(sink)
            with stopped(pid):
                auditor.flush(0)  # nobody answers: returns all the same
                sink.flush(0)  # called directly: no raise either
            auditor.emit("n", i=1)  # the late answers are skipped
            assert pid == helper_pid(sink)

        stats = file_stats(auditor)
        assert 0 == stats["errors"]
        assert {} == stats["dropped"]
        assert_trail(path, [0, 1])

    def test_a_deadline_used_up_by_an_earlier_sink_fails_no_healthy_helper(
        self, path: Path
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

        with auditing(
            SlowFlush(), chained(path, fsync="batch", delivery=SYNC)
        ) as auditor:
            auditor.emit("n", i=0)
            auditor.flush(0.05)  # the file sink gets what is left: nothing
            auditor.emit("n", i=1)

        stats = file_stats(auditor)
        assert 0 == stats["errors"]
        assert stats["last_error"] is None
        assert_trail(path, [0, 1])


# -- signals ---------------------------------------------------------------------


def partway_through_a_send(frame: FrameType) -> bool:
    """In the sink's send loop, after its first send returned."""
    return "_send" == frame.f_code.co_name and "sent" in frame.f_locals


def awaiting_an_answer(frame: FrameType) -> bool:
    """With the whole request sent, reading the helper's answer."""
    return frame.f_code.co_name in ("_answer", "_fill")


class TestSignals:
    @pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
    def test_the_helper_ignores_stop_signals(
        self, path: Path, signum: signal.Signals
    ) -> None:
        with contextlib.closing(chained(path)) as sink:
            sink.write(batch(0, 2))
            pid = helper_pid(sink)
            for _ in range(3):
                os.kill(pid, signum)
            sink.write(batch(2, 4))
            sink.flush(WAIT)
            assert alive(pid)
            assert pid == helper_pid(sink)

        assert_trail(path, range(4))

    def test_a_signal_handler_raising_mid_request_leaves_later_writes_whole(
        self, path: Path
    ) -> None:
        # Review: a request cut short by a signal handler is never finished,
        # so no header or half batch can reach the file.
        sink = chained(path, delivery=SYNC)
        # ~3.8 MB per event (strings are cut at 64 KiB): far more than the
        # socket's (or a pipe's) buffer, so sending it blocks while the
        # helper is stopped.
        big: dict[str, Any] = {f"p{k}": "x" * 60_000 for k in range(64)}
        finished = threading.Event()
        with auditing(sink) as auditor:

            def later_emits() -> None:
                for i in range(2, 5):
                    auditor.emit("n", i=i)
                auditor.emit("n", i=5, **big)  # a big one again: whole, or not at all
                auditor.emit("n", i=6)
                finished.set()

            auditor.emit("n", i=0)
            with (
                stopped(helper_pid(sink)),
                interrupted_where(partway_through_a_send),
                pytest.raises(Interrupted),
            ):
                auditor.emit("n", i=1, **big)
            emitter = threading.Thread(target=later_emits, daemon=True)
            emitter.start()
            hung = not finished.wait(WAIT)
            if hung:  # free the emitter (its writes fail), then fail
                os.kill(helper_pid(sink), signal.SIGKILL)
            emitter.join(WAIT)

        assert not hung, "the writes after the interrupted one hang"
        assert {} == file_stats(auditor)["dropped"]
        assert b"\x00" not in path.read_bytes()  # no request header in the file
        assert_trail(path, [0, 2, 3, 4, 5, 6])  # 1: never half written

    def test_an_interrupt_while_waiting_for_the_answer_leaves_one_writer(
        self, path: Path
    ) -> None:
        # Found with the one above: an interrupted wait must not leave the
        # old helper writing the chain beside a new one.
        sink = chained(path, delivery=SYNC)
        written = threading.Event()
        with auditing(sink) as auditor:

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

            auditor.emit("n", i=0)
            first = helper_pid(sink)
            # Busy with the request (a slow disk, a compressing rotation).
            with stopped(first):
                with interrupted_where(awaiting_an_answer), pytest.raises(Interrupted):
                    auditor.emit("n", i=1)
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

        assert [0, 2, 3] == [n for n in numbers(path) if n != 1]  # 1: either
        assert_intact(path)  # one chain: no seq written twice


# -- close -----------------------------------------------------------------------


class TestClose:
    def test_close_ends_the_helper_and_may_be_repeated(self, path: Path) -> None:
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
        assert_trail(path, [0, 1])

    def test_an_auditors_shutdown_ends_the_helper(self, path: Path) -> None:
        sink = chained(path)
        auditor = auditloop.Auditor(sinks=[sink])
        auditor.emit("n", i=0)
        pid = helper_pid(sink)

        assert auditor.shutdown(WAIT)

        assert_reaped(pid)
        assert [0] == numbers(path)

    def test_close_with_a_stopped_helper_times_out_and_the_helper_finishes(
        self, path: Path
    ) -> None:
        sink = chained(path, fsync="batch")
        sink.write(batch(0, 3))
        pid = helper_pid(sink)
        with stopped(pid), pytest.raises(TimeoutError):
            sink.close(timeout=0.2)
        wait_exited(pid)  # it closes its sink and exits by itself
        reap(pid)

        with pytest.raises(OSError):
            sink.write(batch(3, 4))  # closed all the same
        assert_trail(path, range(3))

    def test_a_sink_dropped_without_close_lets_its_helper_exit(
        self, path: Path
    ) -> None:
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

        assert_trail(path, range(3))


# -- configuration ---------------------------------------------------------------


class TestConfiguration:
    def test_an_unknown_writer_is_refused(self, path: Path) -> None:
        with pytest.raises(ConfigurationError, match=r"FileSink: writer must be"):
            FileSink(path, writer="bogus")  # type: ignore[arg-type]
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
        self, path: Path, options: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(ConfigurationError, match=message):
            FileSink(path, writer="process", **options)
        assert [] == helper_children()

    def test_a_path_that_is_a_directory_is_refused_with_the_helpers_message(
        self, path: Path
    ) -> None:
        path.mkdir()

        with pytest.raises(ConfigurationError) as info:
            FileSink(path, chain=True, key=KEY, writer="process")

        message = str(info.value)
        assert message.startswith(f"FileSink: cannot open {str(path)!r}")
        assert "Is a directory" in message
        wait_until(lambda: not helper_children(), "the refused helper to exit")

    @pytest.mark.parametrize("writer", WRITERS)
    def test_a_relative_path_in_a_deleted_directory_is_a_configuration_error(
        self, tmp_path: Path, writer: str
    ) -> None:
        with (
            in_a_deleted_directory(tmp_path),
            pytest.raises(ConfigurationError, match=r"relative\.jsonl"),
        ):
            FileSink("relative.jsonl", writer=writer)  # type: ignore[arg-type]
        assert [] == helper_children()


# -- starting the helper ---------------------------------------------------------


# auditloop is importable only through "" (the working directory, where a
# link to the package is): the app changes directory, then its helper dies.
APP_IMPORTING_FROM_ITS_DIRECTORY = textwrap.dedent(
    """
    sys.path[:] = ["", *(p for p in sys.path if not os.path.isdir(f"{p}/auditloop"))]
    import auditloop
    from auditloop import sinks

    sink = sinks.FileSink(path, chain=True, key=key, writer="process")
    sink.write([event(0)])
    os.chdir(args[0])
    first = kill_helper(sink)
    sink.write([event(1)])  # a new helper, which must import auditloop
    second = sink._process.pid
    sink.close(30)
    print(first, second, os.path.abspath(auditloop.__file__), flush=True)
    """
)


class TestHelperStart:
    def test_an_interpreter_that_cannot_start_is_a_configuration_error(
        self, tmp_path: Path, path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))

        with pytest.raises(ConfigurationError, match="cannot start the writer"):
            FileSink(path, writer="process")

    def test_a_helper_that_hangs_at_start_is_killed(
        self, tmp_path: Path, path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        pid_file = hanging_interpreter(tmp_path, monkeypatch, start_timeout=1.0)

        with pytest.raises(ConfigurationError, match="cannot start the writer"):
            FileSink(path, writer="process")
        pid = int(pid_file.read_text())
        assert_reaped(pid)  # killed and reaped, not left to sleep

    def test_a_helper_that_hangs_at_start_is_killed_with_a_long_sys_path(
        self, tmp_path: Path, path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Review: sending sys.path is bounded by the start timeout too.
        pid_file = hanging_interpreter(tmp_path, monkeypatch, start_timeout=0.5)
        long = [f"/nonexistent/{'x' * 180}/{i:04d}" for i in range(2000)]
        monkeypatch.setattr(sys, "path", [*sys.path, *long])  # ~400 KB of json
        failures: list[BaseException] = []

        def construct() -> None:
            try:
                FileSink(path, writer="process")
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

    def test_a_sys_path_longer_than_one_argument_may_be_starts_the_helper(
        self, tmp_path: Path, path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Review: sys.path goes over the socket, not on the command line,
        # where Linux caps one argument at 128 KiB (MAX_ARG_STRLEN); Bazel or
        # pex runfiles give hundreds of long entries (they need not exist).
        long = [
            str(tmp_path / f"runfiles-{'x' * 160}" / f"dep_{i:04d}" / "site-packages")
            for i in range(1000)
        ]
        monkeypatch.setattr(sys, "path", [*sys.path, *long])
        assert len(json.dumps(sys.path)) > 128 * 1024

        assert_a_new_sink_writes(path)

    def test_an_import_path_that_is_not_utf8_does_not_stop_the_helper(
        self, tmp_path: Path, path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Review: an import path need not be UTF-8 either.
        library = tmp_path / os.fsdecode(b"lib\xe9")
        library.mkdir()
        monkeypatch.setattr(sys, "path", [*sys.path, str(library)])

        assert_a_new_sink_writes(path)

    def test_a_json_module_in_the_working_directory_is_not_run_by_the_helper(
        self, tmp_path: Path, path: Path
    ) -> None:
        # Review: the helper runs apart from the working directory (an upload
        # directory, say): python -P, in /.
        cwd = tmp_path / "uploads"
        cwd.mkdir()
        ran = tmp_path / "json.py-ran"
        (cwd / "json.py").write_text(
            f"import pathlib\npathlib.Path({str(ran)!r}).write_text('ran')\n"
        )
        with contextlib.chdir(cwd), contextlib.closing(chained(path)) as sink:
            sink.write(batch(0, 3))

        assert not ran.exists()
        assert_trail(path, [0, 1, 2])

    def test_a_replacement_helper_imports_from_the_directory_the_app_started_in(
        self, tmp_path: Path, path: Path
    ) -> None:
        """sys.path's ``""`` (``python -c``, a REPL, a notebook) means the
        working directory: a replacement helper must still find auditloop
        there after the application changed directory."""
        project, elsewhere = make_directories(tmp_path, "project", "elsewhere")
        (project / "auditloop").symlink_to(Path(auditloop.__file__).parent)

        code, printed, errors = run_app(
            APP_IMPORTING_FROM_ITS_DIRECTORY, path, str(elsewhere), cwd=project
        )

        assert 0 == code, errors
        first, second, imported = printed
        assert first != second
        assert str(project / "auditloop" / "__init__.py") == imported
        assert_trail(path, [0, 1])


# -- paths and the working directory ---------------------------------------------


class TestWorkingDirectory:
    def test_a_replacement_helper_writes_the_file_resolved_at_construction(
        self, tmp_path: Path
    ) -> None:
        # Review: FileSink makes its path absolute at construction.
        first_dir, second_dir = make_directories(tmp_path, "a", "b")
        with (
            contextlib.chdir(first_dir),
            contextlib.closing(chained(Path("audit.jsonl"))) as sink,
        ):
            sink.write(batch(0, 2))
            os.chdir(second_dir)  # e.g. a library or a job changes directory
            sink.write(batch(2, 4))
            first = kill_helper(sink)
            sink.write(batch(4, 6))  # a new helper
            second = helper_pid(sink)

        assert first != second
        assert [] == list(second_dir.iterdir())
        assert_trail(first_dir / "audit.jsonl", range(6))

    def test_the_thread_writer_keeps_the_file_resolved_at_construction(
        self, tmp_path: Path
    ) -> None:
        first_dir, second_dir = make_directories(tmp_path, "a", "b")
        with (
            contextlib.chdir(first_dir),
            contextlib.closing(chained(Path("audit.jsonl"), writer="thread")) as sink,
        ):
            sink.write(batch(0, 2))
            os.chdir(second_dir)
            sink.write(batch(2, 4))

        assert [] == list(second_dir.iterdir())
        assert_trail(first_dir / "audit.jsonl", range(4))

    def test_an_absolute_path_works_and_a_dead_helper_is_replaced(
        self, tmp_path: Path, path: Path
    ) -> None:
        # Review: a helper starts in /, not in the application's working
        # directory, which may be gone.
        with (
            in_a_deleted_directory(tmp_path),
            contextlib.closing(chained(path)) as sink,
        ):
            sink.write(batch(0, 2))
            first = kill_helper(sink)
            sink.write(batch(2, 4))  # a new helper, started from here
            second = helper_pid(sink)

        assert first != second
        assert_trail(path, range(4))

    def test_a_helper_dying_after_the_directory_went_is_replaced(
        self, tmp_path: Path, path: Path
    ) -> None:
        release = tmp_path / "release-1"
        release.mkdir()
        with contextlib.chdir(release):
            sink = chained(path, delivery=SYNC)  # made while it exists
            with auditing(sink) as auditor:
                auditor.emit("n", i=0)
                release.rmdir()
                kill_helper(sink)
                for i in range(1, 4):
                    auditor.emit("n", i=i)

        stats = file_stats(auditor)
        assert {} == stats["dropped"]
        assert 0 == stats["errors"]
        assert_trail(path, range(4))


# -- fork ------------------------------------------------------------------------


# A forked worker that never audits must not keep its parent's helper alive:
# once the parent is gone, the helper's input must end.
APP_KILLED_WITH_A_FORKED_WORKER = textwrap.dedent(
    """
    import auditloop
    from auditloop import sinks

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


class TestFork:
    def test_a_forked_child_writes_through_a_helper_of_its_own(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "fork.jsonl"
        sink = FileSink(path, writer="process")
        read_end, write_end = os.pipe()
        with auditing(sink) as auditor:
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
        self, path: Path
    ) -> None:
        worker = 0
        try:
            helper, worker = run_app_until_it_kills_itself(
                APP_KILLED_WITH_A_FORKED_WORKER, path
            )
            wait_exited(helper)
            assert alive(worker)  # it still runs, and its copy was let go
        finally:
            if worker:
                os.kill(worker, signal.SIGKILL)
                wait_exited(worker)

        assert_trail(path, [0])

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
