"""Show each HTTPSink wire format. Run: python examples/http_formats.py [FORMAT]

FORMAT is one of ndjson, json-array, otlp, splunk-hec, elasticsearch-bulk
(default: all). Prints the request path, content type and body received by
a throwaway local receiver.
"""

import sys

from http_receiver import Receiver

import auditloop
from auditloop import sinks

FORMATS = ("ndjson", "json-array", "otlp", "splunk-hec", "elasticsearch-bulk")

receiver = Receiver().start()
for fmt in sys.argv[1:] or FORMATS:
    receiver.bodies.clear()
    sink = sinks.HTTPSink(receiver.url, format=fmt, gzip_min_bytes=None)
    auditor = auditloop.Auditor(service="billing-api", sinks=[sink])
    with auditloop.bind(actor="alice", trace_id="0af7651916cd43dd8448eb211c80319c"):
        auditor.emit("role.grant", target="user:42", severity="high", role="admin")
    auditor.shutdown(timeout=5)
    path, headers, body = receiver.bodies[0]
    print(f"== {fmt}: POST {path} ({headers['Content-Type']})")
    print(body.decode())
receiver.stop()
