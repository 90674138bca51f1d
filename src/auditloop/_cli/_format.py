"""Terminal-safe output: readable event lines, colours, JSON lines, tables.

Everything that comes from event data goes through :func:`escape` before it
is printed, and colour codes are added only around already-escaped text, so
a crafted actor or attribute can never emit an escape sequence of its own.
JSON output keeps the data exact but writes DEL, C1 controls and
bidirectional overrides as ``\\u`` escapes (JSON encoders leave those raw).
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Sequence
from typing import IO, Any, Final

import orjson

from auditloop._render import escape

__all__ = [
    "EventWriter",
    "Style",
    "add_color_argument",
    "dumps_safe",
    "format_event",
    "format_table",
    "short",
]

#: Longest attribute value shown in a readable line before it is cut.
MAX_VALUE: Final = 200

# UTF-8 of DEL, U+0080-U+009F and U+202A-U+202E, U+2066-U+2069.
_UNSAFE_JSON: Final = re.compile(
    rb"\x7f|\xc2[\x80-\x9f]|\xe2\x80[\xaa-\xae]|\xe2\x81[\xa6-\xa9]"
)


def _json_escape(match: re.Match[bytes]) -> bytes:
    return f"\\u{ord(match[0].decode()):04x}".encode()


def dumps_safe(record: Any, *, indent: bool = False) -> bytes:
    """Encode *record* as JSON (one line, no newline) that is safe to print.

    The result decodes to exactly *record*; only characters a terminal could
    act on are written as ``\\u`` escapes. ``indent=True`` pretty-prints.
    """
    line = orjson.dumps(
        record, default=repr, option=orjson.OPT_INDENT_2 if indent else None
    )
    if b"\x7f" in line or b"\xc2" in line or b"\xe2" in line:
        line = _UNSAFE_JSON.sub(_json_escape, line)
    return line


class Style:
    """ANSI colours, or none. ``Style(enabled=False)`` returns text unchanged."""

    _CODES: Final = {
        "dim": "2",
        "bold": "1",
        "success": "32",
        "failure": "1;31",
        "denied": "33",
        "unknown": "35",
        "actor": "36",
        "alert": "1;35",
        "ok": "1;32",
        "bad": "1;31",
    }

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, name: str, text: str) -> str:
        """Wrap *text* (already escaped) in the colour called *name*."""
        if not self.enabled or not text:
            return text
        code = self._CODES.get(name)
        return f"\x1b[{code}m{text}\x1b[0m" if code else text

    @classmethod
    def for_stream(cls, when: str, stream: IO[Any]) -> Style:
        """Colours for ``--color WHEN`` (``auto``: a terminal without NO_COLOR)."""
        if when == "always":
            return cls(enabled=True)
        if when == "never":
            return cls(enabled=False)
        isatty = getattr(stream, "isatty", None)
        tty = bool(isatty and isatty())
        plain = bool(os.environ.get("NO_COLOR")) or os.environ.get("TERM") == "dumb"
        return cls(enabled=tty and not plain)


def add_color_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--color {auto,always,never}``."""
    parser.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the output: auto (default: when stdout is a terminal and "
        "NO_COLOR is unset), always, never",
    )


def short(value: Any, limit: int = MAX_VALUE) -> str:
    """Return *value* as escaped text of at most *limit* characters."""
    text = (
        value if isinstance(value, str) else orjson.dumps(value, default=repr).decode()
    )
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return escape(text)


def _ident(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("id")
    return "-" if value is None else short(value)


def format_event(record: dict[str, Any], style: Style) -> str:
    """One readable line: time, outcome, actor, action, target, key fields.

    The key fields are ``reason``, ``error`` and the ``attributes``; long
    values are cut at :data:`MAX_VALUE` characters. Everything is escaped.
    """
    outcome = record.get("outcome")
    outcome_text = short(outcome).upper() if outcome is not None else "UNKNOWN"
    colour = outcome if outcome in ("success", "failure", "denied") else "unknown"
    action = short(record.get("action", "-"))
    parts = [
        style("dim", short(record.get("time", "-"))),
        style(colour, f"{outcome_text:<7}"),
        style("actor", _ident(record.get("actor"))),
        style("alert" if action.startswith("auditloop.") else "bold", action),
        _ident(record.get("target")),
    ]
    reason = record.get("reason")
    if reason is not None:
        parts.append(f"{style('dim', 'reason=')}{short(reason)}")
    error = record.get("error")
    if isinstance(error, dict):
        text = f"{short(error.get('type', '?'))}: {short(error.get('message', ''))}"
        parts.append(f"{style('dim', 'error=')}{text}")
    attributes = record.get("attributes")
    if isinstance(attributes, dict):
        parts.extend(
            f"{style('dim', short(key) + '=')}{short(value)}"
            for key, value in attributes.items()
        )
    return " ".join(parts)


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Align already-escaped *rows* under *header* in columns."""
    widths = [len(h) for h in header]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = [
        "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()
    ]
    lines.extend(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
    return "\n".join(lines)


class EventWriter:
    """Writes events to a stream as readable lines or JSON lines, in batches.

    Not thread-safe; call :meth:`flush` before anything else writes to the
    same stream.
    """

    def __init__(self, stream: IO[str], *, json: bool, style: Style) -> None:
        self.stream = stream
        self.json = json
        self.style = style
        self._json_lines: list[bytes] = []
        self._text_lines: list[str] = []

    def write(self, record: dict[str, Any]) -> None:
        """Queue one event for output (written at the latest by :meth:`flush`)."""
        if self.json:
            self._json_lines.append(dumps_safe(record))
            if len(self._json_lines) >= 1024:
                self.flush()
        else:
            self._text_lines.append(format_event(record, self.style))
            if len(self._text_lines) >= 1024:
                self.flush()

    def flush(self) -> None:
        """Write what is queued and flush the stream."""
        if self._json_lines:
            data = b"\n".join(self._json_lines) + b"\n"
            self._json_lines = []
            buffer = getattr(self.stream, "buffer", None)
            if buffer is not None:
                self.stream.flush()
                buffer.write(data)
                buffer.flush()
            else:
                self.stream.write(data.decode())
        if self._text_lines:
            self.stream.write("\n".join(self._text_lines) + "\n")
            self._text_lines = []
        self.stream.flush()
