"""Celery: carry the audit context from the caller into the task.

Run: python examples/integrations_celery.py   (needs ``pip install celery``)

The publisher puts the fields bound with ``auditloop.bind`` (request id,
actor, ...) into the task message's headers; the worker binds them again
around the task, so events the task emits carry the request that queued it.
This script uses Celery's in-memory broker and an embedded worker thread.
"""

from typing import Any

from celery import Celery, Task
from celery.signals import before_task_publish

import auditloop
from auditloop.sinks import MemorySink

HEADER = "auditloop_context"


@before_task_publish.connect
def carry_audit_context(headers: dict[str, Any], **_: Any) -> None:
    """Publisher side: copy the bound fields into the message headers."""
    with auditloop.bind() as bound:  # an empty bind() yields the current fields
        if bound:
            headers[HEADER] = {
                key: value.to_dict() if isinstance(value, auditloop.Actor) else value
                for key, value in bound.items()
            }


class AuditedTask(Task):
    """Worker side: run every task inside the fields its caller had bound."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        fields = getattr(self.request, HEADER, None) or {}
        with auditloop.bind(**fields, task=self.name, task_id=self.request.id):
            return super().__call__(*args, **kwargs)


app = Celery(
    "billing", broker="memory://", backend="cache+memory://", task_cls=AuditedTask
)


@app.task
@auditloop.audited("invoice.send", target=lambda invoice_id: f"invoice:{invoice_id}")
def send_invoice(invoice_id: str) -> str:
    return f"sent {invoice_id}"


if __name__ == "__main__":
    from celery.contrib.testing.worker import start_worker

    sink = MemorySink()
    auditloop.configure(sinks=[sink])
    with start_worker(app, pool="solo", perform_ping_check=False):
        with auditloop.bind(actor="alice", request_id="req-1"):
            result = send_invoice.delay("inv-7")
        print(result.get(timeout=10))
    for event in sink.events:
        print(event.action, event.actor and event.actor.id, dict(event.context))
