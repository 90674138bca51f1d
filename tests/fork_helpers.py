"""Forking from tests: run a body in a child that never returns into pytest."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

WAIT = 30.0


def save_child_coverage() -> None:  # pragma: no cover - runs in the child
    """Write the forked child's coverage data (``os._exit`` skips atexit)."""
    try:
        import coverage
    except ImportError:
        return
    current = coverage.Coverage.current()
    if current is not None:
        current.stop()
        current.save()


def run_child(body: Callable[[], None]) -> int:
    """Fork; run *body* in the child and return the child's exit status.

    The child never returns into pytest: it leaves with ``os._exit``. A child
    still running after WAIT seconds (a deadlock) is killed and reported.
    """
    pid = os.fork()
    if pid == 0:  # pragma: no cover - measured by the child's own data file
        code = 1
        try:
            body()
            code = 0
        finally:
            save_child_coverage()
            os._exit(code)
    deadline = time.monotonic() + WAIT
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return -9
        time.sleep(0.01)
