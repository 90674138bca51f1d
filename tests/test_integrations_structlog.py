"""structlog bridges with real structlog loggers writing to captured streams."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog
from structlog.typing import EventDict

import auditloop
from auditloop.exceptions import ConfigurationError
from auditloop.integrations.structlog import StructlogSink, audit_events
from auditloop.sinks import Delivery
from auditloop.testing import capture


def json_logger(stream: io.StringIO, *, audit: bool = False) -> structlog.BoundLogger:
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
    ]
    if audit:
        processors.append(audit_events)
    processors.append(structlog.processors.JSONRenderer(sort_keys=True))
    logger: structlog.BoundLogger = structlog.wrap_logger(
        structlog.PrintLogger(stream), processors=processors
    )
    return logger


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.fixture(autouse=True)
def quiet_auditor() -> Iterator[auditloop.Auditor]:
    auditor = auditloop.configure(sinks=[])
    structlog.contextvars.clear_contextvars()
    yield auditor
    structlog.contextvars.clear_contextvars()
    auditloop.shutdown()


class TestStructlogSink:
    def test_events_appear_in_the_application_log(self) -> None:
        stream = io.StringIO()
        sink = StructlogSink(json_logger(stream), level="warning")
        auditor = auditloop.Auditor(sinks=[sink], delivery=Delivery(mode="sync"))

        auditor.emit("role.grant", actor="alice", target="user:42", role="admin")

        [line] = lines(stream)
        assert "role.grant" == line["event"]
        assert "warning" == line["level"]
        event = line["audit_event"]
        assert isinstance(event, dict)
        assert {"id": "alice", "type": "user"} == event["actor"]
        assert {"role": "admin"} == event["attributes"]

    def test_goes_through_the_loggers_processors(self) -> None:
        stream = io.StringIO()

        def stamp(logger: object, name: str, event_dict: EventDict) -> EventDict:
            return {**event_dict, "app": "billing"}

        logger = structlog.wrap_logger(
            structlog.PrintLogger(stream),
            processors=[stamp, structlog.processors.JSONRenderer()],
        )
        auditor = auditloop.Auditor(
            sinks=[StructlogSink(logger)], delivery=Delivery(mode="sync")
        )

        auditor.emit("deploy.finished")

        assert ["billing"] == [line["app"] for line in lines(stream)]

    def test_async_delivery_writes_from_the_writer_thread(self) -> None:
        stream = io.StringIO()
        auditor = auditloop.Auditor(sinks=[StructlogSink(json_logger(stream))])

        for i in range(20):
            auditor.emit("item.touch", n=i)
        assert auditor.flush(5.0)
        auditor.shutdown(5.0)

        assert list(range(20)) == [
            line["audit_event"]["attributes"]["n"]  # type: ignore[index]
            for line in lines(stream)
        ]

    def test_default_logger_is_structlogs(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        sink = StructlogSink()
        sink.write([b'{"action": "a.b", "outcome": "success"}'])

        assert "a.b" in capsys.readouterr().out

    def test_unknown_level_is_a_configuration_error(self) -> None:
        with pytest.raises(ConfigurationError, match="level"):
            StructlogSink(level="loud")


class TestAuditEventsProcessor:
    def test_audit_true_becomes_an_event_and_the_line_is_unchanged(self) -> None:
        plain, audited = io.StringIO(), io.StringIO()

        with capture() as events:
            json_logger(plain).info("user.login", audit=True, actor="bob", mfa=True)
            json_logger(audited, audit=True).info(
                "user.login", audit=True, actor="bob", mfa=True
            )

        assert plain.getvalue() == audited.getvalue()
        [event] = events
        assert "user.login" == event.action
        assert "success" == event.outcome
        assert "bob" == (event.actor.id if event.actor else None)
        assert {"mfa": True} == event.attributes
        assert (
            f"{__name__}:TestAuditEventsProcessor."
            "test_audit_true_becomes_an_event_and_the_line_is_unchanged"
        ) == event.source["function"]

    def test_audit_action_names_the_action_and_fills_fields(self) -> None:
        stream = io.StringIO()

        with capture() as events:
            json_logger(stream, audit=True).warning(
                "permission changed",
                audit_action="permission.grant",
                target="user:42",
                category="permission",
                severity="high",
                reason="on-call",
                outcome="denied",
                role="admin",
            )

        [event] = events
        expected = (
            "permission.grant",
            "user:42",
            "permission",
            "high",
            "on-call",
            "denied",
            {"role": "admin"},
        )
        assert expected == (
            event.action,
            event.target.id if event.target else None,
            event.category,
            event.severity,
            event.reason,
            event.outcome,
            event.attributes,
        )
        assert "permission changed" == lines(stream)[0]["event"]

    def test_unmarked_log_calls_are_not_audited(self) -> None:
        with capture() as events:
            json_logger(io.StringIO(), audit=True).info("hello", audit=False, user="x")

        assert [] == events

    def test_exc_info_becomes_the_error(self) -> None:
        with capture() as events:
            try:
                raise PermissionError("no")
            except PermissionError:
                json_logger(io.StringIO(), audit=True).error(
                    "export.run", audit=True, exc_info=True
                )

        [event] = events
        assert ("failure", {"type": "PermissionError", "message": "no"}) == (
            event.outcome,
            dict(event.error or {}),
        )

    def test_after_format_exc_info_the_error_is_the_one_being_handled(
        self,
    ) -> None:
        logger = structlog.wrap_logger(
            structlog.PrintLogger(io.StringIO()),
            processors=[
                structlog.processors.format_exc_info,  # replaces exc_info
                audit_events,
                structlog.processors.JSONRenderer(),
            ],
        )
        with capture() as events:
            try:
                raise PermissionError("no")
            except PermissionError:
                logger.exception("export.run", audit=True)

        [event] = events
        assert ("failure", {"type": "PermissionError", "message": "no"}) == (
            event.outcome,
            dict(event.error or {}),
        )
        assert "exception" not in event.attributes  # the traceback text

    def test_contextvars_go_to_context_not_attributes(self) -> None:
        structlog.contextvars.bind_contextvars(request_id="r-7", tenant="acme")

        with capture() as events:
            json_logger(io.StringIO(), audit=True).info(
                "doc.delete", audit=True, doc="d-1"
            )

        [event] = events
        assert {"request_id": "r-7", "tenant": "acme"} == event.context
        assert {"doc": "d-1"} == event.attributes

    def test_a_broken_message_is_counted_not_raised(
        self, quiet_auditor: auditloop.Auditor
    ) -> None:
        class Unprintable:
            def __str__(self) -> str:
                raise RuntimeError("boom")

        stream = io.StringIO()
        logger = structlog.wrap_logger(
            structlog.PrintLogger(stream),
            processors=[audit_events, lambda _l, _m, ed: repr(sorted(ed))],
        )

        with capture() as events:
            logger.info(Unprintable(), audit=True)

        assert [] == events
        assert 1 == quiet_auditor.stats()["processor_errors"]
        assert "audit" in stream.getvalue()


class TestBothDirections:
    def test_sink_output_is_not_audited_again(self) -> None:
        stream = io.StringIO()
        logger = json_logger(stream, audit=True)
        auditor = auditloop.configure(
            sinks=[StructlogSink(logger)], delivery=Delivery(mode="sync")
        )

        with capture() as events:
            logger.info("user.login", audit=True, actor="carol")

        assert ["user.login"] == [e.action for e in events]
        logged = lines(stream)
        assert ["user.login", "user.login"] == [line["event"] for line in logged]
        assert "carol" == logged[0]["audit_event"]["actor"]["id"]  # type: ignore[index]
        assert 1 == auditor.stats()["sinks"]["StructlogSink"]["written"]

    def test_a_logger_marking_everything_as_audit_does_not_loop(self) -> None:
        # A processor that marks every call as audit, the audit_events
        # processor, and a synchronous StructlogSink on the same logger:
        # without the guard each forwarded event would be recorded again.
        stream = io.StringIO()
        logger = structlog.wrap_logger(
            structlog.PrintLogger(stream),
            processors=[
                lambda _l, _m, ed: {**ed, "audit": True},
                audit_events,
                structlog.processors.JSONRenderer(),
            ],
        )
        auditloop.configure(
            sinks=[StructlogSink(logger)], delivery=Delivery(mode="sync")
        )

        with capture() as events:
            logger.info("user.login")

        assert ["user.login"] == [e.action for e in events]
        assert 2 == len(lines(stream))

    def test_fail_closed_audit_error_reaches_the_log_call(self) -> None:
        class Broken:
            delivery = Delivery(mode="sync", on_error="raise")

            def write(self, batch: object) -> None:
                raise OSError("disk full")

            def flush(self, timeout: float | None = None) -> None: ...

            def close(self, timeout: float | None = None) -> None: ...

        auditloop.configure(sinks=[Broken()])

        with pytest.raises(auditloop.AuditError):
            json_logger(io.StringIO(), audit=True).info("payout", audit=True)


class TestStructlogContextvars:
    def test_bound_values_reach_audit_events(self) -> None:
        structlog.contextvars.bind_contextvars(request_id="r-1", actor="alice")

        with capture() as events:
            auditloop.emit("report.export")

        [event] = events
        assert ({"request_id": "r-1"}, "alice") == (
            event.context,
            event.actor.id if event.actor else None,
        )
