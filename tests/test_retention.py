"""FileSink retention: old rotated files are deleted, and each deletion is recorded."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from auditloop import Auditor, sinks
from auditloop._verify import verify
from auditloop.exceptions import ConfigurationError

KEY = b"k" * 32
DAY = 86400


def event(i: int) -> bytes:
    return orjson.dumps({"id": f"e{i}", "action": "doc.read", "pad": "x" * 200})


def records(*paths: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for p in paths for line in p.read_bytes().splitlines()]


def retention_events(path: Path) -> list[dict[str, Any]]:
    """The retention records of the whole trail (they rotate like any other)."""
    files = sorted(
        path.parent.glob(path.name + ".*"),
        key=lambda p: int(p.name.split(".")[2]),
        reverse=True,
    )
    plain = [p for p in files if p.suffix != ".gz"]
    return [r for r in records(*plain, path) if r["action"] == "auditloop.retention"]


def rotated(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("audit.jsonl.*"))


class TestRetainFiles:
    def test_the_oldest_files_go_and_the_deletion_is_recorded(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        sink = sinks.FileSink(path, max_bytes=600, retain_files=2, chain=True, key=KEY)
        for i in range(6):  # one event per file
            sink.write([event(i)])
        sink.close()

        retained = retention_events(path)
        result = verify(path, key=KEY)

        assert ["audit.jsonl.1", "audit.jsonl.2"] == rotated(tmp_path)
        assert retained
        assert all(["audit.jsonl.2"] == r["attributes"]["deleted"] for r in retained)
        assert {"retain_files"} == {r["attributes"]["reason"] for r in retained}
        first = records(tmp_path / "audit.jsonl.2")[0]["seq"]
        assert first == retained[-1]["attributes"]["first_seq"]
        assert first > 1
        assert [] == list(result.findings)  # the record accounts for the gap

    def test_through_an_auditor_the_deletion_is_an_event_every_sink_sees(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        memory = sinks.MemorySink()
        file_sink = sinks.FileSink(path, max_bytes=1500, backups=1, chain=True, key=KEY)
        auditor = Auditor(sinks=[file_sink, memory])
        for i in range(12):
            auditor.emit("doc.read", n=i, pad="x" * 200)
            auditor.flush()
        auditor.flush()  # the retention events queued by the last write
        auditor.shutdown()

        seen = [e for e in memory.events if e.action == "auditloop.retention"]

        assert seen
        assert all(e.actor and e.actor.id == "auditloop" for e in seen)
        assert ["audit.jsonl.1"] == rotated(tmp_path)
        assert [] == list(verify(path, key=KEY).findings)

    def test_zero_rotated_files_keeps_only_the_active_one(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        sink = sinks.FileSink(path, max_bytes=600, retain_files=0, chain=True, key=KEY)
        for i in range(5):
            sink.write([event(i)])
        sink.close()

        retained = retention_events(path)

        assert [] == rotated(tmp_path)
        assert ["audit.jsonl"] == retained[-1]["attributes"]["deleted"]
        assert verify(path, key=KEY).ok

    def test_a_plain_sink_records_deletions_without_chain_details(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        sink = sinks.FileSink(path, max_bytes=300, retain_files=1)
        for i in range(4):
            sink.write([event(i)])
        sink.close()

        retained = retention_events(path)[-1]

        assert {"deleted": ["audit.jsonl.1"], "reason": "retain_files"} == (
            retained["attributes"]
        )


def age(path: Path, days: float) -> None:
    when = time.time() - days * DAY
    os.utime(path, (when, when))


class TestRetainDays:
    def test_old_files_are_deleted_when_the_sink_opens(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        first = sinks.FileSink(path, max_bytes=600, retain_days=7, chain=True, key=KEY)
        for i in range(6):  # one event per file: five rotated files
            first.write([event(i)])
        first.close()
        for n in range(1, 6):
            age(tmp_path / f"audit.jsonl.{n}", 10 if n >= 3 else 2)

        second = sinks.FileSink(path, retain_days=7, chain=True, key=KEY)
        second.write([event(99)])
        second.close()
        retained = retention_events(path)

        assert ["audit.jsonl.1", "audit.jsonl.2"] == rotated(tmp_path)
        assert [["audit.jsonl.5", "audit.jsonl.4", "audit.jsonl.3"]] == [
            r["attributes"]["deleted"] for r in retained
        ]
        assert "retain_days" == retained[0]["attributes"]["reason"]
        assert [] == list(verify(path, key=KEY).findings)

    def test_only_the_oldest_end_is_deleted(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        first = sinks.FileSink(path, max_bytes=600, retain_days=7)
        for i in range(7):
            first.write([event(i)])
        first.close()
        age(tmp_path / "audit.jsonl.2", 30)  # newer than .3: keep the numbering

        sinks.FileSink(path, retain_days=7).close()

        assert ["audit.jsonl.1", "audit.jsonl.2", "audit.jsonl.3"] == rotated(tmp_path)

    def test_without_a_count_limit_rotated_files_are_not_counted_away(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        sink = sinks.FileSink(path, max_bytes=600, retain_days=7)
        for i in range(20):
            sink.write([event(i)])
        sink.close()

        assert 9 == len(rotated(tmp_path))
        assert [] == retention_events(path)

    def test_rotation_sweeps_old_files_too(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        sink = sinks.FileSink(path, max_bytes=600, retain_days=1, compress=True)
        for i in range(5):
            sink.write([event(i)])
        age(tmp_path / "audit.jsonl.2.gz", 3)
        sink.write([event(5)])
        sink.write([event(6)])  # rotates: .2.gz (old) becomes .3.gz, then goes
        sink.close()

        retained = retention_events(path)

        assert ["audit.jsonl.1.gz", "audit.jsonl.2.gz"] == rotated(tmp_path)
        assert [["audit.jsonl.3.gz"]] == [r["attributes"]["deleted"] for r in retained]


class TestConfiguration:
    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            (
                {"backups": 2, "retain_files": 2},
                "FileSink: give retain_files or backups (the same setting), not both",
            ),
            ({"retain_files": -1}, "FileSink: retain_files must be an integer >= 0"),
            ({"retain_files": True}, "FileSink: retain_files must be an integer"),
            ({"retain_days": 0}, "FileSink: retain_days must be > 0"),
            ({"retain_days": "7"}, "FileSink: retain_days must be > 0"),
            ({"backups": -1}, "FileSink: backups must be an integer >= 0"),
        ],
    )
    def test_bad_options(
        self, tmp_path: Path, kwargs: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(ConfigurationError) as info:
            sinks.FileSink(tmp_path / "a.jsonl", **kwargs)

        assert str(info.value).startswith(message)


class TestAtShutdown:
    def test_deletions_while_shutdown_drains_the_queue_are_recorded(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        sink = sinks.FileSink(
            path,
            chain=True,
            key=KEY,
            max_bytes=2000,
            retain_files=2,
            checkpoint_every=50,
            delivery=sinks.Delivery(batch_size=10),
        )
        auditor = Auditor(sinks=[sink], drop_report_interval=None)
        for i in range(200):  # most are still queued when shutdown() begins
            auditor.emit("doc.read", i=i)

        assert auditor.shutdown(10)

        assert {} == auditor.stats()["dropped"]  # the sink's own events too
        assert retention_events(path)
        assert [] == list(verify(path, key=KEY).findings)

    def test_with_sync_delivery_a_deletion_is_recorded_before_emit_returns(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        sink = sinks.FileSink(
            path,
            chain=True,
            key=KEY,
            max_bytes=2000,
            retain_files=1,
            checkpoint_every=7,
            delivery=sinks.Delivery(mode="sync"),
        )
        auditor = Auditor(sinks=[sink], drop_report_interval=None)
        try:
            for i in range(60):
                auditor.emit("doc.read", i=i)
                # Each deletion's record is written before emit() returns.
                assert [] == list(verify(path, key=KEY).findings)

            assert len(retention_events(path)) >= 1
            assert {} == auditor.stats()["dropped"]
        finally:
            auditor.shutdown(10)
