"""Survive a collector outage with a disk spool. Run: python examples/http_spool.py

The collector is down while events are emitted: they go to the spool at
once (the application never waits). When it comes back, the replay thread
delivers them in order; segments are deleted only after a 2xx.
"""

import socket
import tempfile

from http_receiver import Receiver

import auditloop
from auditloop import sinks

with socket.socket() as s:  # a port nobody listens on yet
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]

spool_dir = tempfile.mkdtemp(prefix="auditloop-spool-")
sink = sinks.HTTPSink(f"http://127.0.0.1:{port}", spool_dir=spool_dir, backoff_max=0.5)
auditloop.configure(service="billing-api", sinks=[sink])

for i in range(1000):
    auditloop.emit("invoice.send", actor="batch-job", target=f"invoice:{i}")
auditloop.flush(timeout=0.5)  # the collector is down: flush gives up in time
print("during the outage:", sink.stats()["spool"])

receiver = Receiver(port).start()  # the collector comes back
auditloop.flush(timeout=10)
print("after it is back: ", sink.stats()["spool"])
print("received:", sum(len(b.splitlines()) for _, _, b in receiver.bodies), "events")
auditloop.shutdown()
receiver.stop()
