"""Reading audit trails back: ``read_events`` and ``scan_records``."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

import auditloop
from auditloop import AuditEvent, ReadIssue, ReadWarning, sinks
from auditloop._reader import Position, scan_records


def record(i: int) -> bytes:
    return orjson.dumps(
        {"id": f"id-{i}", "time": "t", "action": "a", "attributes": {"i": i}}
    )


def read(*paths: Path) -> tuple[list[int], list[tuple[int, str]]]:
    issues: list[ReadIssue] = []
    events = list(auditloop.read_events(list(paths), on_error=issues.append))
    return [e.attributes["i"] for e in events], [(i.line, i.kind) for i in issues]


class TestReadEvents:
    def test_reads_what_a_sink_wrote(self, tmp_path: Path) -> None:
        path = tmp_path / "a.jsonl"
        auditor = auditloop.Auditor(sinks=[sinks.FileSink(path)])
        with auditloop.bind(actor="alice", request_id="r"):
            auditor.emit("doc.delete", target="doc:1", reason="cleanup", n=1)
        auditor.shutdown(5)

        (event,) = auditloop.read_events(path)

        assert isinstance(event, AuditEvent)
        assert (
            "doc.delete",
            "alice",
            "doc:1",
            "cleanup",
            {"n": 1},
            {"request_id": "r"},
        ) == (
            event.action,
            event.actor.id if event.actor else None,
            event.target.id if event.target else None,
            event.reason,
            event.attributes,
            event.context,
        )

    def test_a_torn_last_line_is_reported_and_skipped(self, tmp_path: Path) -> None:
        path = tmp_path / "a.jsonl"
        path.write_bytes(record(0) + b"\n" + record(1) + b"\n" + record(2)[:20])

        assert ([0, 1], [(3, "torn")]) == read(path)

    def test_an_unterminated_but_whole_last_line_is_read(self, tmp_path: Path) -> None:
        path = tmp_path / "a.jsonl"
        path.write_bytes(record(0) + b"\n" + record(1))

        assert ([0, 1], []) == read(path)

    def test_a_cut_short_line_mid_file_is_torn(self, tmp_path: Path) -> None:
        path = tmp_path / "a.jsonl"
        cut_in_a_character = '{"id": "x", "note": "é'.encode()[:-1]
        path.write_bytes(
            record(0)[:25]
            + b"\n"
            + record(1)
            + b"\n"
            + cut_in_a_character
            + b"\n"
            + record(2)
            + b"\n"
        )

        assert ([1, 2], [(1, "torn"), (3, "torn")]) == read(path)

    @pytest.mark.parametrize(
        "bad",
        [
            b"not json at all",
            b'{"a": x}',
            b"[1, 2, 3]",
            b'"just a string"',
            b'{"a": 1}\xc3',
            b'{"a": "\xff\xfe"}',
        ],
    )
    def test_malformed_lines_are_reported_and_skipped(
        self, tmp_path: Path, bad: bytes
    ) -> None:
        path = tmp_path / "a.jsonl"
        path.write_bytes(record(0) + b"\n" + bad + b"\n" + record(1) + b"\n")

        assert ([0, 1], [(2, "malformed")]) == read(path)

    def test_blank_lines_are_skipped_silently(self, tmp_path: Path) -> None:
        path = tmp_path / "a.jsonl"
        path.write_bytes(b"\n" + record(0) + b"\n\n  \n" + record(1) + b"\n")

        assert ([0, 1], []) == read(path)

    def test_gzip_and_several_files_in_order(self, tmp_path: Path) -> None:
        old = tmp_path / "a.jsonl.1.gz"
        with gzip.open(old, "wb") as f:
            f.write(record(0) + b"\n" + record(1) + b"\n")
        new = tmp_path / "a.jsonl"
        new.write_bytes(record(2) + b"\n")

        assert ([0, 1, 2], []) == read(old, new)
        assert [0, 1, 2] == [
            e.attributes["i"] for e in auditloop.read_events([str(old), str(new)])
        ]

    def test_issues_warn_by_default(self, tmp_path: Path) -> None:
        path = tmp_path / "a.jsonl"
        path.write_bytes(record(0) + b"\n" + b"garbage\n" + record(1)[:10])

        with pytest.warns(ReadWarning) as warned:
            events = list(auditloop.read_events(path))

        assert 2 == len(warned)
        assert [0] == [e.attributes["i"] for e in events]
        assert f"{path}:2: malformed line:" in str(warned[0].message)
        assert f"{path}:3: torn line:" in str(warned[1].message)

    def test_scan_records_yields_dicts_and_tracks_position(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "a.jsonl"
        path.write_bytes(b"\n" + record(7) + b"\n")
        at = Position()

        seen = [(r, at.file, at.line) for r in scan_records(path, position=at)]

        assert [(orjson.loads(record(7)), str(path), 2)] == seen

    def test_scan_records_hands_unreadable_files_to_on_file_error(
        self, tmp_path: Path
    ) -> None:
        missing, present = tmp_path / "missing.jsonl", tmp_path / "b.jsonl"
        present.write_bytes(record(1) + b"\n")
        failed: list[Path] = []

        records = list(
            scan_records(
                [missing, present], on_file_error=lambda p, exc: failed.append(p)
            )
        )

        assert ([missing], [orjson.loads(record(1))]) == (failed, records)

    def test_scan_records_raises_for_an_unreadable_file_by_default(
        self, tmp_path: Path
    ) -> None:
        with pytest.raises(FileNotFoundError):
            list(scan_records(tmp_path / "missing.jsonl"))

    def test_read_issue_text(self) -> None:
        issue = ReadIssue("f.jsonl", 3, "torn", "unexpected end of data")

        assert "f.jsonl:3: torn line: unexpected end of data" == str(issue)

    def test_a_missing_file_raises(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError):
            list(auditloop.read_events(tmp_path / "missing.jsonl"))
