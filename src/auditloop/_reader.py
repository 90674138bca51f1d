"""Reading audit trails back: JSON lines, plain or gzipped, torn tails tolerated."""

from __future__ import annotations

import gzip
import os
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import attrs
import orjson

from auditloop._event import AuditEvent

__all__ = ["Position", "ReadIssue", "ReadWarning", "read_events", "scan_records"]


class ReadWarning(UserWarning):
    """A line of an audit file could not be read (issued by default)."""


@attrs.frozen
class ReadIssue:
    """A line that could not be read.

    ``kind`` is ``"torn"`` for a line cut short by a crash mid-write (an
    unterminated last line, or a JSON object that ends early) or
    ``"malformed"`` for any other line that is not a JSON object (or, for
    :func:`read_events`, not shaped like an event).
    """

    file: str
    line: int
    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.kind} line: {self.message}"


OnError = Callable[[ReadIssue], None]


def _warn(issue: ReadIssue) -> None:
    warnings.warn(str(issue), ReadWarning, stacklevel=4)


def _open(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


class Position:
    """Where :func:`scan_records` is: the file and line of the last record."""

    __slots__ = ("file", "line")

    def __init__(self) -> None:
        self.file = ""
        self.line = 0


def scan_records(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    on_error: OnError | None = None,
    on_file_error: Callable[[Path, Exception], None] | None = None,
    position: Position | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield the record (a dict) of every readable line of *paths*, in order.

    ``.gz`` files are decompressed. Blank lines are skipped; an unparsable
    line is reported to *on_error* (default: a :class:`ReadWarning`) as
    ``"torn"`` when it is a JSON object cut short (a crash mid-write, last in
    the file or — after FileSink ended it on reopen — anywhere) and as
    ``"malformed"`` otherwise, and skipped. A file that cannot be read raises,
    unless *on_file_error* takes it (then the next file is read). With
    *position*, its ``file``/``line`` name the record just yielded.

    This loop is what ``auditloop query``/``summary`` spend their time in:
    it allocates nothing per line beyond the record itself.
    """
    report = on_error if on_error is not None else _warn
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    for raw_path in paths:
        path = Path(raw_path)
        name = str(path)
        try:
            with _open(path) as stream:
                for number, line in enumerate(stream, 1):
                    try:
                        record = loads(line)
                    except decode_error as exc:
                        if line.strip():  # blank lines are not errors
                            torn = not line.endswith(b"\n") or _cut_short(line)
                            kind = "torn" if torn else "malformed"
                            report(ReadIssue(name, number, kind, str(exc)))
                        continue
                    if record.__class__ is not dict:
                        report(
                            ReadIssue(name, number, "malformed", "not a JSON object")
                        )
                        continue
                    if position is not None:
                        position.file, position.line = name, number
                    yield record
        except (OSError, EOFError, zlib.error) as exc:
            if on_file_error is None:
                raise
            on_file_error(path, exc)


def _cut_short(line: bytes) -> bool:
    """Tell whether *line* is a JSON object cut short (a crash mid-write).

    Such a fragment ends where more JSON was due; FileSink terminates it when
    it reopens the file, so it may sit anywhere in the file, not only last.
    """
    body = line.rstrip(b"\r\n")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.end != len(body):  # invalid inside the line, not at a cut
            return False
        text = body[: exc.start].decode("utf-8")  # cut inside a character
    if not text.startswith("{"):
        return False
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return exc.pos >= len(text)
    return False  # a whole object followed by stray bytes


def read_events(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    on_error: OnError | None = None,
) -> Iterator[AuditEvent]:
    """Yield the :class:`AuditEvent` of every readable line of *paths*.

    A torn last line (left by a crash mid-write) and malformed lines are
    reported to *on_error* (default: a :class:`ReadWarning` each) and skipped.
    """
    report = on_error if on_error is not None else _warn
    at = Position()
    for record in scan_records(paths, on_error=report, position=at):
        try:
            event = AuditEvent.from_dict(record)
        except Exception as exc:  # valid JSON, but not shaped like an event
            report(ReadIssue(at.file, at.line, "malformed", f"not an event: {exc}"))
            continue
        yield event
