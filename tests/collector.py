"""A real HTTP collector for tests, with injectable faults.

A threaded ``http.server`` on 127.0.0.1 (port 0, or the port it had before a
restart) that understands every ``HTTPSink`` format, records the event ids
it accepted, and can be told to misbehave:

- ``collector.script(Reply(500), RESET, Reply(429, {"Retry-After": "1"}))``
  answers the next requests in that order, then normally again;
- ``Collector(faults=fn)`` asks ``fn(n)`` (n = request number) for an action
  for every request not scripted (``None``: answer normally);
- ``Collector(respond=fn)`` asks ``fn(request)`` once the body is read (for
  answers that depend on it, like 413 for big bodies);
- ``RESET`` reads half the body, then resets the connection (TCP RST);
- ``stop()`` closes the listening socket and every open connection (clients
  see refused connections); ``start()`` listens again on the same port.

Elasticsearch ``_bulk`` answers per item: 409 when the ``_id`` was already
indexed (as Elasticsearch does for ``create``), else ``item_status(id)``
or 201.
"""

from __future__ import annotations

import collections
import contextlib
import gzip
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import attrs
import orjson

__all__ = ["RESET", "Collector", "Reply", "Request"]


@attrs.frozen
class Reply:
    """Answer with this status, headers and body instead of accepting."""

    status: int
    headers: dict[str, str] = attrs.field(factory=dict)
    body: bytes = b""


RESET = "reset"
Action = Reply | str | None


@attrs.frozen
class Request:
    """One request as received (body decompressed)."""

    path: str
    headers: dict[str, str]
    body: bytes
    client_port: int
    status: int


def _events(path: str, body: bytes) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """Yield (id, event) for each event in a request body of any format."""
    if path.endswith("/v1/logs"):
        request = orjson.loads(body)
        for resource in request["resourceLogs"]:
            for scope in resource["scopeLogs"]:
                for record in scope["logRecords"]:
                    attrs_ = {a["key"]: a["value"] for a in record["attributes"]}
                    event_id = attrs_.get("id", {}).get("stringValue")
                    yield event_id, record
    elif path.startswith("/services/collector"):
        for line in body.splitlines():
            if line.strip():
                envelope = orjson.loads(line)
                yield envelope["event"].get("id"), envelope
    elif body.startswith(b"["):
        for event in orjson.loads(body):
            yield event.get("id"), event
    else:
        for line in body.splitlines():
            if line.strip():
                event = orjson.loads(line)
                yield event.get("id"), event


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    collector: Collector

    def finish_request(self, request: Any, client_address: Any) -> None:
        tls = self.collector.tls
        if tls is not None:
            try:
                request = tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                self.collector.handshake_errors.append(repr(exc))
                request.close()
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # resets and shutdowns are the point of this server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.collector.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.collector.track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_POST(self) -> None:
        self.server.collector.handle(self)


class Collector:
    """See the module docstring. Use as a context manager or call close()."""

    def __init__(
        self,
        *,
        tls: ssl.SSLContext | None = None,
        faults: Callable[[int], Action] | None = None,
        respond: Callable[[Request], Reply | None] | None = None,
        item_status: Callable[[str], int] | None = None,
        keep_events: bool = False,
    ) -> None:
        self.tls = tls
        self.faults = faults
        self.respond = respond
        self.item_status = item_status
        self.keep_events = keep_events
        self.port = 0
        self.ids: collections.Counter[str] = collections.Counter()
        self.events: list[dict[str, Any]] = []
        self.requests: list[Request] = []
        self.handshake_errors: list[str] = []
        self.resets = 0
        self._scripted: collections.deque[Action] = collections.deque()
        self._count = 0
        self._lock = threading.Condition()
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- control ---------------------------------------------------------------

    def start(self) -> Collector:
        """Listen (again) on 127.0.0.1, on the same port after a restart."""
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.collector = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    close = stop

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, path: str = "") -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def script(self, *actions: Action) -> None:
        """Answer the next requests with *actions*, in order."""
        with self._lock:
            self._scripted.extend(actions)

    def wait_for(self, predicate: Callable[[Collector], bool], timeout: float) -> bool:
        """Wait until *predicate(self)* holds (checked on every request)."""
        with self._lock:
            return self._lock.wait_for(lambda: predicate(self), timeout)

    def wait_for_ids(self, n: int, timeout: float = 30.0) -> bool:
        """Wait until *n* distinct event ids have been accepted."""
        return self.wait_for(lambda c: len(c.ids) >= n, timeout)

    @property
    def unique_ids(self) -> set[str]:
        with self._lock:
            return set(self.ids)

    def track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    # -- request handling --------------------------------------------------------

    def _next_action(self) -> Action:
        with self._lock:
            n = self._count
            self._count += 1
            if self._scripted:
                return self._scripted.popleft()
        return self.faults(n) if self.faults is not None else None

    def handle(self, handler: _Handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        action = self._next_action()
        if action == RESET:
            handler.rfile.read(length // 2)
            with self._lock:
                self.resets += 1
                self._lock.notify_all()
            # SO_LINGER 0: close() sends RST instead of FIN.
            handler.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            handler.close_connection = True
            handler.connection.close()
            return
        raw = handler.rfile.read(length)
        body = (
            gzip.decompress(raw)
            if handler.headers.get("Content-Encoding") == "gzip"
            else raw
        )
        headers = dict(handler.headers.items())
        path = handler.path
        if action is None and self.respond is not None:
            action = self.respond(
                Request(path, headers, body, handler.client_address[1], 0)
            )
        if isinstance(action, Reply):
            self._record(path, headers, body, handler, action.status, [])
            self._respond(handler, action.status, action.body, action.headers)
            return
        if path.split("?")[0].endswith("_bulk"):
            self._bulk(handler, path, headers, body)
            return
        found = list(_events(path.split("?")[0], body))
        self._record(path, headers, body, handler, 200, found)
        if path.endswith("/v1/logs"):
            reply = b"{}"
        elif path.startswith("/services/collector"):
            reply = b'{"text":"Success","code":0}'
        else:
            reply = b""
        self._respond(handler, 200, reply, {"Content-Type": "application/json"})

    def _bulk(
        self, handler: _Handler, path: str, headers: dict[str, str], body: bytes
    ) -> None:
        lines = [line for line in body.split(b"\n") if line]
        items = []
        accepted = []
        errors = False
        with self._lock:
            for action_line, doc_line in zip(lines[::2], lines[1::2], strict=True):
                action = orjson.loads(action_line)["create"]
                doc = orjson.loads(doc_line)
                doc_id = action["_id"]
                if doc_id in self.ids:
                    status = 409
                elif self.item_status is not None:
                    status = self.item_status(doc_id)
                else:
                    status = 201
                item: dict[str, Any] = {"_id": doc_id, "status": status}
                if status >= 300:
                    errors = True
                    item["error"] = {"type": f"error_{status}", "reason": "scripted"}
                else:
                    accepted.append((doc_id, doc))
                items.append({"create": item})
        self._record(path, headers, body, handler, 200, accepted)
        reply = orjson.dumps({"took": 1, "errors": errors, "items": items})
        self._respond(handler, 200, reply, {"Content-Type": "application/json"})

    def _record(
        self,
        path: str,
        headers: dict[str, str],
        body: bytes,
        handler: _Handler,
        status: int,
        found: list[tuple[str | None, dict[str, Any]]],
    ) -> None:
        with self._lock:
            self.requests.append(
                Request(path, headers, body, handler.client_address[1], status)
            )
            for event_id, event in found:
                if event_id is not None:
                    self.ids[event_id] += 1
                if self.keep_events:
                    self.events.append(event)
            self._lock.notify_all()

    @staticmethod
    def _respond(
        handler: _Handler, status: int, body: bytes, headers: dict[str, str]
    ) -> None:
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
