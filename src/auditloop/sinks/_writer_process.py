"""``FileSink(writer="process")``: a helper process that writes the file.

A chained ``FileSink`` spends ~1.5 µs per record hashing (HMAC-SHA256 through
``hashlib``, which holds the GIL for inputs this small), and the GIL makes
that time the application's too: on a CPU-bound service, chaining costs
~30-50 % per audited call. With ``writer="process"`` the sink's writer
thread only hands each batch to a helper Python process over a pipe and
waits for its answer; the helper runs an ordinary in-process ``FileSink``
with the same options, so sealing, rotation, retention and checkpoints
happen on another core, under another GIL, with the same code.

What stays the same: ``write()`` returns only once the helper's ``write()``
has returned (a failure is raised here, a partial one as ``PartialWrite``),
so the delivery engine counts exactly as before; the sink's own events
(checkpoints, retention) come back with the answers and go through the
Auditor the sink is attached to.

Protocol (both ways length-prefixed, little-endian):

- request: ``<op:1 byte><id:u32><count:u32><length:u32>`` then *length*
  payload bytes. Ops: ``S`` start (orjson options), ``W`` write (*count*
  lines joined by newlines), ``A`` attach (forward notices from now on),
  ``F`` flush, ``C`` close.
- answer: ``<id:u32><length:u32>`` then an orjson object: ``notices`` and,
  on failure, ``error``, ``errno`` and ``stored``.

The helper ignores SIGINT and SIGTERM (a Ctrl-C or a stop signal sent to the
whole process group must not kill it before the application's exit flush
reaches it) and exits when its stdin closes: after ``close()``, or when the
application dies, after writing everything it was sent.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any, BinaryIO, Final

import orjson

from auditloop._delivery import PartialWrite
from auditloop.exceptions import ConfigurationError

__all__ = ["WriterProcess", "serve"]

Notice = tuple[str, dict[str, Any]]

_REQUEST: Final = struct.Struct("<cIII")
_ANSWER: Final = struct.Struct("<II")
_START_TIMEOUT: Final = 60.0  # seconds for the helper to import and open the file
# The helper is started with the application's own interpreter and sys.path,
# so it imports the same auditloop (also from a source checkout).
_BOOTSTRAP: Final = (
    "import sys, json; sys.path[:] = json.loads(sys.argv[1]); "
    "from auditloop.sinks._writer_process import serve; serve()"
)


class WriterProcess:
    """The application's side of the helper: one request, one answer.

    Not thread-safe on its own: the owning ``FileSink`` calls it under its
    lock. A helper that died is started again on the next ``write()``.
    """

    def __init__(self, options: dict[str, Any]) -> None:
        self._options = options
        self._popen: subprocess.Popen[bytes] | None = None
        # Our ends of the two pipes: [to the helper, from the helper]. Closed
        # when this object is collected too, so a sink dropped without
        # close() still ends its helper (at end of input).
        self._pipes = [-1, -1]
        weakref.finalize(self, _close_pipes, self._pipes)
        self._buffer = bytearray()
        self._next_id = 0
        self._forward = False
        self._start()
        _live.add(self)

    # -- requests ------------------------------------------------------------

    def write(self, batch: Sequence[bytes]) -> list[Notice]:
        """Have the helper write *batch*; raise what its write raised.

        A helper found dead before sending (killed between batches) is
        replaced first, so the batch is not lost; one that dies while
        writing fails the batch (it may have written some of its lines).
        """
        notices: list[Notice] = []
        if self._popen is None or self._popen.poll() is not None:
            self._stop(0)
            try:
                notices = self._start()  # e.g. retention done by its start
            except ConfigurationError as exc:  # e.g. the path is a directory now
                raise OSError(errno.EIO, str(exc)) from None
        return notices + self._call(b"W", b"\n".join(batch), len(batch), None)

    def attach(self) -> list[Notice]:
        """From now on the helper hands its own events back with answers."""
        self._forward = True
        return self._call(b"A", b"", 0, _START_TIMEOUT) if self._popen else []

    def flush(self, timeout: float | None) -> list[Notice]:
        """The helper's ``flush()`` (an fsync unless ``fsync="never"``)."""
        return self._call(b"F", b"", 0, timeout) if self._popen else []

    def close(self, timeout: float | None) -> list[Notice]:
        """Close the helper's sink and let it exit; its last events come back."""
        if self._popen is None:
            return []
        try:
            notices = self._call(b"C", b"", 0, timeout)
        except TimeoutError:
            self._stop(0)  # it exits by itself once it has written everything
            raise
        self._stop(timeout)
        return notices

    def after_fork_in_child(self) -> None:
        """Forget the parent's helper: this process starts its own on write."""
        _close_pipes(self._pipes)
        self._popen = None
        self._buffer.clear()

    @property
    def pid(self) -> int | None:
        """The helper's process id (None: not running)."""
        return self._popen.pid if self._popen is not None else None

    # -- plumbing ------------------------------------------------------------

    def _start(self) -> list[Notice]:
        """Start a helper; return the notices it handed back (once attached)."""
        # Raw pipes, not Popen's file objects: answers are read with select()
        # and a deadline.
        requests_r, requests_w = os.pipe()
        answers_r, answers_w = os.pipe()
        path = [entry for entry in sys.path if isinstance(entry, str)]
        try:
            popen = subprocess.Popen(  # noqa: S603 - our interpreter, our code
                [sys.executable, "-c", _BOOTSTRAP, orjson.dumps(path).decode()],
                stdin=requests_r,
                stdout=answers_w,
                close_fds=True,
            )
        except BaseException:
            os.close(requests_w)
            os.close(answers_r)
            raise
        finally:
            os.close(requests_r)  # the helper's ends
            os.close(answers_w)
        self._pipes[:] = [requests_w, answers_r]
        self._popen = popen
        self._buffer.clear()
        self._call(b"S", orjson.dumps(self._options), 0, _START_TIMEOUT)
        if self._forward:
            return self._call(b"A", b"", 0, _START_TIMEOUT)
        return []

    def _call(
        self, op: bytes, payload: bytes, count: int, timeout: float | None
    ) -> list[Notice]:
        self._next_id += 1
        request_id = self._next_id
        try:
            self._send(_REQUEST.pack(op, request_id, count, len(payload)), payload)
            answer = self._answer(request_id, timeout)
        except OSError as exc:
            if isinstance(exc, TimeoutError):
                if op == b"S" and self._popen is not None:
                    self._popen.kill()  # hung while starting: it wrote nothing
                    self._stop(None)
                raise
            code = self._stop(0)
            raise OSError(
                errno.EPIPE,
                f"FileSink writer process exited (code {code}) "
                f"during {op.decode()!r}: {exc}",
            ) from None
        notices = [(str(a), dict(n)) for a, n in answer.get("notices", ())]
        error = answer.get("error")
        if error is None:
            return notices
        if op == b"S":
            self._stop(0)
            raise ConfigurationError(error)
        cause = OSError(answer.get("errno") or errno.EIO, error)
        stored = answer.get("stored", 0)
        if stored:
            raise PartialWrite(stored) from cause
        raise cause

    def _send(self, header: bytes, payload: bytes) -> None:
        """Write one request; ``writev`` spares copying the batch behind its
        header. A signal can cut it short: then the rest is written."""
        fd = self._pipes[0]
        sent = os.writev(fd, (header, payload))
        if sent < len(header):  # rare: copying is fine
            rest = memoryview(header + payload)[sent:]
        else:
            rest = memoryview(payload)[sent - len(header) :]
        while rest:
            rest = rest[os.write(fd, rest) :]

    def _answer(self, request_id: int, timeout: float | None) -> dict[str, Any]:
        """Read answers until *request_id*'s; an answer is consumed whole, so
        a timeout halfway through one leaves it for the next call."""
        deadline = None if timeout is None else time.monotonic() + timeout
        buffer = self._buffer
        while True:
            self._fill(_ANSWER.size, deadline)
            answered, length = _ANSWER.unpack_from(buffer)
            end = _ANSWER.size + length
            self._fill(end, deadline)
            body = orjson.loads(buffer[_ANSWER.size : end])
            del buffer[:end]
            if answered == request_id:
                return body  # type: ignore[no-any-return]
            # The answer to an earlier request that timed out: skip it.

    def _fill(self, n: int, deadline: float | None) -> None:
        """Read from the helper until the buffer holds *n* bytes."""
        buffer, answers = self._buffer, self._pipes[1]
        while len(buffer) < n:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([answers], [], [], remaining)[0]:
                    raise TimeoutError("FileSink writer process did not answer in time")
            chunk = os.read(answers, 1 << 16)
            if not chunk:
                raise BrokenPipeError(errno.EPIPE, "the helper closed its output")
            buffer += chunk

    def _stop(self, timeout: float | None) -> int | None:
        """Close the pipes and reap the helper (it exits on end of input)."""
        popen = self._popen
        _close_pipes(self._pipes)
        self._popen = None
        if popen is None:
            return None
        try:
            return popen.wait(timeout)
        except subprocess.TimeoutExpired:
            # Still writing what it was sent; it exits by itself. Reap it
            # then, in the background (not left to Popen's destructor).
            threading.Thread(
                target=popen.wait, name="auditloop-reap", daemon=True
            ).start()
            return None


# Every helper's owner, for the fork hook below: a sink used without an
# Auditor gets no other after-fork call.
_live: weakref.WeakSet[WriterProcess] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for writer in list(_live):
        writer.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _close_pipes(pipes: list[int]) -> None:
    for i, fd in enumerate(pipes):
        if fd >= 0:
            pipes[i] = -1
            os.close(fd)


# -- the helper --------------------------------------------------------------


def serve() -> None:
    """The helper's main loop (run by ``WriterProcess`` in a new interpreter)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print() must not corrupt the answers
    requests = sys.stdin.buffer
    _Server(requests, answers).run()


class _Server:
    def __init__(self, requests: BinaryIO, answers: BinaryIO) -> None:
        self._requests = requests
        self._answers = answers
        self._notices: list[list[Any]] = []
        self._sink: Any = None

    def run(self) -> None:
        while True:
            header = self._requests.read(_REQUEST.size)
            if len(header) < _REQUEST.size:
                break  # the application closed our input (or died)
            op, request_id, count, length = _REQUEST.unpack(header)
            payload = self._requests.read(length)
            if len(payload) < length:
                break  # cut off mid-request: never write part of a batch
            answer = self._handle(op, count, payload)
            if self._notices:
                answer["notices"], self._notices = self._notices, []
            body = orjson.dumps(answer)
            try:
                self._answers.write(_ANSWER.pack(request_id, len(body)) + body)
                self._answers.flush()
            except BrokenPipeError:
                break  # the application stopped listening: finish and exit
            if op == b"C":
                return
        if self._sink is not None:
            self._sink.close(None)

    def _handle(self, op: bytes, count: int, payload: bytes) -> dict[str, Any]:
        try:
            if op == b"S":
                from auditloop.sinks._file import FileSink

                options = orjson.loads(payload)
                key = options.pop("key")
                self._sink = FileSink(
                    options.pop("path"),
                    key=bytes.fromhex(key) if key is not None else None,
                    **options,
                )
            elif op == b"W":
                self._sink.write(payload.split(b"\n", count - 1) if count else [])
            elif op == b"A":
                self._sink.attach_auditor(self._collect)
            elif op == b"F":
                self._sink.flush(None)
            elif op == b"C":
                self._sink.close(None)
        except ConfigurationError as exc:  # from S: the message says it all
            return {"error": str(exc)}
        except PartialWrite as exc:
            return _failure(exc.__cause__ or exc, exc.stored)
        except BaseException as exc:  # reported to the application
            return _failure(exc, 0)
        return {}

    def _collect(self, action: str, attributes: dict[str, Any]) -> None:
        self._notices.append([action, attributes])


def _failure(exc: BaseException, stored: int) -> dict[str, Any]:
    code = exc.errno if isinstance(exc, OSError) else None
    message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    if not isinstance(exc, OSError):
        message = f"{type(exc).__name__}: {message}"
    return {"error": message, "errno": code, "stored": stored}
