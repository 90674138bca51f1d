"""WSGI middleware: request ids, client IPs and actors for every audit event.

Wraps any WSGI application (Flask, Django's WSGI handler, Pyramid)::

    from auditloop.integrations.wsgi import AuditMiddleware

    app.wsgi_app = AuditMiddleware(app.wsgi_app, actor=actor_from_session)
"""

from __future__ import annotations

import contextvars
import functools
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

from auditloop._auditor import Auditor
from auditloop._context import bind
from auditloop.exceptions import ConfigurationError
from auditloop.integrations._http import HttpOptions

__all__ = ["AuditMiddleware"]

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


def _wsgi_text(value: str) -> str:
    """Undo PEP 3333's latin-1 decoding of a path (it was UTF-8 on the wire)."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


class _Exchange:
    """One request's state, shared by ``start_response`` and the response body."""

    __slots__ = ("context", "method", "path", "pending", "route", "start", "status")

    def __init__(
        self, context: contextvars.Context, method: str, path: str, pending: bool
    ) -> None:
        self.context = context
        self.method = method
        self.path = path
        self.pending = pending
        self.route: str | None = None
        self.start = time.perf_counter()
        self.status: int | None = None


class _Body:
    """The application's response iterable, consumed inside the request's context.

    The server iterates the body after the middleware returned, so each
    step re-enters the request's context: streamed responses still see the
    bound fields, and the server's thread never does.
    """

    __slots__ = ("_exchange", "_finish", "_result")

    def __init__(
        self,
        result: Iterable[bytes],
        exchange: _Exchange,
        finish: Callable[[_Exchange, BaseException | None], None],
    ) -> None:
        self._result = result
        self._exchange = exchange
        self._finish = finish

    def __iter__(self) -> Iterator[bytes]:
        run = self._exchange.context.run
        iterator = run(iter, self._result)
        while True:
            try:
                chunk = run(next, iterator)
            except StopIteration:
                return
            except BaseException as exc:
                self._finish(self._exchange, exc)
                raise
            if self._exchange.pending:
                self._finish(self._exchange, None)
            yield chunk

    def close(self) -> None:
        """Close the application's iterable, then record the request if due."""
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                self._exchange.context.run(close)
        finally:
            self._finish(self._exchange, None)


class AuditMiddleware:
    """Bind request id, actor and client IP around each request of a WSGI app.

    Same behaviour and arguments as
    :class:`auditloop.integrations.asgi.AuditMiddleware`, with the WSGI
    ``environ`` in place of the ASGI scope:

    - ``request_id`` from *request_id_header* when safe, else generated, and
      echoed in the response headers;
    - ``actor`` from ``actor(environ)``, with the client IP as ``actor.ip``
      (``REMOTE_ADDR``; ``X-Forwarded-For`` only from *trusted_proxies*);
    - an ``http.request`` event for requests matching *audit_requests*, with
      the path as ``target``, ``duration_ms``, and ``attributes`` ``method``,
      ``route`` (Flask's URL rule when the app is Flask, else the path) and
      ``status``, emitted when the application has returned its response
      (before the server sends the body) or raised.

    The application runs in a copy of the calling context, and so does every
    step of iterating its response, so bound fields reach streamed bodies
    and never leak into the server's thread or other requests.

    Args:
        app: the WSGI application to wrap.
        request_id_header: the header carrying the request id.
        trusted_proxies: addresses or networks of proxies whose
            ``X-Forwarded-For`` is believed.
        actor: ``resolver(environ)`` returning the actor.
        audit_requests: which requests produce ``http.request`` events
            (``"POST /admin/*"``, ``"DELETE"``, ``"/billing/*"``).
        auditor: the :class:`~auditloop.Auditor` for ``http.request``
            events; default: the global one.

    Raises:
        ConfigurationError: naming the invalid argument.
    """

    def __init__(
        self,
        app: WSGIApp,
        *,
        request_id_header: str = "X-Request-ID",
        trusted_proxies: Iterable[str] = (),
        actor: Callable[[Environ], object] | None = None,
        audit_requests: Iterable[str] = (),
        auditor: Auditor | None = None,
    ) -> None:
        if not callable(app):
            raise ConfigurationError(
                f"AuditMiddleware: app must be a WSGI application, got {app!r}"
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
        self._header = request_id_header
        self._environ_key = "HTTP_" + request_id_header.upper().replace("-", "_")

    def __call__(
        self, environ: Environ, start_response: StartResponse
    ) -> Iterable[bytes]:
        """Handle one request; exceptions of the app propagate as is."""
        options = self._options
        request_id = options.request_id(environ.get(self._environ_key))
        ip = options.client_ip(
            environ.get("REMOTE_ADDR"), environ.get("HTTP_X_FORWARDED_FOR")
        )
        fields = self._resolve(environ, ip)
        method = str(environ.get("REQUEST_METHOD", ""))
        path = _wsgi_text(
            str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
        )
        # The request's own context: set inside it, the scope never reaches
        # the server thread's context, and the body is iterated in it too.
        context = contextvars.copy_context()
        context.run(bind(request_id=request_id, **fields).__enter__)
        exchange = _Exchange(context, method, path, options.should_record(method, path))
        header_lower = self._header.lower()

        def start_response_with_id(
            status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
        ) -> Callable[[bytes], object]:
            try:
                exchange.status = int(status.split(" ", 1)[0])
            except ValueError:
                exchange.status = None
            exchange.route = _flask_rule(environ)
            if all(name.lower() != header_lower for name, _ in headers):
                headers = [*headers, (self._header, request_id)]
            if exc_info is None:
                return start_response(status, headers)
            return start_response(status, headers, exc_info)

        try:
            result = context.run(self.app, environ, start_response_with_id)
        except BaseException as exc:
            self._finish(exchange, exc)
            raise
        if exchange.status is not None:
            self._finish(exchange, None)
        return _Body(result, exchange, self._finish)

    def _resolve(self, environ: Environ, ip: str | None) -> dict[str, Any]:
        options = self._options
        try:
            resolved = None if options.resolver is None else options.resolver(environ)
            return options.resolved_fields(resolved, ip)
        except Exception as exc:
            return options.failed_resolution(exc, ip)

    def _finish(self, exchange: _Exchange, error: BaseException | None) -> None:
        if exchange.pending:
            exchange.pending = False
            exchange.context.run(
                functools.partial(
                    self._options.record_request,
                    exchange.method,
                    exchange.path,
                    route=exchange.route,
                    status=exchange.status,
                    start=exchange.start,
                    error=error,
                )
            )


def _flask_rule(environ: Environ) -> str | None:
    """Return the matched URL rule of a Flask (werkzeug) request, if any.

    Flask's request object is in the environ while the app runs and has the
    rule as ``url_rule.rule``; read duck-typed, without importing Flask.
    """
    rule = getattr(
        getattr(environ.get("werkzeug.request"), "url_rule", None), "rule", None
    )
    return rule if isinstance(rule, str) else None
