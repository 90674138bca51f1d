"""``auditloop tail``: last events, follow mode, colours, terminal safety."""

from __future__ import annotations

import io
import os
import pty
import queue
import re
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import orjson
import pytest

from auditloop import Auditor
from auditloop._cli import main
from auditloop._cli._common import Issues
from auditloop._cli.tail import Follower
from auditloop._cli.tail import run as tail_run
from auditloop.sinks import Delivery, FileSink
from auditloop.testing import FakeClock
from cli_trail import Trail, make_trail

# Every C0 control, DEL, every C1 control, and the bidi overrides.
CONTROLS = (
    [chr(c) for c in range(0x20)]
    + ["\x7f"]
    + [chr(c) for c in range(0x80, 0xA0)]
    + ["\u202e", "\u2066"]
)
ATTACK = {
    "actor": {"id": "eve\x1b]0;owned\x07\x1b[2J", "type": "user"},
    "action": "document.read\r\x1b[1A",
    "target": {"id": "document:1\x9b31m"},
    "outcome": "success",
    "time": "2026-01-01T00:00:00.000000Z",
    "reason": "line\nbreak",
    "attributes": {"note": "".join(CONTROLS), "\x1b[31mkey": "v"},
}


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Trail:
    return make_trail(tmp_path_factory.mktemp("tail"), n=200)


def unsafe(text: str) -> list[str]:
    """The characters of *text* a terminal would act on (newlines aside)."""
    return [c for c in text if c in CONTROLS and c != "\n"]


class TestTail:
    def test_last_ten_by_default(
        self, trail: Trail, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code = main(["tail", str(trail.base), "--json"])

        out = capsys.readouterr().out.splitlines()
        assert 0 == code
        assert [e.stamp for e in trail.events[-10:]] == [
            orjson.loads(x)["time"] for x in out
        ]

    def test_n_all_reads_rotated_files_too(
        self, trail: Trail, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code = main(["tail", str(trail.base), "--json", "-n", "all", "--actor", "bob"])

        out = capsys.readouterr().out.splitlines()
        assert 0 == code
        expected = [e.stamp for e in trail.events if e.actor == "bob"]
        assert expected == [orjson.loads(x)["time"] for x in out]

    def test_filters_apply_before_the_count(
        self, trail: Trail, capsys: pytest.CaptureFixture[str]
    ) -> None:
        main(["tail", str(trail.base), "-n", "3", "--outcome", "failure"])

        out = capsys.readouterr().out.splitlines()
        expected = [e for e in trail.events if e.outcome == "failure"][-3:]
        assert [
            f"{e.stamp} FAILURE {e.actor} {e.action} {e.target} tenant={e.tenant}"
            for e in expected
        ] == out

    def test_a_bad_count_is_a_usage_error(self, trail: Trail) -> None:
        with pytest.raises(SystemExit) as exited:
            main(["tail", str(trail.base), "-n", "-3"])

        assert 2 == exited.value.code


class TestTerminalSafety:
    @pytest.fixture
    def attack(self, tmp_path: Path) -> Path:
        path = tmp_path / "attack.jsonl"
        path.write_bytes(orjson.dumps(ATTACK) + b"\n")
        return path

    def test_readable_output_escapes_every_control_character(
        self, attack: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        main(["tail", str(attack), "--color", "never"])

        out = capsys.readouterr().out
        assert [] == unsafe(out)
        assert 1 == out.count("\n")
        assert "eve\\x1b]0;owned\\x07\\x1b[2J" in out
        assert "document.read\\r\\x1b[1A" in out
        assert "document:1\\u009b31m" in out
        assert "reason=line\\nbreak" in out
        assert "\\x00\\x01" in out
        assert "\\x7f\\u0080" in out
        assert "\\u202e\\u2066" in out
        assert "\\x1b[31mkey=v" in out

    def test_colours_wrap_only_escaped_text(
        self, attack: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        main(["query", str(attack), "--color", "always"])

        out = capsys.readouterr().out
        escapes = re.findall(r"\x1b[^m]*m", out)
        assert escapes  # there are colours
        assert all(re.fullmatch(r"\x1b\[[0-9;]*m", e) for e in escapes)
        stripped = re.sub(r"\x1b\[[0-9;]*m", "", out)
        assert [] == unsafe(stripped)

    def test_json_output_is_exact_and_safe(
        self, attack: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        main(["tail", str(attack), "--json"])

        out = capsys.readouterr().out
        assert [] == unsafe(out)
        assert "\\u009b" in out
        assert ATTACK == orjson.loads(out)

    def test_table_output_is_escaped(
        self, attack: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        main(["query", str(attack), "--table"])

        out = capsys.readouterr().out
        assert [] == unsafe(out)
        assert "eve\\x1b]0;owned" in out

    def test_summary_is_escaped(
        self, attack: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        main(["summary", str(attack), "--color", "never"])
        text = capsys.readouterr().out
        main(["summary", str(attack), "--json"])
        data = capsys.readouterr().out

        assert [] == unsafe(text)
        assert "eve\\x1b]0;owned" in text
        assert [] == unsafe(data)
        assert {"eve\x1b]0;owned\x07\x1b[2J": 1} == orjson.loads(data)["by_actor"]


def run_on_pty(args: list[str], env: dict[str, str] | None = None) -> str:
    """Run the CLI with a pseudo-terminal as stdout; return what it printed."""
    leader, follower = pty.openpty()
    with subprocess.Popen(
        [sys.executable, "-m", "auditloop", *args],
        stdout=follower,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TERM": "xterm", **(env or {})},
    ) as process:
        os.close(follower)
        chunks = []
        while True:
            ready, _, _ = select.select([leader], [], [], 30)
            if not ready:
                break
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        process.wait(timeout=30)
    os.close(leader)
    return b"".join(chunks).decode()


class TestColours:
    def test_a_terminal_gets_colours(self, trail: Trail) -> None:
        out = run_on_pty(["tail", str(trail.base), "-n", "5", "--outcome", "success"])

        assert "\x1b[32mSUCCESS\x1b[0m" in out

    def test_no_color_turns_them_off(self, trail: Trail) -> None:
        out = run_on_pty(["tail", str(trail.base), "-n", "5"], env={"NO_COLOR": "1"})

        assert "\x1b" not in out
        assert 5 == len(out.splitlines())

    def test_a_pipe_gets_none(self, trail: Trail) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "auditloop", "tail", str(trail.base)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

        assert 0 == done.returncode
        assert "\x1b" not in done.stdout


class Lines:
    """Lines a child process prints, read on a thread so waits can time out."""

    def __init__(self, stream: IO[str]) -> None:
        self._queue: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))

    def take(self, n: int, timeout: float = 20) -> list[str]:
        return [self._queue.get(timeout=timeout) for _ in range(n)]

    def empty(self) -> bool:
        return self._queue.empty()


@pytest.fixture
def follow(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str], Lines]]:
    path = tmp_path / "live.jsonl"
    path.write_bytes(
        orjson.dumps({"id": "old", "time": "t", "action": "old.event"}) + b"\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "auditloop", "tail", "-f", "--json", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    lines = Lines(process.stdout)
    try:
        yield path, process, lines
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


class TestFollow:
    def test_prints_appended_events_across_rotation_until_ctrl_c(
        self, follow: tuple[Path, subprocess.Popen[str], Lines]
    ) -> None:
        path, process, lines = follow
        assert ["old"] == [orjson.loads(x)["id"] for x in lines.take(1)]
        clock = FakeClock()
        sink = FileSink(path, max_bytes=1500, backups=3, delivery=Delivery(mode="sync"))
        auditor = Auditor(sinks=[sink], clock=clock)

        got = []
        for i in range(30):  # several rotations: ~300 bytes per event
            auditor.emit("document.read", actor=f"user-{i}")
            # Wait for each line: a file rotated twice between two polls is
            # gone from the path, as with tail -F.
            # FileSink may add its own records (auditloop.retention): skip them.
            record = orjson.loads(lines.take(1)[0])
            while record["action"].startswith("auditloop."):
                record = orjson.loads(lines.take(1)[0])
            got.append(record["actor"]["id"])
        auditor.shutdown(timeout=5)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)

        assert [f"user-{i}" for i in range(30)] == got
        assert (path.parent / "live.jsonl.3").exists()
        assert 0 == process.returncode
        assert "" == err

    def test_a_line_is_printed_only_once_complete(
        self, follow: tuple[Path, subprocess.Popen[str], Lines]
    ) -> None:
        path, process, lines = follow
        lines.take(1)
        line = orjson.dumps({"id": "split", "action": "a.b"}) + b"\n"

        with path.open("ab") as stream:
            stream.write(line[:10])
            stream.flush()
            stream.write(line[10:] + b"garbage\n")
        got = lines.take(1)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)

        assert ["split"] == [orjson.loads(x)["id"] for x in got]
        assert f"auditloop: {path}:3: malformed line:" in err
        assert "torn" not in err

    def test_truncation_starts_over(
        self, follow: tuple[Path, subprocess.Popen[str], Lines]
    ) -> None:
        path, process, lines = follow
        lines.take(1)

        path.write_bytes(orjson.dumps({"id": "after-truncate"}) + b"\n")
        got = lines.take(1)
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)

        assert ["after-truncate"] == [orjson.loads(x)["id"] for x in got]


def line(i: int) -> bytes:
    return orjson.dumps({"id": f"e{i}", "action": "a.b"}) + b"\n"


class TestFollower:
    """The follow loop's reader, driven step by step (no timing involved)."""

    def ids(self, follower: Follower) -> list[str]:
        return [r["id"] for r in follower.poll(None)]

    def test_reads_what_is_appended_between_polls(self, tmp_path: Path) -> None:
        path = tmp_path / "f.jsonl"
        path.write_bytes(line(0))
        follower = Follower(path, Issues(io.StringIO()))

        first = self.ids(follower)
        nothing = self.ids(follower)
        with path.open("ab") as stream:
            stream.write(line(1) + line(2))
        second = self.ids(follower)
        follower.close()

        assert (["e0"], [], ["e1", "e2"]) == (first, nothing, second)

    def test_keeps_a_partial_line_until_its_newline(self, tmp_path: Path) -> None:
        path = tmp_path / "f.jsonl"
        path.write_bytes(line(0)[:7])
        follower = Follower(path, Issues(io.StringIO()))

        before = self.ids(follower)
        with path.open("ab") as stream:
            stream.write(line(0)[7:])
        after = self.ids(follower)

        assert ([], ["e0"]) == (before, after)

    def test_rotation_drains_the_old_file_then_reads_the_new(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "f.jsonl"
        path.write_bytes(line(0))
        issues = Issues(io.StringIO())
        follower = Follower(path, issues)
        self.ids(follower)

        with path.open("ab") as stream:
            stream.write(line(1) + b'{"torn')
        path.rename(tmp_path / "f.jsonl.1")
        path.write_bytes(line(2))
        got = self.ids(follower)

        assert ["e1", "e2"] == got
        assert f"{path}:3: torn line" in issues.stream.getvalue()  # type: ignore[attr-defined]

    def test_a_deleted_file_is_waited_for(self, tmp_path: Path) -> None:
        path = tmp_path / "f.jsonl"
        path.write_bytes(line(0))
        follower = Follower(path, Issues(io.StringIO()))
        self.ids(follower)

        path.unlink()
        gone = self.ids(follower)
        still_gone = self.ids(follower)
        path.write_bytes(line(1))
        back = self.ids(follower)

        assert ([], [], ["e1"]) == (gone, still_gone, back)

    def test_truncation_starts_over(self, tmp_path: Path) -> None:
        path = tmp_path / "f.jsonl"
        path.write_bytes(line(0) + line(1))
        follower = Follower(path, Issues(io.StringIO()))
        self.ids(follower)

        with path.open("r+b") as stream:
            stream.truncate(0)
            stream.write(line(2))
        got = self.ids(follower)

        assert ["e2"] == got

    def test_bad_lines_are_reported_and_filters_apply(self, tmp_path: Path) -> None:
        path = tmp_path / "f.jsonl"
        path.write_bytes(
            line(0) + b"[1]\n" + b"nope\n\n" + orjson.dumps({"id": "x"}) + b"\n"
        )
        issues = Issues(io.StringIO())
        follower = Follower(path, issues)

        got = [r["id"] for r in follower.poll(lambda r: r.get("action") == "a.b")]

        assert ["e0"] == got
        report = issues.stream.getvalue()  # type: ignore[attr-defined]
        assert f"{path}:2: malformed line: not a JSON object" in report
        assert f"{path}:3: malformed line:" in report

    def test_run_prints_history_and_stops_when_told(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        from auditloop._cli import build_parser

        path = tmp_path / "f.jsonl"
        path.write_bytes(line(0) + line(1))
        (tmp_path / "f.jsonl.1").write_bytes(line(-1))
        args = build_parser().parse_args(["tail", "-f", "--json", str(path)])
        stop = threading.Event()
        stop.set()

        code = tail_run(args, stop=stop)

        out = [orjson.loads(x)["id"] for x in capsys.readouterr().out.splitlines()]
        assert 0 == code
        assert ["e-1", "e0", "e1"] == out


class TestLiveFiles:
    def test_each_file_is_followed_once_however_it_is_named(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from auditloop._cli.tail import _live_files

        monkeypatch.chdir(tmp_path)
        for name in ("t.jsonl", "t.jsonl.1", "20260131", "x.jsonl.gz"):
            (tmp_path / name).write_bytes(b"")

        names = ["t.jsonl", "./t.jsonl", "t.jsonl.1", "20260131", "x.jsonl.gz"]

        live = _live_files(names)

        assert [Path("t.jsonl"), Path("20260131")] == live
