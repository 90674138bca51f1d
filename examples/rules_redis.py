"""A fleet of processes counting one threshold together through Redis.

Run: python examples/rules_redis.py   (REDIS_URL=redis://host:6379/0 to use
your own server; otherwise a throw-away redis-server is started on a free
127.0.0.1 port, which needs the ``redis-server`` program)

Four worker processes each see 3 permission grants by mallory. The rule
wants 10 within 10 minutes: no single process ever sees 10, but with
``rules.RedisStore`` the fleet counts 12, and exactly one worker — the one
whose event was the tenth — fires the alert. With the in-memory store
(``--memory``) nobody fires.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import auditloop
from auditloop import rules


def worker(
    url: str, prefix: str, memory: bool, start: multiprocessing.synchronize.Event
) -> None:
    def page(alert: rules.Alert) -> None:
        print(
            f"worker {os.getpid()}: {alert.status} {alert.rule} {dict(alert.group)}"
            f" value={alert.value:g} evidence={len(alert.evidence)} events"
        )

    auditloop.configure(
        rules=[
            rules.Threshold(
                "permission-storm",
                match=rules.match(action="permission.*"),
                group_by=["actor.id"],
                at_least=10,
                within="10m",
                then=[page],
            )
        ],
        # Every process using the same prefix shares the rules' state.
        rule_store=None if memory else rules.RedisStore(url, prefix=prefix),
    )
    start.wait()
    for _ in range(3):
        auditloop.emit("permission.grant", actor="mallory", target="user:42")
    auditloop.shutdown()  # runs the queued action (page) before exiting


def local_redis() -> tuple[str, subprocess.Popen[bytes]]:
    """Start a redis-server without persistence on a free port."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("needs redis-server (or set REDIS_URL)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            tempfile.mkdtemp(),
        ],
        stdout=subprocess.DEVNULL,
    )
    with socket.socket() as probe:
        for _ in range(500):
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
            time.sleep(0.01)
    return f"redis://127.0.0.1:{port}/0", server


def main() -> None:
    memory = "--memory" in sys.argv
    url, server = os.environ.get("REDIS_URL", ""), None
    if not url and not memory:
        url, server = local_redis()
    try:
        prefix = f"example-{os.getpid()}:"  # a fresh fleet state per run
        context = multiprocessing.get_context("spawn")
        start = context.Event()
        workers = [
            context.Process(target=worker, args=(url, prefix, memory, start))
            for _ in range(4)
        ]
        for process in workers:
            process.start()
        time.sleep(0.5)  # let every worker configure itself first
        start.set()
        for process in workers:
            process.join()
        print("4 workers x 3 grants:", "memory store" if memory else "RedisStore")
    finally:
        if server is not None:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
