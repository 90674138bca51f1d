"""A throwaway HTTP receiver for the HTTP examples (standard library only).

Not a collector to deploy: it prints nothing, keeps every request body
(gunzipped) in memory, and can be told to answer 503 for a while.
"""

from __future__ import annotations

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """Listens on 127.0.0.1; ``bodies`` holds (path, headers, body) tuples."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.bodies: list[tuple[str, dict[str, str], bytes]] = []
        self.fail_next = 0  # answer 503 to this many requests first
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                status = 200
                if receiver.fail_next > 0:
                    receiver.fail_next -= 1
                    status = 503
                else:
                    receiver.bodies.append((self.path, dict(self.headers), body))
                bulk = "_bulk" in self.path
                reply = b'{"errors":false,"items":[]}' if bulk else b"{}"
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
