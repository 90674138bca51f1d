"""gunicorn with ``--preload``: configure auditloop in each worker, after the fork.

Run (needs ``pip install gunicorn``)::

    cd examples
    gunicorn -c integrations_gunicorn.py integrations_gunicorn:app
    curl -H 'X-Request-ID: r-1' http://127.0.0.1:8000/hello

This file is both the gunicorn config (settings and server hooks) and the
WSGI app module. With ``preload_app`` the app is imported once in the
master; every worker then configures its own sinks in ``post_fork`` (its
own file, its own writer thread) and drains them in ``worker_exit``.
"""

import os
from typing import Any

import auditloop
from auditloop import sinks
from auditloop.integrations.wsgi import AuditMiddleware

# -- gunicorn settings ------------------------------------------------------------
bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = 2
preload_app = True


def post_fork(server: Any, worker: Any) -> None:
    """In each new worker: a configuration of its own (one file per process)."""
    auditloop.configure(
        service="shop",
        sinks=[sinks.FileSink(f"audit-{os.getpid()}.jsonl")],
    )


def worker_exit(server: Any, worker: Any) -> None:
    """In each exiting worker: deliver what is still queued."""
    auditloop.shutdown(timeout=5)


# -- the application (imported once, in the master, with --preload) -----------------


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    auditloop.emit("page.view", target=f"page:{environ['PATH_INFO']}")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"served by worker {os.getpid()}\n".encode()]


app = AuditMiddleware(hello)
