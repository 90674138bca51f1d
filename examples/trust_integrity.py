"""A tamper-evident trail: chain, rotate, verify, then tamper and verify again.

Run: python examples/trust_integrity.py
"""

import secrets
import tempfile
from pathlib import Path

import auditloop
from auditloop import sinks

key = secrets.token_bytes(32)  # in production: from a secret store
trail = Path(tempfile.mkdtemp()) / "audit.jsonl"

auditloop.configure(
    service="payments",
    sinks=[
        sinks.FileSink(
            trail, chain=True, key=key, key_id="2026-01", max_bytes=20_000, backups=50
        )
    ],
)
with auditloop.bind(actor="alice"):
    for n in range(200):
        auditloop.emit("payment.refund", target=f"payment:p-{n}", amount=n)
        if n % 50 == 49:
            auditloop.flush()  # written in four batches: the file rotates
auditloop.shutdown()

anchor = auditloop.chain_head(trail)  # keep this somewhere the writer cannot reach
result = auditloop.verify(trail, key=key, expected_head=anchor)
print(f"{len(result.files)} files, {result.records} records, ok={result.ok}")

# Tamper: delete one record of the newest file and drop its last two.
lines = trail.read_bytes().splitlines(keepends=True)
del lines[3]
trail.write_bytes(b"".join(lines[:-2]))

for finding in auditloop.verify(trail, key=key, expected_head=anchor).findings:
    where = f"{Path(finding.file).name}:{finding.line}"
    print(f"{finding.kind} at {where}: {finding.message}")
