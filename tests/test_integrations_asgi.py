"""ASGI middleware under a real uvicorn server on 127.0.0.1, and called directly."""

from __future__ import annotations

import asyncio
import http.client
import re
import socket
import threading
from collections.abc import Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, HTTPException

import auditloop
from auditloop import AuditEvent
from auditloop.exceptions import ConfigurationError
from auditloop.integrations.asgi import AuditMiddleware
from auditloop.testing import capture

CONCURRENT = 8  # requests the gate holds until all are in flight together


class Gate:
    """Once armed, holds the next *size* requests until all are in flight at once.

    Proves the requests really overlapped: each one's context was bound while
    the others' were too. Runs on the server's event loop.
    """

    def __init__(self) -> None:
        self.size = 0
        self.arrived = 0
        self.opened_by_count = False
        self._event: asyncio.Event | None = None

    def arm(self, size: int) -> None:
        self.size = size

    async def wait(self) -> None:
        if not self.size:
            return
        if self._event is None:
            self._event = asyncio.Event()
        self.arrived += 1
        if self.arrived == self.size:
            self.opened_by_count = True
            self._event.set()
        if self.arrived <= self.size:
            await asyncio.wait_for(self._event.wait(), timeout=10)


def actor_from_header(scope: MutableMapping[str, Any]) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-user":
            return str(value.decode())
    return None


def make_app(gate: Gate) -> FastAPI:
    app = FastAPI()

    @app.post("/items/{item_id}")
    async def update(item_id: str) -> dict[str, str]:
        await gate.wait()
        auditloop.emit("item.update", target=f"item:{item_id}")
        await asyncio.sleep(0)  # let the other requests run in between
        auditloop.emit("item.verify", target=f"item:{item_id}")
        return {"item": item_id}

    @app.get("/sync/{item_id}")
    def read(item_id: str) -> dict[str, str]:  # runs in FastAPI's threadpool
        auditloop.emit("item.read", target=f"item:{item_id}")
        return {"item": item_id}

    @app.get("/whoami")
    @app.get("/proxied/whoami")
    async def whoami() -> dict[str, str]:
        auditloop.emit("whoami")
        return {}

    @app.get("/forbidden")
    async def forbidden() -> None:
        raise HTTPException(status_code=403)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    return app


class Server:
    """uvicorn serving an app in a thread on a socket bound to 127.0.0.1:0."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        # Listening before uvicorn starts: early requests wait in the backlog.
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_level="warning",
            access_log=False,
            proxy_headers=False,  # the middleware decides about X-Forwarded-For
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> Server:
        self.thread.start()
        status, _, _ = self.request("GET", "/whoami")  # readiness: served once
        assert 200 == status
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            conn.request(method, path, headers=headers or {})
            response = conn.getresponse()
            body = response.read()
            return (
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                body,
            )
        finally:
            conn.close()


@pytest.fixture(scope="module")
def gate() -> Gate:
    return Gate()


@pytest.fixture(scope="module")
def server(gate: Gate) -> Iterator[Server]:
    app = make_app(gate)
    app.add_middleware(
        AuditMiddleware,
        actor=actor_from_header,
        audit_requests=["POST /items/*", "GET /boom", "/forbidden"],
    )
    proxied = AuditMiddleware(
        make_app(gate), trusted_proxies=["127.0.0.1", "10.0.0.0/8"]
    )

    async def dispatch(scope: Any, receive: Any, send: Any) -> None:
        target = proxied if scope.get("path", "").startswith("/proxied/") else app
        await target(scope, receive, send)

    with Server(dispatch) as running:
        yield running


@pytest.fixture(autouse=True)
def quiet_auditor() -> None:
    # conftest resets the global configuration around every test.
    auditloop.configure(sinks=[])


def by_target(events: list[AuditEvent]) -> dict[str, list[AuditEvent]]:
    grouped: dict[str, list[AuditEvent]] = {}
    for event in events:
        if event.target is not None:
            grouped.setdefault(event.target.id, []).append(event)
    return grouped


class TestConcurrentRequests:
    def test_every_event_carries_its_own_requests_ids(
        self, server: Server, gate: Gate
    ) -> None:
        n = 120

        def call(i: int) -> tuple[int, str]:
            headers = {"X-User": f"user-{i}"}
            if i % 5:
                headers["X-Request-ID"] = f"req-{i}"
            status, response_headers, _ = server.request("POST", f"/items/{i}", headers)
            assert 200 == status
            return i, response_headers["x-request-id"]

        gate.arm(CONCURRENT)
        with capture() as events, ThreadPoolExecutor(16) as pool:
            echoed = dict(pool.map(call, range(n)))

        assert gate.opened_by_count
        generated = [echoed[i] for i in range(n) if i % 5 == 0]
        assert all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in generated)
        assert len(set(generated)) == len(generated)
        assert {i: f"req-{i}" for i in range(n) if i % 5} == {
            i: rid for i, rid in echoed.items() if i % 5
        }
        grouped = by_target(events)
        for i in range(n):
            mine = grouped[f"item:{i}"] + grouped[f"/items/{i}"]
            assert ["http.request", "item.update", "item.verify"] == sorted(
                e.action for e in mine
            )
            for event in mine:
                assert echoed[i] == event.context["request_id"]
                assert event.actor is not None
                assert (f"user-{i}", "127.0.0.1") == (event.actor.id, event.actor.ip)

    def test_http_request_event_fields(self, server: Server) -> None:
        with capture() as events:
            server.request("POST", "/items/7", {"X-Request-ID": "abc-7"})

        [event] = [e for e in events if e.action == "http.request"]
        assert (
            "success",
            {"method": "POST", "route": "/items/{item_id}", "status": 200},
        ) == (
            event.outcome,
            dict(event.attributes),
        )
        assert ("/items/7", "path") == (
            event.target.id if event.target else None,
            event.target.type if event.target else None,
        )
        assert event.duration_ms is not None
        assert event.duration_ms > 0

    def test_sync_endpoints_in_the_threadpool_see_the_context(
        self, server: Server
    ) -> None:
        def call(i: int) -> None:
            server.request(
                "GET", f"/sync/{i}", {"X-Request-ID": f"s-{i}", "X-User": f"u{i}"}
            )

        with capture() as events, ThreadPoolExecutor(8) as pool:
            list(pool.map(call, range(40)))

        reads = [e for e in events if e.action == "item.read"]
        assert 40 == len(reads)
        for event in reads:
            i = event.target.id.split(":")[1] if event.target else "?"
            assert (f"s-{i}", f"u{i}") == (
                event.context["request_id"],
                event.actor.id if event.actor else None,
            )

    def test_unmatched_routes_record_no_http_request(self, server: Server) -> None:
        with capture() as events:
            server.request("GET", "/sync/1")

        assert ["item.read"] == [e.action for e in events]


class TestClientAddress:
    def test_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(
        self, server: Server
    ) -> None:
        with capture() as events:
            server.request("GET", "/whoami", {"X-Forwarded-For": "6.6.6.6"})

        [event] = events
        assert event.actor is not None
        assert ("anonymous", "127.0.0.1") == (event.actor.id, event.actor.ip)

    def test_forwarded_for_from_a_trusted_proxy_is_honoured(
        self, server: Server
    ) -> None:
        with capture() as events:
            server.request(
                "GET", "/proxied/whoami", {"X-Forwarded-For": "6.6.6.6, 10.1.2.3"}
            )

        [event] = events
        assert "6.6.6.6" == (event.actor.ip if event.actor else None)


class TestRequestIdHeader:
    @pytest.mark.parametrize("sent", ["x" * 200, "a b", "<script>"])
    def test_unsafe_ids_are_replaced(self, server: Server, sent: str) -> None:
        with capture() as events:
            _, headers, _ = server.request("GET", "/whoami", {"X-Request-ID": sent})

        [event] = events
        assert re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"])
        assert headers["x-request-id"] == event.context["request_id"]


class TestFailures:
    def test_denied_status(self, server: Server) -> None:
        with capture() as events:
            status, _, _ = server.request("GET", "/forbidden")

        [event] = events
        assert (403, "denied", 403) == (
            status,
            event.outcome,
            event.attributes["status"],
        )

    def test_exception_is_recorded_and_propagates(self, server: Server) -> None:
        with capture() as events:
            status, _, _ = server.request("GET", "/boom")

        [event] = events
        assert 500 == status
        assert ("failure", {"type": "RuntimeError", "message": "boom"}) == (
            event.outcome,
            dict(event.error or {}),
        )
        assert "status" not in event.attributes


# -- the middleware called directly, for what a server cannot show ---------------


def run_app(
    middleware: AuditMiddleware,
    scope: dict[str, Any],
) -> list[MutableMapping[str, Any]]:
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    asyncio.run(middleware(scope, receive, send))
    return sent


def http_scope(**extra: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": "/x",
        "headers": [],
        "client": ("192.0.2.1", 5000),
    }
    scope.update(extra)
    return scope


async def respond(scope: Any, receive: Any, send: Any) -> None:
    auditloop.emit("inside")
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


class TestMiddlewareDirectly:
    def test_async_resolver(self) -> None:
        async def resolve(scope: Any) -> dict[str, str]:
            return {"id": "svc", "type": "service"}

        with capture() as events:
            run_app(AuditMiddleware(respond, actor=resolve), http_scope())

        [event] = events
        assert event.actor is not None
        assert ("svc", "service", "192.0.2.1") == (
            event.actor.id,
            event.actor.type,
            event.actor.ip,
        )

    def test_a_raising_resolver_does_not_fail_the_request(self) -> None:
        def resolve(scope: Any) -> str:
            raise KeyError("token")

        with capture() as events:
            sent = run_app(AuditMiddleware(respond, actor=resolve), http_scope())

        [event] = events
        assert 204 == sent[0]["status"]
        assert ("unknown", "KeyError: 'token'") == (
            event.actor.id if event.actor else None,
            event.context["actor_error"],
        )

    def test_existing_response_header_is_kept(self) -> None:
        async def own_id(scope: Any, receive: Any, send: Any) -> None:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"X-Request-Id", b"mine")],
                }
            )
            await send({"type": "http.response.body", "body": b""})

        sent = run_app(AuditMiddleware(own_id), http_scope())

        assert [(b"X-Request-Id", b"mine")] == sent[0]["headers"]

    def test_recorded_before_the_last_body_chunk_is_sent(self) -> None:
        async def chunked(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"a", "more_body": True})
            await send({"type": "http.response.body", "body": b"b"})

        events_when_sent: list[int] = []

        async def send(message: Any) -> None:
            events_when_sent.append(len(events))

        middleware = AuditMiddleware(chunked, audit_requests=["GET"])
        with capture() as events:
            asyncio.run(middleware(http_scope(), _receive_nothing, send))

        assert [0, 0, 1] == events_when_sent
        assert [200] == [e.attributes["status"] for e in events]

    def test_no_response_records_unknown_outcome(self) -> None:
        async def silent(scope: Any, receive: Any, send: Any) -> None:
            return None

        with capture() as events:
            run_app(AuditMiddleware(silent, audit_requests=["GET"]), http_scope())

        [event] = events
        assert ("unknown", {"method": "GET", "route": "/x"}) == (
            event.outcome,
            dict(event.attributes),
        )

    def test_websocket_gets_bound_context(self) -> None:
        async def ws(scope: Any, receive: Any, send: Any) -> None:
            auditloop.emit("ws.connect")

        headers = [(b"x-request-id", b"ws-1")]
        with capture() as events:
            run_app(AuditMiddleware(ws), http_scope(type="websocket", headers=headers))

        assert [("ws.connect", "ws-1")] == [
            (e.action, e.context["request_id"]) for e in events
        ]

    def test_lifespan_passes_through_unbound(self) -> None:
        seen: list[str] = []

        async def lifespan(scope: Any, receive: Any, send: Any) -> None:
            seen.append(scope["type"])
            auditloop.emit("startup")

        with capture() as events:
            run_app(AuditMiddleware(lifespan), {"type": "lifespan"})

        assert ["lifespan"] == seen
        assert [{}] == [dict(e.context) for e in events]

    def test_context_does_not_outlive_the_request(self) -> None:
        async def both() -> None:
            await AuditMiddleware(respond)(http_scope(), None, _discard)  # type: ignore[arg-type]
            auditloop.emit("after")

        with capture() as events:
            asyncio.run(both())

        assert ["inside", "after"] == [e.action for e in events]
        assert {} == dict(events[1].context)
        assert events[1].actor is None

    @pytest.mark.parametrize(
        ("pattern", "method", "path", "expected"),
        [
            ("DELETE", "DELETE", "/a/b", True),
            ("DELETE", "GET", "/a/b", False),
            ("/admin/*", "PUT", "/admin/users/1", True),
            ("/admin/*", "PUT", "/public", False),
            ("* /x", "PATCH", "/x", True),
            ("POST /items/*", "POST", "/items", False),
        ],
    )
    def test_audit_requests_patterns(
        self, pattern: str, method: str, path: str, expected: bool
    ) -> None:
        with capture() as events:
            run_app(
                AuditMiddleware(respond, audit_requests=[pattern]),
                http_scope(method=method, path=path),
            )

        assert expected == ("http.request" in [e.action for e in events])


async def _discard(message: Any) -> None:
    return None


async def _receive_nothing() -> dict[str, Any]:
    return {"type": "http.disconnect"}


class TestConfiguration:
    @pytest.mark.parametrize(
        ("kwargs", "name"),
        [
            ({"request_id_header": "bad header"}, "request_id_header"),
            ({"trusted_proxies": "10.0.0.1"}, "trusted_proxies"),
            ({"trusted_proxies": ["not-an-ip"]}, "trusted_proxies"),
            ({"actor": "alice"}, "actor"),
            ({"audit_requests": "POST"}, "audit_requests"),
            ({"audit_requests": ["post /x"]}, "audit_requests"),
            ({"audit_requests": ["GET x"]}, "audit_requests"),
            ({"auditor": object()}, "auditor"),
        ],
    )
    def test_bad_arguments_name_the_argument(
        self, kwargs: dict[str, Any], name: str
    ) -> None:
        with pytest.raises(ConfigurationError, match=name):
            AuditMiddleware(respond, **kwargs)

    def test_app_must_be_callable(self) -> None:
        with pytest.raises(ConfigurationError, match="app"):
            AuditMiddleware(None)  # type: ignore[arg-type]
