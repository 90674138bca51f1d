"""A signed webhook: auditloop POSTs alerts, a receiver verifies them.

Run: python examples/rules_webhook.py

The receiver is a tiny ``http.server`` on 127.0.0.1 that checks the
``X-Auditloop-Signature-256`` header over the raw body (as GitHub webhook
receivers do), rejects stale ``sent_at`` times and de-duplicates on ``id``.
"""

import hashlib
import hmac
import http.server
import json
import threading
from datetime import UTC, datetime

import auditloop
from auditloop import rules
from auditloop.testing import FakeClock

SECRET = b"change-me"
seen_ids: set[str] = set()


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        signature = self.headers.get("X-Auditloop-Signature-256", "")
        payload = json.loads(body)
        sent_at = datetime.fromisoformat(payload["sent_at"])
        fresh = abs((datetime.now(UTC) - sent_at).total_seconds()) < 300
        if not hmac.compare_digest(expected, signature) or not fresh:
            self.send_response(401)
        elif payload["id"] in seen_ids:
            self.send_response(200)  # a retry of something already handled
        else:
            seen_ids.add(payload["id"])
            alert = payload["alert"]
            print(
                f"receiver: verified {alert['status']} {alert['rule']} {alert['group']}"
            )
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
threading.Thread(target=server.serve_forever, daemon=True).start()
url = f"http://127.0.0.1:{server.server_address[1]}/alerts"

clock = FakeClock()
hook = rules.webhook(url, secret=SECRET, timeout=5, retries=3)
auditor = auditloop.configure(
    clock=clock,
    rules=[
        rules.Threshold(
            "mass-export",
            match=rules.match(action="data.export"),
            group_by=["actor.id"],
            at_least=3,
            within="1m",
            then=[hook],  # and, by default, on_resolve too
        )
    ],
)
assert auditor.rules is not None
for table in ("users", "payments", "invoices"):
    auditloop.emit("data.export", actor="mallory", target=f"table:{table}")
    clock.advance(5)
clock.advance(120)
auditor.rules.tick()
auditloop.flush()  # waits for the webhook deliveries
print("actions:", auditloop.stats()["rules"]["actions"])
auditloop.shutdown()
server.shutdown()
