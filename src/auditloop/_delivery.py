"""The delivery engine shared by every sink.

Each sink gets one :class:`AsyncDelivery` (bounded queue + background writer
thread, the default) or :class:`SyncDelivery` (write in the caller's thread,
for fail-closed auditing). Sinks only write batches; queueing, batching,
overflow, flush/shutdown deadlines, fork safety and drop counting live here,
once.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, Final, Literal

import attrs

from auditloop._clock import seconds_left
from auditloop._counters import Counters
from auditloop._options import checked_options
from auditloop._types import Sink
from auditloop.exceptions import AuditError, ConfigurationError

__all__ = [
    "AsyncDelivery",
    "Delivery",
    "DeliveryClosed",
    "PartialWrite",
    "SyncDelivery",
    "after_sync_write",
    "start_delivery",
]

Overflow = Literal["block", "drop_oldest", "drop_newest"]
_copy: Final = b"".join
_OVERFLOWS: Final = ("block", "drop_oldest", "drop_newest")


def _positive(name: str, allow_zero: bool = False) -> Callable[[Any, Any, Any], None]:
    def check(_inst: Any, _attr: Any, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigurationError(
                f"Delivery: {name} must be a number, got {value!r}"
            )
        if value < 0 or (value == 0 and not allow_zero):
            bound = "zero or more" if allow_zero else "greater than zero"
            raise ConfigurationError(f"Delivery: {name} must be {bound}, got {value!r}")

    return check


def _one_of(name: str, allowed: tuple[str, ...]) -> Callable[[Any, Any, Any], None]:
    def check(_inst: Any, _attr: Any, value: Any) -> None:
        if value not in allowed:
            raise ConfigurationError(
                f"Delivery: {name} must be one of {', '.join(allowed)}; got {value!r}"
            )

    return check


@attrs.frozen
class Delivery:
    """How events reach one sink.

    Args:
        mode: ``"async"`` (default): the caller appends to a bounded queue and
            never waits on I/O; a background thread writes batches.
            ``"sync"``: the caller writes the event itself before returning.
        on_error: ``"count"`` (default): failed writes are counted as drops.
            ``"raise"`` (sync mode only): a failed write raises
            :class:`~auditloop.exceptions.AuditError` into the audited call —
            fail-closed auditing.
        queue_size: events held in memory per sink (async mode).
        batch_size: most events handed to one ``write()``.
        flush_interval: longest a queued event waits before it is written (s).
        overflow: when the queue is full: ``"block"`` (default) waits up to
            ``block_timeout`` for room, then drops and counts (``queue_full``);
            ``"drop_oldest"`` and ``"drop_newest"`` never wait.
        block_timeout: seconds a caller waits for room with ``"block"``.
    """

    mode: Literal["async", "sync"] = attrs.field(
        default="async", validator=_one_of("mode", ("async", "sync"))
    )
    on_error: Literal["count", "raise"] = attrs.field(
        default="count", validator=_one_of("on_error", ("count", "raise"))
    )
    queue_size: int = attrs.field(default=10_000, validator=_positive("queue_size"))
    batch_size: int = attrs.field(default=512, validator=_positive("batch_size"))
    flush_interval: float = attrs.field(
        default=0.2, validator=_positive("flush_interval")
    )
    overflow: Overflow = attrs.field(
        default="block", validator=_one_of("overflow", _OVERFLOWS)
    )
    block_timeout: float = attrs.field(
        default=5.0, validator=_positive("block_timeout", allow_zero=True)
    )

    def __attrs_post_init__(self) -> None:
        if self.on_error == "raise" and self.mode != "sync":
            raise ConfigurationError(
                'Delivery: on_error="raise" needs mode="sync" (an async write '
                "fails after the audited call has returned)"
            )


# attrs generates Delivery.__init__; route a misspelt option to a clear error.
Delivery.__init__ = checked_options(Delivery.__init__)  # type: ignore[method-assign]


class DeliveryClosed(Exception):  # noqa: N818 - a signal, not an error
    """Raised by ``put()`` on a closed delivery whose events are handed over.

    Set ``hand_over`` on a delivery (``configure()`` does, for the Auditor
    it replaces) and its Auditor passes such events to its successor instead
    of counting them as ``closed`` drops. Never reaches the application.
    """


class PartialWrite(Exception):  # noqa: N818 - a report, raised from the cause
    """Raised by a sink whose ``write()`` stored the first *stored* events
    of the batch before failing (``raise PartialWrite(n) from error``): the
    engine counts those as written and only the rest as ``sink_error``."""

    def __init__(self, stored: int) -> None:
        super().__init__(f"{stored} events of the batch were stored")
        self.stored = stored


class _SyncWrite(threading.local):
    #: Records deferred until this thread's synchronous write is done, or
    #: None outside one.
    pending: list[Callable[[], None]] | None = None


_sync_write = _SyncWrite()


def after_sync_write(record: Callable[[], None]) -> bool:
    """Run *record* once this thread's synchronous write is done (True), or
    tell the caller to run it now (False: no such write in progress).

    A sink that records events of its own from inside ``write()`` goes
    through every delivery again; doing that under a synchronous
    delivery's lock would deadlock against another sink's lock, or against
    the rule engine's, taken in the other order by another thread.
    """
    pending = _sync_write.pending
    if pending is None:
        return False
    pending.append(record)
    return True


class _FlushMarker:
    """Queued behind the events a flush must wait for."""

    __slots__ = ("done", "sink_flush_timeout", "written")

    def __init__(self, sink_flush_timeout: float | None) -> None:
        self.done = threading.Event()
        self.sink_flush_timeout = sink_flush_timeout
        self.written = True  # False: released by a shutdown that gave up


def _describe(exc: BaseException) -> str:
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:  # a broken __str__ must not kill the writer thread
        text = f"{type(exc).__name__}: <unprintable message>"
    return text if len(text) <= 300 else text[:300] + "…"


class _BaseDelivery:
    def __init__(self, sink: Sink, policy: Delivery, name: str) -> None:
        self.sink = sink
        self.policy = policy
        self.name = name
        # A sink that counts its own drops (http_4xx, retry_exhausted…) exposes
        # a ``drops`` Counters; the engine shares it so every drop is in one place.
        sink_drops = getattr(sink, "drops", None)
        self.drops = sink_drops if isinstance(sink_drops, Counters) else Counters()
        self.written = 0
        self.errors = 0
        self.last_error: str | None = None
        self.hand_over = False

    def _failed(self, exc: BaseException, count: int) -> None:
        """Count a failed ``write()`` of *count* events (less what it stored)."""
        if isinstance(exc, PartialWrite):
            self.written += exc.stored
            count -= exc.stored
            exc = exc.__cause__ or exc
        self.errors += 1
        self.last_error = _describe(exc)
        self.drops.incr("sink_error", count)

    def stats(self) -> dict[str, Any]:
        """Counters for ``auditloop.stats()``, plus the sink's own ``stats()``."""
        result: dict[str, Any] = {
            "mode": self.policy.mode,
            "written": self.written,
            "queued": 0,
            "dropped": self.drops.snapshot(),
            "errors": self.errors,
            "last_error": self.last_error,
        }
        sink_stats = getattr(self.sink, "stats", None)
        if callable(sink_stats):
            try:
                result["sink"] = sink_stats()
            except Exception as exc:
                result["sink"] = {"error": _describe(exc)}
        return result


class SyncDelivery(_BaseDelivery):
    """Writes each event in the caller's thread, under a lock.

    Blocking: the caller waits for the sink. With ``on_error="raise"`` a
    failed write raises :class:`AuditError`; otherwise it is counted.
    """

    def __init__(self, sink: Sink, policy: Delivery, name: str) -> None:
        super().__init__(sink, policy, name)
        self._lock = threading.Lock()
        self._closed = False
        # Set when shutdown() timed out behind a write in another thread: that
        # write closes the sink when it ends (see _put).
        self._close_pending = False

    def put(self, line: bytes) -> None:
        """Write *line* now; raise :class:`AuditError` if fail-closed and it fails.

        What the sink asks to record from inside ``write()`` (its checkpoint
        and retention events, see :func:`after_sync_write`) is recorded
        after the lock is released, before this returns.
        """
        if _sync_write.pending is not None:  # a sink's own event, being written
            self._put(line)
            return
        pending: list[Callable[[], None]] = []
        _sync_write.pending = pending
        try:
            self._put(line)
        finally:
            _sync_write.pending = None
            for record in pending:  # each may write through a delivery again
                record()

    def _put(self, line: bytes) -> None:
        with self._lock:
            try:
                self._put_locked(line)
            finally:
                self._close_if_pending()

    def _put_locked(self, line: bytes) -> None:
        """Write *line* (the lock is held)."""
        if self._closed:
            if self.hand_over:
                raise DeliveryClosed
            self.drops.incr("closed")
            if self.policy.on_error == "raise":
                raise AuditError(f"audit sink {self.name} is closed")
            return
        try:
            self.sink.write((line,))
        except Exception as exc:
            self._failed(exc, 1)
            if self.policy.on_error == "raise":
                msg = f"audit record not written to {self.name}: {self.last_error}"
                raise AuditError(msg) from exc
            return
        self.written += 1

    def flush(self, timeout: float | None) -> bool:
        """Flush the sink; return False if it raised, or if a write still
        running in another thread kept it busy past *timeout*."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._acquire(timeout):
            return False
        try:
            if self._closed:  # closed sinks were flushed when closing
                return not self._close_pending
            self.sink.flush(seconds_left(deadline))
        except Exception as exc:
            self.errors += 1
            self.last_error = _describe(exc)
            return False
        finally:
            self._lock.release()
        return True

    def shutdown(self, timeout: float | None, close_sink: bool = True) -> bool:
        """Flush and (unless the sink is reused) close it, within *timeout* in all.

        A write stuck in another thread past the deadline keeps the sink
        open (closing it under that write is not safe); later events are
        refused and counted as ``closed`` all the same.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        ok = self.flush(timeout)
        if close_sink:
            if not self._acquire(seconds_left(deadline)):
                # The write holding the lock closes the sink when it ends.
                self._close_pending = True
                self._closed = True
                return False
            try:
                self._closed = True
                self.sink.close(seconds_left(deadline))
            except Exception as exc:
                self.errors += 1
                self.last_error = _describe(exc)
                ok = False
            finally:
                self._lock.release()
        return ok

    def _acquire(self, timeout: float | None) -> bool:
        if timeout is None:
            return self._lock.acquire()
        return self._lock.acquire(timeout=max(0.0, timeout))

    def _close_if_pending(self) -> None:
        """Under the lock: close the sink a timed-out shutdown left open."""
        if self._close_pending:
            self._close_pending = False
            try:
                self.sink.close(None)
            except Exception as exc:
                self.errors += 1
                self.last_error = _describe(exc)

    def after_fork_in_child(self) -> None:
        """Give the child a fresh lock (the parent's may have been held)."""
        self._lock = threading.Lock()


_live: weakref.WeakSet[AsyncDelivery | SyncDelivery] = weakref.WeakSet()


class AsyncDelivery(_BaseDelivery):
    """A bounded queue and one background writer thread for one sink.

    ``put()`` never does I/O: it appends to a deque (thread-safe, lock-free
    under the GIL) and wakes the writer when a batch is ready. The writer
    thread starts on the first event, so configuring does not spawn threads
    for sinks that never receive one. The bound is checked before appending,
    so concurrent producers may overshoot it by at most one event each.
    """

    def __init__(
        self,
        sink: Sink,
        policy: Delivery,
        name: str,
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(sink, policy, name)
        self._on_idle = on_idle
        # Wake the writer for a full batch, or a full queue when the queue is
        # smaller than a batch (else drop_* policies would drop until the
        # next flush_interval tick).
        self._wake_at = min(policy.batch_size, policy.queue_size)
        self._queue_size = policy.queue_size  # read on every put()
        self._reset()

    def _reset(self) -> None:
        self._queue: deque[bytes | _FlushMarker] = deque()
        self._wake = threading.Event()
        self._woken = False  # put() has set _wake since the writer woke
        self._room = threading.Condition(threading.Lock())
        self._start_lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._stopping = False
        self._closed = False
        self._inflight = 0
        # Set by a shutdown that gave up waiting and counted the batch in
        # flight as ``shutdown_timeout``; its late outcome is then not
        # counted again. Both sides under _inflight_lock.
        self._inflight_abandoned = False
        self._inflight_lock = threading.Lock()

    # -- producer side -------------------------------------------------------

    def put(self, line: bytes) -> None:
        """Queue *line* for the writer. Never raises; may wait (overflow "block")."""
        queue = self._queue
        queued = len(queue)
        if queued >= self._queue_size and not self._make_room():
            return
        if self._closed and not self._draining_own():
            if self.hand_over:
                raise DeliveryClosed
            self.drops.incr("closed")
            return
        if queued + 1 < self._wake_at:  # no batch ready yet
            queue.append(line)
            if self._worker is None:
                self._start()
            return
        if queued >= self._wake_at:
            # A backlog is building: orjson's bytes sit in a 4 KiB allocation,
            # so queue a compact copy (a full queue stays ~4 MB, not ~40 MB);
            # join() makes one exact-size copy, twice as fast as memoryview.
            line = _copy((line, b""))
        queue.append(line)
        if self._worker is None:
            self._start()
        elif not self._woken:  # one set() per wake-up, not one per event
            self._woken = True
            self._wake.set()

    def _make_room(self) -> bool:
        policy = self.policy
        if policy.overflow == "drop_oldest":
            try:
                oldest = self._queue.popleft()
            except IndexError:  # the writer emptied it meanwhile
                return True
            if isinstance(oldest, _FlushMarker):  # never drop a flush waiter
                self._queue.appendleft(oldest)
                self.drops.incr("queue_full")
                return False
            self.drops.incr("queue_full")
            return True
        if policy.overflow == "drop_newest" or self._is_writer_thread():
            self.drops.incr("queue_full")
            return False
        # "block": wait for the writer to make room, up to block_timeout. (A
        # non-empty queue always has a writer: put() and flush() start it.)
        self._wake.set()
        deadline = time.monotonic() + policy.block_timeout
        with self._room:
            while len(self._queue) >= policy.queue_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._room.wait(remaining):
                    if len(self._queue) < policy.queue_size:
                        break
                    self.drops.incr("queue_full")
                    return False
        return True

    def _draining_own(self) -> bool:
        """True for events the sink itself records from inside ``write()``
        (checkpoint, retention) while the writer drains after ``shutdown()``:
        it writes them too. Not for its idle hook's reports, which could
        otherwise keep a failing writer busy forever."""
        return self._inflight > 0 and self._is_writer_thread()

    def _worker_alive(self) -> bool:
        worker = self._worker
        return worker is not None and worker.is_alive()

    def _is_writer_thread(self) -> bool:
        worker = self._worker
        return worker is not None and worker.ident == threading.get_ident()

    def _start(self) -> None:
        with self._start_lock:
            if self._worker is not None:
                return
            worker = threading.Thread(
                target=self._run, name=f"auditloop-{self.name}", daemon=True
            )
            worker.start()
            self._worker = worker

    # -- writer side ---------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self.policy.flush_interval)
            self._wake.clear()
            self._woken = False  # before draining: later puts wake us again
            self._drain()
            if self._on_idle is not None:
                try:
                    self._on_idle()
                except Exception as exc:  # the writer must outlive its hooks
                    self.errors += 1
                    self.last_error = _describe(exc)
            if self._stopping and not self._queue:
                break
        self._close_sink()

    def _drain(self) -> None:
        queue, batch_size = self._queue, self.policy.batch_size
        batch: list[bytes] = []
        while True:
            try:
                item = queue.popleft()
            except IndexError:
                break
            if isinstance(item, _FlushMarker):
                self._write(batch)
                batch = []
                self._flush_sink(item.sink_flush_timeout)
                item.done.set()
                continue
            batch.append(item)
            if len(batch) >= batch_size:
                self._write(batch)
                batch = []
        self._write(batch)

    def _write(self, batch: list[bytes]) -> None:
        if not batch:
            return
        self._inflight = len(batch)
        failure: Exception | None = None
        try:
            self.sink.write(batch)
        except Exception as exc:
            failure = exc
        with self._inflight_lock:
            self._inflight = 0
            abandoned, self._inflight_abandoned = self._inflight_abandoned, False
        if abandoned:
            pass  # shutdown() counted it (each event once, even if written)
        elif failure is not None:
            self._failed(failure, len(batch))
        else:
            self.written += len(batch)
        with self._room:
            self._room.notify_all()

    def _flush_sink(self, timeout: float | None) -> None:
        try:
            self.sink.flush(timeout)
        except Exception as exc:
            self.errors += 1
            self.last_error = _describe(exc)

    def _close_sink(self) -> None:
        if self._close_on_stop:
            try:
                self.sink.close(None)
            except Exception as exc:
                self.errors += 1
                self.last_error = _describe(exc)

    # -- control -------------------------------------------------------------

    def flush(self, timeout: float | None) -> bool:
        """Wait until everything queued before this call is written and flushed.

        Returns:
            True when done within *timeout* seconds, False otherwise (the
            events stay queued and will still be written).
        """
        if self._closed and not self._worker_alive():
            return not self._queue  # shut down: nothing will be written anymore
        if self._worker is None and not self._queue:
            self._flush_sink(timeout)
            return True
        marker = _FlushMarker(timeout)
        self._queue.append(marker)
        if self._worker is None:
            self._start()
        self._wake.set()
        return marker.done.wait(timeout) and marker.written

    def shutdown(self, timeout: float | None, close_sink: bool = True) -> bool:
        """Write what is queued, close the sink, stop the writer.

        Returns within *timeout* seconds. Events still queued (or in a write
        that is still running) then are counted as ``shutdown_timeout`` drops.
        """
        self._close_on_stop = close_sink
        self._closed = True
        if self._worker is None:
            if self._queue:
                self._start()
            else:
                self._close_sink()
                return True
        self._stopping = True
        self._wake.set()
        worker = self._worker
        assert worker is not None
        worker.join(timeout)
        if worker.is_alive():
            # The in-flight batch is counted here, before a sink that can
            # give it up (HTTPSink) is told to: the write it wakes must find
            # it counted already, and must neither count nor spool it too.
            with self._inflight_lock:
                lost = self._inflight
                self._inflight_abandoned = lost > 0
            abandon = getattr(self.sink, "abandon", None)
            # Only for a sink being closed: one the next Auditor keeps must
            # go on counting and retrying its own writes.
            if self._close_on_stop and callable(abandon):
                try:
                    abandon()
                except Exception as exc:
                    self.errors += 1
                    self.last_error = _describe(exc)
            # The writer still pops from the queue: take items out one by one
            # (iterating a deque another thread changes raises). A flush
            # waiting on a marker is released, told its events were not
            # written.
            while True:
                try:
                    item = self._queue.popleft()
                except IndexError:
                    break
                if isinstance(item, _FlushMarker):
                    item.written = False
                    item.done.set()
                else:
                    lost += 1
            self.drops.incr("shutdown_timeout", lost)
            return False
        # A producer that passed the closed check just before shutdown began
        # may have appended after the writer's last look: count, never strand.
        late = 0
        while self._queue:
            item = self._queue.popleft()
            if isinstance(item, _FlushMarker):
                item.done.set()
            else:
                late += 1
        if late:
            self.drops.incr("closed", late)
        return True

    _close_on_stop = True

    def stats(self) -> dict[str, Any]:
        """Counters for ``auditloop.stats()``, with the current queue length."""
        result = super().stats()
        result["queued"] = len(self._queue)
        return result

    def after_fork_in_child(self) -> None:
        """Start the child with an empty queue and no writer thread.

        Events queued in the parent before the fork are the parent's to
        deliver; copying them would deliver them twice.
        """
        self._reset()
        self.drops.reset()
        self.written = 0


def start_delivery(
    sink: Sink,
    policy: Delivery,
    name: str,
    on_idle: Callable[[], None] | None = None,
) -> AsyncDelivery | SyncDelivery:
    """Wrap *sink* in the delivery engine its policy asks for."""
    delivery: AsyncDelivery | SyncDelivery
    if policy.mode == "sync":
        delivery = SyncDelivery(sink, policy, name)
    else:
        delivery = AsyncDelivery(sink, policy, name, on_idle)
    _live.add(delivery)
    return delivery


def _after_fork_in_child() -> None:
    for delivery in list(_live):
        delivery.after_fork_in_child()
        # Sinks with locks or connections of their own reset them here: a lock
        # held by the parent's writer thread at fork time would never be freed.
        sink_hook = getattr(delivery.sink, "after_fork_in_child", None)
        if callable(sink_hook):
            try:
                sink_hook()
            except Exception as exc:  # one broken sink must not stop the others
                delivery.errors += 1
                delivery.last_error = _describe(exc)


os.register_at_fork(after_in_child=_after_fork_in_child)
