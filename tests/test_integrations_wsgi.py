"""WSGI middleware: a Flask app under werkzeug's threaded server on 127.0.0.1."""

from __future__ import annotations

import http.client
import logging
import re
import sys
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask, abort, stream_with_context
from werkzeug.serving import BaseWSGIServer, make_server

import auditloop
from auditloop import AuditEvent
from auditloop.exceptions import ConfigurationError
from auditloop.integrations.wsgi import AuditMiddleware
from auditloop.testing import capture

CONCURRENT = 8


class Gate:
    """Once armed, holds the next *size* requests until all are in flight at once."""

    def __init__(self) -> None:
        self.size = 0
        self.arrived = 0
        self.opened_by_count = False
        self._cond = threading.Condition()

    def arm(self, size: int) -> None:
        self.size = size

    def wait(self) -> None:
        with self._cond:
            if not self.size:
                return
            self.arrived += 1
            if self.arrived == self.size:
                self.opened_by_count = True
                self._cond.notify_all()
            if self.arrived <= self.size:
                self._cond.wait_for(lambda: self.opened_by_count, timeout=10)


def actor_from_header(environ: dict[str, Any]) -> str | None:
    return environ.get("HTTP_X_USER")


def make_app(gate: Gate) -> Flask:
    app = Flask(__name__)

    @app.post("/items/<item_id>")
    def update(item_id: str) -> dict[str, str]:
        gate.wait()
        auditloop.emit("item.update", target=f"item:{item_id}")
        return {"item": item_id}

    @app.get("/whoami")
    def whoami() -> dict[str, str]:
        auditloop.emit("whoami")
        return {}

    @app.get("/stream")
    def stream() -> Any:
        def chunks() -> Iterator[str]:
            for i in range(3):
                auditloop.emit("stream.chunk", n=i)
                yield f"{i}\n"

        return app.response_class(stream_with_context(chunks()))

    @app.get("/forbidden")
    def forbidden() -> Any:
        abort(403)

    @app.get("/boom")
    def boom() -> Any:
        raise RuntimeError("boom")

    return app


class Server:
    """werkzeug's threaded server in a thread, on 127.0.0.1 and a free port."""

    def __init__(self, app: Any) -> None:
        # The socket listens as soon as make_server returns: ready to accept.
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

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
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log noise
    app = make_app(gate)
    app.wsgi_app = AuditMiddleware(  # type: ignore[method-assign]
        app.wsgi_app,
        actor=actor_from_header,
        audit_requests=["POST /items/*", "/boom", "/forbidden", "/stream"],
    )
    proxied = AuditMiddleware(make_app(gate), trusted_proxies=["127.0.0.1"])

    def dispatch(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ["PATH_INFO"].startswith("/proxied"):
            environ["PATH_INFO"] = environ["PATH_INFO"].removeprefix("/proxied")
            return proxied(environ, start_response)
        return app(environ, start_response)

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
        n = 100

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
            assert ["http.request", "item.update"] == sorted(e.action for e in mine)
            for event in mine:
                assert echoed[i] == event.context["request_id"]
                assert event.actor is not None
                assert (f"user-{i}", "127.0.0.1") == (event.actor.id, event.actor.ip)

    def test_http_request_event_uses_flasks_rule(self, server: Server) -> None:
        with capture() as events:
            server.request("POST", "/items/7")

        [event] = [e for e in events if e.action == "http.request"]
        assert (
            "success",
            {"method": "POST", "route": "/items/<item_id>", "status": 200},
        ) == (
            event.outcome,
            dict(event.attributes),
        )

    def test_streamed_body_sees_the_context(self, server: Server) -> None:
        with capture() as events:
            _, _, body = server.request("GET", "/stream", {"X-Request-ID": "st-1"})

        assert b"0\n1\n2\n" == body
        chunks = [e for e in events if e.action == "stream.chunk"]
        assert [("st-1", 0), ("st-1", 1), ("st-1", 2)] == [
            (e.context["request_id"], e.attributes["n"]) for e in chunks
        ]
        [request] = [e for e in events if e.action == "http.request"]
        assert "st-1" == request.context["request_id"]


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
            server.request("GET", "/proxied/whoami", {"X-Forwarded-For": "6.6.6.6"})

        [event] = events
        assert "6.6.6.6" == (event.actor.ip if event.actor else None)


class TestFailures:
    def test_denied_status_and_echo(self, server: Server) -> None:
        with capture() as events:
            status, headers, _ = server.request(
                "GET", "/forbidden", {"X-Request-ID": "f-1"}
            )

        [event] = events
        assert (403, "f-1") == (status, headers["x-request-id"])
        assert ("denied", 403) == (event.outcome, event.attributes["status"])

    def test_flask_handled_exception_is_a_500(self, server: Server) -> None:
        with capture() as events:
            status, _, _ = server.request("GET", "/boom")

        [event] = events
        assert (500, "failure", 500) == (
            status,
            event.outcome,
            event.attributes["status"],
        )


# -- the middleware called directly ----------------------------------------------


def call_wsgi(app: Any, environ: dict[str, Any]) -> tuple[list[str], bytes]:
    started: list[str] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Any:
        started.append(status)
        started.extend(f"{k}: {v}" for k, v in headers)
        return lambda data: None

    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return started, body


def environ(**extra: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/x",
        "SCRIPT_NAME": "",
        "REMOTE_ADDR": "192.0.2.1",
    }
    env.update(extra)
    return env


class TestMiddlewareDirectly:
    def test_lazy_start_response_is_recorded_on_the_first_chunk(self) -> None:
        def lazy(env: Any, start_response: Any) -> Iterator[bytes]:
            auditloop.emit("inside")
            start_response("201 Created", [])
            yield b"ok"

        with capture() as events:
            started, body = call_wsgi(
                AuditMiddleware(lazy, audit_requests=["GET"]), environ()
            )

        assert (b"ok", "201 Created") == (body, started[0])
        assert ["inside", "http.request"] == [e.action for e in events]
        assert 201 == events[1].attributes["status"]
        assert events[0].context["request_id"] == events[1].context["request_id"]

    def test_exception_while_iterating_is_recorded(self) -> None:
        def broken(env: Any, start_response: Any) -> Iterator[bytes]:
            if env:  # always: a generator that raises on its first step
                raise ValueError("mid-stream")
            yield b""  # pragma: no cover

        with capture() as events, pytest.raises(ValueError, match="mid-stream"):
            call_wsgi(AuditMiddleware(broken, audit_requests=["GET"]), environ())

        [event] = events
        assert ("failure", "ValueError") == (
            event.outcome,
            (event.error or {}).get("type"),
        )

    def test_exception_from_the_app_call_is_recorded(self) -> None:
        def denied(env: Any, start_response: Any) -> list[bytes]:
            raise PermissionError("nope")

        with capture() as events, pytest.raises(PermissionError):
            call_wsgi(AuditMiddleware(denied, audit_requests=["GET"]), environ())

        assert ["denied"] == [e.outcome for e in events]

    def test_empty_body_without_start_is_recorded_on_close(self) -> None:
        def empty(env: Any, start_response: Any) -> Iterator[bytes]:
            return iter(())

        with capture() as events:
            call_wsgi(AuditMiddleware(empty, audit_requests=["GET"]), environ())

        assert [("unknown", {"method": "GET", "route": "/x"})] == [
            (e.outcome, dict(e.attributes)) for e in events
        ]

    def test_context_does_not_leak_into_the_calling_thread(self) -> None:
        def app(env: Any, start_response: Any) -> list[bytes]:
            start_response("200 OK", [("X-Request-ID", "kept")])
            return [b""]

        with capture() as events:
            started, _ = call_wsgi(AuditMiddleware(app), environ())
            auditloop.emit("after")

        assert ["200 OK", "X-Request-ID: kept"] == started
        assert [({}, None)] == [(dict(e.context), e.actor) for e in events]

    def test_utf8_path_and_script_name(self) -> None:
        path = "/café".encode().decode("latin-1")  # as PEP 3333 hands it over

        def app(env: Any, start_response: Any) -> list[bytes]:
            start_response("200 OK", [])
            return [b""]

        with capture() as events:
            call_wsgi(
                AuditMiddleware(app, audit_requests=["/api/*"]),
                environ(SCRIPT_NAME="/api", PATH_INFO=path),
            )

        assert ["/api/café"] == [e.target.id if e.target else None for e in events]

    def test_a_raising_resolver_does_not_fail_the_request(self) -> None:
        def resolve(env: Any) -> str:
            raise LookupError("no session")

        def app(env: Any, start_response: Any) -> list[bytes]:
            auditloop.emit("inside")
            start_response("200 OK", [])
            return [b""]

        with capture() as events:
            started, _ = call_wsgi(AuditMiddleware(app, actor=resolve), environ())

        assert "200 OK" == started[0]
        assert ("unknown", "192.0.2.1") == (
            events[0].actor.id if events[0].actor else None,
            events[0].actor.ip if events[0].actor else None,
        )

    def test_odd_status_and_undecodable_path(self) -> None:
        def app(env: Any, start_response: Any) -> list[bytes]:
            start_response("weird", [])
            return [b""]

        with capture() as events:
            call_wsgi(
                AuditMiddleware(app, audit_requests=["GET"]),
                environ(PATH_INFO="/\xff"),
            )

        [event] = events
        assert ("unknown", "/\xff") == (
            event.outcome,
            event.target.id if event.target else None,
        )

    def test_exc_info_is_passed_on_to_the_server(self) -> None:
        seen: list[Any] = []

        def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            seen.append(exc_info)
            return lambda data: None

        def app(env: Any, start: Any) -> list[bytes]:
            try:
                raise KeyError("k")
            except KeyError:
                start("500 Internal Server Error", [], sys.exc_info())
            return [b""]

        AuditMiddleware(app)(environ(), start_response)

        assert KeyError is seen[0][0]

    @pytest.mark.parametrize(
        ("kwargs", "name"),
        [
            ({"request_id_header": ""}, "request_id_header"),
            ({"trusted_proxies": ["300.1.1.1"]}, "trusted_proxies"),
            ({"audit_requests": [42]}, "audit_requests"),
        ],
    )
    def test_bad_arguments_name_the_argument(
        self, kwargs: dict[str, Any], name: str
    ) -> None:
        with pytest.raises(ConfigurationError, match=name):
            AuditMiddleware(lambda e, s: [], **kwargs)

    def test_app_must_be_callable(self) -> None:
        with pytest.raises(ConfigurationError, match="app"):
            AuditMiddleware("app")  # type: ignore[arg-type]
