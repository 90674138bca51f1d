"""FastAPI with AuditMiddleware. Run: python examples/integrations_fastapi.py

Serves the app with uvicorn on 127.0.0.1 (a free port) for three requests and
prints the audit trail: every event carries its request's id and actor.
"""

import socket
import threading
import urllib.error
import urllib.request

import uvicorn
from fastapi import FastAPI, HTTPException

import auditloop
from auditloop.integrations.asgi import AuditMiddleware
from auditloop.sinks import Delivery, StdoutSink

auditloop.configure(
    service="orders-api",
    sinks=[StdoutSink(format="pretty")],
    delivery=Delivery(mode="sync"),
)


def actor_from_token(scope):
    """Resolve the actor from the Authorization header (a real app verifies it)."""
    headers = dict(scope["headers"])
    token = headers.get(b"authorization", b"").decode()
    return {"id": token.removeprefix("Bearer "), "type": "user"} if token else None


app = FastAPI()
app.add_middleware(
    AuditMiddleware,
    actor=actor_from_token,
    audit_requests=["POST /orders/*", "DELETE"],  # also record these requests
    trusted_proxies=["10.0.0.0/8"],  # X-Forwarded-For is believed from these only
)


@app.delete("/orders/{order_id}")
async def cancel(order_id: str) -> dict[str, str]:
    if order_id == "locked":
        raise HTTPException(status_code=403)
    auditloop.emit("order.cancel", target=f"order:{order_id}")
    return {"cancelled": order_id}


sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen()
server = uvicorn.Server(uvicorn.Config(app, log_level="warning", proxy_headers=False))
thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
thread.start()

base = f"http://127.0.0.1:{sock.getsockname()[1]}"
for order, user in [("o-1", "alice"), ("o-2", "bob"), ("locked", "mallory")]:
    request = urllib.request.Request(
        f"{base}/orders/{order}",
        method="DELETE",
        headers={"Authorization": f"Bearer {user}", "X-Request-ID": f"req-{order}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
            echoed = response.headers["X-Request-ID"]
    except urllib.error.HTTPError as error:
        error.read()
        echoed = error.headers["X-Request-ID"]
    print(f"   response to {user} echoed X-Request-ID: {echoed}")

server.should_exit = True
thread.join()
auditloop.shutdown()
