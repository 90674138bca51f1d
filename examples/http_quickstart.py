"""Ship audit events to an HTTP collector. Run: python examples/http_quickstart.py

Starts a throwaway local receiver, sends NDJSON batches to it (gzip,
keep-alive, retries), and prints what arrived and the sink's stats.
"""

import orjson
from http_receiver import Receiver

import auditloop
from auditloop import sinks

receiver = Receiver().start()
receiver.fail_next = 1  # the first request gets a 503: it is retried

auditloop.configure(
    service="billing-api",
    sinks=[
        sinks.HTTPSink(
            receiver.url + "/ingest",
            bearer_token="s3cr3t-token",  # never shown in errors or stats
            backoff=0.1,
        )
    ],
)
with auditloop.bind(actor="alice", request_id="r-1"):
    for doc in ("d-1", "d-2", "d-3"):
        auditloop.emit("document.delete", target=f"document:{doc}")
auditloop.flush(timeout=10)

for path, headers, body in receiver.bodies:
    for line in body.splitlines():
        event = orjson.loads(line)
        print(path, headers["Content-Type"], event["action"], event["target"]["id"])
stats = auditloop.stats()["sinks"]["HTTPSink"]["sink"]
print({k: stats[k] for k in ("sent", "retried", "failures", "last_error")})
auditloop.shutdown()
receiver.stop()
