"""``auditloop verify``: the integrity verdict, human and JSON, and exit codes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from auditloop._cli import main
from auditloop._cli.verify import read_key, read_key_forms
from auditloop.sinks import FileSink
from cli_trail import make_chained, make_trail

KEY = b"k" * 32


@pytest.fixture
def chained(tmp_path: Path) -> tuple[Path, Path]:
    key_file = tmp_path / "audit.key"
    key_file.write_bytes(KEY + b"\n")  # the trailing newline is not part of the key
    return make_chained(tmp_path, KEY), key_file


class TestVerify:
    def test_an_intact_chain_exits_0(
        self, chained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
    ) -> None:
        trail, key = chained

        code = main(["verify", str(trail), "--key-file", str(key)])

        assert 0 == code
        assert "Chain intact: all 120 records verified.\n" == capsys.readouterr().out

    def test_rotated_and_gzipped_files_are_checked_in_order(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        trail = make_chained(tmp_path, KEY, n=200, max_bytes=8000)
        (tmp_path / "k").write_bytes(KEY)

        code = main(["verify", str(trail), "--key-file", str(tmp_path / "k"), "--json"])

        result = orjson.loads(capsys.readouterr().out)
        assert 0 == code
        assert len(list(tmp_path.glob("chained.jsonl.*.gz"))) >= 3
        assert result["ok"] is True
        assert 200 <= result["records"]
        assert str(trail) == result["files"][-1]

    def test_a_modified_record_is_a_finding_with_file_and_line(
        self, chained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
    ) -> None:
        trail, key = chained
        lines = trail.read_bytes().splitlines(keepends=True)
        lines[41] = lines[41].replace(b'"document:41"', b'"document:99"')
        trail.write_bytes(b"".join(lines))

        code = main(["verify", str(trail), "--key-file", str(key)])

        out = capsys.readouterr().out.splitlines()
        assert 1 == code
        assert out[0].startswith(f"{trail}:42: modified: ")
        assert "Integrity check FAILED: 1 finding." == out[-1]

    def test_json_lists_the_findings(
        self, chained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
    ) -> None:
        trail, key = chained
        lines = trail.read_bytes().splitlines(keepends=True)
        del lines[10]
        trail.write_bytes(b"".join(lines))

        code = main(["verify", str(trail), "--key-file", str(key), "--json"])

        result = orjson.loads(capsys.readouterr().out)
        assert 1 == code
        assert result["ok"] is False
        assert "failed" == result["status"]
        assert [("deleted", 11)] == [(f["kind"], f["line"]) for f in result["findings"]]

    def test_the_wrong_key_fails(
        self,
        chained: tuple[Path, Path],
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        trail, _ = chained
        (tmp_path / "other.key").write_bytes(b"not the key")

        code = main(["verify", str(trail), "--key-file", str(tmp_path / "other.key")])

        out = capsys.readouterr().out
        assert 1 == code
        assert "wrong_key" in out
        assert "FAILED" in out

    def test_without_a_key_a_keyed_chain_is_not_verified(
        self, chained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
    ) -> None:
        trail, _ = chained

        code = main(["verify", str(trail)])

        assert 1 == code
        assert "pass its key with --key-file" in capsys.readouterr().out

    def test_an_unchained_trail_cannot_be_verified(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        trail = make_trail(tmp_path, n=20, max_bytes=None)

        code = main(["verify", str(trail.base)])

        assert 1 == code
        assert "Not chained" in capsys.readouterr().out

    def test_an_expected_head_detects_a_truncated_tail(
        self, chained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
    ) -> None:
        trail, key = chained
        head = orjson.loads(trail.read_bytes().splitlines()[-1])["hash"]
        trail.write_bytes(b"".join(trail.read_bytes().splitlines(keepends=True)[:-3]))

        code = main(
            ["verify", str(trail), "--key-file", str(key), "--expected-head", head]
        )

        assert 1 == code
        assert ": truncated: " in capsys.readouterr().out

    @pytest.mark.parametrize(
        ("flags", "message"),
        [
            (
                ["--key-file", "/nonexistent/key"],
                "/nonexistent/key: cannot read key file",
            ),
            (["--expected-head", "xyz"], "expected_head hash must be 64 lowercase hex"),
        ],
    )
    def test_bad_input_exits_2(
        self,
        chained: tuple[Path, Path],
        flags: list[str],
        message: str,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        trail, _ = chained

        code = main(["verify", str(trail), *flags])

        assert 2 == code
        assert message in capsys.readouterr().err

    def test_an_empty_key_file_exits_2(
        self,
        chained: tuple[Path, Path],
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        trail, _ = chained
        (tmp_path / "empty.key").write_bytes(b"\n")

        code = main(["verify", str(trail), "--key-file", str(tmp_path / "empty.key")])

        assert 2 == code
        assert "the key file is empty" in capsys.readouterr().err


def chained_trail(path: Path, key: bytes, n: int, **kwargs: Any) -> Path:
    sink = FileSink(path, chain=True, key=key, **kwargs)
    for i in range(n):
        sink.write([event(i)])
    sink.close()
    return path


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


class TestVerifyEdges:
    def test_findings_in_a_chain_that_starts_late_are_shown(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        trail = tmp_path / "audit.jsonl"
        plain = FileSink(trail)  # more unchained records than any sample
        plain.write([event(i) for i in range(1001)])
        plain.close()
        chained_trail(trail, KEY, 20)  # chain=True turned on later
        lines = trail.read_bytes().splitlines(keepends=True)
        lines[1010] = lines[1010].replace(b"document.read", b"document.wipe")
        trail.write_bytes(b"".join(lines))
        (tmp_path / "k").write_bytes(KEY)

        code = main(["verify", str(trail), "--key-file", str(tmp_path / "k")])

        out = capsys.readouterr().out
        assert 1 == code
        assert f"{trail}:1011: modified: " in out
        assert "Not chained" not in out
        assert out.endswith("findings.\n")

    def test_an_unchained_trail_with_a_torn_line_shows_its_findings(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        trail = tmp_path / "plain.jsonl"
        trail.write_bytes(event(0) + b'\n{"id":"01\n' + event(2) + b"\n")

        code = main(["verify", str(trail), "--json"])

        result = orjson.loads(capsys.readouterr().out)
        assert 1 == code
        assert "unchained" == result["status"]
        assert [("unchained", 1)] == [
            (f["kind"], f["line"]) for f in result["findings"]
        ]

    @pytest.mark.parametrize("ending", [b"\n", b"\r", b"\r\n"])
    def test_a_raw_key_ending_in_a_line_break_byte_verifies(
        self, tmp_path: Path, ending: bytes, capsys: pytest.CaptureFixture[str]
    ) -> None:
        key = bytes(range(40, 70)) + ending
        trail = chained_trail(tmp_path / "audit.jsonl", key, 5)
        (tmp_path / "raw.key").write_bytes(key)  # exactly the key's bytes

        code = main(["verify", str(trail), "--key-file", str(tmp_path / "raw.key")])

        assert 0 == code
        assert "Chain intact: all 5 records verified.\n" == capsys.readouterr().out

    @pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
    def test_one_trailing_newline_of_a_text_key_is_ignored(
        self, tmp_path: Path, newline: bytes, capsys: pytest.CaptureFixture[str]
    ) -> None:
        trail = chained_trail(tmp_path / "audit.jsonl", KEY, 5)
        (tmp_path / "text.key").write_bytes(KEY + newline)

        code = main(["verify", str(trail), "--key-file", str(tmp_path / "text.key")])

        assert 0 == code
        assert "Chain intact" in capsys.readouterr().out

    def test_read_key_strips_at_most_one_newline(self, tmp_path: Path) -> None:
        (tmp_path / "k").write_bytes(b"secret\n\n")

        assert (b"secret\n", b"secret\n\n") == read_key_forms(str(tmp_path / "k"))
        assert b"secret\n" == read_key(str(tmp_path / "k"))

    def test_a_name_ending_in_digits_is_checked_with_its_rotated_files(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        trail = chained_trail(tmp_path / "audit.20260101", KEY, 30, max_bytes=3000)
        (tmp_path / "k").write_bytes(KEY)

        code = main(["verify", str(trail), "--key-file", str(tmp_path / "k")])

        assert len(list(tmp_path.glob("audit.20260101.*"))) >= 2
        assert 0 == code
        assert "Chain intact: all 30 records verified.\n" == capsys.readouterr().out
