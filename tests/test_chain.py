"""FileSink(chain=True): seq/prev/hash on every record, across rotation and restarts."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from auditloop import Auditor, rules, sinks
from auditloop._chain import GENESIS, ChainWriter, last_link, parse_link
from auditloop._verify import verify
from auditloop.exceptions import ConfigurationError
from auditloop.sinks import _file
from auditloop.testing import FakeClock

KEY = b"k" * 32


def event(i: int, **extra: Any) -> bytes:
    return orjson.dumps({"id": f"e{i}", "action": "doc.read", "n": i, **extra})


def lines_of(*paths: Path) -> list[bytes]:
    out: list[bytes] = []
    for path in paths:
        data = (
            gzip.decompress(path.read_bytes())
            if path.suffix == ".gz"
            else (path.read_bytes())
        )
        out.extend(data.splitlines())
    return out


def independent_check(lines: list[bytes], key: bytes | None) -> None:
    """What docs/integrity.md tells a third party to do, without auditloop."""
    prev = "0" * 64
    for expected_seq, line in enumerate(lines, 1):
        record = orjson.loads(line)
        suffix = f',"hash":"{record["hash"]}"}}'.encode()
        assert line.endswith(suffix)
        canonical = line[: -len(suffix)] + b"}"
        if key is None:
            digest = hashlib.sha256(canonical).hexdigest()
        else:
            digest = hmac.new(key, canonical, hashlib.sha256).hexdigest()
        assert digest == record["hash"]
        assert expected_seq == record["seq"]
        assert prev == record["prev"]
        prev = record["hash"]


class TestChainFormat:
    def test_each_record_carries_seq_prev_hash_checkable_without_auditloop(
        self, tmp_path: Path
    ) -> None:
        sink = chained_sink(tmp_path / "a.jsonl", key=KEY)
        sink.write([event(i) for i in range(5)])
        sink.write([event(i) for i in range(5, 8)])
        sink.close()

        lines = lines_of(tmp_path / "a.jsonl")

        assert 8 == len(lines)
        independent_check(lines, KEY)

    def test_the_event_is_kept_byte_for_byte_before_the_chain_members(
        self, tmp_path: Path
    ) -> None:
        sink = chained_sink(tmp_path / "a.jsonl", key=KEY, key_id="k1")
        original = event(1, attributes={"x": [1, 2]})
        sink.write([original])
        sink.close()

        line = lines_of(tmp_path / "a.jsonl")[0]

        assert line.startswith(original[:-1] + b',"key_id":"k1","seq":1,"prev":"')
        assert "k1" == orjson.loads(line)["key_id"]

    def test_without_a_key_the_hash_is_plain_sha256(self, tmp_path: Path) -> None:
        sink = chained_sink(tmp_path / "a.jsonl", key=None)
        sink.write([event(i) for i in range(3)])
        sink.close()

        independent_check(lines_of(tmp_path / "a.jsonl"), None)

    def test_the_first_record_links_to_the_genesis_hash(self) -> None:
        writer = ChainWriter(KEY, None)

        line = writer.seal([event(0)]).rstrip(b"\n")

        assert GENESIS.decode() == orjson.loads(line)["prev"]
        assert (1, GENESIS) == parse_link(line)[:2]

    def test_a_line_that_is_not_a_json_object_is_kept_as_one(self) -> None:
        writer = ChainWriter(KEY, None)

        lines = writer.seal([b"not json", b"{}"]).splitlines()

        assert "not json" == orjson.loads(lines[0])["unparsed"]
        assert 2 == orjson.loads(lines[1])["seq"]

    def test_records_written_through_an_auditor_are_chained(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "a.jsonl"
        auditor = Auditor(sinks=[chained_sink(path, key=KEY)], clock=FakeClock())
        for i in range(20):
            auditor.emit("doc.read", actor="alice", target=f"doc:{i}")
        auditor.shutdown()

        independent_check(lines_of(path), KEY)


def chained_sink(path: Path, **kwargs: Any) -> sinks.FileSink:
    kwargs.setdefault("key", KEY)
    return sinks.FileSink(path, chain=True, **kwargs)


class TestRotation:
    @pytest.mark.parametrize("compress", [False, True])
    def test_the_chain_continues_into_the_next_file(
        self, tmp_path: Path, compress: bool
    ) -> None:
        path = tmp_path / "a.jsonl"
        sink = chained_sink(path, max_bytes=2000, backups=50, compress=compress)
        for i in range(40):
            sink.write([event(i)])
        sink.close()
        suffix = ".gz" if compress else ""
        rotated = sorted(
            tmp_path.glob(f"a.jsonl.*{suffix}"),
            key=lambda p: int(p.name.split(".")[2]),
            reverse=True,
        )

        assert len(rotated) >= 3
        independent_check(lines_of(*rotated, path), KEY)


class TestRestart:
    def test_a_new_sink_continues_the_chain_of_the_file(self, tmp_path: Path) -> None:
        path = tmp_path / "a.jsonl"
        first = chained_sink(path)
        first.write([event(i) for i in range(3)])
        first.close()

        second = chained_sink(path)
        second.write([event(i) for i in range(3, 6)])
        second.close()

        independent_check(lines_of(path), KEY)

    def test_a_new_file_continues_from_the_newest_rotated_one(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "a.jsonl"
        first = chained_sink(path)
        first.write([event(i) for i in range(4)])
        first.close()
        path.rename(tmp_path / "a.jsonl.1")  # rotated, then the process restarted

        second = chained_sink(path)
        second.write([event(9)])
        second.close()

        assert 5 == orjson.loads(path.read_bytes())["seq"]
        independent_check(lines_of(tmp_path / "a.jsonl.1", path), KEY)

    def test_two_processes_appending_in_turn_keep_one_chain(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "a.jsonl"
        for start in (0, 50, 100):
            run_writer(path, start, 50)

        result = verify(path, key=KEY)

        assert [] == list(result.findings)
        assert 150 == result.head["count"]  # type: ignore[index]
        independent_check(lines_of(path), KEY)

    def test_a_torn_last_line_is_terminated_before_appending(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "a.jsonl"
        sink = chained_sink(path)
        sink.write([event(i) for i in range(4)])
        sink.close()
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 40])  # a crash mid-write of record 4

        sink = chained_sink(path)
        sink.write([event(i) for i in range(4, 6)])
        sink.close()
        result = verify(path, key=KEY)
        lines = path.read_bytes().splitlines()

        assert [("torn", 4)] == [(f.kind, f.line) for f in result.findings]
        assert 4 == orjson.loads(lines[4])["seq"]  # the lost record's number, reused

    def test_a_plain_sink_terminates_a_torn_line_too(self, tmp_path: Path) -> None:
        path = tmp_path / "a.jsonl"
        path.write_bytes(b'{"id":"a"}\n{"id":"b","act')

        sink = sinks.FileSink(path)
        sink.write([b'{"id":"c"}'])
        sink.close()

        assert [b'{"id":"a"}', b'{"id":"b","act', b'{"id":"c"}'] == (
            path.read_bytes().splitlines()
        )

    def test_a_new_file_holding_only_a_torn_line_continues_the_rotated_chain(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "a.jsonl"
        first = chained_sink(path)
        first.write([event(i) for i in range(4)])
        first.close()
        path.rename(tmp_path / "a.jsonl.1")  # rotated, then a crash tore the
        path.write_bytes(b'{"id":"e4","action":"do')  # new file's first line

        second = chained_sink(path)
        second.write([event(i) for i in range(4, 6)])
        second.close()
        result = verify(path, key=KEY)

        assert [5, 6] == [orjson.loads(line)["seq"] for line in lines_of(path)[1:]]
        assert [("torn", 1)] == [(f.kind, f.line) for f in result.findings]

    @pytest.mark.parametrize("compress", [(False, True), (True, False)])
    def test_rotation_after_a_restart_with_compress_toggled_keeps_the_order(
        self, tmp_path: Path, compress: tuple[bool, bool]
    ) -> None:
        path = tmp_path / "a.jsonl"
        n = 0
        for each_run in compress:
            sink = chained_sink(path, max_bytes=1000, backups=50, compress=each_run)
            for _ in range(20):
                sink.write([event(n)])
                n += 1
            sink.close()
        numbers = sorted(int(p.name.split(".")[2]) for p in tmp_path.glob("a.jsonl.*"))

        assert list(range(1, len(numbers) + 1)) == numbers  # one file per number
        assert [] == list(verify(path, key=KEY).findings)

    def test_a_file_without_a_chain_starts_a_new_one(self, tmp_path: Path) -> None:
        path = tmp_path / "a.jsonl"
        path.write_bytes(b'{"id":"old"}\n')

        sink = chained_sink(path)
        sink.write([event(1)])
        sink.close()

        assert 1 == orjson.loads(path.read_bytes().splitlines()[1])["seq"]


WRITER = textwrap.dedent(
    """
    import sys
    import orjson
    from auditloop import sinks
    path, start, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    sink = sinks.FileSink(path, chain=True, key=b"k" * 32)
    for i in range(start, start + count):
        sink.write([orjson.dumps({"id": f"e{i}", "action": "doc.read", "n": i})])
        if i == start + 10:
            print("ready", flush=True)
    sink.close()
    """
)


def run_writer(path: Path, start: int, count: int) -> None:
    subprocess.run(
        [sys.executable, "-c", WRITER, str(path), str(start), str(count)],
        check=True,
        capture_output=True,
        timeout=60,
    )


class TestCrash:
    def test_sigkill_leaves_at_most_a_torn_tail(self, tmp_path: Path) -> None:
        path = tmp_path / "a.jsonl"
        child = subprocess.Popen(  # writes until killed
            [sys.executable, "-c", WRITER, str(path), "0", str(10**9)],
            stdout=subprocess.PIPE,
        )
        assert child.stdout is not None
        assert b"ready\n" == child.stdout.readline()

        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        result = verify(path, key=KEY)

        assert -signal.SIGKILL == child.returncode
        assert {"torn"} >= {f.kind for f in result.findings}
        assert result.head is not None
        assert result.head["count"] > 10

    def test_after_sigkill_a_restart_continues_the_chain(self, tmp_path: Path) -> None:
        path = tmp_path / "a.jsonl"
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), "0", str(10**9)],
            stdout=subprocess.PIPE,
        )
        assert child.stdout is not None
        child.stdout.readline()
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)

        run_writer(path, 0, 20)
        result = verify(path, key=KEY)

        assert {"torn"} >= {f.kind for f in result.findings}
        assert len(result.findings) <= 1


class TestCheckpoints:
    def test_every_n_records_a_checkpoint_holds_count_and_head(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "a.jsonl"
        sink = chained_sink(path, key_id="k1", checkpoint_every=5)
        for i in range(12):
            sink.write([event(i)])
        sink.close()

        records = [orjson.loads(line) for line in lines_of(path)]
        checkpoints = [r for r in records if r["action"] == "auditloop.checkpoint"]

        assert [5, 11] == [c["attributes"]["count"] for c in checkpoints]
        by_seq = {r["seq"]: r for r in records}
        for c in checkpoints:
            assert by_seq[c["attributes"]["count"]]["hash"] == c["attributes"]["head"]
            assert "k1" == c["attributes"]["key_id"]
            assert c["seq"] == c["attributes"]["count"] + 1
        assert verify(path, key=KEY).ok

    def test_a_checkpoint_is_due_after_the_interval(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        clock = FakeClock(1000.0)
        monkeypatch.setattr(_file, "_monotonic", clock)
        path = tmp_path / "a.jsonl"
        sink = chained_sink(path, checkpoint_interval=60)
        sink.write([event(0)])
        clock.advance(59)
        sink.write([event(1)])
        clock.advance(1)
        sink.write([event(2)])
        sink.close()

        actions = [orjson.loads(line)["action"] for line in lines_of(path)]

        assert ["doc.read"] * 3 + ["auditloop.checkpoint"] == actions

    def test_with_an_auditor_checkpoints_reach_every_sink(self, tmp_path: Path) -> None:
        path = tmp_path / "a.jsonl"
        memory = sinks.MemorySink()
        file_sink = chained_sink(
            path, checkpoint_every=3, delivery=sinks.Delivery(mode="sync")
        )
        auditor = Auditor(sinks=[file_sink, memory])
        for i in range(3):
            auditor.emit("doc.read", n=i)
        wait_for(memory, "auditloop.checkpoint")
        auditor.shutdown()

        checkpoint = next(
            e for e in memory.events if e.action == "auditloop.checkpoint"
        )

        assert 3 == checkpoint.attributes["count"]
        assert checkpoint.actor is not None
        assert "auditloop" == checkpoint.actor.id
        assert verify(path, key=KEY).ok


def wait_for(memory: sinks.MemorySink, action: str, timeout: float = 10.0) -> None:
    """Block until *memory* holds an event with *action* (written by a thread)."""
    import threading

    done = threading.Event()
    original = memory.write

    def write(batch: Any) -> None:
        original(batch)
        if any(action.encode() in line for line in batch):
            done.set()

    memory.write = write  # type: ignore[method-assign]
    if not any(e.action == action for e in memory.events):
        assert done.wait(timeout), f"no {action} event within {timeout} s"


class TestLastLink:
    def test_finds_the_head_behind_a_long_tail_of_chunks(self, tmp_path: Path) -> None:
        path = tmp_path / "a.jsonl"
        sink = chained_sink(path)
        sink.write([event(i, pad="x" * 30_000) for i in range(5)])
        sink.close()
        with path.open("ab") as f:
            f.write(b"garbage" * 20_000)  # an unterminated, unchained tail

        link = last_link(path)

        assert link is not None
        assert 5 == link[0]

    def test_a_missing_file_has_no_link(self, tmp_path: Path) -> None:
        assert last_link(tmp_path / "nope.jsonl") is None


class TestConfiguration:
    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"key": KEY}, "FileSink: key needs chain=True"),
            ({"checkpoint_every": 5}, "FileSink: checkpoint_every needs chain=True"),
            ({"chain": True, "key": b""}, "FileSink: key must be non-empty"),
            ({"chain": True, "key": 5}, "FileSink: key must be non-empty"),
            ({"chain": True, "key_id": "k"}, "FileSink: key_id needs a key"),
            ({"chain": True, "key": KEY, "key_id": "a b"}, "FileSink: key_id must"),
            ({"chain": "yes"}, "FileSink: chain must be True or False"),
            (
                {"chain": True, "checkpoint_every": 1},
                "FileSink: checkpoint_every must be an integer >= 2",
            ),
            (
                {"chain": True, "checkpoint_interval": -1},
                "FileSink: checkpoint_interval must be > 0",
            ),
        ],
    )
    def test_bad_options_fail_at_configure_time(
        self, tmp_path: Path, kwargs: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(ConfigurationError) as info:
            sinks.FileSink(tmp_path / "a.jsonl", **kwargs)

        assert str(info.value).startswith(message)

    def test_a_str_key_is_its_utf8_bytes(self, tmp_path: Path) -> None:
        sink = sinks.FileSink(tmp_path / "a.jsonl", chain=True, key="k" * 32)
        sink.write([event(0)])
        sink.close()

        assert verify(tmp_path / "a.jsonl", key=KEY).ok


class TestGzipTail:
    def test_a_new_file_continues_from_a_gzipped_rotated_one(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "a.jsonl"
        first = chained_sink(path, compress=True)
        first.write([event(i) for i in range(3)])
        first.close()
        (tmp_path / "a.jsonl.1.gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()

        second = chained_sink(path, compress=True)
        second.write([event(3)])
        second.close()

        assert 4 == orjson.loads(path.read_bytes())["seq"]
        assert verify(path, key=KEY).ok

    def test_unreadable_files_have_no_link(self, tmp_path: Path) -> None:
        from auditloop._chain import first_link

        broken = tmp_path / "a.jsonl.1.gz"
        broken.write_bytes(b"not gzip")

        assert last_link(broken) is None
        assert first_link(broken) is None
        assert first_link(tmp_path / "missing") is None

    def test_lines_that_only_look_chained_are_not(self) -> None:
        line = ChainWriter(KEY, None).seal([event(1)]).rstrip(b"\n")

        assert parse_link(line.replace(b'"seq":1', b'"seq":x')) is None
        assert parse_link(line.replace(b',"seq":1', b',"sex":1')) is None


class TestFsyncAlways:
    def test_each_chained_line_is_written_and_synced_on_its_own(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "a.jsonl"
        sink = chained_sink(path, fsync="always")
        sink.write([event(i) for i in range(4)])
        sink.close()

        independent_check(lines_of(path), KEY)


class TestSeveralChainedSinks:
    def test_checkpoints_that_would_cause_each_other_are_refused(
        self, tmp_path: Path
    ) -> None:
        a = chained_sink(tmp_path / "a.jsonl", checkpoint_every=2)
        b = chained_sink(tmp_path / "b.jsonl", checkpoint_every=5)

        with pytest.raises(ConfigurationError, match=r"sinks\[0\].checkpoint_every"):
            Auditor(sinks=[a, b])

    def test_sync_sinks_and_a_rule_emitting_from_where_never_deadlock(
        self, tmp_path: Path
    ) -> None:
        # Each sink's checkpoint is recorded through both sinks and the rule
        # engine, while other threads hold those locks the other way round.
        sync = sinks.Delivery(mode="sync")
        a = chained_sink(tmp_path / "a.jsonl", checkpoint_every=3, delivery=sync)
        b = chained_sink(tmp_path / "b.jsonl", checkpoint_every=4, delivery=sync)
        auditor: Auditor

        def where(event: dict[str, Any]) -> bool:
            auditor.emit("side.effect")
            return True

        rule = rules.Threshold(
            "r",
            match=rules.match(action="login", where=where),
            at_least=10**6,
            within=60,
        )
        auditor = Auditor(sinks=[a, b], rules=[rule], drop_report_interval=None)

        def work(action: str) -> None:
            for _ in range(300):
                auditor.emit(action, actor="u")

        threads = [
            threading.Thread(target=work, args=(action,), daemon=True)
            for action in ("login", "other", "login", "other")
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

        assert not any(thread.is_alive() for thread in threads)
        auditor.shutdown(10)
        assert [] == list(verify(tmp_path / "a.jsonl", key=KEY).findings)
        assert [] == list(verify(tmp_path / "b.jsonl", key=KEY).findings)


class TestFsyncFailure:
    @pytest.mark.parametrize("fsync", ["batch", "always"])
    def test_lines_written_before_a_failed_fsync_keep_their_numbers(
        self, tmp_path: Path, fsync: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # No real disk fails fsync on demand: the OS call is replaced.
        path = tmp_path / "a.jsonl"
        sink = chained_sink(path, fsync=fsync, delivery=sinks.Delivery(mode="sync"))
        auditor = Auditor(sinks=[sink], drop_report_interval=None)
        auditor.emit("one")
        real = os.fsync

        def failing(fd: int) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(os, "fsync", failing)
        auditor.emit("two")  # written; only its fsync fails
        monkeypatch.setattr(os, "fsync", real)
        auditor.emit("three")
        auditor.shutdown(10)
        records = [orjson.loads(line) for line in lines_of(path)]
        stats = auditor.stats()["sinks"]["FileSink"]

        seqs = [r["seq"] for r in records]
        assert list(range(1, len(seqs) + 1)) == seqs  # no number used twice
        assert ["one", "two", "three"] == [
            r["action"] for r in records if not r["action"].startswith("auditloop.")
        ]
        assert [] == list(verify(path, key=KEY).findings)
        assert {} == stats["dropped"]  # the line is there: not counted lost
        assert 1 <= stats["errors"]


# -- configure() again with a new sink on the same file --------------------------


WRITERS = ["thread", "process"]


def trail_records(path: Path) -> list[dict[str, Any]]:
    """Every record of *path*'s trail, oldest rotated file first."""
    rotated = sorted(
        path.parent.glob(path.name + ".*"), key=lambda p: -int(p.name.split(".")[-1])
    )
    return [orjson.loads(line) for line in lines_of(*rotated, path)]


def assert_one_chain(path: Path, actions: list[str]) -> None:
    """The trail verifies with no finding over every line, and holds the
    test's own events *actions*, each once, in order."""
    result = verify(path, key=KEY)
    records = trail_records(path)

    assert [] == [str(f) for f in result.findings]
    assert len(records) == result.records
    assert list(range(1, len(records) + 1)) == [r["seq"] for r in records]
    assert actions == [r["action"] for r in records if r["action"].startswith("t.")]


class TestReconfigureWithANewSink:
    @pytest.mark.parametrize("writer", WRITERS)
    @pytest.mark.parametrize("max_bytes", [None, 1500], ids=["one-file", "rotating"])
    def test_configure_with_a_new_sink_on_the_same_file_keeps_one_chain(
        self, tmp_path: Path, writer: str, max_bytes: int | None
    ) -> None:
        # A config reload builds new sinks: the Auditor being replaced
        # records auditloop.configured (and what it still had queued)
        # through the old sink, after the new one read the chain's head.
        import auditloop

        path = tmp_path / "a.jsonl"
        backups = None if max_bytes is None else 100

        def new_sink() -> sinks.FileSink:
            return chained_sink(
                path, writer=writer, max_bytes=max_bytes, backups=backups
            )

        pad = "x" * 100
        auditloop.configure(sinks=[new_sink()], drop_report_interval=None)
        for i in range(10):
            auditloop.emit(f"t.{i}", pad=pad)
        assert auditloop.flush(10)  # idle when replaced
        auditloop.configure(sinks=[new_sink()], drop_report_interval=None)
        for i in range(10, 20):
            auditloop.emit(f"t.{i}", pad=pad)  # still queued when replaced
        auditloop.configure(sinks=[new_sink()], drop_report_interval=None)
        for i in range(20, 30):
            auditloop.emit(f"t.{i}", pad=pad)
        assert auditloop.shutdown(10)

        assert_one_chain(path, [f"t.{i}" for i in range(30)])
        configured = [
            r for r in trail_records(path) if r["action"] == "auditloop.configured"
        ]
        assert 2 == len(configured)
        if max_bytes is not None:
            assert len(list(tmp_path.glob("a.jsonl.*"))) >= 3  # rotated meanwhile

    @pytest.mark.parametrize("writer", WRITERS)
    def test_two_sinks_on_one_file_used_in_turn_keep_one_chain(
        self, tmp_path: Path, writer: str
    ) -> None:
        path = tmp_path / "a.jsonl"

        def write(sink: sinks.FileSink, name: str) -> None:
            sink.write([orjson.dumps({"id": name, "action": name})])

        a = chained_sink(path, writer=writer)
        b: sinks.FileSink | None = None
        try:
            write(a, "t.a1")
            b = chained_sink(path, writer=writer)  # reads the head: seq 1
            write(a, "t.a2")  # the chain grows behind b
            write(b, "t.b1")  # must follow t.a2, not fork from t.a1
            write(a, "t.a3")  # and a must follow b in turn
            write(b, "t.b2")
        finally:
            a.close()
            if b is not None:
                b.close()

        assert_one_chain(path, ["t.a1", "t.a2", "t.b1", "t.a3", "t.b2"])

    @pytest.mark.parametrize("writer", WRITERS)
    def test_two_sinks_writing_at_once_keep_one_chain(
        self, tmp_path: Path, writer: str
    ) -> None:
        """What configure() with a new sink does on a busy service: the old
        sink still drains while the new one writes. They take turns (a lock
        on the directory) and each continues what the other wrote."""
        path = tmp_path / "a.jsonl"
        first = chained_sink(path, writer=writer, max_bytes=20_000, backups=1000)
        first.write([orjson.dumps({"id": "seed", "action": "t.seed"})])
        second = chained_sink(path, writer=writer, max_bytes=20_000, backups=1000)
        start = threading.Barrier(2)

        def write(sink: sinks.FileSink, name: str) -> None:
            start.wait()
            for n in range(15):
                sink.write(
                    [
                        orjson.dumps({"id": f"{name}{n}-{i}", "action": f"t.{name}"})
                        for i in range(100)
                    ]
                )

        threads = [
            threading.Thread(target=write, args=(sink, name))
            for sink, name in ((first, "a"), (second, "b"))
        ]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
                assert not thread.is_alive()
        finally:
            first.close()
            second.close()

        result = verify(path, key=KEY)
        assert () == result.findings
        assert 3001 == result.records
