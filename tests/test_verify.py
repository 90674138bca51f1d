"""auditloop.verify: every kind of tampering is reported once, at its place."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from auditloop import AuditEvent, sinks
from auditloop._chain import ChainWriter, parse_link
from auditloop._verify import FINDING_KINDS, Finding, chain_head, verify
from auditloop.exceptions import ConfigurationError

KEY = b"k" * 32


def event(i: int) -> bytes:
    return orjson.dumps(
        {
            "id": f"0190-{i:08d}",
            "time": "2026-01-01T00:00:00.000000Z",
            "action": "document.read",
            "outcome": "success",
            "actor": {"id": f"user-{i % 7}", "type": "user"},
            "target": {"id": f"document:{i}", "type": "document"},
            "schema": "auditloop/1",
        }
    )


def make_trail(
    directory: Path,
    n: int = 60,
    *,
    key: bytes | None = KEY,
    batch: int = 1,
    **kwargs: Any,
) -> Path:
    path = directory / "audit.jsonl"
    sink = sinks.FileSink(path, chain=True, key=key, **kwargs)
    for start in range(0, n, batch):
        sink.write([event(i) for i in range(start, min(n, start + batch))])
    sink.close()
    return path


def found(result: Any) -> list[tuple[str, str, int]]:
    return [(f.kind, Path(f.file).name, f.line) for f in result.findings]


def rewrite(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


class TestIntact:
    def test_an_untouched_trail_verifies_clean(self, tmp_path: Path) -> None:
        path = make_trail(tmp_path)

        result = verify(path, key=KEY)

        assert result.ok
        assert [] == list(result.findings)
        assert 60 == result.records
        assert 60 == result.head["count"]  # type: ignore[index]

    def test_many_events_across_rotations_and_gzip_verify_clean(
        self, tmp_path: Path
    ) -> None:
        # 100k here (about 2 s); benchmarks/bench_trust.py verifies 1M.
        path = make_trail(
            tmp_path,
            100_000,
            batch=500,
            max_bytes=4 << 20,
            backups=100,
            compress=True,
            checkpoint_every=10_000,
        )

        result = verify(path, key=KEY)
        rotated = list(tmp_path.glob("audit.jsonl.*.gz"))

        assert [] == list(result.findings)
        assert len(rotated) >= 4
        assert 100_000 + 10 == result.records  # the events and 10 checkpoints
        assert [str(p) for p in result.files][-1] == str(path)

    def test_a_plain_sha256_trail_verifies_without_a_key(self, tmp_path: Path) -> None:
        path = make_trail(tmp_path, key=None)

        assert verify(path).ok

    def test_rotated_files_are_found_and_read_oldest_first(
        self, tmp_path: Path
    ) -> None:
        path = make_trail(tmp_path, 40, max_bytes=3000, backups=50)

        result = verify(path, key=KEY)
        names = [Path(f).name for f in result.files]

        assert result.ok
        assert names[-1] == "audit.jsonl"
        numbers = [int(n.split(".")[2]) for n in names[:-1]]
        assert sorted(numbers, reverse=True) == numbers
        assert verify(sorted(tmp_path.iterdir()), key=KEY).ok  # any order given

    def test_the_result_is_json_serialisable(self, tmp_path: Path) -> None:
        path = make_trail(tmp_path)
        rewrite(path, [*path.read_bytes().splitlines()[:-1], b"junk"])

        data = json.loads(json.dumps(verify(path, key=KEY).to_dict()))

        assert False is data["ok"]
        assert 60 == data["records"]
        assert {"file", "line", "kind", "message"} == set(data["findings"][0])
        assert 59 == data["head"]["count"]


class TestTampering:
    """One finding per tampering, naming the file and line where it happened."""

    def test_flipping_one_byte_is_a_modified_record(self, tmp_path: Path) -> None:
        path = make_trail(tmp_path)
        data = bytearray(path.read_bytes())
        offset = sum(len(line) + 1 for line in data.splitlines()[:9]) + 30
        data[offset] ^= 0x01
        path.write_bytes(bytes(data))

        assert [("modified", "audit.jsonl", 10)] == found(verify(path, key=KEY))

    def test_deleting_a_line_is_a_gap_in_seq(self, tmp_path: Path) -> None:
        path = make_trail(tmp_path)
        lines = path.read_bytes().splitlines()
        del lines[9]
        rewrite(path, lines)

        result = verify(path, key=KEY)

        assert [("deleted", "audit.jsonl", 10)] == found(result)
        assert "(seq 10)" in result.findings[0].message

    def test_deleting_several_lines_is_one_finding(self, tmp_path: Path) -> None:
        path = make_trail(tmp_path)
        lines = path.read_bytes().splitlines()
        del lines[9:14]
        rewrite(path, lines)

        result = verify(path, key=KEY)

        assert [("deleted", "audit.jsonl", 10)] == found(result)
        assert "5 records are missing" in result.findings[0].message

    def test_a_line_forged_with_another_key_is_inserted(self, tmp_path: Path) -> None:
        path = make_trail(tmp_path)
        lines = path.read_bytes().splitlines()
        seq, _prev, head = parse_link(lines[9])  # type: ignore[misc]
        forger = ChainWriter(b"not the key", None, seq, head)
        lines.insert(10, forger.seal([event(999)]).rstrip(b"\n"))
        rewrite(path, lines)

        assert [("inserted", "audit.jsonl", 11)] == found(verify(path, key=KEY))

    def test_swapping_two_lines_is_a_reordered_record(self, tmp_path: Path) -> None:
        path = make_trail(tmp_path)
        lines = path.read_bytes().splitlines()
        lines[9], lines[10] = lines[10], lines[9]
        rewrite(path, lines)

        assert [("reordered", "audit.jsonl", 11)] == found(verify(path, key=KEY))

    def test_moving_a_record_far_away_is_reordered(self, tmp_path: Path) -> None:
        path = make_trail(tmp_path)
        lines = path.read_bytes().splitlines()
        moved = lines.pop(9)
        lines.insert(40, moved)
        rewrite(path, lines)

        assert [("reordered", "audit.jsonl", 41)] == found(verify(path, key=KEY))

    def test_a_copied_record_is_inserted(self, tmp_path: Path) -> None:
        path = make_trail(tmp_path)
        lines = path.read_bytes().splitlines()
        lines.insert(30, lines[5])
        rewrite(path, lines)

        assert [("inserted", "audit.jsonl", 31)] == found(verify(path, key=KEY))

    def test_truncating_the_tail_is_found_against_an_expected_head(
        self, tmp_path: Path
    ) -> None:
        path = make_trail(tmp_path)
        head = chain_head(path)
        lines = path.read_bytes().splitlines()
        rewrite(path, lines[:-3])

        result = verify(path, key=KEY, expected_head=head)

        assert [("truncated", "audit.jsonl", 58)] == found(result)
        assert "3 records are missing from the end" in result.findings[0].message
        assert verify(path, key=KEY).ok  # without an anchor: undetectable

    def test_deleting_a_rotated_file_is_a_missing_file(self, tmp_path: Path) -> None:
        path = make_trail(tmp_path, 60, max_bytes=3000, backups=50)
        (tmp_path / "audit.jsonl.2").unlink()

        result = verify(path, key=KEY)

        assert [("missing_file", "audit.jsonl.1", 1)] == found(result)
        assert "audit.jsonl.2 is missing" in result.findings[0].message

    def test_deleting_the_newest_rotated_gzip_file_is_a_missing_file(
        self, tmp_path: Path
    ) -> None:
        path = make_trail(tmp_path, 60, max_bytes=3000, backups=50, compress=True)
        (tmp_path / "audit.jsonl.1.gz").unlink()

        result = verify(path, key=KEY)

        assert [("missing_file", "audit.jsonl", 1)] == found(result)
        assert "audit.jsonl.1.gz is missing" in result.findings[0].message

    def test_deleting_the_oldest_file_is_a_missing_start(self, tmp_path: Path) -> None:
        path = make_trail(tmp_path, 60, max_bytes=3000, backups=50)
        oldest = max(tmp_path.glob("audit.jsonl.*"), key=lambda p: int(p.suffix[1:]))
        second = oldest.with_name(f"audit.jsonl.{int(oldest.suffix[1:]) - 1}")
        oldest.unlink()

        result = verify(path, key=KEY)

        assert [("missing_file", second.name, 1)] == found(result)
        assert "no auditloop.retention record" in result.findings[0].message

    def test_editing_and_recomputing_plain_sha256_is_a_modified_record(
        self, tmp_path: Path
    ) -> None:
        path = make_trail(tmp_path)
        lines = path.read_bytes().splitlines()
        lines[9] = lines[9].replace(b'"user-2"', b'"user-6"')
        prev = parse_link(lines[8])[2]  # type: ignore[index]
        for i in range(9, len(lines)):  # a forger without the key rewrites on
            lines[i] = reseal_plain(lines[i], prev)
            prev = parse_link(lines[i])[2]  # type: ignore[index]
        rewrite(path, lines)

        result = verify(path, key=KEY)

        assert [("modified", "audit.jsonl", 10)] == found(result)
        assert "without the key" in result.findings[0].message

    def test_editing_one_record_and_its_plain_hash_only(self, tmp_path: Path) -> None:
        path = make_trail(tmp_path)
        lines = path.read_bytes().splitlines()
        prev = parse_link(lines[8])[2]  # type: ignore[index]
        lines[9] = reseal_plain(lines[9].replace(b'"user-2"', b'"user-6"'), prev)
        rewrite(path, lines)

        result = verify(path, key=KEY)

        assert [("modified", "audit.jsonl", 10)] == found(result)
        assert "recomputed without the key" in result.findings[0].message

    def test_a_torn_tail_is_reported_as_torn(self, tmp_path: Path) -> None:
        path = make_trail(tmp_path)
        data = path.read_bytes()
        path.write_bytes(data[:-100])

        assert [("torn", "audit.jsonl", 60)] == found(verify(path, key=KEY))

    def test_a_garbage_line_in_the_middle_is_torn(self, tmp_path: Path) -> None:
        path = make_trail(tmp_path)
        lines = path.read_bytes().splitlines()
        lines.insert(20, lines[20][:77])
        rewrite(path, lines)

        assert [("torn", "audit.jsonl", 21)] == found(verify(path, key=KEY))

    def test_an_unchained_json_line_in_the_middle_is_inserted(
        self, tmp_path: Path
    ) -> None:
        path = make_trail(tmp_path)
        lines = path.read_bytes().splitlines()
        lines.insert(20, event(1000))
        rewrite(path, lines)

        result = verify(path, key=KEY)

        assert [("inserted", "audit.jsonl", 21)] == found(result)
        assert "no chain fields" in result.findings[0].message

    def test_two_writers_on_one_file_break_the_links(self, tmp_path: Path) -> None:
        path = make_trail(tmp_path, 10)
        lines = path.read_bytes().splitlines()
        other = ChainWriter(KEY, None, 9, b"f" * 64)  # a second chain, same key
        lines[9] = other.seal([event(77)]).rstrip(b"\n")
        rewrite(path, lines)

        assert [("broken_link", "audit.jsonl", 10)] == found(verify(path, key=KEY))


def reseal_plain(line: bytes, prev: bytes) -> bytes:
    """Recompute a record's chain members with plain SHA-256 (no key)."""
    record_start = line[: line.rindex(b',"prev":"')]
    body = record_start + b',"prev":"' + prev + b'"'
    digest = hashlib.sha256(body + b"}").hexdigest().encode()
    return body + b',"hash":"' + digest + b'"}'


class TestKeys:
    def test_the_wrong_key_is_one_finding(self, tmp_path: Path) -> None:
        path = make_trail(tmp_path)

        result = verify(path, key=b"another key")

        assert [("wrong_key", "audit.jsonl", 1)] == found(result)

    def test_no_key_for_a_keyed_trail_says_so(self, tmp_path: Path) -> None:
        path = make_trail(tmp_path, key_id="k1")

        result = verify(path)

        assert [("wrong_key", "audit.jsonl", 1)] == found(result)
        assert "key_id 'k1'" in result.findings[0].message
        assert "pass key=" in result.findings[0].message

    def test_a_key_for_an_unkeyed_trail_says_so(self, tmp_path: Path) -> None:
        path = make_trail(tmp_path, key=None)

        result = verify(path, key=KEY)

        assert [("wrong_key", "audit.jsonl", 1)] == found(result)
        assert "written without a key" in result.findings[0].message

    def test_keys_by_key_id_verify_a_trail_across_a_key_rotation(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        for key, key_id, start in ((KEY, "k1", 0), (b"second key", "k2", 10)):
            sink = sinks.FileSink(path, chain=True, key=key, key_id=key_id)
            sink.write([event(i) for i in range(start, start + 10)])
            sink.close()

        both = verify(path, key={"k1": KEY, "k2": b"second key"})
        one = verify(path, key={"k1": KEY})

        assert both.ok
        assert "k2" == both.head["key_id"]  # type: ignore[index]
        assert [("wrong_key", "audit.jsonl", 11)] == found(one)
        assert "no key given for key_id 'k2'" in one.findings[0].message

    def test_a_key_may_be_a_str(self, tmp_path: Path) -> None:
        path = make_trail(tmp_path)

        assert verify(path, key=KEY.decode()).ok


class TestExpectedHead:
    def test_accepts_a_hash_a_chain_head_or_a_checkpoint(self, tmp_path: Path) -> None:
        path = make_trail(tmp_path, 30, checkpoint_every=10)
        records = [orjson.loads(line) for line in path.read_bytes().splitlines()]
        checkpoint = [r for r in records if r["action"] == "auditloop.checkpoint"][-1]

        for anchor in (
            chain_head(path),
            chain_head(path)["head"],  # type: ignore[index]
            checkpoint,
            AuditEvent.from_dict(checkpoint),
            checkpoint["attributes"],
        ):
            assert verify(path, key=KEY, expected_head=anchor).ok, anchor

    def test_a_rewritten_record_at_the_anchor_is_a_head_mismatch(
        self, tmp_path: Path
    ) -> None:
        path = make_trail(tmp_path, 20)
        anchor = {"count": 20, "head": "a" * 64}

        result = verify(path, key=KEY, expected_head=anchor)

        assert [("head_mismatch", "audit.jsonl", 20)] == found(result)

    def test_an_unknown_bare_hash_is_truncation(self, tmp_path: Path) -> None:
        path = make_trail(tmp_path, 20)

        result = verify(path, key=KEY, expected_head="b" * 64)

        assert [("truncated", "audit.jsonl", 21)] == found(result)

    @pytest.mark.parametrize(
        "anchor", ["xyz", {"count": 3}, {"head": "a" * 64, "count": "3"}, 42]
    )
    def test_a_malformed_anchor_is_a_configuration_error(
        self, tmp_path: Path, anchor: object
    ) -> None:
        path = make_trail(tmp_path, 3)

        with pytest.raises(ConfigurationError, match="verify: expected_head"):
            verify(path, key=KEY, expected_head=anchor)


class TestOddInput:
    def test_a_file_without_chain_is_unchained(self, tmp_path: Path) -> None:
        path = tmp_path / "plain.jsonl"
        rewrite(path, [event(i) for i in range(5)])

        result = verify(path, key=KEY)

        assert [("unchained", "plain.jsonl", 1)] == found(result)

    def test_an_empty_trail_is_unchained(self, tmp_path: Path) -> None:
        path = tmp_path / "empty.jsonl"
        path.write_bytes(b"")

        assert [("unchained", "empty.jsonl", 0)] == found(verify(path))

    def test_a_missing_file_is_unreadable(self, tmp_path: Path) -> None:
        result = verify(tmp_path / "nope.jsonl")

        assert ["unreadable"] == [f.kind for f in result.findings]

    def test_a_corrupt_gzip_file_is_unreadable(self, tmp_path: Path) -> None:
        path = make_trail(tmp_path, 40, max_bytes=3000, backups=50, compress=True)
        rotated = tmp_path / "audit.jsonl.1.gz"
        data = rotated.read_bytes()
        rotated.write_bytes(data[: len(data) // 2])

        kinds = {f.kind for f in verify(path, key=KEY).findings}

        assert "unreadable" in kinds

    def test_gzip_content_is_verified_like_plain(self, tmp_path: Path) -> None:
        path = make_trail(tmp_path, 10)
        gz = tmp_path / "audit.jsonl.1.gz"
        gz.write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()

        assert verify(gz, key=KEY).ok

    def test_no_files_is_a_configuration_error(self) -> None:
        with pytest.raises(ConfigurationError, match="verify: no files"):
            verify([])

    @pytest.mark.parametrize("key", [b"", 3, {"k1": b""}, {}, {1: KEY}])
    def test_a_bad_key_is_a_configuration_error(
        self, tmp_path: Path, key: object
    ) -> None:
        path = make_trail(tmp_path, 2)

        with pytest.raises(ConfigurationError, match="verify"):
            verify(path, key=key)  # type: ignore[arg-type]


class TestFinding:
    def test_str_reads_like_a_compiler_message(self) -> None:
        finding = Finding("a.jsonl", 3, "deleted", "1 record is missing")

        assert "a.jsonl:3: deleted: 1 record is missing" == str(finding)

    def test_every_kind_is_documented(self) -> None:
        docs = Path(__file__).parents[1] / "docs" / "integrity.md"
        text = docs.read_text()

        assert [k for k in FINDING_KINDS if f"`{k}`" not in text] == []


class TestChainHead:
    def test_returns_count_hash_and_key_id_of_the_last_record(
        self, tmp_path: Path
    ) -> None:
        path = make_trail(tmp_path, 12, key_id="k1")
        last = orjson.loads(path.read_bytes().splitlines()[-1])

        head = chain_head(path)

        assert {
            "file": str(path),
            "count": 12,
            "head": last["hash"],
            "key_id": "k1",
        } == head

    def test_falls_back_to_the_newest_rotated_file(self, tmp_path: Path) -> None:
        path = make_trail(tmp_path, 12)
        path.rename(tmp_path / "audit.jsonl.1")
        path.write_bytes(b"")

        head = chain_head(path)

        assert head is not None
        assert 12 == head["count"]
        assert str(tmp_path / "audit.jsonl.1") == head["file"]

    def test_none_without_a_chain(self, tmp_path: Path) -> None:
        path = tmp_path / "plain.jsonl"
        rewrite(path, [event(1)])

        assert chain_head(path) is None


class TestEdges:
    def test_blank_lines_are_ignored(self, tmp_path: Path) -> None:
        path = make_trail(tmp_path, 5)
        lines = path.read_bytes().splitlines()
        lines.insert(2, b"")
        rewrite(path, lines)

        result = verify(path, key=KEY)

        assert result.ok
        assert 5 == result.records

    def test_a_trail_starting_at_seq_1_must_start_at_genesis(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        forged = ChainWriter(KEY, None, 0, b"e" * 64)  # seq 1, but a prev
        rewrite(path, forged.seal([event(0), event(1)]).splitlines())

        assert [("broken_link", "audit.jsonl", 1)] == found(verify(path, key=KEY))

    def test_a_forged_line_before_a_moved_record(self, tmp_path: Path) -> None:
        path = make_trail(tmp_path, 30)
        lines = path.read_bytes().splitlines()
        moved = lines.pop(5)  # seq 6, put back later after a junk line
        lines[20:20] = [b"junk", moved]
        rewrite(path, lines)

        assert [
            ("torn", "audit.jsonl", 21),
            ("reordered", "audit.jsonl", 22),
        ] == found(verify(path, key=KEY))

    def test_records_moved_into_the_middle_of_a_long_gap(self, tmp_path: Path) -> None:
        path = make_trail(tmp_path, 30)
        lines = path.read_bytes().splitlines()
        block = lines[5:10]  # seq 6..10
        del lines[5:10]
        lines[15:15] = [block[2], block[0], block[4]]  # 8, 6, 10 come back late
        rewrite(path, lines)

        result = verify(path, key=KEY)

        assert [
            ("deleted", "audit.jsonl", 6),
            ("deleted", "audit.jsonl", 6),
            ("reordered", "audit.jsonl", 16),
            ("reordered", "audit.jsonl", 17),
            ("reordered", "audit.jsonl", 18),
        ] == found(result)
        missing = sorted(f.message for f in result.findings if f.kind == "deleted")
        assert ["1 record is missing before this line (seq 7)"] == missing[:1]
        assert "(seq 9)" in missing[1]

    def test_a_retention_record_that_cannot_be_read_is_ignored(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        sink = sinks.FileSink(path, chain=True, key=KEY)
        sink.write(
            [
                orjson.dumps({"action": "auditloop.retention", "attributes": "odd"}),
                event(1),
            ]
        )
        sink.close()

        assert verify(path, key=KEY).ok

    def test_thousands_of_bad_lines_are_summarised(self, tmp_path: Path) -> None:
        path = make_trail(tmp_path, 4)
        lines = path.read_bytes().splitlines()
        lines[2:2] = [b"x" * 10] * 10_005
        rewrite(path, lines)

        result = verify(path, key=KEY)

        assert 10_001 == len(result.findings)  # 10,000 lines, then a summary
        assert "5 more lines after this one fail" in result.findings[-1].message

    def test_an_anchor_inside_a_damaged_stretch_cannot_be_verified(
        self, tmp_path: Path
    ) -> None:
        path = make_trail(tmp_path, 10)
        head = {
            "count": 5,
            "head": orjson.loads(path.read_bytes().splitlines()[4])["hash"],
        }
        lines = path.read_bytes().splitlines()
        lines[4] = lines[4].replace(b"document:4", b"document:X")
        rewrite(path, lines)

        result = verify(path, key=KEY, expected_head=head)

        assert [
            ("modified", "audit.jsonl", 5),
            ("head_mismatch", "audit.jsonl", 11),
        ] == found(result)

    def test_damaged_records_say_what_is_wrong(self, tmp_path: Path) -> None:
        path = make_trail(tmp_path, 10)
        lines = path.read_bytes().splitlines()
        lines[3] = event(3)  # lost its chain fields
        lines[6] = b"not json at all"
        rewrite(path, lines)

        result = verify(path, key=KEY)

        assert [
            ("modified", "the record lost its chain fields"),
            ("modified", "the record is damaged (not a JSON record)"),
        ] == [(f.kind, f.message) for f in result.findings]

    def test_a_path_in_a_missing_directory_is_unreadable(self, tmp_path: Path) -> None:
        result = verify(tmp_path / "nowhere" / "audit.jsonl")

        assert ["unreadable"] == [f.kind for f in result.findings]

    def test_a_key_longer_than_a_block_is_hashed_first(self, tmp_path: Path) -> None:
        long_key = bytes(range(100))
        path = make_trail(tmp_path, 5, key=long_key)
        line = path.read_bytes().splitlines()[0]

        digest = hmac.new(long_key, line[:-75] + b"}", hashlib.sha256).hexdigest()

        assert orjson.loads(line)["hash"] == digest
        assert verify(path, key=long_key).ok

    def test_a_key_id_that_is_not_utf8_is_no_key_id(self, tmp_path: Path) -> None:
        path = make_trail(tmp_path, 3, key_id="k1")
        data = path.read_bytes().replace(b'"key_id":"k1"', b'"key_id":"\xff1"')
        path.write_bytes(data)

        result = verify(path, key={"k1": KEY})

        assert ["wrong_key"] == [f.kind for f in result.findings]


def record(action: str, attributes: dict[str, Any], **fields: Any) -> bytes:
    return orjson.dumps(
        {
            "id": "0190-app",
            "time": "2026-01-01T00:00:00.000000Z",
            "action": action,
            "outcome": "success",
            "actor": {"id": "user-1", "type": "user"},
            **fields,
            "attributes": attributes,
            "schema": "auditloop/1",
        }
    )


SYSTEM_ACTOR = {"id": "auditloop", "type": "system"}


def rotated(directory: Path, name: str = "audit.jsonl") -> list[Path]:
    """The rotated files of *name*, oldest (highest number) first."""
    files = directory.glob(name + ".*")
    return sorted(files, key=lambda p: -int(p.name.rsplit(".", 1)[1]))


class TestRetentionExcuse:
    """Only the sink's own ``auditloop.retention`` record excuses a late start."""

    @pytest.mark.parametrize(
        ("action", "extra", "fields"),
        [
            # an app event whose payload merely mentions the action
            ("webhook.received", {"payload": {"action": "auditloop.retention"}}, {}),
            # the action, but not from the system actor
            ("auditloop.retention", {}, {"category": "system"}),
            # the action and actor, but not the system category
            ("auditloop.retention", {}, {"actor": SYSTEM_ACTOR}),
        ],
    )
    def test_a_lookalike_record_does_not_excuse_a_deleted_oldest_file(
        self,
        tmp_path: Path,
        action: str,
        extra: dict[str, Any],
        fields: dict[str, Any],
    ) -> None:
        path = tmp_path / "audit.jsonl"
        sink = sinks.FileSink(path, chain=True, key=KEY, max_bytes=3000, backups=50)
        for i in range(30):
            sink.write([event(i)])
        first_kept = orjson.loads(rotated(tmp_path)[1].read_bytes().splitlines()[0])
        attributes = {"first_seq": first_kept["seq"], **extra}
        sink.write([record(action, attributes, **fields)])
        sink.close()
        oldest, second = rotated(tmp_path)[:2]
        oldest.unlink()

        result = verify(path, key=KEY)

        assert [("missing_file", second.name, 1)] == found(result)
        assert "no auditloop.retention record" in result.findings[0].message

    def test_the_sinks_own_retention_record_excuses_the_start(
        self, tmp_path: Path
    ) -> None:
        path = make_trail(tmp_path, 60, max_bytes=3000, retain_files=2)
        first = orjson.loads(rotated(tmp_path)[0].read_bytes().splitlines()[0])

        assert first["seq"] > 1
        assert verify(path, key=KEY).ok


class TestReviewedEdges:
    def test_a_splice_behind_a_garbage_line_is_a_broken_link(
        self, tmp_path: Path
    ) -> None:
        one = make_trail(tmp_path, 20)
        two = tmp_path / "other.jsonl"  # another host: same key, other records
        sink = sinks.FileSink(two, chain=True, key=KEY)
        sink.write([event(500 + i) for i in range(20)])
        sink.close()
        path = tmp_path / "spliced.jsonl"
        head, tail = one.read_bytes().splitlines()[:10], two.read_bytes().splitlines()
        rewrite(path, [*head, b'{"id":"0190-0000', *tail[10:]])

        result = verify(path, key=KEY)

        assert [
            ("torn", "spliced.jsonl", 11),
            ("broken_link", "spliced.jsonl", 12),
        ] == found(result)

    def test_a_name_ending_in_digits_brings_its_own_rotated_files(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.20260101"
        sink = sinks.FileSink(path, chain=True, key=KEY, max_bytes=3000)
        for i in range(30):
            sink.write([event(i)])
        sink.close()

        result = verify(path, key=KEY)
        given = verify(sorted(tmp_path.iterdir()), key=KEY)

        assert [] == list(result.findings)
        assert len(result.files) >= 3
        assert str(path) == result.files[-1]
        assert result.files == given.files
        assert given.ok

    def test_an_anchor_removed_by_recorded_retention_is_no_mismatch(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        sink = sinks.FileSink(path, chain=True, key=KEY, max_bytes=3000, retain_files=1)
        sink.write([event(0)])
        anchor = chain_head(path)
        for i in range(1, 30):
            sink.write([event(i)])
        sink.close()
        first = orjson.loads(rotated(tmp_path)[0].read_bytes().splitlines()[0])

        result = verify(path, key=KEY, expected_head=anchor)

        assert 1 == anchor["count"]  # type: ignore[index]
        assert first["seq"] > 1  # retention deleted the anchor's record
        assert [] == list(result.findings)

    def test_an_emptied_rotated_file_is_not_called_missing(
        self, tmp_path: Path
    ) -> None:
        path = make_trail(tmp_path, 60, max_bytes=3000, backups=50)
        (tmp_path / "audit.jsonl.2").write_bytes(b"")

        result = verify(path, key=KEY)

        assert [("deleted", "audit.jsonl.1", 1)] == found(result)
        message = result.findings[0].message
        assert "audit.jsonl.2 exists but holds none of them" in message
        assert "is missing" not in message

    def test_crlf_line_endings_are_one_modified_finding_per_file(
        self, tmp_path: Path
    ) -> None:
        path = make_trail(tmp_path, 20)
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))

        result = verify(path, key=KEY)

        assert [("modified", "audit.jsonl", 1)] == found(result)
        assert "20 lines end with CR" in result.findings[0].message
        assert 20 == result.head["count"]  # type: ignore[index]

    def test_a_cr_on_one_line_says_so(self, tmp_path: Path) -> None:
        path = make_trail(tmp_path, 20)
        lines = path.read_bytes().splitlines()
        lines[9] += b"\r"
        rewrite(path, lines)

        result = verify(path, key=KEY)

        assert [("modified", "audit.jsonl", 10)] == found(result)
        assert "this line ends with CR" in result.findings[0].message

    def test_an_unchained_trail_with_a_torn_line_is_unchained(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "plain.jsonl"
        rewrite(path, [event(0), b'{"id":"0190-00', event(2)])

        result = verify(path, key=KEY)

        assert [("unchained", "plain.jsonl", 1)] == found(result)
        assert "1 of these lines are not JSON records" in result.findings[0].message


class TestChainStartedLate:
    def test_records_from_before_chain_true_are_one_finding(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.jsonl"
        plain = sinks.FileSink(path)
        plain.write([event(i) for i in range(50)])
        plain.close()
        make_trail(tmp_path, 5)  # the same file, now with chain=True

        result = verify(path, key=KEY)

        assert [("unchained", "audit.jsonl", 1)] == found(result)
        assert "50 records before the chain starts" in result.findings[0].message
        assert 5 == result.head["count"]  # type: ignore[index]

    def test_tampering_after_the_start_is_still_reported(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        plain = sinks.FileSink(path)
        plain.write([event(i) for i in range(3)])
        plain.close()
        make_trail(tmp_path, 5)
        lines = path.read_bytes().splitlines()
        lines[5] = lines[5].replace(b"document.read", b"document.wipe")
        rewrite(path, lines)

        result = verify(path, key=KEY)

        assert [
            ("unchained", "audit.jsonl", 1),
            ("modified", "audit.jsonl", 6),
        ] == found(result)
