"""OpenTelemetry trace ids in audit events. Run: python examples/integrations_otel.py

The app uses OpenTelemetry (it imported ``opentelemetry.trace``), so
``configure()`` adds the active span's trace_id and span_id to every
event's context automatically (``trace_context=None``, the default).
"""

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

import auditloop
from auditloop.sinks import MemorySink

trace.set_tracer_provider(TracerProvider())
tracer = trace.get_tracer("payments")

sink = MemorySink()
auditloop.configure(sinks=[sink])  # trace_context=None: on, since OTel is in use

with tracer.start_as_current_span("refund") as span:
    auditloop.emit("refund.issue", actor="alice", target="payment:3")
    print("span trace_id:", format(span.get_span_context().trace_id, "032x"))

auditloop.emit("outside.any.span")

for event in sink.events:
    print(event.action, dict(event.context))
