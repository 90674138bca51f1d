"""stdlib logging bridges with real loggers writing to captured streams."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

import auditloop
from auditloop.exceptions import AuditError, ConfigurationError
from auditloop.integrations.logging import AuditLogHandler, LoggingSink
from auditloop.sinks import Delivery
from auditloop.testing import capture


@pytest.fixture(autouse=True)
def quiet_auditor() -> Iterator[auditloop.Auditor]:
    auditor = auditloop.configure(sinks=[])
    yield auditor
    auditloop.shutdown()


@pytest.fixture
def logger(request: pytest.FixtureRequest) -> Iterator[logging.Logger]:
    """A private logger (not propagating) with a stream handler on a StringIO."""
    log = logging.getLogger(f"test.{request.node.name}")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log.addHandler(handler)
    log.stream = stream  # type: ignore[attr-defined]
    yield log
    for h in list(log.handlers):
        log.removeHandler(h)


def output(logger: logging.Logger) -> list[str]:
    stream: io.StringIO = logger.stream  # type: ignore[attr-defined]
    return stream.getvalue().splitlines()


class TestAuditLogHandler:
    def test_records_with_audit_extra_become_events(
        self, logger: logging.Logger
    ) -> None:
        logger.addHandler(AuditLogHandler())

        with capture() as events:
            logger.info(
                "granted %s",
                "admin",
                extra={
                    "audit": {
                        "action": "role.grant",
                        "actor": "alice",
                        "target": "user:42",
                        "severity": "high",
                        "role": "admin",
                        "attributes": {"ticket": "T-1"},
                    }
                },
            )
            logger.info("an ordinary line")

        [event] = events
        assert (
            "role.grant",
            "alice",
            "user:42",
            "high",
            "success",
            {"role": "admin", "ticket": "T-1"},
        ) == (
            event.action,
            event.actor.id if event.actor else None,
            event.target.id if event.target else None,
            event.severity,
            event.outcome,
            event.attributes,
        )
        assert (
            f"{logger.name}:test_records_with_audit_extra_become_events"
            == (event.source["function"])
        )
        assert ["INFO granted admin", "INFO an ordinary line"] == output(logger)

    def test_audit_true_uses_the_message_as_action(
        self, logger: logging.Logger
    ) -> None:
        logger.addHandler(AuditLogHandler())

        with capture() as events:
            logger.warning("cache.purge", extra={"audit": True})

        assert [("cache.purge", {})] == [(e.action, e.attributes) for e in events]

    def test_exception_becomes_the_error(self, logger: logging.Logger) -> None:
        logger.addHandler(AuditLogHandler())

        with capture() as events:
            try:
                raise ValueError("bad iban")
            except ValueError:
                logger.exception("payout failed", extra={"audit": {"action": "payout"}})

        [event] = events
        assert ("failure", {"type": "ValueError", "message": "bad iban"}) == (
            event.outcome,
            dict(event.error or {}),
        )

    def test_handler_level_filters(self, logger: logging.Logger) -> None:
        logger.addHandler(AuditLogHandler("WARNING"))

        with capture() as events:
            logger.info("low", extra={"audit": True})
            logger.error("high", extra={"audit": True})

        assert ["high"] == [e.action for e in events]

    def test_records_through_a_given_auditor(self, logger: logging.Logger) -> None:
        sink = auditloop.sinks.MemorySink()
        logger.addHandler(AuditLogHandler(auditor=auditloop.Auditor(sinks=[sink])))

        logger.info("x", extra={"audit": {"action": "own.auditor"}})

        assert ["own.auditor"] == [e.action for e in sink.events]

    def test_bound_context_reaches_the_event(self, logger: logging.Logger) -> None:
        logger.addHandler(AuditLogHandler())

        with capture() as events, auditloop.bind(actor="dora", request_id="r-9"):
            logger.info("login", extra={"audit": {"action": "user.login"}})

        [event] = events
        assert ("dora", {"request_id": "r-9"}) == (
            event.actor.id if event.actor else None,
            event.context,
        )

    def test_a_broken_record_goes_to_handle_error(
        self, logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # pytest's own capture handler raises on bad records unless told not to.
        monkeypatch.setattr(logging, "raiseExceptions", False)
        failed: list[logging.LogRecord] = []

        class Recording(AuditLogHandler):
            def handleError(self, record: logging.LogRecord) -> None:
                failed.append(record)

        logger.addHandler(Recording())

        class BadStr:
            def __str__(self) -> str:
                raise RuntimeError("broken __str__")

        with capture() as events:
            logger.info("refund", extra={"audit": {"action": BadStr()}})

        assert [] == events
        assert ["refund"] == [r.msg for r in failed]

    def test_args_not_fitting_the_format_still_record_the_event(
        self, logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(logging, "raiseExceptions", False)
        failed: list[logging.LogRecord] = []

        class Recording(AuditLogHandler):
            def handleError(self, record: logging.LogRecord) -> None:
                failed.append(record)

        logger.addHandler(Recording())

        with capture() as events:
            logger.info(
                "refund %d for %s",
                "not-a-number",
                extra={"audit": {"action": "refund.issue", "target": "order:9"}},
            )
            logger.info("%d", "not a number", extra={"audit": True})

        assert [("refund.issue", "order:9"), ("%d", None)] == [
            (e.action, e.target.id if e.target else None) for e in events
        ]
        assert [] == failed

    def test_fail_closed_audit_error_propagates(self, logger: logging.Logger) -> None:
        class Broken:
            delivery = Delivery(mode="sync", on_error="raise")

            def write(self, batch: object) -> None:
                raise OSError("disk full")

            def flush(self, timeout: float | None = None) -> None: ...

            def close(self, timeout: float | None = None) -> None: ...

        auditor = auditloop.Auditor(sinks=[Broken()])
        logger.addHandler(AuditLogHandler(auditor=auditor))

        with pytest.raises(AuditError):
            logger.info("x", extra={"audit": {"action": "payout.approve"}})

    @pytest.mark.parametrize("level", ["LOUD", 1.5, True])
    def test_bad_level_is_a_configuration_error(self, level: object) -> None:
        with pytest.raises(ConfigurationError, match="level"):
            AuditLogHandler(level)  # type: ignore[arg-type]


class TestLoggingSink:
    def test_json_lines_with_the_event_attached(self, logger: logging.Logger) -> None:
        records: list[logging.LogRecord] = []

        class Keep(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                records.append(record)

        logger.addHandler(Keep())
        auditor = auditloop.Auditor(
            sinks=[LoggingSink(logger, level="WARNING")],
            delivery=Delivery(mode="sync"),
        )

        auditor.emit("role.grant", actor="alice", note="100%")

        [line] = output(logger)
        level, _, message = line.partition(" ")
        assert "WARNING" == level
        event = json.loads(message)
        assert ("role.grant", {"note": "100%"}) == (
            event["action"],
            event["attributes"],
        )
        assert event == records[0].audit_event  # type: ignore[attr-defined]

    def test_pretty_format(self, logger: logging.Logger) -> None:
        auditor = auditloop.Auditor(
            sinks=[LoggingSink(logger.name, format="pretty")],
            delivery=Delivery(mode="sync"),
        )

        auditor.emit("deploy.finished", actor="ci", target="service:billing")

        [line] = output(logger)
        assert line.endswith("SUCCESS ci deploy.finished service:billing")

    def test_disabled_level_writes_nothing(self, logger: logging.Logger) -> None:
        logger.setLevel(logging.ERROR)
        auditor = auditloop.Auditor(
            sinks=[LoggingSink(logger)], delivery=Delivery(mode="sync")
        )

        auditor.emit("quiet.event")

        assert [] == output(logger)
        assert 1 == auditor.stats()["sinks"]["LoggingSink"]["written"]

    def test_default_logger_and_flush(self) -> None:
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        default = logging.getLogger("auditloop.events")
        default.addHandler(handler)
        default.setLevel(logging.INFO)
        try:
            auditor = auditloop.Auditor(sinks=[LoggingSink()])
            auditor.emit("a.b")
            assert auditor.flush(5.0)
            auditor.shutdown(5.0)
        finally:
            default.removeHandler(handler)
            default.setLevel(logging.NOTSET)

        assert '"action":"a.b"' in stream.getvalue()

    @pytest.mark.parametrize(
        ("kwargs", "name"),
        [
            ({"logger": 3}, "logger"),
            ({"format": "xml"}, "format"),
            ({"level": "X"}, "level"),
        ],
    )
    def test_bad_arguments(self, kwargs: dict[str, object], name: str) -> None:
        with pytest.raises(ConfigurationError, match=name):
            LoggingSink(**kwargs)  # type: ignore[arg-type]


class TestBothDirections:
    def test_forwarded_events_are_not_audited_again(
        self, logger: logging.Logger
    ) -> None:
        # The handler and the sink on one logger, synchronous: without the
        # guard every forwarded event would be recorded again, forever.
        logger.addHandler(AuditLogHandler())
        auditloop.configure(sinks=[LoggingSink(logger)], delivery=Delivery(mode="sync"))

        with capture() as events:
            logger.info("user.login", extra={"audit": {"actor": "erin"}})

        assert ["user.login"] == [e.action for e in events]
        [plain, forwarded] = output(logger)
        assert "INFO user.login" == plain
        assert "erin" == json.loads(forwarded.partition(" ")[2])["actor"]["id"]

    def test_a_filter_marking_everything_as_audit_does_not_loop(
        self, logger: logging.Logger
    ) -> None:
        def mark(record: logging.LogRecord) -> bool:
            record.audit = True
            return True

        handler = AuditLogHandler()
        handler.addFilter(mark)
        logger.addHandler(handler)
        auditloop.configure(sinks=[LoggingSink(logger)], delivery=Delivery(mode="sync"))

        with capture() as events:
            logger.info("cache.purge")

        assert ["cache.purge"] == [e.action for e in events]
        assert 2 == len(output(logger))
