"""stdlib logging both ways. Run: python examples/integrations_logging.py

``extra={"audit": {...}}`` turns a log record into an audit event
(AuditLogHandler); LoggingSink writes audit events to a stdlib logger.
"""

import logging
import sys

import auditloop
from auditloop.integrations.logging import AuditLogHandler, LoggingSink
from auditloop.sinks import Delivery

logging.basicConfig(
    stream=sys.stdout, level=logging.INFO, format="%(name)s %(levelname)s %(message)s"
)
logging.getLogger().addHandler(AuditLogHandler())  # audit-marked records → events

auditloop.configure(
    sinks=[LoggingSink("audit", format="pretty")],  # events → logger "audit"
    delivery=Delivery(mode="sync"),  # keep the example's output in order
)

log = logging.getLogger("billing.refunds")
with auditloop.bind(actor="bob", request_id="r-7"):
    log.info(
        "refund issued for %s",
        "order-9",
        extra={"audit": {"action": "refund.issue", "target": "order:9", "amount": 25}},
    )
    log.info("an ordinary line, not audited")

auditloop.shutdown()
