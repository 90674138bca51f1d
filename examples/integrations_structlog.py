"""structlog both ways. Run: python examples/integrations_structlog.py

Audit events appear in the application's structlog output (StructlogSink),
log calls marked ``audit=True`` become audit events (audit_events), and
values bound with structlog.contextvars reach every audit event's context.
"""

import structlog

import auditloop
from auditloop.integrations.structlog import StructlogSink, audit_events
from auditloop.sinks import Delivery, StdoutSink

structlog.configure(
    processors=[
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        audit_events,  # log calls with audit=True also become audit events
        structlog.dev.ConsoleRenderer(colors=False),
    ]
)
log = structlog.get_logger()

auditloop.configure(
    service="billing-api",
    sinks=[
        StdoutSink(format="pretty"),  # the audit trail itself
        StructlogSink(log),  # and a copy in the application log
    ],
    delivery=Delivery(mode="sync"),  # keep the example's output in order
)

structlog.contextvars.bind_contextvars(request_id="r-42", actor="alice")

# An ordinary log line that is also an audit event (logged once, audited once).
log.info("user.login", audit=True, method="password")

# An audit event from auditloop itself: it shows up in the structlog output too.
auditloop.emit("invoice.void", target="invoice:7", reason="duplicate")

auditloop.shutdown()
