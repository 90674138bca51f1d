"""``auditloop tail``: the last events, readable, optionally following the file."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Final

import orjson

from auditloop._cli._common import (
    _ROTATED,
    HelpFormatter,
    Issues,
    expand_paths,
    scan,
)
from auditloop._cli._filter import Predicate, add_filter_arguments, build_filter
from auditloop._cli._format import EventWriter, Style, add_color_argument
from auditloop._reader import ReadIssue

__all__ = ["Follower", "register", "run"]

#: Seconds between checks for new lines while following.
POLL_INTERVAL: Final = 0.2
_CHUNK: Final = 1 << 20

EXAMPLES = """\
examples:
  auditloop tail audit.jsonl                   the last 10 events
  auditloop tail -n all --outcome failure audit.jsonl
  auditloop tail -f audit.jsonl                keep printing new events (Ctrl-C stops)
  auditloop tail -f --action 'permission.*' audit.jsonl
  auditloop tail --json -n 100 audit.jsonl | jq .actor.id
"""


def register(commands: Any) -> None:
    """Add the ``tail`` subcommand to the *commands* subparsers."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "tail",
        help="print the last events, one readable line each; -f follows",
        description="Print the last events of audit files, one line each: time, "
        "outcome, actor, action, target, reason, error and attributes. Every "
        "control character from event data is escaped. Rotated files "
        "(FILE.1, FILE.2.gz, ...) are read too, oldest first.",
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "files", nargs="+", metavar="FILE", help="JSON-lines audit file"
    )
    parser.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="keep printing events as they are appended (survives rotation)",
    )
    parser.add_argument(
        "-n",
        "--lines",
        type=_count,
        default=10,
        metavar="N",
        help="print the last N matching events (default 10; 'all' for every one)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the events as JSON lines"
    )
    add_color_argument(parser)
    add_filter_arguments(parser)
    parser.set_defaults(run=run)


def _count(text: str) -> int | None:
    if text == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count (N >= 0 or 'all')")
    return value


def run(args: argparse.Namespace, stop: threading.Event | None = None) -> int:
    """Run ``tail``; with ``--follow``, until Ctrl-C (or *stop* is set).

    Returns:
        0, or 2 when a file could not be read.
    """
    issues = Issues()
    writer = EventWriter(
        sys.stdout, json=args.json, style=Style.for_stream(args.color, sys.stdout)
    )
    accept = build_filter(args)
    paths = expand_paths(args.files)
    last: deque[dict[str, Any]] = deque(maxlen=args.lines)
    followers = (
        [Follower(p, issues) for p in _live_files(args.files)] if args.follow else []
    )
    followed = {f.path for f in followers}
    for record in scan([p for p in paths if p not in followed], issues):
        if accept is None or accept(record):
            last.append(record)
    for follower in followers:
        last.extend(follower.poll(accept))
    for record in last:
        writer.write(record)
    writer.flush()
    if not followers:
        return issues.close()
    waiter = stop if stop is not None else threading.Event()
    try:
        while not waiter.is_set():
            fresh = False
            for follower in followers:
                for record in follower.poll(accept):
                    writer.write(record)
                    fresh = True
            if fresh:
                writer.flush()
            else:
                waiter.wait(POLL_INTERVAL)
    except KeyboardInterrupt:
        writer.flush()  # Ctrl-C is how one stops following: not an error
    return issues.close()


def _live_files(names: Sequence[str]) -> list[Path]:
    """The files named on the command line that can grow, each once.

    Not gzipped ones, nor rotated ones (``NAME.N`` beside an existing or
    named ``NAME``); ``audit.20260131`` alone is a trail of its own.
    """
    live: list[Path] = []
    seen: set[Path] = set()
    for name in names:
        path = Path(name)
        match = _ROTATED.match(path.name)
        if match:
            base = path.with_name(match["base"])
            if base.exists() or any(Path(other) == base for other in names):
                continue
        key = path.resolve()
        if path.suffix != ".gz" and key not in seen:
            seen.add(key)
            live.append(path)
    return live


class Follower:
    """Reads the lines appended to one file, across rotation and truncation.

    Keeps the file open; when the path is renamed away (rotation) it reads
    what is left of the old file, then opens the new one from its start;
    when the file shrinks (truncation) it starts over. An unterminated last
    line is kept until its newline arrives. Not thread-safe.
    """

    def __init__(self, path: Path, issues: Issues) -> None:
        self.path = path
        self.name = str(path)
        self.issues = issues
        self._file: IO[bytes] | None = None
        self._identity: tuple[int, int] = (0, 0)
        self._line = 0
        self._partial = b""
        self._open()

    def _open(self) -> None:
        try:
            self._file = self.path.open("rb")
        except OSError:
            self._file = None  # not there yet (between rotation and first write)
            return
        stat = os.fstat(self._file.fileno())
        self._identity = (stat.st_dev, stat.st_ino)
        self._line = 0
        self._partial = b""

    def poll(self, accept: Predicate | None) -> list[dict[str, Any]]:
        """Return the complete new lines' records that *accept* lets through."""
        out: list[dict[str, Any]] = []
        if self._file is None:
            self._open()
        file = self._file
        if file is None:
            return out
        self._read(file, out, accept)
        try:
            stat = self.path.stat()
        except OSError:
            stat = None
        if stat is None or (stat.st_dev, stat.st_ino) != self._identity:
            self._read(file, out, accept)  # what was written just before the rename
            self._finish(out, accept)
            file.close()
            self._open()
            if self._file is not None:
                self._read(self._file, out, accept)
        elif stat.st_size < file.tell():
            file.seek(0)
            self._line = 0
            self._partial = b""
            self._read(file, out, accept)
        return out

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def _read(
        self, file: IO[bytes], out: list[dict[str, Any]], accept: Predicate | None
    ) -> None:
        while chunk := file.read(_CHUNK):
            lines = (self._partial + chunk).split(b"\n")
            self._partial = lines.pop()
            for raw in lines:
                self._line += 1
                self._parse(raw, out, accept, torn=False)

    def _finish(self, out: list[dict[str, Any]], accept: Predicate | None) -> None:
        if self._partial:
            self._line += 1
            self._parse(self._partial, out, accept, torn=True)
            self._partial = b""

    def _parse(
        self,
        raw: bytes,
        out: list[dict[str, Any]],
        accept: Predicate | None,
        *,
        torn: bool,
    ) -> None:
        if not raw.strip():
            return
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            kind = "torn" if torn else "malformed"
            self.issues.report(ReadIssue(self.name, self._line, kind, str(exc)))
            return
        if not isinstance(record, dict):
            self.issues.report(
                ReadIssue(self.name, self._line, "malformed", "not a JSON object")
            )
            return
        if accept is None or accept(record):
            out.append(record)
