"""Durations as rules spell them: ``"30s"``, ``"10m"``, ``"1h"``, ``"2d"``."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Final

from auditloop.exceptions import RuleError

__all__ = ["format_duration", "parse_duration"]

_UNITS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART: Final = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_WHOLE: Final = re.compile(r"(?:\d+(?:\.\d+)?[smhd])+")


def parse_duration(value: object, *, allow_zero: bool = False) -> float:
    """Return *value* in seconds.

    Accepts a :class:`~datetime.timedelta`, a number of seconds, or a string
    of one or more ``<number><unit>`` parts with units ``s``, ``m``, ``h``,
    ``d`` (``"90s"``, ``"1h30m"``, ``"1.5h"``).

    Raises:
        RuleError: for anything else, negative durations, and zero unless
            *allow_zero* (the message gives the reason; callers add the
            rule and field).
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise RuleError(
            f"bad duration {value!r}: expected seconds or a string like '10m'"
        )
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if not _WHOLE.fullmatch(text):
            raise RuleError(
                f"bad duration {value!r}: use a number and a unit s, m, h or d, "
                f"like '30s', '10m', '1h30m'"
            )
        seconds = sum(
            float(number) * _UNITS[unit] for number, unit in _PART.findall(text)
        )
    else:
        raise RuleError(
            f"bad duration {value!r}: expected seconds or a string like '10m'"
        )
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "greater than zero"
        raise RuleError(f"bad duration {value!r}: must be {bound}")
    return seconds


def format_duration(seconds: float) -> str:
    """Format seconds the way rules spell them (``600.0`` → ``"10m"``)."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
