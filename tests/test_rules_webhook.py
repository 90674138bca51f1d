"""rules.webhook: signed JSON POSTs to a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

import auditloop
from auditloop import rules
from auditloop.exceptions import ConfigurationError
from auditloop.rules import match
from auditloop.sinks import MemorySink
from auditloop.testing import FakeClock
from rules_helpers import T0

SECRET = "s3cret"


class Receiver:
    """A webhook receiver that verifies signatures like a real one would."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.received: list[dict[str, Any]] = []
        self.verified: list[bool] = []
        self.headers: list[dict[str, str]] = []
        self.arrived = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                expected = (
                    "sha256="
                    + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                )
                signature = self.headers.get("X-Auditloop-Signature-256", "")
                receiver.verified.append(hmac.compare_digest(expected, signature))
                receiver.headers.append(dict(self.headers))
                receiver.received.append(orjson.loads(body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if status == 200:
                    receiver.arrived.set()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/audit?x=1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def storm_with(hook: rules.Webhook) -> rules.Threshold:
    return rules.Threshold(
        "storm",
        match=match(action="permission.*"),
        group_by=["actor.id"],
        at_least=2,
        within=60,
        then=[hook],
        labels={"team": "security"},
    )


class TestWebhook:
    def test_delivers_a_signed_versioned_payload_that_verifies(
        self, receiver: Receiver
    ) -> None:
        clock = FakeClock(T0)
        hook = rules.webhook(receiver.url, secret=SECRET, timeout=5)
        auditor = auditloop.Auditor(rules=[storm_with(hook)], clock=clock)
        auditor.emit("permission.grant", actor="alice")
        auditor.emit("permission.grant", actor="alice")
        assert auditor.flush(10)
        assert [True] == receiver.verified
        (payload,) = receiver.received
        alert = auditor.rules.firing()[0] if auditor.rules else None
        assert alert is not None
        assert ("auditloop.alert/1", alert.id) == (payload["schema"], payload["id"])
        assert payload["sent_at"].endswith("Z")
        assert {
            "rule": "storm",
            "status": "firing",
            "group": {"actor.id": "alice"},
            "value": 2.0,
            "labels": {"team": "security"},
            "fingerprint": alert.fingerprint,
        } == {
            k: payload["alert"][k]
            for k in ("rule", "status", "group", "value", "labels", "fingerprint")
        }
        assert 2 == len(payload["alert"]["evidence"])
        assert "application/json" == receiver.headers[0]["Content-Type"]
        auditor.shutdown()

    def test_a_wrong_secret_does_not_verify(self, receiver: Receiver) -> None:
        hook = rules.webhook(receiver.url, secret="not-the-secret", retries=0)
        hook(_alert())
        assert [False] == receiver.verified

    def test_retries_server_errors_then_succeeds(self) -> None:
        server = Receiver(statuses=[503, 500])
        try:
            hook = rules.webhook(server.url, secret=SECRET, retries=3, backoff=0)
            clock = FakeClock(T0)
            auditor = auditloop.Auditor(rules=[storm_with(hook)], clock=clock)
            auditor.emit("permission.grant", actor="alice")
            auditor.emit("permission.grant", actor="alice")
            assert auditor.flush(10)
            assert 3 == len(server.received)
            assert all(server.verified)
            # Every attempt is freshly signed with its own sent_at; same alert id.
            assert 1 == len({p["id"] for p in server.received})
            assert {"run": 1, "errors": 0, "dropped": 0} == auditor.stats()["rules"][
                "actions"
            ]
            auditor.shutdown()
        finally:
            server.close()

    def test_gives_up_after_bounded_retries_and_reports_the_error(self) -> None:
        server = Receiver(statuses=[500] * 10)
        sink = MemorySink()
        try:
            hook = rules.webhook(server.url, secret=SECRET, retries=2, backoff=0)
            clock = FakeClock(T0)
            auditor = auditloop.Auditor(
                sinks=[sink], rules=[storm_with(hook)], clock=clock
            )
            auditor.emit("permission.grant", actor="alice")
            auditor.emit("permission.grant", actor="alice")
            assert auditor.flush(10)
            assert 3 == len(server.received)
            (error,) = [e for e in sink.events if e.action == "auditloop.rule.error"]
            assert "HTTP 500 (after 3 attempts)" in (error.error or {})["message"]
            auditor.shutdown()
        finally:
            server.close()

    def test_client_errors_are_not_retried(self) -> None:
        server = Receiver(statuses=[400])
        try:
            hook = rules.webhook(server.url, secret=SECRET, retries=5, backoff=0)
            with pytest.raises(OSError, match="HTTP 400"):
                hook(_alert())
            assert 1 == len(server.received)
        finally:
            server.close()

    def test_connection_refused_is_an_oserror(self) -> None:
        server = Receiver()
        url = server.url
        server.close()
        hook = rules.webhook(url, secret=SECRET, retries=1, backoff=0, timeout=2)
        with pytest.raises(OSError, match="after 2 attempts"):
            hook(_alert())

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"url": "ftp://x", "secret": "s"}, "url must be an http"),
            ({"url": "http://x", "secret": ""}, "secret"),
            ({"url": "http://x", "secret": "s", "timeout": 0}, "timeout"),
            ({"url": "http://x", "secret": "s", "retries": -1}, "retries"),
            ({"url": "http://x", "secret": "s", "backoff": -1}, "backoff"),
        ],
    )
    def test_bad_configuration(self, kwargs: dict[str, Any], message: str) -> None:
        with pytest.raises(ConfigurationError, match=message):
            rules.webhook(**kwargs)


def _alert() -> rules.Alert:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    return rules.Alert(
        id="a-1",
        rule="storm",
        status="firing",
        group={"actor.id": "alice"},
        value=2.0,
        threshold=2.0,
        window=60.0,
        started_at=now,
        fired_at=now,
        fingerprint="f",
    )
