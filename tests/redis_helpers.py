"""A real redis-server for the RedisStore tests, and a child-process worker.

``RedisServer`` starts ``redis-server`` on a free 127.0.0.1 port in a temp
dir, without persistence (``--save "" --appendonly no``), ready once it
answers PING; ``kill()`` sends SIGKILL, ``start()`` starts it again on the
same port.

Run as a script, this module is one process of a "fleet" (see
``Worker``): it configures an Auditor with the rules and store given as JSON,
prints ``ready``, waits for ``go`` on stdin, emits its events, prints
``done``, then keeps its ticker running (so it can report resolutions) until
stdin closes. Every alert it reports is printed as a JSON line.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REDIS_SERVER = shutil.which("redis-server") or (
    "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
)
HERE = Path(__file__).parent
NO_REDIS = (
    "redis-server not found: install it (tools/ensure-redis.sh, or apt-get "
    "install redis-server) to run the RedisStore tests"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process on 127.0.0.1 (no persistence)."""

    def __init__(self, workdir: Path, *options: str) -> None:
        assert REDIS_SERVER is not None
        self.workdir = workdir
        self.options = options  # more redis-server command-line options
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.workdir / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                str(REDIS_SERVER),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--daemonize",
                "no",
                *self.options,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.client().ping():
                    return
            except Exception:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "redis-server did not start: "
                        + (self.workdir / "redis.log").read_text()
                    ) from None
            time.sleep(0.01)

    def kill(self) -> None:
        """SIGKILL the server (no shutdown, no save) and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=2)

    def keys(self, prefix: str) -> list[str]:
        return sorted(k.decode() for k in self.client().scan_iter(f"{prefix}*"))

    def stop(self) -> None:
        self.kill()


@contextlib.contextmanager
def running(workdir: Path, *options: str) -> Iterator[RedisServer]:
    """A started RedisServer (with more command-line *options*), killed after."""
    server = RedisServer(workdir, *options)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def server_fixture(tmp_path_factory: Any, *options: str) -> Any:
    """Body of the ``redis_server`` fixtures: start one, yield it, kill it."""
    import pytest

    if REDIS_SERVER is None:
        pytest.skip(NO_REDIS)
    with running(tmp_path_factory.mktemp("redis"), *options) as server:
        yield server


class Worker:
    """One child process of the fleet (this file run as a script)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "redis_helpers.py"), json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(HERE.parent / "src")},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.alerts: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode().strip()
            if line.startswith("{"):
                self.alerts.append(json.loads(line))
            else:
                self.lines.put(line)

    def expect(self, word: str, timeout: float = 30) -> None:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"worker did not say {word!r}") from None
        assert word == line

    def send(self, word: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(word.encode() + b"\n")
        self.process.stdin.flush()

    def finish(self, timeout: float = 30) -> dict[str, Any]:
        """Close stdin (the worker shuts down) and return its final report."""
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.close()
        self.process.wait(timeout)
        self._reader.join(timeout)
        assert self.process.stderr is not None
        stderr = self.process.stderr.read().decode()
        assert 0 == self.process.returncode, stderr
        line = self.lines.get(timeout=1)
        return dict(json.loads(line.removeprefix("stats ")))

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def run_fleet(configs: list[dict[str, Any]]) -> list[Worker]:
    """Start workers, wait until all are ready, then let them all go."""
    workers = [Worker(config) for config in configs]
    try:
        for worker in workers:
            worker.expect("ready")
        for worker in workers:
            worker.send("go")
        for worker in workers:
            worker.expect("done")
    except BaseException:
        for worker in workers:
            worker.kill()
        raise
    return workers


def _main(config: dict[str, Any]) -> None:
    import auditloop
    from auditloop import rules

    offset = float(config.get("offset", 0.0))
    store: Any = None
    if config["store"] == "redis":
        store = rules.RedisStore(
            config["url"],
            prefix=config["prefix"],
            time=config.get("time", "server"),
            timeout=1.0,
        )
    lock = threading.Lock()

    def report(alert: rules.Alert) -> None:
        line = json.dumps(
            {
                "rule": alert.rule,
                "status": alert.status,
                "group": dict(alert.group),
                "value": alert.value,
                "time": alert.time.timestamp(),
                "fired_at": alert.fired_at.timestamp(),
                "pid": os.getpid(),
            }
        )
        with lock:
            print(line, flush=True)

    auditor = auditloop.Auditor(
        rules=rules.load({"rules": config["rules"]}),
        rule_store=store,
        clock=lambda: time.time() + offset,
    )
    assert auditor.rules is not None
    auditor.rules.add_listener(report)
    print("ready", flush=True)
    assert "go" == sys.stdin.readline().strip()
    for event in config["events"]:
        auditor.emit(
            event["action"],
            actor=event.get("actor"),
            target=event.get("target"),
            outcome=event.get("outcome", "success"),
        )
    print("done", flush=True)
    sys.stdin.read()  # until the parent closes stdin; the ticker keeps running
    stats = auditor.stats()["rules"]
    auditor.shutdown(timeout=5)
    with lock:
        print("stats " + json.dumps(stats), flush=True)


if __name__ == "__main__":
    _main(json.loads(sys.argv[1]))
