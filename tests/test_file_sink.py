"""FileSink: whole lines, crash safety, rotation, permissions, reopen."""

from __future__ import annotations

import gzip
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

import auditloop
from auditloop import ConfigurationError, ReadIssue
from auditloop.sinks import Delivery, FileSink

SYNC = Delivery(mode="sync")


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def numbers(path: Path | list[Path]) -> list[int]:
    """The ``i`` of each test event (the sink's own notices are skipped)."""
    return [e.attributes["i"] for e in auditloop.read_events(path) if e.action == "n"]


class TestConcurrentWriters:
    def test_four_threads_ten_thousand_events_each(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        auditor = auditloop.Auditor(sinks=[FileSink(path)])

        def produce(thread: int) -> None:
            for i in range(10_000):
                auditor.emit("load.test", thread=thread, i=i)

        threads = [threading.Thread(target=produce, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert auditor.shutdown(30)

        raw = lines_of(path)
        records = [orjson.loads(line) for line in raw]
        assert 40_000 == len(raw)
        assert 40_000 == len({r["id"] for r in records})
        for thread in range(4):  # each producer's events keep their order
            mine = [
                r["attributes"]["i"]
                for r in records
                if r["attributes"]["thread"] == thread
            ]
            assert list(range(10_000)) == mine
        assert {} == auditor.stats()["dropped"]


CHILD = textwrap.dedent(
    """
    import sys
    import auditloop
    from auditloop import sinks

    path, run = sys.argv[1], int(sys.argv[2])
    sink = sinks.FileSink(
        path, fsync="always", delivery=sinks.Delivery(mode="sync")
    )
    auditor = auditloop.Auditor(sinks=[sink], redact=False)
    pad = "x" * 48_000  # lines of several pages: a kill can land mid-write
    i = 0
    while True:
        auditor.emit("crash.test", run=run, i=i, pad=pad)
        i += 1
    """
)


class TestCrashSafety:
    def test_sigkill_mid_stream_twenty_times(self, tmp_path: Path) -> None:
        path = tmp_path / "crash.jsonl"
        kills = 20
        for run in range(kills):
            start = path.stat().st_size if path.exists() else 0
            child = subprocess.Popen(
                [sys.executable, "-c", CHILD, str(path), str(run)],
                stderr=subprocess.PIPE,
            )
            try:
                deadline = time.monotonic() + 60
                # Kill once the child is demonstrably writing (two lines in).
                while not path.exists() or path.stat().st_size < start + 100_000:
                    assert child.poll() is None, (
                        child.stderr.read() if child.stderr else ""
                    )
                    assert time.monotonic() < deadline, "child never wrote"
                    time.sleep(0.002)
            finally:
                child.send_signal(signal.SIGKILL)
                child.wait()
            assert -signal.SIGKILL == child.returncode

        issues: list[ReadIssue] = []
        events = list(auditloop.read_events(path, on_error=issues.append))

        # At most one torn line per kill, each reported, never fatal.
        assert len(issues) <= kills
        assert all(issue.kind == "torn" for issue in issues)
        assert len({issue.line for issue in issues}) == len(issues)
        # Every other line is whole: each run's events are 0..n without a gap
        # (a torn line is only ever the last one of its run, and the next run
        # never loses its first line to the fragment).
        for run in range(kills):
            got = [e.attributes["i"] for e in events if e.attributes["run"] == run]
            assert got, f"run {run} wrote nothing"
            assert list(range(len(got))) == got
        assert len(events) == len({e.id for e in events})
        # Only lines that were torn by a kill can be unreadable.
        assert len(lines_of(path)) == len(events) + len(issues)

    def test_a_torn_tail_never_swallows_the_next_record(self, tmp_path: Path) -> None:
        path = tmp_path / "torn.jsonl"
        sink = FileSink(path, delivery=SYNC)
        auditor = auditloop.Auditor(sinks=[sink])
        auditor.emit("n", i=0)
        auditor.shutdown(5)
        with path.open("ab") as f:  # a crash mid-line
            f.write(b'{"id": "torn", "action": "n", "attr')

        reopened = auditloop.Auditor(sinks=[FileSink(path, delivery=SYNC)])
        reopened.emit("n", i=1)
        reopened.shutdown(5)
        issues: list[ReadIssue] = []

        assert [0, 1] == [
            e.attributes["i"]
            for e in auditloop.read_events(path, on_error=issues.append)
        ]
        assert [(2, "torn")] == [(i.line, i.kind) for i in issues]


# A full disk, made real with RLIMIT_FSIZE in a child process: a write that
# would grow the file past the limit fails after writing what fits (EFBIG).
FULL_DISK = """
import os, resource, signal, sys
import auditloop
from auditloop import sinks

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
path, chain, fsync, mode, room = sys.argv[1:]
sink = sinks.FileSink(
    path, chain=chain == "chain", fsync=fsync,
    delivery=sinks.Delivery(mode=mode, batch_size=3),
)
auditor = auditloop.Auditor(sinks=[sink], drop_report_interval=None)
auditor.emit("n", i=0)
auditor.flush(10)
resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(path) + int(room), hard))
for i in (1, 2, 3):
    auditor.emit("n", i=i)
auditor.flush(10)
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
auditor.emit("n", i=4)
auditor.shutdown(10)
stats = auditor.stats()["sinks"]["FileSink"]
print(stats["written"], stats["dropped"].get("sink_error", 0))
"""


class TestFullDisk:
    def run(self, path: Path, *options: str) -> tuple[int, int]:
        done = subprocess.run(
            [sys.executable, "-c", FULL_DISK, str(path), *options],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        written, failed = done.stdout.split()
        return int(written), int(failed)

    @pytest.mark.parametrize("mode", ["sync", "async"])
    @pytest.mark.parametrize("chain", ["chain", "plain"])
    def test_a_failed_write_leaves_no_torn_line_and_counts_exactly(
        self, tmp_path: Path, chain: str, mode: str
    ) -> None:
        path = tmp_path / "audit.jsonl"

        # Room for part of the next line only: the write fails half-way.
        written, failed = self.run(path, chain, "never", mode, "40")

        issues: list[ReadIssue] = []
        events = list(auditloop.read_events(path, on_error=issues.append))
        assert [] == issues  # the half line was cut off again
        assert [0, 4] == [e.attributes["i"] for e in events if e.action == "n"]
        assert 3 == failed  # the batch of 1, 2, 3 (or each of them, in sync)
        assert written == len(events)  # with the sink_failed/recovered events
        if chain == "chain":  # and the chain goes on behind what is on disk
            assert auditloop.verify(path).ok

    def test_fsync_always_keeps_and_counts_the_lines_written_before(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"

        # Room for one more record (~420 bytes) and part of the next, in one
        # batch of three.
        written, failed = self.run(path, "chain", "always", "async", "600")

        events = list(auditloop.read_events(path))
        assert [0, 1, 4] == [e.attributes["i"] for e in events if e.action == "n"]
        assert 2 == failed  # 1 was written and is counted so; 2 and 3 were not
        assert written == len(events)
        assert auditloop.verify(path).ok


class TestRotation:
    def write_many(self, sink: FileSink, count: int) -> None:
        auditor = auditloop.Auditor(sinks=[sink])
        for i in range(count):
            auditor.emit("n", i=i, pad="p" * 100)
        auditor.shutdown(5)

    def test_keeps_n_backups(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        sink = FileSink(path, max_bytes=2000, backups=3, delivery=SYNC)

        self.write_many(sink, 100)

        assert ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2", "audit.jsonl.3"] == (
            sorted(p.name for p in tmp_path.iterdir())
        )
        for p in tmp_path.iterdir():
            assert p.stat().st_size <= 2000
        kept = [path.with_name(f"audit.jsonl.{n}") for n in (3, 2, 1)] + [path]
        got = [i for p in kept for i in numbers(p)]
        assert list(range(100 - len(got), 100)) == got  # newest kept, in order

    def test_compressed_backups(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        sink = FileSink(path, max_bytes=2000, backups=2, compress=True, delivery=SYNC)

        self.write_many(sink, 60)

        assert ["audit.jsonl", "audit.jsonl.1.gz", "audit.jsonl.2.gz"] == sorted(
            p.name for p in tmp_path.iterdir()
        )
        backup = path.with_name("audit.jsonl.1.gz")
        with gzip.open(backup) as f:
            assert all(orjson.loads(line)["action"] for line in f)
        assert 0o600 == stat.S_IMODE(backup.stat().st_mode)
        kept = [path.with_name(f"audit.jsonl.{n}.gz") for n in (2, 1)] + [path]
        got = numbers(kept)
        assert list(range(60 - len(got), 60)) == got

    def test_zero_backups_keeps_only_the_active_file(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        sink = FileSink(path, max_bytes=1000, backups=0, delivery=SYNC)

        self.write_many(sink, 30)

        assert ["audit.jsonl"] == [p.name for p in tmp_path.iterdir()]
        assert path.stat().st_size <= 1000
        # What is left is the newest (a retention notice may follow the last).
        assert numbers(path)[-1:] in ([29], [])

    def test_a_batch_larger_than_max_bytes_is_written_whole(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        sink = FileSink(path, max_bytes=100)

        sink.write([b'{"a":1}' * 1, b'{"b":"' + b"x" * 300 + b'"}'])
        sink.write([b'{"c":3}'])
        sink.close()

        assert [b'{"c":3}'] == lines_of(path)
        assert 2 == len(lines_of(path.with_name("audit.jsonl.1")))

    def test_rotated_files_keep_mode_0600(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        self.write_many(FileSink(path, max_bytes=1500, backups=2, delivery=SYNC), 40)

        for p in tmp_path.iterdir():
            assert 0o600 == stat.S_IMODE(p.stat().st_mode)


class TestFileBasics:
    def test_new_file_has_mode_0600_whatever_the_umask(self, tmp_path: Path) -> None:
        old = os.umask(0)
        try:
            sink = FileSink(tmp_path / "audit.jsonl")
        finally:
            os.umask(old)
        sink.close()

        assert 0o600 == stat.S_IMODE((tmp_path / "audit.jsonl").stat().st_mode)

    def test_appends_to_an_existing_file(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        path.write_bytes(b'{"action": "old"}\n')

        auditor = auditloop.Auditor(sinks=[FileSink(path)])
        auditor.emit("new")
        auditor.shutdown(5)

        assert ["old", "new"] == [e.action for e in auditloop.read_events(path)]

    def test_reopens_a_file_moved_away(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        auditor = auditloop.Auditor(sinks=[FileSink(path, delivery=SYNC)])
        auditor.emit("n", i=0)

        path.rename(tmp_path / "moved.jsonl")
        auditor.emit("n", i=1)
        path.unlink()
        auditor.emit("n", i=2)
        auditor.shutdown(5)

        assert [0] == numbers(tmp_path / "moved.jsonl")
        assert [2] == numbers(path)
        assert 0o600 == stat.S_IMODE(path.stat().st_mode)

    @pytest.mark.parametrize("fsync", ["never", "batch", "always"])
    def test_fsync_policies(
        self, tmp_path: Path, fsync: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        calls: list[int] = []
        real_fsync = os.fsync

        def counting_fsync(fd: int) -> None:
            calls.append(fd)
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", counting_fsync)
        path = tmp_path / "audit.jsonl"
        sink = FileSink(path, fsync=fsync)

        sink.write([b'{"i":0}', b'{"i":1}', b'{"i":2}'])
        after_write = len(calls)
        sink.flush()
        after_flush = len(calls)
        sink.close()

        expected = {"never": (0, 0), "batch": (1, 2), "always": (3, 4)}[fsync]
        assert expected == (after_write, after_flush)
        assert 3 == len(lines_of(path))

    def test_create_dirs(self, tmp_path: Path) -> None:
        path = tmp_path / "a" / "b" / "audit.jsonl"

        FileSink(path, create_dirs=True).close()

        assert path.exists()

    def test_write_after_close_fails_and_is_counted(self, tmp_path: Path) -> None:
        sink = FileSink(tmp_path / "audit.jsonl")
        sink.close()
        sink.close()  # idempotent

        with pytest.raises(OSError):
            sink.write([b"{}"])
        sink.flush()  # a closed sink has nothing to flush

    def test_an_unwritable_target_fails_each_write_then_recovers(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "d" / "audit.jsonl"
        sink = FileSink(path, create_dirs=True)
        auditor = auditloop.Auditor(sinks=[sink], delivery=SYNC)
        auditor.emit("n", i=0)
        path.unlink()
        path.parent.rmdir()  # reopening now fails

        auditor.emit("n", i=1)
        path.parent.mkdir()
        auditor.emit("n", i=2)
        auditor.shutdown(5)

        assert {"sink_error": 1} == auditor.stats()["dropped"]
        assert [2] == numbers(path)


class TestFileSinkConfiguration:
    @pytest.mark.parametrize(
        ("kwargs", "named"),
        [
            ({"fsync": "sometimes"}, "fsync"),
            ({"max_bytes": 0}, "max_bytes"),
            ({"max_bytes": -5}, "max_bytes"),
            ({"max_bytes": "10"}, "max_bytes"),
            ({"max_bytes": True}, "max_bytes"),
            ({"backups": -1}, "backups"),
            ({"backups": 1.5}, "backups"),
            ({"fsynk": "always"}, "fsynk"),
        ],
    )
    def test_bad_options_name_the_argument(
        self, tmp_path: Path, kwargs: dict[str, Any], named: str
    ) -> None:
        with pytest.raises(ConfigurationError, match=named):
            FileSink(tmp_path / "a.jsonl", **kwargs)

    def test_missing_directory_without_create_dirs(self, tmp_path: Path) -> None:
        missing = tmp_path / "nope" / "a.jsonl"

        with pytest.raises(ConfigurationError, match="create_dirs"):
            FileSink(missing)
        assert not missing.parent.exists()

    def test_a_path_that_cannot_be_opened(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigurationError, match="cannot open"):
            FileSink(tmp_path)  # a directory

    def test_a_bad_delivery_is_refused_at_configure(self, tmp_path: Path) -> None:
        sink = FileSink(tmp_path / "a.jsonl", delivery="sync")  # type: ignore[arg-type]

        with pytest.raises(ConfigurationError, match=r"sinks\[0\].delivery"):
            auditloop.configure(sinks=[sink])

    def test_the_writer_process_gets_every_file_option(self, tmp_path: Path) -> None:
        """The helper builds its sink from the options FileSink forwards: a
        new option left out of that list would be silently ignored there."""
        import inspect

        sink = FileSink(tmp_path / "a.jsonl", writer="process")
        try:
            assert sink._process is not None
            forwarded = set(sink._process._options)
        finally:
            sink.close()
        parameters = set(inspect.signature(FileSink.__init__).parameters)
        # Not for the helper: where it writes is "path" (sent separately
        # encoded), directories exist by then, delivery and writer are ours.
        assert parameters - {"self", "create_dirs", "delivery", "writer"} == forwarded

    def test_a_corrupt_rotated_gzip_does_not_stop_a_chained_sink(
        self, tmp_path: Path
    ) -> None:
        """Looking for the chain's head in ``path.1.gz`` must survive a file
        whose deflate data is broken (``zlib.error``, not an OSError)."""
        path = tmp_path / "a.jsonl"
        path.touch()
        good = gzip.compress(b'{"n":1}\n' * 100)
        broken = good[:10] + bytes(b ^ 0xFF for b in good[10:-8]) + good[-8:]
        path.with_name("a.jsonl.1.gz").write_bytes(broken)

        sink = FileSink(path, chain=True, key=b"k" * 32)
        try:
            sink.write([b'{"n":2}'])
        finally:
            sink.close()
        assert b'"seq":1,' in path.read_bytes()
