"""Fast time-ordered ids (UUIDv7) and RFC 3339 timestamps.

Both are on the hot path of every event, so both avoid the expensive parts of
the standard library: ``uuid.uuid4()`` reads ``os.urandom`` and builds a UUID
object, and ``datetime.now().isoformat()`` formats every field every time.
"""

from __future__ import annotations

import os
import random
import threading
import time
from datetime import UTC, datetime
from typing import Final

__all__ = ["format_rfc3339", "parse_rfc3339", "seconds_left", "uuid7"]

_getrandbits = random.getrandbits  # module-level Random reseeds itself after fork
_uuid_lock = threading.Lock()
_last_ms = 0
_counter = 0
_ms_prefix = ""
_VARIANT: Final = 0b10 << 62


def uuid7(now_ns: int | None = None) -> str:
    """Return a UUIDv7 string: 48 bits of Unix milliseconds, then randomness.

    Ids generated in one process are strictly increasing: within one
    millisecond the 12-bit ``rand_a`` field is a counter (RFC 9562, method 1),
    so sorting ids sorts events by creation; the 62 ``rand_b`` bits are
    random per id. The formatted millisecond prefix is cached. Thread-safe.
    """
    global _last_ms, _counter, _ms_prefix  # noqa: PLW0603 - process-wide state
    ms = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
    with _uuid_lock:
        if ms > _last_ms:
            _last_ms = ms
            _counter = _getrandbits(10)  # leave headroom before the 12-bit wrap
            _ms_prefix = f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-7"
        else:
            _counter += 1
            if _counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                _last_ms += 1
                _counter = 0
                _ms_prefix = f"{_last_ms >> 16:08x}-{_last_ms & 0xFFFF:04x}-7"
        prefix, counter = _ms_prefix, _counter
    tail = f"{_VARIANT | _getrandbits(62):016x}"
    return f"{prefix}{counter:03x}-{tail[:4]}-{tail[4:]}"


def _after_fork_in_child() -> None:
    # Another thread of the parent may have held the lock at fork time.
    global _uuid_lock  # noqa: PLW0603 - replaced, never shared with the parent
    _uuid_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)

# One tuple, so readers see a pair; it starts true (for the second before
# 1970), so no time can ever read an empty prefix.
_second_cache: tuple[int, str] = (-1, "1969-12-31T23:59:59.")


def format_rfc3339(ns: int) -> str:
    """Format a Unix time in nanoseconds as RFC 3339 UTC with microseconds.

    The ``YYYY-MM-DDTHH:MM:SS.`` prefix is cached per second, so most calls
    only format the microseconds. Thread-safe.
    """
    global _second_cache  # noqa: PLW0603 - one-entry cache
    second, prefix = _second_cache
    micros = ns // 1000
    if micros // 1_000_000 != second:
        second = micros // 1_000_000
        prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        _second_cache = (second, prefix)
    return f"{prefix}{micros % 1_000_000:06d}Z"


def parse_rfc3339(text: str) -> float:
    """Parse an RFC 3339 timestamp into a Unix timestamp.

    Raises:
        ValueError: when *text* is not an RFC 3339 date-time.
    """
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def seconds_left(deadline: float | None) -> float | None:
    """Seconds until *deadline* on ``time.monotonic()`` (None: no deadline),
    never negative: what is left of a timeout shared by several steps."""
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())
