"""OpenTelemetry correlation with a real SDK tracer, and without the package."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer

import auditloop
from auditloop.exceptions import ConfigurationError
from auditloop.sinks import MemorySink


@pytest.fixture(scope="module")
def tracer() -> Tracer:
    # A provider of our own: the global one can be set only once per process.
    return TracerProvider().get_tracer("auditloop-tests")


class TestTraceContext:
    def test_active_span_ids_go_into_context(self, tracer: Tracer) -> None:
        sink = MemorySink()
        auditor = auditloop.Auditor(sinks=[sink], trace_context=True)

        with tracer.start_as_current_span("export") as span:
            auditor.emit("report.export")
            with tracer.start_as_current_span("inner") as inner:
                auditor.emit("report.sign")
        auditor.emit("after.span")

        outer_ctx, inner_ctx = span.get_span_context(), inner.get_span_context()
        expected = [
            {
                "trace_id": f"{outer_ctx.trace_id:032x}",
                "span_id": f"{outer_ctx.span_id:016x}",
            },
            {
                "trace_id": f"{outer_ctx.trace_id:032x}",
                "span_id": f"{inner_ctx.span_id:016x}",
            },
            {},
        ]
        assert expected == [dict(e.context) for e in sink.events]

    def test_ids_join_bound_context_and_keep_field_order(self, tracer: Tracer) -> None:
        sink = MemorySink()
        auditor = auditloop.Auditor(sinks=[sink], trace_context=True)

        with tracer.start_as_current_span("op"), auditloop.bind(request_id="r-1"):
            auditor.emit("with.bound")
        with tracer.start_as_current_span("op"):
            auditor.emit("without.bound")

        with_bound, without_bound = (json.loads(line) for line in sink.lines)
        assert ["request_id", "trace_id", "span_id"] == list(with_bound["context"])
        keys = list(without_bound)
        assert keys.index("context") + 1 == keys.index("source")

    def test_redaction_still_applies_after_the_ids(self, tracer: Tracer) -> None:
        sink = MemorySink()
        auditor = auditloop.Auditor(sinks=[sink], trace_context=True)

        with tracer.start_as_current_span("op"), auditloop.bind(session="s3cr3t"):
            auditor.emit("x")

        [event] = sink.events
        assert "[REDACTED]" == event.context["session"]
        assert 32 == len(event.context["trace_id"])

    def test_off_means_no_ids(self, tracer: Tracer) -> None:
        sink = MemorySink()
        auditor = auditloop.Auditor(sinks=[sink], trace_context=False)

        with tracer.start_as_current_span("op"):
            auditor.emit("x")

        assert [{}] == [dict(e.context) for e in sink.events]

    def test_auto_enables_when_the_app_imported_opentelemetry(
        self, tracer: Tracer
    ) -> None:
        # This test module imported opentelemetry.trace, like an instrumented app.
        sink = MemorySink()
        auditor = auditloop.Auditor(sinks=[sink])

        with tracer.start_as_current_span("op") as span:
            auditor.emit("x")

        expected = f"{span.get_span_context().trace_id:032x}"
        assert [expected] == [e.context.get("trace_id") for e in sink.events]

    def test_user_processors_see_the_ids(self, tracer: Tracer) -> None:
        seen: list[object] = []

        def spy(auditor: object, method: str, event: dict[str, Any]) -> dict[str, Any]:
            seen.append(event.get("context", {}).get("span_id"))
            return event

        auditor = auditloop.Auditor(processors=[spy], trace_context=True)
        with tracer.start_as_current_span("op") as span:
            auditor.emit("x")

        assert [f"{span.get_span_context().span_id:016x}"] == seen

    def test_bad_value_is_a_configuration_error(self) -> None:
        with pytest.raises(ConfigurationError, match="trace_context"):
            auditloop.Auditor(trace_context="yes")  # type: ignore[arg-type]


ABSENT = textwrap.dedent(
    """
    import json, sys
    sys.modules["opentelemetry"] = None  # the package is not installed
    import auditloop
    from auditloop.exceptions import ConfigurationError
    from auditloop.integrations.asgi import AuditMiddleware
    from auditloop.integrations.logging import AuditLogHandler
    from auditloop.integrations.structlog import audit_events
    from auditloop.integrations.wsgi import AuditMiddleware as WSGIMiddleware
    from auditloop.sinks import MemorySink

    result = {}
    sink = MemorySink()
    auditor = auditloop.Auditor(sinks=[sink])
    with auditloop.bind(request_id="r-1"):
        auditor.emit("still.works")
    result["events"] = [[e.action, dict(e.context)] for e in sink.events]
    try:
        auditloop.Auditor(trace_context=True)
    except ConfigurationError as exc:
        result["error"] = str(exc)
    try:
        import auditloop.integrations.otel
    except ImportError as exc:
        result["import_error"] = str(exc)
    print(json.dumps(result))
    """
)

NOT_IMPORTED = textwrap.dedent(
    """
    import json, sys
    import auditloop
    from auditloop.integrations import asgi, logging, structlog, wsgi
    auditor = auditloop.Auditor()
    auditor.emit("x")
    print(json.dumps([m for m in sys.modules if m.startswith("opentelemetry")]))
    """
)


class TestWithoutOpenTelemetry:
    def test_nothing_breaks_when_the_package_is_absent(self) -> None:
        out = subprocess.run(
            [sys.executable, "-c", ABSENT],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        result = json.loads(out)

        assert [["still.works", {"request_id": "r-1"}]] == result["events"]
        assert "trace_context=True" in result["error"]
        assert "opentelemetry-api" in result["import_error"]

    def test_auto_mode_never_imports_it(self) -> None:
        out = subprocess.run(
            [sys.executable, "-c", NOT_IMPORTED],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout

        assert [] == json.loads(out)
