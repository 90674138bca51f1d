"""One readable line per event, safe to print to a terminal."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

__all__ = ["escape", "render_line"]

# C0 controls, DEL and C1 controls: none may reach a terminal unescaped, or a
# crafted attribute could move the cursor, retitle the window or hide lines.
# Bidirectional overrides and isolates are escaped too: they reorder what is
# shown, so a line could read differently from what it contains.
_CONTROL: Final = {
    **{i: f"\\x{i:02x}" for i in range(0x20)},
    0x7F: "\\x7f",
    **{i: f"\\u{i:04x}" for i in range(0x80, 0xA0)},
    **{i: f"\\u{i:04x}" for i in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))},
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
}


def escape(text: str) -> str:
    """Return *text* with every control character written as an escape."""
    return text.translate(_CONTROL)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value, default=repr).decode("utf-8")


def render_line(event: Mapping[str, Any]) -> str:
    """Format an event dict as ``time outcome actor action target k=v ...``."""
    actor = event.get("actor")
    target = event.get("target")
    parts = [
        str(event.get("time", "-")),
        str(event.get("outcome", "unknown")).upper(),
        str(actor.get("id", "-")) if isinstance(actor, Mapping) else "-",
        str(event.get("action", "-")),
        str(target.get("id", "-")) if isinstance(target, Mapping) else "-",
    ]
    error = event.get("error")
    if isinstance(error, Mapping):
        parts.append(f"error={error.get('type')}:{error.get('message')}")
    attributes = event.get("attributes")
    if isinstance(attributes, Mapping):
        parts.extend(f"{k}={_text(v)}" for k, v in attributes.items())
    return escape(" ".join(parts))
