"""A chained trail written by a helper process, off the application's GIL.

A chained FileSink spends an HMAC per record; with writer="process" that
work runs in a helper Python process on another core, and the trail is the
same as without it: rotated, checkpointed and verifiable.

Run: python examples/trust_writer_process.py
"""

import secrets
import tempfile
from pathlib import Path

import auditloop
from auditloop import sinks

key = secrets.token_bytes(32)  # in production: from a secret store
trail = Path(tempfile.mkdtemp()) / "audit.jsonl"
alerts = sinks.MemorySink()  # sees the sink's own auditloop.checkpoint events

auditloop.configure(
    service="payments",
    sinks=[
        sinks.FileSink(
            trail,
            chain=True,
            key=key,
            key_id="2026-01",
            max_bytes=200_000,
            backups=50,
            checkpoint_every=2_000,
            writer="process",  # the helper starts here (~0.1 s)
        ),
        alerts,
    ],
)


@auditloop.audited("payment.refund", target=lambda payment_id: f"payment:{payment_id}")
def refund(payment_id: str) -> None:
    """A CPU-bound handler: the chain's hashing no longer competes with it."""


with auditloop.bind(actor="alice"):
    for n in range(5_000):
        refund(f"p-{n}")
auditloop.shutdown()  # drains the queue, then the helper writes, closes and exits

result = auditloop.verify(trail, key=key)
checkpoints = [e for e in alerts.events if e.action == "auditloop.checkpoint"]
print(f"{len(result.files)} files, {result.records} records, ok={result.ok}")
print(f"{len(checkpoints)} checkpoints reached the other sinks")
