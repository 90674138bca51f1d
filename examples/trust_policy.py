"""An audit policy loaded from TOML: drop noise, keep machines to metadata.

Run: python examples/trust_policy.py
"""

import tempfile
from pathlib import Path

import auditloop
from auditloop import sinks

policy_file = Path(tempfile.mkdtemp()) / "audit-policy.toml"
policy_file.write_text(
    """
[policy]
default = "full"

[[policy.rules]]
level = "none"
action = ["health.*", "metrics.*"]

[[policy.rules]]
level = "metadata"
actor = "svc-*"

[[policy.rules]]
level = "request"
category = "data"
"""
)

memory = sinks.MemorySink()
auditloop.configure(sinks=[memory], policy=policy_file)


@auditloop.audited("report.export", category="data", capture=["report_id", "return"])
def export(report_id: str) -> str:
    return f"s3://exports/{report_id}.csv"


with auditloop.bind(actor="alice"):
    auditloop.emit("health.check")
    export("r-1")
    auditloop.emit("role.grant", target="user:42", role="admin")
with auditloop.bind(actor="svc-nightly"):
    export("r-2")

for event in memory.events:
    print(f"{event.actor.id:12} {event.action:14} {dict(event.attributes)}")
