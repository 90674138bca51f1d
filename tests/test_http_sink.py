"""HTTPSink against a real local HTTP server: formats, retries, auth, TLS, fork."""

from __future__ import annotations

import base64
import calendar
import contextlib
import email.utils
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
)

import auditloop
from auditloop._counters import Counters
from auditloop.exceptions import ConfigurationError
from auditloop.sinks import Delivery, HTTPSink
from auditloop.sinks import _http as http_module
from auditloop.sinks._formats import Format, make_format, time_ns
from auditloop.sinks._http import RETRY_AFTER_MAX, parse_retry_after
from auditloop.sinks._spool import Spool
from auditloop.testing import FakeClock
from collector import RESET, Collector, Reply, Request
from http_helpers import Sleeper, ids_of, make_events


@pytest.fixture
def collector() -> Iterator[Collector]:
    with Collector() as server:
        yield server


def lines_in(request: Request) -> int:
    return len([line for line in request.body.split(b"\n") if line])


class TestConfiguration:
    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"url": "ftp://x/"}, "url must start with http"),
            ({"url": "http:///path"}, "url has no host"),
            ({"url": "http://h:99999/"}, "invalid port"),
            ({"url": "http://h/", "format": "xml"}, "format must be one of"),
            ({"url": "http://h/", "timeout": 0}, "timeout must be greater than 0"),
            ({"url": "http://h/", "deadline": "1"}, "deadline must be a number"),
            ({"url": "http://h/", "max_batch_bytes": 0}, "max_batch_bytes"),
            ({"url": "http://h/", "gzip_min_bytes": -1}, "gzip_min_bytes"),
            ({"url": "http://h/", "index": "a"}, "index applies to"),
            ({"url": "http://h/", "sourcetype": "a"}, "source and sourcetype"),
            ({"url": "http://h/", "ca_file": "ca.pem"}, "need an https:// url"),
            (
                {"url": "https://h/", "ca_file": "/nonexistent.pem"},
                "cannot load ca_file",
            ),
            ({"url": "https://h/", "client_key": "k.pem"}, "client_key needs"),
            (
                {"url": "http://h/", "bearer_token": "t", "basic_auth": ("u", "p")},
                "not both",
            ),
            ({"url": "http://h/", "basic_auth": "u:p"}, "basic_auth must be"),
            ({"url": "http://h/", "delivery": "sync"}, "delivery must be"),
            ({"url": "http://h/", "sleep": 3}, "sleep must be callable"),
            ({"url": "http://h/", "tiemout": 3}, "did you mean 'timeout'"),
        ],
    )
    def test_bad_option_raises_naming_it(
        self, kwargs: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(ConfigurationError, match=message):
            HTTPSink(**kwargs)

    def test_header_error_does_not_show_the_value(self) -> None:
        with pytest.raises(ConfigurationError) as info:
            HTTPSink("http://h/", headers={"X-Token": "s3cr3t-value\r\nX: y"})

        assert "s3cr3t" not in str(info.value)
        assert "X-Token" in str(info.value)

    def test_unusable_spool_dir_raises(self, tmp_path: Path) -> None:
        blocker = tmp_path / "file"
        blocker.write_text("x")

        with pytest.raises(ConfigurationError, match="spool_dir"):
            HTTPSink("http://h/", spool_dir=blocker / "spool")

    @pytest.mark.parametrize(
        ("fmt", "path"),
        [
            ("ndjson", "/"),
            ("json-array", "/"),
            ("otlp", "/v1/logs"),
            ("splunk-hec", "/services/collector/event"),
            ("elasticsearch-bulk", "/_bulk"),
        ],
    )
    def test_empty_path_uses_the_formats_path(self, fmt: str, path: str) -> None:
        assert f"http://h:80{path}" == HTTPSink("http://h", format=fmt).url

    def test_given_path_and_query_are_kept_query_not_shown(
        self, collector: Collector
    ) -> None:
        sink = HTTPSink(collector.url("/ingest?api_key=k1234"), format="otlp")
        sink.write(make_events(1))

        assert "/ingest?api_key=k1234" == collector.requests[0].path
        assert collector.url("/ingest") == sink.url
        assert "k1234" not in repr(sink)


class TestNdjson:
    def test_delivers_a_batch_as_lines(self, collector: Collector) -> None:
        events = make_events(5)
        sink = HTTPSink(collector.url())

        sink.write(events)

        request = collector.requests[0]
        assert events == request.body.rstrip(b"\n").split(b"\n")
        assert "application/x-ndjson" == request.headers["Content-Type"]
        assert 5 == sink.stats()["sent"]

    def test_gzip_above_the_threshold_only(self, collector: Collector) -> None:
        events = make_events(20)
        sink = HTTPSink(collector.url(), gzip_min_bytes=len(events[0]) * 3)

        sink.write(events[:1])
        sink.write(events)

        small, big = collector.requests
        assert "Content-Encoding" not in small.headers
        assert "gzip" == big.headers["Content-Encoding"]
        assert ids_of(events) == [orjson.loads(x)["id"] for x in big.body.split()]

    def test_gzip_can_be_turned_off(self, collector: Collector) -> None:
        sink = HTTPSink(collector.url(), gzip_min_bytes=None)
        sink.write(make_events(50))

        assert "Content-Encoding" not in collector.requests[0].headers

    def test_max_batch_bytes_splits_a_batch(self, collector: Collector) -> None:
        events = make_events(10)
        sink = HTTPSink(collector.url(), max_batch_bytes=len(events[0]) * 3 + 10)

        sink.write(events)

        assert [3, 3, 3, 1] == [lines_in(r) for r in collector.requests]
        assert set(ids_of(events)) == collector.unique_ids

    def test_connection_is_kept_alive(self, collector: Collector) -> None:
        sink = HTTPSink(collector.url())
        for _ in range(3):
            sink.write(make_events(1))

        assert 1 == len({r.client_port for r in collector.requests})


class TestJsonArray:
    def test_body_is_one_json_array(self, collector: Collector) -> None:
        events = make_events(3)
        HTTPSink(collector.url(), format="json-array").write(events)

        request = collector.requests[0]
        assert [orjson.loads(e) for e in events] == orjson.loads(request.body)
        assert "application/json" == request.headers["Content-Type"]


class TestOtlp:
    def test_body_parses_as_export_logs_service_request(
        self, collector: Collector
    ) -> None:
        memory = auditloop.sinks.MemorySink()
        auditor = auditloop.Auditor(service="billing", sinks=[memory])
        with auditloop.bind(
            actor="bob",
            trace_id="0af7651916cd43dd8448eb211c80319c",
            span_id="b7ad6b7169203331",
            request_id="r-1",
        ):
            auditor.emit(
                "role.grant",
                target="user:1",
                severity="high",
                role="admin",
                flag=True,
                count=3,
                ratio=0.5,
                tags=["a", "b"],
                nested={"k": 1},
            )
        auditor.emit("deploy.finished")
        event = orjson.loads(memory.lines[0])

        HTTPSink(collector.url(), format="otlp").write(memory.lines)

        request = collector.requests[0]
        assert "/v1/logs" == request.path
        parsed = json_format.Parse(request.body, ExportLogsServiceRequest())
        (resource_logs,) = parsed.resource_logs
        resource = {a.key: a.value for a in resource_logs.resource.attributes}
        assert "billing" == resource["service.name"].string_value
        assert os.getpid() == resource["process.pid"].int_value
        (scope_logs,) = resource_logs.scope_logs
        assert "auditloop" == scope_logs.scope.name
        first, second = scope_logs.log_records
        when = datetime.fromisoformat(event["time"])
        expected_ns = calendar.timegm(when.utctimetuple()) * 10**9
        expected_ns += when.microsecond * 1000
        assert expected_ns == first.time_unix_nano
        assert 17 == first.severity_number
        assert "high" == first.severity_text
        assert "role.grant" == first.body.string_value
        attributes = {a.key: a.value for a in first.attributes}
        assert event["id"] == attributes["id"].string_value
        assert "bob" == attributes["actor.id"].string_value
        assert "admin" == attributes["attributes.role"].string_value
        assert attributes["attributes.flag"].bool_value is True
        assert 3 == attributes["attributes.count"].int_value
        assert 0.5 == attributes["attributes.ratio"].double_value
        assert ["a", "b"] == [
            v.string_value for v in attributes["attributes.tags"].array_value.values
        ]
        assert "k" == attributes["attributes.nested"].kvlist_value.values[0].key
        assert "r-1" == attributes["context.request_id"].string_value
        assert "context.trace_id" not in attributes
        assert "source.service" not in attributes
        # OTLP/JSON carries ids as hex, not base64 (the one deviation from
        # the protobuf JSON mapping), so check the raw text too.
        raw = orjson.loads(request.body)["resourceLogs"][0]["scopeLogs"][0]
        assert "0af7651916cd43dd8448eb211c80319c" == raw["logRecords"][0]["traceId"]
        assert "b7ad6b7169203331" == raw["logRecords"][0]["spanId"]
        assert "traceId" not in raw["logRecords"][1]
        assert 9 == second.severity_number

    def test_partial_success_rejections_are_counted(self, collector: Collector) -> None:
        body = b'{"partialSuccess":{"rejectedLogRecords":"2","errorMessage":"bad"}}'
        collector.script(Reply(200, {"Content-Type": "application/json"}, body))
        sink = HTTPSink(collector.url(), format="otlp")

        sink.write(make_events(5))

        assert {"rejected": 2} == sink.drops.snapshot()
        assert 3 == sink.stats()["sent"]
        assert "bad" in (sink.last_error or "")


class TestSplunkHec:
    def test_envelopes_have_the_documented_keys(self, collector: Collector) -> None:
        events = make_events(2)
        sink = HTTPSink(
            collector.url(),
            format="splunk-hec",
            headers={"Authorization": "Splunk 11111111-2222"},
            index="audit",
            sourcetype="_json",
        )

        sink.write(events)

        request = collector.requests[0]
        assert "/services/collector/event" == request.path
        assert "Splunk 11111111-2222" == request.headers["Authorization"]
        envelopes = [orjson.loads(line) for line in request.body.splitlines()]
        for envelope, line in zip(envelopes, events, strict=True):
            event = orjson.loads(line)
            assert {"time", "host", "source", "sourcetype", "index", "event"} == set(
                envelope
            )
            assert event == envelope["event"]
            assert "billing" == envelope["source"]
            assert "_json" == envelope["sourcetype"]
            assert "audit" == envelope["index"]
            assert event["source"]["host"] == envelope["host"]
            stamp = auditloop._clock.parse_rfc3339(event["time"])
            assert abs(stamp - envelope["time"]) < 1e-6


class TestElasticsearchBulk:
    def test_bodies_are_create_actions_with_the_event_id(
        self, collector: Collector
    ) -> None:
        events = make_events(3)
        HTTPSink(collector.url(), format="elasticsearch-bulk").write(events)

        request = collector.requests[0]
        lines = request.body.split(b"\n")
        assert b"" == lines[-1]
        pairs = list(zip(lines[:-1:2], lines[1:-1:2], strict=True))
        assert 3 == len(pairs)
        for (action_line, doc_line), line in zip(pairs, events, strict=True):
            event = orjson.loads(line)
            action = orjson.loads(action_line)
            assert {"create": {"_index": "auditloop", "_id": event["id"]}} == action
            assert {"@timestamp": event["time"], **event} == orjson.loads(doc_line)

    def test_index_in_url_or_option(self, collector: Collector) -> None:
        HTTPSink(collector.url("/audit/_bulk"), format="elasticsearch-bulk").write(
            make_events(1)
        )
        HTTPSink(collector.url(), format="elasticsearch-bulk", index="x").write(
            make_events(1)
        )

        first, second = (
            orjson.loads(r.body.split(b"\n")[0]) for r in collector.requests
        )
        assert "_index" not in first["create"]
        assert "x" == second["create"]["_index"]

    def test_retry_is_idempotent_and_item_errors_are_handled(self) -> None:
        events = make_events(4)
        ids = ids_of(events)
        answers = {ids[1]: [429, 201], ids[2]: [400]}

        def item_status(doc_id: str) -> int:
            queue = answers.get(doc_id)
            return queue.pop(0) if queue else 201

        with Collector(item_status=item_status) as collector:
            sleeper = Sleeper()
            sink = HTTPSink(collector.url(), format="elasticsearch-bulk", sleep=sleeper)
            sink.write(events)
            sink.write(events[:1])  # a duplicate, as after a lost response

            assert {ids[0], ids[1], ids[3]} == collector.unique_ids
            assert [4, 1, 1] == [lines_in(r) // 2 for r in collector.requests]
            assert 1 == len(sleeper.calls)
            assert {"http_4xx": 1} == sink.drops.snapshot()
            stats = sink.stats()
            assert 1 == stats["duplicates"]
            assert 4 == stats["sent"]
            assert "400" in stats["last_error"]


class TestRetries:
    def test_400_is_not_retried(self, collector: Collector) -> None:
        collector.script(Reply(400, body=b"bad request"))
        sleeper = Sleeper()
        sink = HTTPSink(collector.url(), sleep=sleeper)

        sink.write(make_events(3))

        assert 1 == len(collector.requests)
        assert [] == sleeper.calls
        assert {"http_4xx": 3} == sink.drops.snapshot()
        assert {"http_400": 1} == sink.stats()["failures"]
        assert "HTTP 400: bad request" in (sink.last_error or "")

    @pytest.mark.parametrize("status", [408, 429, 500, 502, 503])
    def test_retryable_statuses_are_retried(
        self, collector: Collector, status: int
    ) -> None:
        collector.script(Reply(status))
        sleeper = Sleeper()
        sink = HTTPSink(collector.url(), sleep=sleeper)
        events = make_events(2)

        sink.write(events)

        assert [status, 200] == [r.status for r in collector.requests]
        assert set(ids_of(events)) == collector.unique_ids
        assert 1 == len(sleeper.calls)
        assert {} == sink.drops.snapshot()

    def test_413_splits_in_halves(self) -> None:
        def respond(request: Request) -> Reply | None:
            return Reply(413) if lines_in(request) > 2 else None

        with Collector(respond=respond) as collector:
            events = make_events(10)
            sleeper = Sleeper()
            sink = HTTPSink(collector.url(), sleep=sleeper)

            sink.write(events)

            sizes = [lines_in(r) for r in collector.requests if r.status == 200]
            assert [2, 1, 2, 2, 1, 2] == sizes
            assert set(ids_of(events)) == collector.unique_ids
            assert [] == sleeper.calls
            assert {} == sink.drops.snapshot()

    def test_413_on_a_single_event_drops_it_as_oversized(self) -> None:
        big = make_events(1, blob="x" * 20_000)
        small = make_events(3)

        def respond(request: Request) -> Reply | None:
            return Reply(413) if len(request.body) > 10_000 else None

        with Collector(respond=respond) as collector:
            sink = HTTPSink(collector.url())

            sink.write([small[0], *big, small[1], small[2]])

            assert set(ids_of(small)) == collector.unique_ids
            assert {"oversized": 1} == sink.drops.snapshot()

    def test_retry_after_seconds_delays_the_next_attempt(
        self, collector: Collector
    ) -> None:
        collector.script(Reply(503, {"Retry-After": "7"}))
        sleeper = Sleeper()
        sink = HTTPSink(collector.url(), sleep=sleeper, clock=sleeper.clock)

        sink.write(make_events(1))

        assert [7.0] == sleeper.calls
        assert 1 == len(collector.unique_ids)

    def test_retry_after_http_date_delays_the_next_attempt(
        self, collector: Collector
    ) -> None:
        clock = FakeClock(1_767_225_600.0)
        when = email.utils.formatdate(clock() + 12, usegmt=True)
        collector.script(Reply(429, {"Retry-After": when}))
        sleeper = Sleeper(clock)
        sink = HTTPSink(collector.url(), sleep=sleeper, clock=clock)

        sink.write(make_events(1))

        assert [12.0] == sleeper.calls

    @pytest.mark.parametrize(
        "retry_after", ["0", "Thu, 01 Jan 1970 00:00:00 GMT"], ids=["zero", "past"]
    )
    def test_retry_after_never_shortens_the_backoff(
        self, collector: Collector, retry_after: str
    ) -> None:
        collector.script(*[Reply(503, {"Retry-After": retry_after})] * 4)
        sleeper = Sleeper(FakeClock(1_767_225_600.0))
        sink = HTTPSink(
            collector.url(), sleep=sleeper, clock=sleeper.clock, backoff=1, deadline=60
        )

        sink.write(make_events(1))

        steps = [1, 2, 4, 8]
        assert len(steps) == len(sleeper.calls)
        for step, delay in zip(steps, sleeper.calls, strict=True):
            assert step / 2 <= delay <= step
        assert 5 == len(collector.requests)
        assert 1 == len(collector.unique_ids)

    def test_retry_after_zero_in_the_spool_replay_keeps_the_backoff(
        self, collector: Collector, tmp_path: Path
    ) -> None:
        collector.script(*[Reply(429, {"Retry-After": "0"})] * 4)
        sleeper = Sleeper()
        sink = HTTPSink(
            collector.url(),
            spool_dir=tmp_path,
            sleep=sleeper,
            clock=sleeper.clock,
            backoff=1,
        )

        sink.write(make_events(1))  # the direct attempt fails: spooled
        sink.flush(10)

        # No wait after the direct attempt (Retry-After: 0), then the
        # replay's 3 failures back off as usual.
        assert 3 == len(sleeper.calls)
        for step, delay in zip([1, 2, 4], sleeper.calls, strict=True):
            assert step / 2 <= delay <= step
        assert 5 == len(collector.requests)
        assert 1 == len(collector.unique_ids)
        sink.close(5)

    def test_parse_retry_after(self) -> None:
        assert parse_retry_after(None, 0.0) is None
        assert parse_retry_after("soon", 0.0) is None
        assert 0.0 == parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", 100.0)
        assert RETRY_AFTER_MAX == parse_retry_after("99999999", 0.0)

    def test_backoff_is_jittered_exponential_and_capped(
        self, collector: Collector
    ) -> None:
        collector.script(*[Reply(500)] * 6)
        sleeper = Sleeper()
        sink = HTTPSink(
            collector.url(),
            sleep=sleeper,
            clock=sleeper.clock,
            backoff=1,
            backoff_max=8,
        )

        sink.write(make_events(1))

        steps = [1, 2, 4, 8, 8, 8]
        assert len(steps) == len(sleeper.calls)
        for step, delay in zip(steps, sleeper.calls, strict=True):
            assert step / 2 <= delay <= step
        assert 1 == len(collector.unique_ids)

    def test_deadline_drops_then_fails_fast_until_recovery(
        self, collector: Collector
    ) -> None:
        collector.faults = lambda n: Reply(500)
        sleeper = Sleeper()
        sink = HTTPSink(
            collector.url(),
            sleep=sleeper,
            clock=sleeper.clock,
            backoff=1,
            backoff_max=2,
            deadline=10,
        )

        sink.write(make_events(2))
        assert {"retry_exhausted": 2} == sink.drops.snapshot()
        assert sum(sleeper.calls) <= 10
        requests = len(collector.requests)

        sink.write(make_events(3))  # the collector is still failing: one try
        assert requests + 1 == len(collector.requests)
        assert {"retry_exhausted": 5} == sink.drops.snapshot()

        collector.faults = None
        events = make_events(1)
        sink.write(events)
        assert set(ids_of(events)) == collector.unique_ids
        assert 0.0 == sink.stats()["backoff"]

    def test_connection_reset_mid_body_is_retried(self, collector: Collector) -> None:
        collector.script(RESET)
        sleeper = Sleeper()
        sink = HTTPSink(collector.url(), sleep=sleeper, gzip_min_bytes=None)
        events = make_events(300)

        sink.write(events)

        assert 1 == collector.resets
        assert set(ids_of(events)) == collector.unique_ids
        assert 1 == len(sleeper.calls)
        assert 1 == sink.stats()["failures"]["connection"]

    def test_stale_keep_alive_connection_is_replaced_at_once(
        self, collector: Collector
    ) -> None:
        sleeper = Sleeper()
        sink = HTTPSink(collector.url(), sleep=sleeper)
        sink.write(make_events(1))
        collector.stop()  # closes the kept-alive connection
        collector.start()

        sink.write(make_events(1))

        assert 2 == len(collector.unique_ids)
        assert [] == sleeper.calls


class TestSecrets:
    def test_header_values_never_appear_in_errors_or_stats(
        self, collector: Collector
    ) -> None:
        token = "tok-abcdef123456"
        collector.script(
            Reply(401, body=f"invalid token Bearer {token}".encode()),
            Reply(500, body=b"X-Api-Key was key-987654"),
        )
        sink = HTTPSink(
            collector.url(),
            bearer_token=token,
            headers={"X-Api-Key": "key-987654"},
            sleep=Sleeper(),
        )

        sink.write(make_events(1))
        first_error = sink.last_error
        sink.write(make_events(1))

        assert f"Bearer {token}" == collector.requests[0].headers["Authorization"]
        assert "key-987654" == collector.requests[0].headers["X-Api-Key"]
        text = orjson.dumps(sink.stats()).decode() + str(first_error) + repr(sink)
        assert "HTTP 401" in str(first_error)
        assert token not in text
        assert "key-987654" not in text
        assert "[REDACTED]" in text

    def test_basic_auth_and_url_credentials(self, collector: Collector) -> None:
        url = collector.url().replace("http://", "http://ann:pw-secret-1@")
        sink = HTTPSink(url)
        sink.write(make_events(1))
        HTTPSink(collector.url(), basic_auth=("bob", "pw2")).write(make_events(1))

        expected = [
            "Basic " + base64.b64encode(b"ann:pw-secret-1").decode(),
            "Basic " + base64.b64encode(b"bob:pw2").decode(),
        ]
        assert expected == [r.headers["Authorization"] for r in collector.requests]
        assert "pw-secret-1" not in sink.url + repr(sink)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client one."""
    if shutil.which("openssl") is None:  # pragma: no cover - CI has openssl
        pytest.skip("needs the openssl command")
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=auditloop test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip
    for name, usage, san in (
        ("server", "serverAuth", "subjectAltName=IP:127.0.0.1\n"),
        ("client", "clientAuth", ""),
    ):
        (d / f"{name}.ext").write_text(
            f"{san}basicConstraints=CA:FALSE\n"
            f"keyUsage=critical,digitalSignature\nextendedKeyUsage={usage}\n"
        )
        _openssl(
            "req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}", cwd=d,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
            "-extfile", f"{name}.ext", cwd=d,
        )  # fmt: skip
    return d


def _server_tls(pki: Path, *, require_client: bool = False) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki / "server.pem", pki / "server.key")
    if require_client:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(pki / "ca.pem")
    return context


class TestTls:
    def test_trusted_ca_file_delivers(self, pki: Path) -> None:
        with Collector(tls=_server_tls(pki)) as collector:
            sink = HTTPSink(collector.url(), ca_file=pki / "ca.pem")
            events = make_events(3)

            sink.write(events)

            assert set(ids_of(events)) == collector.unique_ids
            assert collector.url().startswith("https://")

    def test_untrusted_certificate_is_refused_and_counted(self, pki: Path) -> None:
        with Collector(tls=_server_tls(pki)) as collector:
            sleeper = Sleeper()
            sink = HTTPSink(collector.url(), sleep=sleeper)

            sink.write(make_events(3))

            assert set() == collector.unique_ids
            assert {"tls": 3} == sink.drops.snapshot()
            assert {"tls": 1} == sink.stats()["failures"]
            assert "CERTIFICATE_VERIFY_FAILED" in (sink.last_error or "")
            assert [] == sleeper.calls

    def test_untrusted_certificate_with_a_spool_keeps_the_events(
        self, pki: Path, tmp_path: Path
    ) -> None:
        with Collector(tls=_server_tls(pki)) as collector:
            sink = HTTPSink(collector.url(), spool_dir=tmp_path, backoff_max=60)
            try:
                sink.write(make_events(3))

                assert {} == sink.drops.snapshot()
                assert 3 == sink.stats()["spool"]["pending_events"]
            finally:
                sink.close(5)

    def test_client_certificate(self, pki: Path) -> None:
        with Collector(tls=_server_tls(pki, require_client=True)) as collector:
            sink = HTTPSink(
                collector.url(),
                ca_file=pki / "ca.pem",
                client_cert=pki / "client.pem",
                client_key=pki / "client.key",
            )
            sleeper = Sleeper()
            anonymous = HTTPSink(collector.url(), ca_file=pki / "ca.pem", sleep=sleeper)

            sink.write(make_events(1))
            anonymous.write(make_events(1))

            assert 1 == len(collector.unique_ids)
            # Refused for good, like an untrusted server certificate, once
            # the alert arrives (TLS 1.3 may first show a reset, retried):
            # not retried until the deadline.
            assert {"tls": 1} == anonymous.drops.snapshot()
            assert len(sleeper.calls) <= 2


class TestFork:
    @pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
    def test_child_opens_its_own_connection(self, collector: Collector) -> None:
        sink = HTTPSink(collector.url())
        sink.write(make_events(1))
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 0
            try:
                sink.write(make_events(1))
            except BaseException:
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        sink.write(make_events(1))

        assert 0 == os.waitstatus_to_exitcode(status)
        parent_first, child, parent_again = (r.client_port for r in collector.requests)
        assert parent_first == parent_again
        assert child != parent_first
        assert 3 == len(collector.unique_ids)


def _spool_unlocked(root: Path) -> bool:
    """No spool directory under *root* is locked by anyone (a sink, a child)."""
    import fcntl

    for lock in root.glob("*/lock"):
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)  # and with it our lock
    return True


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


class TestUnreachableCollector:
    def test_shutdown_without_spool_counts_every_event(self) -> None:
        sink = HTTPSink(_dead_url(), deadline=0.3, backoff=0.05)
        auditor = auditloop.Auditor(
            sinks=[sink],
            delivery=Delivery(batch_size=100),
            drop_report_interval=None,
        )
        for i in range(1000):
            auditor.emit("x.y", n=i)

        started = time.monotonic()
        auditor.shutdown(timeout=3.0)
        elapsed = time.monotonic() - started

        assert elapsed < 3.5
        assert 1000 == sum(auditor.stats()["dropped"].values())

    def test_shutdown_with_spool_leaves_everything_in_the_spool(
        self, tmp_path: Path
    ) -> None:
        url = _dead_url()
        sink = HTTPSink(url, spool_dir=tmp_path)
        auditor = auditloop.Auditor(sinks=[sink], drop_report_interval=None)
        for i in range(1000):
            auditor.emit("x.y", n=i)

        started = time.monotonic()
        assert auditor.flush(timeout=0.3) is False  # nobody to deliver to
        auditor.shutdown(timeout=2.0)
        elapsed = time.monotonic() - started

        assert elapsed < 3.0
        assert {} == auditor.stats()["dropped"]
        again = HTTPSink(url, spool_dir=tmp_path)  # the next process
        try:
            assert 1000 == again.stats()["spool"]["pending_events"]
        finally:
            again.close(2)

    def test_blackholed_collector_is_bounded_by_timeout(self, tmp_path: Path) -> None:
        # Listens but never answers: connects succeed, reads time out.
        with socket.socket() as hole:
            hole.bind(("127.0.0.1", 0))
            hole.listen(64)
            url = f"http://127.0.0.1:{hole.getsockname()[1]}/"
            sink = HTTPSink(url, spool_dir=tmp_path, timeout=0.3)
            auditor = auditloop.Auditor(sinks=[sink], drop_report_interval=None)
            for i in range(500):
                auditor.emit("x.y", n=i)

            started = time.monotonic()
            auditor.shutdown(timeout=3.0)
            elapsed = time.monotonic() - started

        assert elapsed < 3.5
        assert 500 == sink.stats()["spool"]["pending_events"]

    def test_close_honours_its_timeout_while_replaying(self, tmp_path: Path) -> None:
        with socket.socket() as hole:
            hole.bind(("127.0.0.1", 0))
            hole.listen(64)
            url = f"http://127.0.0.1:{hole.getsockname()[1]}/"
            sink = HTTPSink(url, spool_dir=tmp_path, timeout=30)
            sink._down = True  # the collector was seen failing before
            sink.write(make_events(5))  # → spool → replay blocks in a read

            started = time.monotonic()
            sink.close(timeout=0.3)
            elapsed = time.monotonic() - started

        assert elapsed < 1.5
        again = HTTPSink(url, spool_dir=tmp_path)
        try:
            assert 5 == again.stats()["spool"]["pending_events"]
        finally:
            again.close(2)


class TestStats:
    def test_merged_into_auditloop_stats(self, collector: Collector) -> None:
        collector.script(Reply(503))
        sink = HTTPSink(collector.url(), sleep=Sleeper())
        auditor = auditloop.Auditor(sinks=[sink], drop_report_interval=None)
        auditor.emit("x.y")
        auditor.flush(5)

        stats = auditor.stats()["sinks"]["HTTPSink"]["sink"]

        assert 1 == stats["sent"]
        assert 1 == stats["retried"]
        assert {"http_503": 1} == stats["failures"]
        assert "HTTP 503" in stats["last_error"]
        assert 0.0 == stats["backoff"]
        auditor.shutdown(2)

    def test_backoff_is_visible_while_retrying(self, collector: Collector) -> None:
        collector.faults = lambda n: Reply(500)
        waiting = threading.Event()
        release = threading.Event()

        def sleep(seconds: float) -> None:
            waiting.set()
            release.wait(5)

        sink = HTTPSink(collector.url(), sleep=sleep, backoff=4, backoff_max=4)
        writer = threading.Thread(target=sink.write, args=(make_events(1),))
        writer.start()
        assert waiting.wait(5)

        backoff = sink.stats()["backoff"]

        collector.faults = None
        release.set()
        writer.join(5)
        assert 2 <= backoff <= 4
        assert 0.0 == sink.stats()["backoff"]


class TestMoreConfiguration:
    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"url": 42}, "url must be a string"),
            ({"url": "http://h/a\nb"}, "invalid characters"),
            ({"url": "http://h/", "spool_max_bytes": 0}, "spool_max_bytes"),
            ({"url": "http://h/", "bearer_token": ""}, "bearer_token must be"),
            ({"url": "http://h/", "bearer_token": "a\nb"}, "invalid characters"),
            ({"url": "http://h/", "headers": [("a", "b")]}, "must be a mapping"),
            ({"url": "http://h/", "headers": {"a b\n": "x"}}, "invalid name"),
            ({"url": "http://h/", "index": ""}, "index applies"),
            ({"url": "http://h/", "format": "splunk-hec", "index": ""}, "non-empty"),
        ],
    )
    def test_bad_option_raises_naming_it(
        self, kwargs: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(ConfigurationError, match=message):
            HTTPSink(**kwargs)

    def test_unreadable_client_certificate(self, tmp_path: Path) -> None:
        bad = tmp_path / "client.pem"
        bad.write_text("not a certificate")

        with pytest.raises(ConfigurationError, match="client_cert"):
            HTTPSink("https://h/", client_cert=bad)


class TestSinkProtocol:
    def test_write_after_close_raises_for_the_engine_to_count(
        self, collector: Collector
    ) -> None:
        sink = HTTPSink(collector.url())
        sink.close()
        sink.close()  # idempotent

        with pytest.raises(RuntimeError, match="closed"):
            sink.write(make_events(1))

    def test_empty_batch_sends_nothing(self, collector: Collector) -> None:
        sink = HTTPSink(collector.url())
        sink.write([])
        sink.flush(1)

        assert [] == collector.requests

    def test_hand_written_lines_that_are_not_objects_still_go(
        self, collector: Collector
    ) -> None:
        sink = HTTPSink(collector.url(), format="otlp")

        sink.write([b"not json", b"[1, 2]"])

        body = orjson.loads(collector.requests[0].body)
        records = body["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
        messages = [r["attributes"][0]["value"] for r in records]
        assert [
            {"stringValue": "not json"},
            {"arrayValue": {"values": [{"intValue": "1"}, {"intValue": "2"}]}},
        ] == messages

    def test_server_closing_the_connection_is_followed(
        self, collector: Collector
    ) -> None:
        collector.script(Reply(200, {"Connection": "close"}))
        sink = HTTPSink(collector.url())

        sink.write(make_events(1))
        sink.write(make_events(1))

        first, second = (r.client_port for r in collector.requests)
        assert first != second

    def test_unexpected_error_drops_and_counts(self, collector: Collector) -> None:
        class Broken(Format):
            def encode(self, events: Sequence[bytes]) -> bytes:
                raise KeyError("bug")

        sink = HTTPSink(collector.url())
        sink.format = Broken()

        sink.write(make_events(2))

        assert {"encode_error": 2} == sink.drops.snapshot()
        assert "KeyError" in (sink.last_error or "")

    def test_3xx_is_not_followed_and_is_counted(self, collector: Collector) -> None:
        collector.script(Reply(302, {"Location": "/elsewhere"}))
        sink = HTTPSink(collector.url())

        sink.write(make_events(1))

        assert {"http_3xx": 1} == sink.drops.snapshot()

    def test_a_changed_pid_drops_the_connection_without_closing_it(
        self, collector: Collector, tmp_path: Path
    ) -> None:
        sink = HTTPSink(collector.url(), spool_dir=tmp_path)
        sink.write(make_events(1))
        inherited = sink._writer_client.conn
        assert inherited is not None
        sink._pid = -1  # as seen from a forked child

        sink.write(make_events(1))

        assert inherited.sock is not None  # still open: it is the parent's
        first, second = (r.client_port for r in collector.requests)
        assert first != second
        assert 1 == sink.stats()["sent"]  # counters start afresh
        inherited.close()
        sink.close()


class TestMoreRetryAfter:
    def test_http_date_without_zone_is_utc(self) -> None:
        assert 100.0 == parse_retry_after("Thu, 01 Jan 1970 00:01:40 -0000", 0.0)


class TestSplittingWithSpool:
    def test_chunks_after_a_failed_one_are_spooled_with_it(
        self, collector: Collector, tmp_path: Path
    ) -> None:
        events = make_events(6)
        # First chunk accepted, second refused, then the replay's first try.
        collector.script(None, Reply(503), Reply(503))
        release = threading.Event()
        sink = HTTPSink(
            collector.url(),
            spool_dir=tmp_path,
            max_batch_bytes=len(events[0]) * 2 + 10,
            sleep=lambda s: release.wait(10),
        )

        sink.write(events)

        assert 4 == sink.stats()["spool"]["pending_events"]
        release.set()
        sink.flush(10)
        assert set(ids_of(events)) == collector.unique_ids
        sink.close(5)

    def test_413_halves_then_a_failure_spools_the_rest(
        self, collector: Collector, tmp_path: Path
    ) -> None:
        events = make_events(4)
        collector.script(Reply(413), Reply(503))
        sink = HTTPSink(collector.url(), spool_dir=tmp_path, backoff=0.01)

        sink.write(events)
        sink.flush(10)

        assert set(ids_of(events)) == collector.unique_ids
        assert {} == sink.drops.snapshot()
        sink.close(5)


class TestReplayAdoption:
    def test_a_spool_left_by_a_dead_process_is_picked_up_while_running(
        self, collector: Collector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(http_module, "_ADOPT_EVERY", 0.05)
        sink = HTTPSink(collector.url(), spool_dir=tmp_path)
        sink._down = True
        sink.write(make_events(1))  # starts the replay thread
        sink.flush(5)
        orphan = make_events(3)
        assert sink._spool is not None
        dead = Spool(tmp_path, 1 << 20, Counters(), sink._spool.tag)
        dead.append(orphan)
        dead.close()  # its lock is released, as when a process dies

        assert collector.wait_for_ids(4, timeout=10)
        assert set(ids_of(orphan)) <= collector.unique_ids
        sink.close(5)


def _fmt(name: str, **kwargs: Any) -> Format:
    options = {"index": None, "source": None, "sourcetype": None, **kwargs}
    return make_format(name, version="1", **options)


class TestFormatEdges:
    def test_time_ns(self) -> None:
        assert time_ns(None) is None
        assert time_ns("yesterday") is None
        assert 1_000_000 == time_ns("1970-01-01T00:00:00.001")  # naive is UTC
        assert 1_767_225_600_000_001_000 == time_ns("2026-01-01T00:00:00.000001Z")

    def test_otlp_values_without_a_protobuf_type(self) -> None:
        # Above int64 (a uint64): orjson reads it as an int, OTLP cannot carry it.
        line = b'{"attributes":{"big":18446744073709551615,"none":null}}'
        body = _fmt("otlp").encode([line])

        record = orjson.loads(body)["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
        values = {a["key"]: a["value"] for a in record["attributes"]}
        assert {"stringValue": str(2**64 - 1)} == values["attributes.big"]
        assert {} == values["attributes.none"]
        assert "timeUnixNano" not in record
        resource = orjson.loads(body)["resourceLogs"][0]["resource"]
        assert [] == resource["attributes"]

    @pytest.mark.parametrize("trace_id", ["0" * 32, "abc", "Z" * 32])
    def test_otlp_invalid_trace_ids_stay_attributes(self, trace_id: str) -> None:
        event = {"context": {"trace_id": trace_id}}
        body = _fmt("otlp").encode([orjson.dumps(event)])

        record = orjson.loads(body)["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
        assert "traceId" not in record
        assert {"key": "context.trace_id", "value": {"stringValue": trace_id}} in (
            record["attributes"]
        )

    @pytest.mark.parametrize(
        "body",
        [
            b"",
            b"{not json",
            b'{"partialSuccess":{}}',
            b'{"partialSuccess":[]}',
            b'{"partialSuccess":',
        ],
    )
    def test_otlp_answers_without_rejections(self, body: bytes) -> None:
        check = _fmt("otlp").check(body, 3)
        assert 0 == check.rejected_count

    def test_splunk_event_without_time_or_host(self) -> None:
        body = _fmt("splunk-hec", source="app").encode([b'{"action":"a"}'])

        assert {
            "source": "app",
            "sourcetype": "auditloop",
            "event": {"action": "a"},
        } == orjson.loads(body)

    def test_elasticsearch_event_without_id_or_time(self) -> None:
        body = _fmt("elasticsearch-bulk", index="i").encode([b'{"a":1}', b"[1]"])

        lines = [orjson.loads(line) for line in body.split(b"\n") if line]
        assert [
            {"create": {"_index": "i"}},
            {"@timestamp": None, "a": 1},
            {"create": {"_index": "i"}},
            {"@timestamp": None, "message": [1]},
        ] == lines

    @pytest.mark.parametrize(
        "body",
        [b"<html>", b'{"errors":true,"items":{}}', b"[]", b'{"errors":false}'],
    )
    def test_elasticsearch_answers_without_item_results(self, body: bytes) -> None:
        check = _fmt("elasticsearch-bulk").check(body, 2)
        assert (check.retry, check.rejected) == ((), ())

    def test_elasticsearch_item_errors_keep_the_first_reason(self) -> None:
        items = [
            {"create": {"status": 400, "error": "plain text"}},
            {"create": {"status": 403, "error": {"type": "t", "reason": "r"}}},
            {"create": {"status": 201}},
            "garbage",
        ]
        body = orjson.dumps({"errors": True, "items": items})

        check = _fmt("elasticsearch-bulk").check(body, 4)

        assert (0, 1, 3) == check.rejected  # an item without a status too
        assert "Elasticsearch item status 400: plain text" == check.message


class TestFailClosed:
    def test_an_undelivered_record_raises_into_the_audited_call(
        self, collector: Collector
    ) -> None:
        collector.script(Reply(403, body=b"forbidden"))
        sink = HTTPSink(
            collector.url(), delivery=Delivery(mode="sync", on_error="raise")
        )
        auditor = auditloop.Auditor(sinks=[sink], drop_report_interval=None)

        with pytest.raises(auditloop.AuditError, match="1 http_4xx"):
            auditor.emit("payment.refund", target="payment:1")
        auditor.emit("payment.refund", target="payment:2")  # delivered

        assert {"sink_error": 1} == auditor.stats()["dropped"]  # counted once
        assert 1 == len(collector.unique_ids)
        auditor.shutdown(2)

    def test_a_spooled_record_is_durable_and_does_not_raise(
        self, tmp_path: Path
    ) -> None:
        sink = HTTPSink(
            _dead_url(),
            spool_dir=tmp_path,
            delivery=Delivery(mode="sync", on_error="raise"),
        )
        auditor = auditloop.Auditor(sinks=[sink], drop_report_interval=None)

        auditor.emit("payment.refund", target="payment:1")

        assert 1 == sink.stats()["spool"]["pending_events"]
        auditor.shutdown(0.3)

    def test_a_full_spool_raises(self, tmp_path: Path) -> None:
        sink = HTTPSink(
            _dead_url(),
            spool_dir=tmp_path,
            spool_max_bytes=100,
            delivery=Delivery(mode="sync", on_error="raise"),
        )
        auditor = auditloop.Auditor(sinks=[sink], drop_report_interval=None)

        with pytest.raises(auditloop.AuditError, match="not spooled"):
            auditor.emit("payment.refund", target="payment:1")
        auditor.shutdown(2)

    def test_a_record_the_spool_refuses_is_counted_once(self, tmp_path: Path) -> None:
        sink = HTTPSink(
            _dead_url(),
            spool_dir=tmp_path,
            spool_max_bytes=100,
            delivery=Delivery(mode="sync", on_error="raise"),
        )
        auditor = auditloop.Auditor(sinks=[sink], drop_report_interval=None)

        with pytest.raises(auditloop.AuditError, match=r"1 not spooled \(spool_full\)"):
            auditor.emit("payment.refund", target="payment:1")

        # The engine counts the raised write; the spool must not count too.
        assert {"sink_error": 1} == auditor.stats()["dropped"]
        auditor.shutdown(2)


# -- regressions from the second review ------------------------------------------


def _read_request(reader: Any) -> bool:
    """Read one HTTP request from *reader*; False at end of stream."""
    line = reader.readline()
    if not line:
        return False
    length = 0
    while line not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
        line = reader.readline()
    reader.read(length)
    return True


class _RawServer:
    """A one-purpose server on 127.0.0.1: *handle(conn)* runs per connection."""

    def __init__(self, handle: Any) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.handle = handle
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def close(self) -> None:
        self.sock.close()


def _writer_threads() -> set[threading.Thread]:
    return {
        t
        for t in threading.enumerate()
        if t.name.startswith("auditloop-") and t.name != "auditloop-http-replay"
    }


class TestStaleTlsConnection:
    def test_peer_gone_without_close_notify_is_resent_not_dropped(
        self, pki: Path
    ) -> None:
        context = _server_tls(pki)
        closed = threading.Event()
        received: list[int] = []

        def handle(raw: socket.socket) -> None:
            with contextlib.suppress(OSError):
                tls = context.wrap_socket(raw, server_side=True)
                reader = tls.makefile("rb")
                if _read_request(reader):
                    received.append(1)
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    if len(received) == 1:
                        # A process that went away: TCP FIN, no close_notify.
                        reader.close()
                        socket.socket(fileno=tls.detach()).close()
                        closed.set()
                        return
                while _read_request(reader):  # pragma: no cover - not reached
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

        server = _RawServer(handle)
        try:
            sink = HTTPSink(
                f"https://127.0.0.1:{server.port}/in", ca_file=pki / "ca.pem"
            )
            sink.write(make_events(2))
            assert closed.wait(10)

            sink.write(make_events(2))

            assert {} == sink.drops.snapshot()
            assert 4 == sink.stats()["sent"]
            assert "tls" not in sink.stats()["failures"]
            sink.close(1)
        finally:
            server.close()


class TestRequestTimeLimit:
    def test_trickling_answer_is_cut_at_timeout(self, tmp_path: Path) -> None:
        stop = threading.Event()

        def handle(conn: socket.socket) -> None:
            with conn, contextlib.suppress(OSError):
                _read_request(conn.makefile("rb"))
                # One byte at a time, each well within the socket timeout,
                # for ever: only a limit on the whole request ends it.
                for byte in b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 100_000:
                    conn.sendall(bytes([byte]))
                    if stop.wait(0.02):
                        return

        server = _RawServer(handle)
        sink = HTTPSink(
            f"http://127.0.0.1:{server.port}/", timeout=0.5, spool_dir=tmp_path
        )
        done = threading.Event()

        def write() -> None:
            sink.write(make_events(2))
            done.set()

        writer = threading.Thread(target=write, daemon=True)
        try:
            writer.start()

            assert done.wait(20), "write() did not end at the time limit"
            assert {"timeout": 1} == sink.stats()["failures"]
            assert 2 == sink.stats()["spool"]["pending_events"]
        finally:
            stop.set()
            server.close()
            sink.close(1)


class TestUserinfoPercentEncoded:
    def test_password_is_decoded_and_scrubbed(self, collector: Collector) -> None:
        collector.script(Reply(401, body=b"no: ann p@ss p%40ss"))
        url = collector.url("/in").replace("http://", "http://ann:p%40ss@")
        sink = HTTPSink(url)

        sink.write(make_events(1))
        sink.write(make_events(1))

        expected = "Basic " + base64.b64encode(b"ann:p@ss").decode()
        assert [expected] * 2 == [
            r.headers["Authorization"] for r in collector.requests
        ]
        assert "p@ss" not in (sink.last_error or "")
        assert "p%40ss" not in (sink.last_error or "")


class TestErrorSnippet:
    def test_secret_across_the_cut_is_scrubbed(self, collector: Collector) -> None:
        token = "tok-0123456789abcdef"
        collector.script(Reply(403, body=b"x" * 193 + f" {token}".encode()))
        sink = HTTPSink(collector.url(), bearer_token=token)

        sink.write(make_events(1))

        assert "tok-01" not in (sink.last_error or "")
        assert "HTTP 403" in (sink.last_error or "")


class TestConstructionChecks:
    @pytest.mark.parametrize(
        ("url", "kwargs", "message"),
        [
            ("http://h/", {"bearer_token": "t\u2026k"}, "bearer_token"),
            ("http://h/", {"headers": {"X-Key": "v\u2026"}}, r"headers\['X-Key'\]"),
            ("http://h/", {"headers": {"X-Api Key": "v"}}, "headers has an invalid"),
            ("http://h/ing\u00e9st", {}, "url path"),
            ("http://h/in?api_key=SECRETKEY123&tag=a b", {}, "url query"),
            ("http://h/", {"timeout": float("nan")}, "timeout"),
            ("http://h/", {"timeout": float("inf")}, "timeout"),
            ("http://h/", {"deadline": float("nan")}, "deadline"),
            ("https://h/", {"ca_file": 123}, "ca_file"),
            ("https://h/", {"client_cert": 1.5}, "client_cert"),
        ],
    )
    def test_raises_naming_the_argument(
        self, url: str, kwargs: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(ConfigurationError, match=message) as info:
            HTTPSink(url, **kwargs)

        assert "SECRETKEY123" not in str(info.value)

    def test_query_never_in_last_error(self, collector: Collector) -> None:
        collector.script(Reply(500, body=b"bad /in?api_key=SECRETKEY123"))
        sink = HTTPSink(collector.url("/in?api_key=SECRETKEY123"), sleep=Sleeper())

        sink.write(make_events(1))

        assert "SECRETKEY123" not in (sink.last_error or "")


def _deep(levels: int) -> object:
    value: object = "leaf"
    for _ in range(levels):
        value = {"k": value}
    return value


class TestOtlpDepth:
    def test_deep_value_is_sent_as_a_json_string(self, collector: Collector) -> None:
        events = make_events(3) + make_events(1, payload=_deep(70))
        sink = HTTPSink(collector.url(), format="otlp")

        sink.write(events)

        assert {} == sink.drops.snapshot()
        assert set(ids_of(events)) == collector.unique_ids

    def test_one_unencodable_event_drops_only_itself(
        self, collector: Collector
    ) -> None:
        otlp = _fmt("otlp")

        class Picky(type(otlp)):  # type: ignore[misc]
            def encode(self, events: Sequence[bytes]) -> bytes:
                if any(b"doc:1" in e for e in events):
                    raise orjson.JSONEncodeError("too deep")
                return otlp.encode(events)

        sink = HTTPSink(collector.url("/v1/logs"), format="otlp")
        sink.format = Picky(version="0")
        events = make_events(3)

        sink.write(events)

        assert {"encode_error": 1} == sink.drops.snapshot()
        assert {ids_of(events)[0], ids_of(events)[2]} == collector.unique_ids


class TestForkHookRunsAtFork:
    @pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
    def test_idle_child_does_not_keep_the_spool_lock(self, tmp_path: Path) -> None:
        with Collector() as collector:
            collector.stop()
            sink = HTTPSink(collector.url("/in"), spool_dir=tmp_path, timeout=2)
            auditor = auditloop.Auditor(
                service="s", sinks=[sink], drop_report_interval=None
            )
            for i in range(3):
                auditor.emit("x.y", target=f"t:{i}")
            # flush() waits for a replay that cannot happen: spooled is enough.
            auditor.flush(0.5)
            end = time.monotonic() + 10
            while sink.stats()["spool"]["pending_events"] < 3:
                assert time.monotonic() < end, "events were not spooled"
                time.sleep(0.01)
            release_r, release_w = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child
                os.read(release_r, 1)  # never touches the sink
                os._exit(0)
            try:
                auditor.shutdown(5)
                # The new sink adopts the spool only if nobody holds its lock
                # (else not before its next look, 30 s later): wait until
                # the closed sink let go of it; the child must not keep it.
                end = time.monotonic() + 15
                while not _spool_unlocked(tmp_path):
                    assert time.monotonic() < end, "the spool stayed locked"
                    time.sleep(0.01)
                collector.start()
                later = HTTPSink(collector.url("/in"), spool_dir=tmp_path)

                delivered = collector.wait_for_ids(3, 15)

                later.close(2)
            finally:
                os.write(release_w, b"x")
                os.waitpid(pid, 0)
                os.close(release_r)
                os.close(release_w)
            assert delivered


class TestElasticsearchTimestamp:
    def test_existing_timestamp_is_not_duplicated(self) -> None:
        line = orjson.dumps(
            {"id": "e1", "time": "2026-01-01T00:00:00Z", "@timestamp": "T"}
        )
        keys: list[list[str]] = []

        def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
            keys.append([k for k, _ in pairs])
            return dict(pairs)

        body = _fmt("elasticsearch-bulk", index="a").encode([line])
        json.loads(body.split(b"\n")[1], object_pairs_hook=hook)

        assert ["id", "time", "@timestamp"] == keys[-1]


class TestShutdownTimeoutCountsOnce:
    def test_abandoned_batch_is_not_also_retry_exhausted(
        self, collector: Collector
    ) -> None:
        collector.faults = lambda n: Reply(503)
        sink = HTTPSink(collector.url(), deadline=3.0, backoff=0.05, backoff_max=0.1)
        before = _writer_threads()
        auditor = auditloop.Auditor(
            service="s", sinks=[sink], drop_report_interval=None
        )
        for i in range(5):
            auditor.emit("x.y", target=f"t:{i}")
        assert collector.wait_for(lambda c: len(c.requests) >= 1, 10)

        assert not auditor.shutdown(0.2)
        for thread in _writer_threads() - before:
            thread.join(10)

        assert {"shutdown_timeout": 5} == sink.drops.snapshot()

    def test_abandoned_batch_is_not_spooled(
        self, collector: Collector, tmp_path: Path
    ) -> None:
        arrived, gate = threading.Event(), threading.Event()

        def respond(request: Request) -> Reply:
            arrived.set()
            gate.wait(10)
            return Reply(503)

        collector.respond = respond
        sink = HTTPSink(collector.url(), spool_dir=tmp_path)
        before = _writer_threads()
        auditor = auditloop.Auditor(
            service="s", sinks=[sink], drop_report_interval=None
        )
        for i in range(5):
            auditor.emit("x.y", target=f"t:{i}")
        assert arrived.wait(10)

        assert not auditor.shutdown(0.2)
        gate.set()
        for thread in _writer_threads() - before:
            thread.join(10)

        assert {"shutdown_timeout": 5} == sink.drops.snapshot()
        assert 0 == sink.stats()["spooled"]


class TestReviewOfTheFixes:
    def test_a_body_sent_after_the_headers_of_a_closing_answer_is_read(
        self,
    ) -> None:
        # HTTP/1.0 style: headers, then the body in a second write, then close.
        # The timed reader must keep the socket open after http.client closed
        # the connection object for "Connection: close".
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        received: list[int] = []

        def serve() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                with conn:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        data += conn.recv(65536)
                    head, _, body = data.partition(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length:")[1].split()[0])
                    while len(body) < length:
                        body += conn.recv(65536)
                    received.append(length)
                    conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n")
                    conn.sendall(b'{"ok":true}')

        threading.Thread(target=serve, daemon=True).start()
        port = listener.getsockname()[1]
        sink = HTTPSink(f"http://127.0.0.1:{port}/in", sleep=Sleeper())
        try:
            sink.write(make_events(5))
        finally:
            sink.close(1)
            listener.close()

        assert 1 == len(received)
        assert {} == sink.drops.snapshot()
        assert 5 == sink.stats()["sent"]

    def test_abandon_only_affects_a_sink_being_closed(self) -> None:
        # configure() keeps the sink for the next Auditor while the old one's
        # shutdown times out on a slow answer: the sink must go on counting
        # and retrying its own writes.
        answering = threading.Event()
        release = threading.Event()

        def respond(request: Request) -> Reply | None:
            if not answering.is_set():
                answering.set()
                release.wait(10)  # slow but healthy
            return None

        with Collector(respond=respond) as server:
            sink = HTTPSink(server.url(), sleep=Sleeper())
            old = auditloop.Auditor(sinks=[sink], drop_report_interval=None)
            old.emit("slow")
            assert answering.wait(10)
            new = auditloop.Auditor(sinks=[sink], drop_report_interval=None)

            old.shutdown(0.2, keep=[sink], successor=new)
            release.set()
            server.script(Reply(503))  # one transient error, retried
            events = make_events(3)
            for line in events:
                new.deliveries[0].put(line)
            assert new.flush(10)

            assert set(ids_of(events)) <= server.unique_ids
            new.shutdown(5)

    @pytest.mark.parametrize(
        "url",
        [
            "http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/in",
            "http://user:p\u00e4ss\u20ac@h/in",
        ],
    )
    def test_unicode_hosts_and_passwords_are_accepted(self, url: str) -> None:
        HTTPSink(url).close(1)

    def test_infinite_deadline_and_backoff_max_are_accepted(self) -> None:
        HTTPSink("http://h/", deadline=float("inf"), backoff_max=float("inf")).close(1)
