"""Optional integrations with the stack an application already runs.

Each integration lives in its own module and is imported only when you
import it; ``import auditloop`` imports none of them, and their third-party
imports (structlog's stdlib bridge, OpenTelemetry) happen only there:

- :mod:`auditloop.integrations.structlog`: :class:`StructlogSink` and the
  :func:`audit_events` processor.
- :mod:`auditloop.integrations.logging`: :class:`AuditLogHandler` and
  :class:`LoggingSink` for the standard library's :mod:`logging`.
- :mod:`auditloop.integrations.asgi`: ``AuditMiddleware`` for ASGI apps
  (Starlette, FastAPI, Django's ASGI handler).
- :mod:`auditloop.integrations.wsgi`: ``AuditMiddleware`` for WSGI apps
  (Flask, Django's WSGI handler).
- :mod:`auditloop.integrations.otel`: :func:`add_trace_context`, the
  processor behind ``configure(trace_context=...)``.
"""

from __future__ import annotations

__all__: list[str] = []
