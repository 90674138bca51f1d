"""Encode event dicts to JSON with orjson, never raising, never losing an event.

The fast path is one ``orjson.dumps`` call with a ``default`` hook for the
common non-JSON types. Anything orjson still refuses (non-string keys, huge
integers, cycles, too deep nesting) and any line longer than the string cap
sends the event through :func:`sanitize`, which rebuilds it from JSON-safe
parts, marks what it changed, and counts the conversion.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
from collections.abc import Mapping
from decimal import Decimal
from pathlib import PurePath
from typing import Any, Final

import attrs
import orjson

from auditloop._counters import Counters

__all__ = ["COUNTERS", "MAX_STRING", "conversions", "encode", "sanitize", "to_jsonable"]

#: Strings longer than this (in characters) are cut and marked as truncated.
MAX_STRING: Final = 64 * 1024
_MAX_DEPTH: Final = 64
_TRUNCATED: Final = "…[truncated {} chars]"
_OPTIONS: Final = 0

#: Process-wide tally of converted values, shown as ``stats()["conversions"]``.
COUNTERS: Final = Counters()


def conversions() -> int:
    """How many values were converted or replaced so far in this process."""
    return COUNTERS.get("conversions")


def _marked_repr(obj: object) -> str:
    try:
        text = repr(obj)
    except Exception as exc:  # a broken __repr__ must not lose the event
        text = f"<unrepresentable: {type(exc).__name__}>"
    if len(text) > 200:
        text = text[:200] + "…"
    return f"<repr {type(obj).__qualname__}: {text}>"


def to_jsonable(obj: Any) -> Any:
    """The ``default`` hook: map a non-JSON value to a JSON-safe one.

    Known types convert losslessly where JSON allows (sets → lists, Decimal →
    string, Path → string, Enum → value, exceptions → ``{type, message}``,
    attrs/dataclass instances → dicts, bytes → text or base64); anything else
    becomes a marked ``repr``. Never raises.
    """
    COUNTERS.incr("conversions")
    try:
        return _convert(obj)
    except Exception:  # a broken __str__, __iter__, __lt__… must not lose the event
        return _marked_repr(obj)


def _convert(obj: Any) -> Any:
    if isinstance(obj, set | frozenset):
        try:
            return sorted(obj)
        except Exception:  # unorderable members: keep them, in set order
            return list(obj)
    if isinstance(obj, Decimal | PurePath):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, BaseException):
        return {"type": type(obj).__qualname__, "message": str(obj)}
    if isinstance(obj, bytes | bytearray | memoryview):
        raw = bytes(obj)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(raw).decode("ascii")}
    if attrs.has(type(obj)):
        return attrs.asdict(obj, recurse=False)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):  # subclasses orjson refuses
        return list(obj)
    if isinstance(obj, Mapping):
        return dict(obj)
    return _marked_repr(obj)


def sanitize(obj: Any, depth: int = 0) -> Any:
    """Rebuild *obj* from JSON-safe parts only.

    Cuts strings past :data:`MAX_STRING`, escapes lone surrogates (which
    UTF-8 cannot carry), stringifies non-string keys and integers outside 64
    bits, replaces a container met again inside itself with ``"<cyclic>"``
    and nesting deeper than 64 levels with ``"<too deep>"``. Never raises.
    """
    return _sanitize(obj, depth, set())


def _sanitize(obj: Any, depth: int, active: set[int]) -> Any:
    # ``active``: ids of the containers (and converted objects) on the current
    # path, so a cycle ends at its first repetition instead of fanning out.
    if isinstance(obj, str):
        return _text(obj)
    if obj is None or isinstance(obj, bool | float):
        return obj
    if isinstance(obj, int):
        if -(2**63) <= obj < 2**64:
            return obj
        COUNTERS.incr("conversions")
        return str(obj)
    key = id(obj)
    if key in active:
        COUNTERS.incr("conversions")
        return "<cyclic>"
    if depth >= _MAX_DEPTH:
        COUNTERS.incr("conversions")
        return "<too deep>"
    active.add(key)
    try:
        if isinstance(obj, Mapping):
            try:
                items = list(obj.items())
            except Exception:
                return _sanitize(_marked_repr(obj), depth, active)
            return {_key(k): _sanitize(v, depth + 1, active) for k, v in items}
        if isinstance(obj, list | tuple):
            return [_sanitize(v, depth + 1, active) for v in obj]
        try:
            orjson.dumps(obj, option=_OPTIONS)  # natively encodable (datetime…)
        except Exception:
            return _sanitize(to_jsonable(obj), depth + 1, active)
        return obj
    finally:
        active.discard(key)


def _text(text: str) -> str:
    if len(text) > MAX_STRING:
        COUNTERS.incr("conversions")
        text = text[:MAX_STRING] + _TRUNCATED.format(len(text) - MAX_STRING)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: keep them visible, escaped
        COUNTERS.incr("conversions")
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _key(key: object) -> str:
    if isinstance(key, str):
        return _text(key)
    COUNTERS.incr("conversions")
    try:
        text = str(key)
    except Exception:
        text = _marked_repr(key)
    return _text(text)


def encode(event: Mapping[str, Any]) -> bytes:
    """Encode one event dict as a JSON object (no trailing newline).

    Never raises; the result is always valid JSON no longer than about
    :data:`MAX_STRING` per string value.
    """
    try:
        line = orjson.dumps(event, default=to_jsonable, option=_OPTIONS)
    except Exception:
        line = b""
    if not line or len(line) > MAX_STRING:
        # Slow path: unencodable or possibly oversized. Rebuild, then encode.
        line = orjson.dumps(sanitize(event), default=to_jsonable, option=_OPTIONS)
    # orjson's bytes sit in a 4 KiB allocation: keep a compact copy.
    return memoryview(line).tobytes()
