"""Value-level redaction: patterns, hash mode for correlation, strict mode.

Run: python examples/trust_redaction.py
"""

import auditloop
from auditloop import sinks
from auditloop.processors import Redactor

memory = sinks.MemorySink()
auditloop.configure(
    sinks=[memory],
    redact=Redactor(emails=True, hash_key=b"correlation-key", mode="strict"),
)

for user in ("alice", "bob", "alice"):
    auditloop.emit(
        "api.call",
        actor=user,
        header="Authorization: Bearer tok-" + user + "-0123456789",
        note=f"{user}@example.com paid with 4111 1111 1111 1111",
        aws="AKIAIOSFODNN7EXAMPLE",
    )

for event in memory.events:
    print(event.actor.id, dict(event.attributes))
# The same secret always maps to the same token: alice's two calls share one.
