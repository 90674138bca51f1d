"""Running alert actions away from the audited call.

Sync actions run one after another on a daemon worker thread; an action that
returns an awaitable (an ``async def`` function) has it scheduled on a
private event loop running in its own daemon thread, so a slow coroutine
never holds up the others. Errors are counted and reported to a callback
(the engine turns them into ``auditloop.rule.error`` events).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Final

from auditloop._counters import Counters

if TYPE_CHECKING:
    from auditloop.rules._alert import Alert
    from auditloop.rules._kinds import Action

__all__ = ["Dispatcher"]

#: Queued actions beyond this are dropped (counted): alerts must not grow
#: memory without bound when an action is stuck.
_MAX_QUEUE: Final = 10_000

ErrorHandler = Callable[["Action", "Alert", BaseException], None]


class _EscapedError(Exception):
    """Carries a SystemExit or KeyboardInterrupt a coroutine action raised.

    asyncio lets those two through its event loop, which would stop the
    loop thread for good; wrapped, the action just counts as failed.
    """

    def __init__(self, original: BaseException) -> None:
        super().__init__(repr(original))
        self.original = original


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    try:
        return await awaitable
    except (SystemExit, KeyboardInterrupt) as exc:
        raise _EscapedError(exc) from exc


class Dispatcher:
    """A queue of (action, alert) pairs and the threads that run them.

    Thread-safe. :meth:`submit` never blocks and never raises.
    """

    def __init__(self, on_error: ErrorHandler, *, max_queue: int = _MAX_QUEUE) -> None:
        self._on_error = on_error
        self._max_queue = max_queue
        self.counters = Counters()
        self._init_state()

    def _init_state(self) -> None:
        self._cond = threading.Condition()
        self._queue: deque[tuple[Action, Alert]] = deque()
        self._busy = 0  # running sync actions + unfinished coroutines
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._futures: set[Future[Any]] = set()
        self._closed = False

    def submit(self, action: Action, alert: Alert) -> None:
        """Queue *action* to run with *alert*; drops (counted) when full or closed."""
        with self._cond:
            if self._closed or len(self._queue) >= self._max_queue:
                self.counters.incr("dropped")
                return
            self._queue.append((action, alert))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="auditloop-rule-actions", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                action, alert = self._queue.popleft()
                self._busy += 1
            pending = False
            try:
                result = action(alert)
                if inspect.isawaitable(result):
                    pending = self._schedule(result, action, alert)
                else:
                    self.counters.incr("run")
            except BaseException as exc:
                # Even SystemExit (sys.exit() in a callback): the thread must
                # live on, or every later action would wait forever.
                self._failed(action, alert, exc)
            finally:
                if not pending:
                    self._done()

    def _done(self) -> None:
        with self._cond:
            self._busy -= 1
            self._cond.notify_all()

    def _failed(self, action: Action, alert: Alert, exc: BaseException) -> None:
        self.counters.incr("errors")
        try:
            self._on_error(action, alert, exc)
        except Exception:
            self.counters.incr("report_errors")

    def _schedule(
        self, awaitable: Awaitable[Any], action: Action, alert: Alert
    ) -> bool:
        """Run *awaitable* on the private loop; True when it was scheduled."""
        with self._cond:
            if self._closed:
                self.counters.incr("dropped")
                return False
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.new_event_loop()
                self._loop_thread = threading.Thread(
                    target=loop.run_forever, name="auditloop-rule-loop", daemon=True
                )
                self._loop_thread.start()
        future = asyncio.run_coroutine_threadsafe(_awaited(awaitable), loop)
        with self._cond:
            self._futures.add(future)

        def finished(fut: Future[Any]) -> None:
            with self._cond:
                self._futures.discard(fut)
            if fut.cancelled():
                self.counters.incr("dropped")
            elif (exc := fut.exception()) is not None:
                if isinstance(exc, _EscapedError):
                    exc = exc.original
                self._failed(action, alert, exc)
            else:
                self.counters.incr("run")
            self._done()

        future.add_done_callback(finished)
        return True

    def wait(self, timeout: float | None) -> bool:
        """Block until every queued action finished, or *timeout* seconds passed.

        Returns True when nothing is queued or running.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def close(self, timeout: float | None) -> bool:
        """Drain within *timeout*, then stop; unstarted actions are dropped (counted).

        Returns True when everything ran in time. A sync action still running
        is left to finish on its daemon thread; coroutines still pending are
        cancelled. Returns within about *timeout* seconds (or one more second
        for the threads to stop when *timeout* is ``None``).
        """
        deadline = None if timeout is None else time.monotonic() + timeout

        def left() -> float:
            if deadline is None:
                return 1.0
            return max(0.0, deadline - time.monotonic())

        ok = self.wait(timeout)
        with self._cond:
            self._closed = True
            if self._queue:
                self.counters.incr("dropped", len(self._queue))
                self._queue.clear()
            self._cond.notify_all()
            thread, loop, loop_thread = self._thread, self._loop, self._loop_thread
        if thread is not None and ok:
            thread.join(left())
        if loop is not None and loop_thread is not None:
            loop.call_soon_threadsafe(_cancel_and_stop, loop)
            loop_thread.join(left())
            if not loop_thread.is_alive():
                loop.close()
        return ok

    def after_fork_in_child(self) -> None:
        """Forget the parent's threads and queue (the parent runs those actions)."""
        counters = self.counters
        self._init_state()
        self.counters = counters


def _cancel_and_stop(loop: asyncio.AbstractEventLoop) -> None:
    for task in asyncio.all_tasks(loop):
        task.cancel()
    # One more iteration lets the cancellations run before the loop stops.
    loop.call_soon(loop.stop)
