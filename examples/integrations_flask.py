"""Flask with the WSGI AuditMiddleware. Run: python examples/integrations_flask.py

Uses Flask's test client (no network): each request binds its request id and
actor, and POST requests are recorded as ``http.request`` events.
"""

from flask import Flask, request

import auditloop
from auditloop.integrations.wsgi import AuditMiddleware
from auditloop.sinks import MemorySink

sink = MemorySink()
auditloop.configure(service="wiki", sinks=[sink])

app = Flask(__name__)
app.wsgi_app = AuditMiddleware(
    app.wsgi_app,
    actor=lambda environ: environ.get("HTTP_X_USER"),  # e.g. from your session
    audit_requests=["POST"],
)


@app.post("/pages/<name>")
def edit_page(name: str) -> dict[str, str]:
    auditloop.emit("page.edit", target=f"page:{name}", size=len(request.data))
    return {"saved": name}


client = app.test_client()
for user in ("alice", "bob"):
    response = client.post(
        "/pages/home",
        data=b"hello",
        headers={"X-User": user, "X-Request-ID": f"r-{user}"},
    )
    print(response.status_code, response.headers["X-Request-ID"])

for event in sink.events:
    print(
        f"{event.action:13} actor={event.actor.id if event.actor else '-':6}"
        f" request_id={event.context['request_id']} attributes={dict(event.attributes)}"
    )
