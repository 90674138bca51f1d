"""What every command shares: exit codes, input files, unreadable lines, time.

Input files are expanded the way ``FileSink`` rotates them: naming
``audit.jsonl`` also reads ``audit.jsonl.N`` and ``audit.jsonl.N.gz`` that
exist beside it, oldest (highest ``N``) first, so a trail is always read in
the order it was written.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TextIO

from auditloop._clock import format_rfc3339
from auditloop._reader import ReadIssue, scan_records
from auditloop._render import escape

__all__ = [
    "EXIT_FINDINGS",
    "EXIT_OK",
    "EXIT_USAGE",
    "MAX_REPORTED",
    "CLIError",
    "HelpFormatter",
    "Issues",
    "canonical_time",
    "expand_paths",
    "parse_time_arg",
    "scan",
    "time_key",
]

EXIT_OK: Final = 0
#: Findings: integrity problems, alerts with ``--fail-on-alert``, failed rule tests.
EXIT_FINDINGS: Final = 1
#: Bad arguments, or an input file that cannot be read at all.
EXIT_USAGE: Final = 2

_ROTATED: Final = re.compile(r"^(?P<base>.+)\.(?P<n>[0-9]+)(?P<gz>\.gz)?$")
_RELATIVE: Final = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([smhdw])$")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
#: Unreadable lines printed one by one before the rest are only counted.
MAX_REPORTED: Final = 50


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Wraps one-paragraph descriptions; keeps pre-formatted text (examples)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return super()._fill_text(text, width, indent)
        return argparse.HelpFormatter._fill_text(self, text, width, indent)


class CLIError(Exception):
    """A usage or input error: printed as ``auditloop CMD: error: ...``, exit 2."""


def expand_paths(names: Sequence[str]) -> list[Path]:
    """Return the files to read for *names*, rotated siblings included.

    Each name also brings its rotated files (``NAME.N`` and ``NAME.N.gz``);
    names of rotated files given explicitly (a shell glob) join their base's
    group (a ``NAME.N`` that has rotated files of its own while ``NAME``
    does not exist is a trail of its own). Within a group files come oldest
    first (highest ``N``, then the live file); groups keep the order of
    their first mention; duplicates are read once.

    Raises:
        CLIError: when a name is a directory, or neither it nor any rotated
            sibling exists.
    """
    groups: dict[str, dict[Path, tuple[int, bool]]] = {}
    for name in names:
        path = Path(name)
        if path.is_dir():
            raise CLIError(f"{name}: is a directory, not an audit file")
        match = _ROTATED.match(path.name)
        if match and path.exists() and _is_rotated(path, match["base"], names):
            base = str(path.with_name(match["base"]))
            groups.setdefault(base, {})[path] = (int(match["n"]), bool(match["gz"]))
            continue
        members = groups.setdefault(str(path), {})
        if path.exists():
            members[path] = (0, False)
        for sibling in _rotated_siblings(path):
            members[sibling.path] = (sibling.n, sibling.gz)
        if not members:
            raise CLIError(f"{name}: no such file (nor rotated {path.name}.N[.gz])")
    files: list[Path] = []
    seen: set[Path] = set()
    for members in groups.values():
        # Highest N is oldest; plain N before N.gz (the gzip is being written).
        ordered = sorted(members.items(), key=lambda kv: (-kv[1][0], kv[1][1]))
        for path, _ in ordered:
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                files.append(path)
    return files


def _is_rotated(path: Path, base_name: str, names: Sequence[str]) -> bool:
    """Whether *path*, named ``BASE.N``, is a rotated file rather than a trail.

    It is, when BASE exists or is named too, or when *path* has no rotated
    files of its own; ``audit.20260101`` beside ``audit.20260101.1`` and no
    ``audit`` is the active file of its own trail.
    """
    base = path.with_name(base_name)
    if base.exists() or any(Path(name) == base for name in names):
        return True
    return not _rotated_siblings(path)


class _Sibling:
    __slots__ = ("gz", "n", "path")

    def __init__(self, path: Path, n: int, gz: bool) -> None:
        self.path, self.n, self.gz = path, n, gz


def _rotated_siblings(path: Path) -> list[_Sibling]:
    parent = path.parent
    prefix = path.name + "."
    try:
        entries = [entry.name for entry in parent.iterdir()]
    except OSError:
        return []
    siblings = []
    for entry in entries:
        if not entry.startswith(prefix):
            continue
        match = _ROTATED.match(entry)
        if match and match["base"] == path.name:
            siblings.append(
                _Sibling(parent / entry, int(match["n"]), bool(match["gz"]))
            )
    return siblings


class Issues:
    """Reports unreadable lines and unreadable files on stderr, and counts them.

    The first :data:`MAX_REPORTED` lines are printed as ``file:line: kind
    line: message``; the rest are counted and summarised by :meth:`close`.
    Messages are escaped: file names and parser messages can carry control
    characters too.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.lines = 0
        self.failed_files: list[str] = []

    def report(self, issue: ReadIssue) -> None:
        """Print (or only count) one unreadable line."""
        self.lines += 1
        if self.lines <= MAX_REPORTED:
            print(f"auditloop: {escape(str(issue))}", file=self.stream)

    def file_error(self, path: Path, exc: BaseException) -> None:
        """Print that *path* could not be read (further), and remember it."""
        self.failed_files.append(str(path))
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        print(
            f"auditloop: {escape(str(path))}: cannot read: {reason}", file=self.stream
        )

    def close(self) -> int:
        """Print the count of unshown lines; return the exit code inputs deserve.

        Returns:
            :data:`EXIT_USAGE` when a file could not be read, else
            :data:`EXIT_OK` (unreadable lines are skipped, never fatal).
        """
        hidden = self.lines - MAX_REPORTED
        if hidden > 0:
            print(
                f"auditloop: {hidden} more unreadable lines not shown "
                f"({self.lines} in all)",
                file=self.stream,
            )
        return EXIT_USAGE if self.failed_files else EXIT_OK


def scan(paths: Sequence[Path], issues: Issues) -> Iterator[dict[str, Any]]:
    """Yield the record of every readable line of *paths*, in order.

    Unreadable lines and files are reported to *issues* and skipped (see
    :func:`auditloop._reader.scan_records` for the rules).
    """
    return scan_records(paths, on_error=issues.report, on_file_error=issues.file_error)


def parse_time_arg(text: str, now: float | None = None) -> float:
    """Parse ``--since``/``--until``: a duration ago (``90s``, ``15m``, ``1h``,
    ``2d``, ``1w``) or an RFC 3339 time (UTC when no offset is given).

    Returns:
        Unix time in seconds.

    Raises:
        argparse.ArgumentTypeError: for anything else (argparse turns it
            into a usage error, exit 2).
    """
    relative = _RELATIVE.match(text.strip())
    if relative:
        seconds = float(relative[1]) * _UNIT_SECONDS[relative[2]]
        result = (time.time() if now is None else now) - seconds
    else:
        try:
            parsed = datetime.fromisoformat(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is neither a duration (90s, 15m, 1h, 2d, 1w) nor an "
                "RFC 3339 time (2026-01-31T12:00:00Z)"
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        result = parsed.timestamp()
    try:
        canonical_time(result)  # what the filters compare against
    except (ValueError, OverflowError, OSError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is out of range (years 1 to 9999 in UTC)"
        ) from None
    return result


def canonical_time(seconds: float) -> str:
    """Format Unix *seconds* the way auditloop writes ``time`` (27 characters)."""
    return format_rfc3339(round(seconds * 1_000_000) * 1000)


def time_key(value: object) -> str | None:
    """Return *value* (an event's ``time``) in auditloop's canonical form.

    auditloop writes ``YYYY-MM-DDTHH:MM:SS.ffffffZ``, which sorts as text; that
    form is returned as is (the fast path). Other RFC 3339 spellings are
    parsed and reformatted; anything else gives None.
    """
    if (
        type(value) is str
        and len(value) == 27
        and value[26] == "Z"
        and value[10] == "T"
    ):
        return value
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return canonical_time(parsed.timestamp())
    except (ValueError, OverflowError, OSError):  # not a time, or out of range
        return None
