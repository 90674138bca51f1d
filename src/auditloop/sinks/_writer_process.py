"""``FileSink(writer="process")``: a helper process that writes the file.

A chained ``FileSink`` spends ~1.5 µs per record hashing (HMAC-SHA256 through
``hashlib``, which holds the GIL for inputs this small), and the GIL makes
that time the application's too: on a CPU-bound service, chaining costs
~30-50 % per audited call. With ``writer="process"`` the sink's writer
thread only hands each batch to a helper Python process over a socket and
waits for its answer; the helper runs an ordinary in-process ``FileSink``
with the same options, so sealing, rotation, retention and checkpoints
happen on another core, under another GIL, with the same code.

What stays the same: ``write()`` returns only once the helper's ``write()``
has returned (a failure is raised here, a partial one as ``PartialWrite``),
so the delivery engine counts exactly as before; the sink's own events
(checkpoints, retention) come back with the answers and go through the
Auditor the sink is attached to.

Protocol over one Unix socket pair (the helper's stdin and stdout; a socket,
not pipes, so a dead helper is an ``EPIPE`` error here and never a SIGPIPE
that kills an application which restored its default action), both ways
length-prefixed, little-endian:

- first, ``<length:u32>`` and the application's ``sys.path`` as JSON (read
  by the bootstrap, before anything is imported);
- request: ``<op:1 byte><id:u32><count:u32><length:u32>`` then *length*
  payload bytes. Ops: ``S`` start (orjson options; once), ``W`` write
  (*count* lines joined by newlines), ``A`` attach (forward notices from
  now on), ``F`` flush, ``C`` close.
- answer: ``<id:u32><length:u32>`` then an orjson object: ``notices`` and,
  on failure, ``error``, ``errno`` and ``stored``.

A request cut short (a signal handler raised while it was being sent) is
never completed: the helper is let go (it drops the partial request at end
of input) and the next write starts a new one.

The helper runs in its own session and ignores SIGINT, SIGTERM and SIGHUP (a
Ctrl-C, a closed terminal or a stop signal sent to every process must not
end it before the application's exit flush reaches it); it exits when its
input ends: after ``close()``, or when the application dies, after writing
everything it was sent.
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, Final

import orjson

from auditloop._clock import seconds_left
from auditloop._delivery import PartialWrite
from auditloop.exceptions import ConfigurationError

__all__ = ["WriterProcess", "serve"]

Notice = tuple[str, dict[str, Any]]

_REQUEST: Final = struct.Struct("<cIII")
_ANSWER: Final = struct.Struct("<II")
_START_TIMEOUT: Final = 60.0  # seconds for the helper to import and open the file
_EXIT_WAIT: Final = 1.0  # seconds to wait for a helper that hung up to exit
# The helper is started with the application's own interpreter and reads
# the application's sys.path first thing from its input (an argument could
# be too long), so it imports the same auditloop, also from a source
# checkout. ``-P`` and ``cwd="/"`` keep modules in the application's working
# directory out of it. json round-trips undecodable file names.
_BOOTSTRAP: Final = (
    "import sys, json; requests = sys.stdin.buffer; "
    "size = int.from_bytes(requests.read(4), 'little'); "
    "sys.path[:] = json.loads(requests.read(size)); "
    "from auditloop.sinks._writer_process import serve; serve()"
)
# A dead helper must be an EPIPE error, not a SIGPIPE (Linux: a send flag;
# macOS: a socket option, set in _start).
_NO_SIGNAL: Final = getattr(socket, "MSG_NOSIGNAL", 0)


class WriterProcess:
    """The application's side of the helper: one request, one answer.

    Not thread-safe on its own: the owning ``FileSink`` calls it under its
    lock. A helper that died is started again on the next ``write()``.
    """

    def __init__(self, options: dict[str, Any]) -> None:
        self._options = options
        self._sys_path = _absolute_sys_path()
        self._popen: subprocess.Popen[bytes] | None = None
        self._socket: socket.socket | None = None
        # Lets the helper go if this object is collected without close().
        self._release: weakref.finalize[Any, Any] | None = None
        self._buffer = bytearray()
        self._next_id = 0
        self._forward = False
        # Notices from a start or from a failed answer, handed over with the
        # next answer: a failure must not lose a retention record.
        self._pending: list[Notice] = []
        self._start()
        _live.add(self)

    # -- requests ------------------------------------------------------------

    def write(self, batch: Sequence[bytes]) -> list[Notice]:
        """Have the helper write *batch*; raise what its write raised.

        A helper found dead before sending (killed between batches) is
        replaced first, so the batch is not lost; one that dies while
        writing fails the batch (it may have written some of its lines).
        """
        if self._popen is None or self._popen.poll() is not None:
            self._stop(0)
            try:
                self._start()
            except ConfigurationError as exc:  # e.g. the path is a directory now
                raise OSError(errno.EIO, str(exc)) from None
        return self._call(b"W", b"\n".join(batch), len(batch), None)

    def attach(self) -> list[Notice]:
        """From now on the helper hands its own events back with answers
        (a dead one's successor attaches when it starts)."""
        self._forward = True
        if self._popen is None or self._popen.poll() is not None:
            return []
        return self._call(b"A", b"", 0, _START_TIMEOUT)

    def flush(self, timeout: float | None) -> list[Notice]:
        """The helper's ``flush()``: an fsync (with ``fsync="never"`` the
        sink has nothing to flush: lines are in the OS once written)."""
        return self._call(b"F", b"", 0, timeout) if self._popen else []

    def close(self, timeout: float | None) -> list[Notice]:
        """Close the helper's sink and let it exit; its last events come back."""
        if self._popen is None:
            notices, self._pending = self._pending, []
            return notices
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            notices = self._call(b"C", b"", 0, timeout)
        except TimeoutError:
            self._stop(0)  # it exits by itself once it has written everything
            raise
        self._stop(seconds_left(deadline))
        return notices

    def after_fork_in_child(self) -> None:
        """Forget the parent's helper: this process starts its own on write."""
        if self._release is not None:
            self._release.detach()
            self._release = None
        if self._socket is not None:
            self._socket.close()  # our copy: the parent's helper is not told
        self._socket = self._popen = None
        self._buffer.clear()
        self._pending = []  # the parent delivers those

    @property
    def pid(self) -> int | None:
        """The helper's process id (None: not running)."""
        return self._popen.pid if self._popen is not None else None

    # -- plumbing ------------------------------------------------------------

    def _start(self) -> None:
        ours, theirs = socket.socketpair()
        if hasattr(socket, "SO_NOSIGPIPE"):  # pragma: no cover - macOS
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_NOSIGPIPE, 1)
        try:
            self._popen = subprocess.Popen(  # noqa: S603 - our interpreter, our code
                [sys.executable, "-P", "-c", _BOOTSTRAP],
                stdin=theirs.fileno(),
                stdout=theirs.fileno(),
                close_fds=True,
                cwd="/",
                start_new_session=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._socket = ours
        self._release = weakref.finalize(self, _let_go, ours, self._popen)
        self._release.atexit = False  # at exit, shutdown() closes us in order
        self._buffer.clear()
        try:
            path = json.dumps(self._sys_path).encode()
            ours.settimeout(_START_TIMEOUT)  # a helper that never reads it
            ours.sendall(len(path).to_bytes(4, "little") + path, _NO_SIGNAL)
            ours.settimeout(None)
            # What an answer hands over (with what was pending) goes with the
            # next answer: kept at each step, in case the next one fails.
            self._pending = self._call(
                b"S", orjson.dumps(self._options), 0, _START_TIMEOUT
            )
            if self._forward:
                self._pending = self._call(b"A", b"", 0, _START_TIMEOUT)
        except BaseException:
            if self._popen is not None:
                self._popen.kill()  # it wrote nothing yet
            self._stop(None)
            raise

    def _call(
        self, op: bytes, payload: bytes, count: int, timeout: float | None
    ) -> list[Notice]:
        self._next_id = request_id = (self._next_id + 1) & 0xFFFFFFFF
        try:
            self._send(_REQUEST.pack(op, request_id, count, len(payload)), payload)
        except OSError:
            raise self._hung_up(op) from None
        except BaseException:
            self._stop(0)  # a request cut short: never finish it (see above)
            raise
        try:
            answer = self._answer(request_id, timeout)
        except TimeoutError:
            raise  # the helper is alive: its late answer is skipped
        except OSError:
            raise self._hung_up(op) from None
        # Anything else (a signal handler raised while we waited) leaves the
        # helper as it is: it finishes the request, its answer is skipped.
        notices = [*self._pending, *map(_notice, answer.get("notices", ()))]
        self._pending = []
        error = answer.get("error")
        if error is None:
            return notices
        self._pending = notices  # delivered with the next answer
        if op == b"S":
            raise ConfigurationError(error)
        cause = OSError(answer.get("errno") or errno.EIO, error)
        stored = answer.get("stored", 0)
        if stored:
            raise PartialWrite(stored) from cause
        raise cause

    def _hung_up(self, op: bytes) -> OSError:
        code = self._stop(_EXIT_WAIT)
        return OSError(
            errno.EPIPE,
            f"FileSink writer process exited (code {code}) during {op.decode()!r}",
        )

    def _send(self, header: bytes, payload: bytes) -> None:
        """Send one request; ``sendmsg`` spares copying the batch behind its
        header, and MSG_NOSIGNAL turns a dead helper into EPIPE."""
        assert self._socket is not None
        sent = self._socket.sendmsg((header, payload), (), _NO_SIGNAL)
        if sent < len(header):  # rare: copying is fine
            rest = memoryview(header + payload)[sent:]
        else:
            rest = memoryview(payload)[sent - len(header) :]
        while rest:
            rest = rest[self._socket.send(rest, _NO_SIGNAL) :]

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
            # The answer to an earlier request that timed out or was
            # interrupted: skip it, but not the sink's events it carries.
            self._pending += map(_notice, body.get("notices", ()))

    def _fill(self, n: int, deadline: float | None) -> None:
        """Read from the helper until the buffer holds *n* bytes."""
        buffer, answers = self._buffer, self._socket
        assert answers is not None
        while len(buffer) < n:
            if deadline is not None:  # a spent deadline still looks once
                remaining = max(0.0, deadline - time.monotonic())
                if not select.select([answers], [], [], remaining)[0]:
                    raise TimeoutError("FileSink writer process did not answer in time")
            chunk = answers.recv(1 << 16)
            if not chunk:
                raise BrokenPipeError(errno.EPIPE, "the helper hung up")
            buffer += chunk

    def _stop(self, timeout: float | None) -> int | None:
        """Let the helper go (it exits at end of input); its exit code, if
        it exits within *timeout* seconds."""
        popen, sock, release = self._popen, self._socket, self._release
        self._popen = self._socket = self._release = None
        if release is not None:
            release.detach()
        if sock is None or popen is None:
            return None
        return _let_go(sock, popen, timeout)


def _absolute_sys_path() -> list[str]:
    """sys.path with relative entries made absolute: the helper runs in
    ``/``, and the application may change directory before it starts one."""
    try:
        here = Path.cwd()
    except OSError:  # deleted: relative entries cannot be found anyway
        return [entry for entry in sys.path if Path(entry).is_absolute()]
    return [str(here / entry) for entry in sys.path]


def _notice(raw: list[Any]) -> Notice:
    action, attributes = raw
    return str(action), dict(attributes)


def _let_go(
    sock: socket.socket, popen: subprocess.Popen[bytes], timeout: float | None = 0
) -> int | None:
    """Close our end and reap the helper: now, or in the background once it
    has written what it was sent (not left to ``Popen``'s destructor)."""
    sock.close()
    try:
        return popen.wait(timeout)
    except subprocess.TimeoutExpired:
        threading.Thread(target=popen.wait, name="auditloop-reap", daemon=True).start()
        return None


# Every helper's owner, for the fork hook below: a sink used without an
# Auditor gets no other after-fork call.
_live: weakref.WeakSet[WriterProcess] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for writer in list(_live):
        writer.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# -- the helper --------------------------------------------------------------


def serve() -> None:
    """The helper's main loop (run by ``WriterProcess`` in a new interpreter)."""
    for stop in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, signal.SIG_IGN)
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
                if self._sink is not None:  # one sink, one file, for good
                    return {"error": "the sink is already started"}
                from auditloop.sinks._file import FileSink

                options = orjson.loads(payload)
                key = options.pop("key")
                self._sink = FileSink(
                    os.fsdecode(bytes.fromhex(options.pop("path"))),
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
            else:
                return {"error": f"unknown request {op!r}"}
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
