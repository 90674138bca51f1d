"""ASGI middleware: request ids, client IPs and actors for every audit event.

Pure ASGI (no Starlette import), so it wraps any ASGI 3 application:
FastAPI, Starlette, Django's ASGI handler, Quart::

    from auditloop.integrations.asgi import AuditMiddleware

    app = FastAPI()
    app.add_middleware(AuditMiddleware, actor=actor_from_token)
    # or, for any ASGI app: app = AuditMiddleware(app, actor=...)
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from auditloop._auditor import Auditor
from auditloop._context import bind
from auditloop.exceptions import ConfigurationError
from auditloop.integrations._http import HttpOptions

__all__ = ["AuditMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class AuditMiddleware:
    """Bind request id, actor and client IP around each request of an ASGI app.

    For every HTTP and WebSocket connection the middleware binds (with
    :class:`auditloop.bind`, so every audit event emitted while handling it
    carries them):

    - ``request_id``: the *request_id_header* value sent by the client when
      it is a short id of safe characters (letters, digits, ``._:/+=@-``, at
      most 128), otherwise a fresh random id. HTTP responses echo it in the
      same header.
    - ``actor``: what the *actor* resolver returns (an id string, an
      :class:`~auditloop.Actor` or a dict; ``None`` means
      ``{"id": "anonymous", "type": "anonymous"}``), with the client IP as
      ``actor.ip``. A resolver that raises leaves the actor ``unknown`` and
      binds ``actor_error``; the request goes on.

    The client IP is the connection's peer address. ``X-Forwarded-For`` is
    honoured only when that peer is in *trusted_proxies*, and is then read
    from the right, skipping trusted hops; a client cannot spoof it. (Servers
    may rewrite the peer themselves: uvicorn does so for ``127.0.0.1`` unless
    started with ``proxy_headers=False``.)

    Requests matching *audit_requests* also produce one ``http.request`` event
    with the path as ``target`` (``{"id": "/items/7", "type": "path"}``),
    ``duration_ms``, and ``attributes`` ``method``, ``route`` (the route
    template when the framework sets ``scope["route"]``, like Starlette and
    FastAPI, else the path) and ``status`` (absent without a response). It is
    emitted as the last body chunk is sent (before the client has the whole
    response, so a fail-closed sink's ``AuditError`` aborts it), or when the
    application raises, with ``outcome`` from the status (``success`` below
    400, ``denied`` for 401/403, else ``failure``) or ``failure``/``denied``
    from the exception.

    Context lives in the connection's own task and never leaks into other
    concurrent requests. Lifespan and other scope types pass through
    untouched.

    Args:
        app: the ASGI application to wrap.
        request_id_header: the header carrying the request id.
        trusted_proxies: addresses or networks (``"10.0.0.0/8"``) of proxies
            whose ``X-Forwarded-For`` is believed.
        actor: ``resolver(scope)`` returning the actor (may be ``async``);
            it sees the raw ASGI scope (headers, ``client``, ``path``).
        audit_requests: which requests produce ``http.request`` events:
            patterns ``"METHOD /path"``, ``"METHOD"`` or ``"/path"``, where
            ``*`` matches anything (``"POST /admin/*"``, ``"DELETE"``).
        auditor: the :class:`~auditloop.Auditor` for ``http.request``
            events; default: the global one.

    Raises:
        ConfigurationError: naming the invalid argument.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        request_id_header: str = "X-Request-ID",
        trusted_proxies: Iterable[str] = (),
        actor: Callable[[Scope], object] | None = None,
        audit_requests: Iterable[str] = (),
        auditor: Auditor | None = None,
    ) -> None:
        if not callable(app):
            raise ConfigurationError(
                f"AuditMiddleware: app must be an ASGI application, got {app!r}"
            )
        self.app = app
        self._options = HttpOptions(
            "AuditMiddleware",
            request_id_header=request_id_header,
            trusted_proxies=trusted_proxies,
            actor=actor,
            audit_requests=audit_requests,
            auditor=auditor,
        )
        self._header = request_id_header.lower().encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection; exceptions of the app propagate as is."""
        kind = scope.get("type")
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        received: str | None = None
        forwarded: list[str] = []
        for name, value in scope.get("headers") or ():
            lowered = name.lower()
            if lowered == self._header:
                received = value.decode("latin-1")
            elif lowered == b"x-forwarded-for":
                forwarded.append(value.decode("latin-1"))
        options = self._options
        request_id = options.request_id(received)
        client = scope.get("client")
        ip = options.client_ip(client[0] if client else None, ",".join(forwarded))
        fields = await self._resolve(scope, ip)
        with bind(request_id=request_id, **fields):
            if kind == "http":
                await self._http(scope, receive, send, request_id)
            else:
                await self.app(scope, receive, send)

    async def _resolve(self, scope: Scope, ip: str | None) -> dict[str, Any]:
        options = self._options
        try:
            resolved = None if options.resolver is None else options.resolver(scope)
            if inspect.isawaitable(resolved):
                resolved = await resolved
            return options.resolved_fields(resolved, ip)
        except Exception as exc:
            return options.failed_resolution(exc, ip)

    async def _http(
        self, scope: Scope, receive: Receive, send: Send, request_id: str
    ) -> None:
        options = self._options
        method = str(scope.get("method", ""))
        path = str(scope.get("path", ""))
        echo = (self._header, request_id.encode("latin-1"))
        start = time.perf_counter()
        status: int | None = None
        pending = options.should_record(method, path)

        def finish(error: BaseException | None) -> None:
            nonlocal pending
            if pending:
                pending = False
                route = getattr(scope.get("route"), "path", None)
                options.record_request(
                    method,
                    path,
                    route=route if isinstance(route, str) else None,
                    status=status,
                    start=start,
                    error=error,
                )

        async def send_with_id(message: Message) -> None:
            nonlocal status
            kind = message.get("type")
            if kind == "http.response.start":
                status = int(message.get("status", 200))
                headers = list(message.get("headers") or ())
                if all(name.lower() != echo[0] for name, _ in headers):
                    headers.append(echo)
                message = {**message, "headers": headers}
            elif kind == "http.response.pathsend" or (
                kind == "http.response.body" and not message.get("more_body", False)
            ):
                finish(None)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except BaseException as exc:
            finish(exc)
            raise
        finish(None)
