"""OpenTelemetry correlation: the active span's ids in every event's context.

Needs ``opentelemetry-api`` (``pip install 'auditloop[otel]'``). You rarely
import this module yourself: ``configure(trace_context=...)`` puts
:func:`add_trace_context` in the processor chain, right before redaction,
and by default does so only when the application already imported
OpenTelemetry.
"""

from __future__ import annotations

from typing import Any

try:
    from opentelemetry import trace
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        "auditloop.integrations.otel needs opentelemetry-api: "
        "pip install 'auditloop[otel]'"
    ) from exc

__all__ = ["add_trace_context"]


def add_trace_context(
    auditor: Any,  # noqa: ARG001 - the processor signature
    method: str,  # noqa: ARG001
    event: dict[str, Any],
) -> dict[str, Any]:
    """Processor: add the current span's ``trace_id`` and ``span_id`` to ``context``.

    Ids are lower-case hex (32 and 16 digits), as in W3C ``traceparent``.
    Without a valid current span the event is returned unchanged. The
    ``context`` dict is replaced, not mutated (it may be shared). Thread- and
    task-safe: the span comes from OpenTelemetry's context of the caller.
    """
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return event
    ids = {
        "trace_id": format(span_context.trace_id, "032x"),
        "span_id": format(span_context.span_id, "016x"),
    }
    context = event.get("context")
    if context is not None:
        event["context"] = {**context, **ids}
        return event
    # Keep the schema's field order: ``context`` goes right before ``source``.
    ordered: dict[str, Any] = {}
    for key, value in event.items():
        if key == "source":
            ordered["context"] = ids
        ordered[key] = value
    ordered.setdefault("context", ids)
    return ordered
