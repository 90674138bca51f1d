"""Reading audit trails back: JSON lines, plain or gzipped, torn tails tolerated."""

from __future__ import annotations

import gzip
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import attrs
import orjson

from auditloop._event import AuditEvent

__all__ = ["ReadIssue", "ReadWarning", "iter_records", "read_events"]


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


def iter_records(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    on_error: OnError | None = None,
) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """Yield ``(file, line_number, record_dict)`` for each readable line.

    Files are read in the order given (``.gz`` files are decompressed).
    Unreadable lines are passed to *on_error* (default: a
    :class:`ReadWarning`) and skipped; reading never stops on bad data.
    """
    report = on_error if on_error is not None else _warn
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    for raw_path in paths:
        path = Path(raw_path)
        name = str(path)
        with _open(path) as stream:
            number = 0
            for number, line in enumerate(stream, 1):
                if not line.strip():
                    continue
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    torn = not line.endswith(b"\n") or _cut_short(line)
                    kind = "torn" if torn else "malformed"
                    report(ReadIssue(name, number, kind, str(exc)))
                    continue
                if not isinstance(record, dict):
                    report(ReadIssue(name, number, "malformed", "not a JSON object"))
                    continue
                yield name, number, record


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
    for file, line, record in iter_records(paths, on_error=report):
        try:
            event = AuditEvent.from_dict(record)
        except Exception as exc:  # valid JSON, but not shaped like an event
            report(ReadIssue(file, line, "malformed", f"not an audit event: {exc}"))
            continue
        yield event
