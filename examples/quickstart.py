"""The README quickstart: record, deliver, read back.

Run: python examples/quickstart.py
"""

import auditloop
from auditloop import sinks

auditloop.configure(service="billing-api", sinks=[sinks.FileSink("audit.jsonl")])


@auditloop.audited("document.delete", target=lambda doc_id, **_: f"document:{doc_id}")
def delete_document(doc_id: str, password: str) -> None:
    if doc_id == "locked":
        raise PermissionError("document is locked")


with auditloop.bind(actor="alice", request_id="r-1"):
    delete_document("d-9", password="hunter2")
    with auditloop.audit("role.grant", target="user:42") as rec:
        rec.set(role="admin", api_key="sk-live-123")  # redacted on the way out

auditloop.emit("deploy.finished", actor="ci", target="service:billing", version="1.4.2")
auditloop.flush()
for event in auditloop.read_events("audit.jsonl"):
    print(event.time, event.actor and event.actor.id, event.action, event.outcome)
