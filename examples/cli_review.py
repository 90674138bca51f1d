"""The review half of the loop, from a script: record a trail, then read it back
with the ``auditloop`` command line (summary, query, replay, verify, report).

Run: python examples/cli_review.py   (writes into a temporary directory)
"""

import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import auditloop
from auditloop import sinks
from auditloop.testing import FakeClock

RULES = """\
[[rules]]
name = "failed-logins"
kind = "threshold"
at_least = 3
within = "5m"
group_by = ["actor.id"]
[rules.match]
action = "user.login"
outcome = "failure"
"""


def cli(*args: str) -> int:
    """Run ``auditloop ARGS...`` the way a shell would, and show it."""
    print(f"\n$ auditloop {' '.join(args)}", flush=True)
    return subprocess.run(
        [sys.executable, "-m", "auditloop", *args], check=False
    ).returncode


directory = Path(tempfile.mkdtemp(prefix="auditloop-cli-"))
trail = directory / "audit.jsonl"
key = directory / "audit.key"
key.write_text("example-key-0123456789")
rules_file = directory / "rules.toml"
rules_file.write_text(RULES)

# Record: an hour of activity, chained with an HMAC key, time from a fake clock.
clock = FakeClock()
auditloop.configure(
    service="example",
    sinks=[sinks.FileSink(trail, chain=True, key=key.read_text(), key_id="k1")],
    clock=clock,
)
for minute in range(60):
    auditloop.emit("document.read", actor="alice", target=f"document:{minute % 7}")
    if 20 <= minute < 24:
        auditloop.emit(
            "user.login", actor="mallory", outcome="failure", target="user:bob"
        )
    clock.advance(timedelta(minutes=1))
auditloop.shutdown()

# Review.
cli("summary", str(trail), "--top", "3")
cli("query", str(trail), "--actor", "mallory", "--table")
status = cli("replay", str(trail), "--rules", str(rules_file), "--fail-on-alert")
print(f"(replay exit status {status}: 1 means an alert would have fired)")
cli("verify", str(trail), "--key-file", str(key))
cli("report", str(trail), "--key-file", str(key), "-o", str(directory / "report.html"))
