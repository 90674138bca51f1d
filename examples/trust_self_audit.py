"""Self-audit: suspending, reconfiguring and retention leave their own events.

Run: python examples/trust_self_audit.py
"""

import tempfile
from pathlib import Path

import auditloop
from auditloop import sinks

directory = Path(tempfile.mkdtemp())
memory = sinks.MemorySink()
files = sinks.FileSink(directory / "audit.jsonl", max_bytes=2_000, retain_files=2)
auditloop.configure(service="billing", sinks=[memory, files])

with auditloop.bind(actor="ops-alice"):
    with auditloop.suspended(reason="bulk re-import"):
        for n in range(500):
            auditloop.emit("invoice.import", n=n)  # skipped, but counted
    for n in range(40):
        auditloop.emit("invoice.paid", target=f"invoice:{n}", amount=n)
        auditloop.flush()  # small batches: the file rotates, old files go
    auditloop.configure(service="billing", sinks=[memory])  # the file sink is off

for event in memory.events:
    if event.action.startswith("auditloop."):
        print(event.actor.id, event.action, event.reason or "", dict(event.attributes))
