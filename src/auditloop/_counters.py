"""A small thread-safe counter map, used for every drop and conversion tally."""

from __future__ import annotations

import threading
from collections import Counter

__all__ = ["Counters"]


class Counters:
    """Named counts, safe to increment from any thread.

    Increments take a lock; they happen only off the fast path (drops,
    conversions, errors), where exactness matters more than nanoseconds.
    """

    __slots__ = ("_counts", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def incr(self, name: str, n: int = 1) -> None:
        """Add *n* to the count called *name*."""
        with self._lock:
            self._counts[name] += n

    def get(self, name: str) -> int:
        """Return the count called *name* (0 when never incremented)."""
        with self._lock:
            return self._counts[name]

    def snapshot(self) -> dict[str, int]:
        """Return a copy of all non-zero counts."""
        with self._lock:
            return {k: v for k, v in self._counts.items() if v}

    def reset(self) -> None:
        """Forget every count (used in a forked child).

        Replaces the lock rather than taking it: in a forked child, a parent
        thread that held it at fork time no longer exists to release it.
        """
        self._lock = threading.Lock()
        self._counts = Counter()
