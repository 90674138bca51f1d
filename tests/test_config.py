"""Global configuration: validation, reconfiguration, the default, stats()."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

import auditloop
from auditloop import AuditEvent, ConfigurationError, sinks
from auditloop._delivery import AsyncDelivery
from auditloop.testing import FakeClock

# Untyped handles: these tests pass what the types forbid, on purpose.
configure: Any = auditloop.configure
FileSink: Any = sinks.FileSink
StdoutSink: Any = sinks.StdoutSink
MemorySink: Any = sinks.MemorySink


def app_actions(events: Iterable[AuditEvent]) -> list[str]:
    """Actions of the application's events (auditloop's own are skipped)."""
    return [e.action for e in events if not e.action.startswith("auditloop.")]


class TestBadConfiguration:
    @pytest.mark.parametrize(
        ("build", "named"),
        [
            (
                lambda p: configure(servce="x"),
                "'servce'; did you mean 'service'",
            ),
            (
                lambda p: configure(sinks=[FileSink(p, fsynk=1)]),
                "fsynk",
            ),
            (
                lambda p: StdoutSink(fromat="json"),
                "'fromat'; did you mean 'format'",
            ),
            (lambda p: MemorySink(deliver=None), "deliver"),
            (lambda p: sinks.Delivery(queue_size=-1), "queue_size"),
            (
                lambda p: FileSink(p.parent / "missing" / "a.jsonl", create_dirs=False),
                "create_dirs",
            ),
            (
                lambda p: configure(processors=[print, "x"]),
                r"processors\[1\]",
            ),
            (lambda p: configure(sinks=[object()]), r"sinks\[0\]"),
            (lambda p: configure(sinks="stdout"), "sinks"),
            (lambda p: configure(denied=PermissionError), "denied"),
            (lambda p: configure(denied=(KeyError, 5)), "denied"),
            (lambda p: configure(clock=5), "clock"),
            (lambda p: configure(rules=5), "rules must be a list"),
            (
                lambda p: configure(drop_report_interval=-1),
                "drop_report_interval",
            ),
            (
                lambda p: configure(drop_report_interval="1m"),
                "drop_report_interval",
            ),
            (lambda p: configure(redact=None), "redact"),
            (lambda p: StdoutSink(format="yaml"), "format"),
        ],
    )
    def test_configuration_error_names_the_argument(
        self, tmp_path: Path, build: Any, named: str
    ) -> None:
        with pytest.raises(ConfigurationError, match=named):
            build(tmp_path / "a.jsonl")

    def test_configuration_error_is_a_value_error(self) -> None:
        with pytest.raises(ValueError):
            configure(bogus=1)

    def test_positional_arguments_are_refused(self) -> None:
        with pytest.raises(ConfigurationError, match="positional"):
            configure("svc")

    def test_a_failed_configure_keeps_the_previous_configuration(self) -> None:
        memory = sinks.MemorySink()
        auditloop.configure(sinks=[memory])

        with pytest.raises(ConfigurationError):
            configure(sinks=[memory], processors=[42])
        auditloop.emit("still.here")

        assert ["still.here"] == [e.action for e in memory.events]


class TestReconfigure:
    def test_replaces_sinks_cleanly(self, tmp_path: Path) -> None:
        first_path = tmp_path / "first.jsonl"
        first = sinks.FileSink(first_path)
        old = auditloop.configure(service="one", sinks=[first])
        auditloop.emit("to.first")
        second = sinks.MemorySink()

        new = auditloop.configure(service="two", sinks=[second])
        auditloop.emit("to.second")

        assert new is auditloop.get_auditor()
        assert old is not new
        assert ["to.first"] == app_actions(auditloop.read_events(first_path))
        assert [("to.second", "two")] == [
            (e.action, e.source["service"]) for e in second.events
        ]
        delivery = old.deliveries[0]
        assert isinstance(delivery, AsyncDelivery)
        assert delivery._worker is not None
        assert not delivery._worker.is_alive()  # the old writer stopped
        assert first._fd == -1  # and its sink was closed

    def test_a_sink_passed_again_stays_open(self, tmp_path: Path) -> None:
        path = tmp_path / "kept.jsonl"
        kept = sinks.FileSink(path)
        auditloop.configure(sinks=[kept])
        auditloop.emit("before")

        auditloop.configure(sinks=[kept], service="again")
        auditloop.emit("after")
        assert auditloop.flush(5)

        assert ["before", "after"] == app_actions(auditloop.read_events(path))

    def test_concurrent_emitters_during_reconfiguration_lose_nothing(self) -> None:
        memories = [sinks.MemorySink() for _ in range(5)]
        auditloop.configure(sinks=[memories[0]])
        stop = threading.Event()
        sent = [0]

        def produce() -> None:
            while not stop.is_set():
                auditloop.emit("busy")
                sent[0] += 1

        producer = threading.Thread(target=produce)
        producer.start()
        try:
            for memory in memories[1:]:
                auditloop.configure(sinks=[memory])
        finally:
            stop.set()
            producer.join()

        delivered = sum(len(app_actions(m.events)) for m in memories)
        assert sent[0] == delivered

    def test_events_recorded_by_a_replaced_auditor_reach_its_successor(
        self, tmp_path: Path
    ) -> None:
        first = sinks.MemorySink()
        old = auditloop.configure(sinks=[first, sinks.StdoutSink()])
        second = sinks.FileSink(tmp_path / "second.jsonl")
        auditloop.configure(sinks=[second])
        third = sinks.MemorySink()
        auditloop.configure(sinks=[third])

        old.emit("late")  # e.g. a thread that fetched the auditor before the swap

        assert ["late"] == app_actions(third.events)
        assert [] == app_actions(first.events)
        assert {} == old.stats()["dropped"]

    def test_a_fail_closed_successor_still_raises(self) -> None:
        old = auditloop.configure(sinks=[sinks.MemorySink()])
        failing = sinks.FileSink(
            "/dev/full", delivery=sinks.Delivery(mode="sync", on_error="raise")
        )
        auditloop.configure(sinks=[failing])

        with pytest.raises(auditloop.AuditError):
            old.emit("late")

    def test_the_default_configuration_writes_json_to_stdout(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        auditor = auditloop.get_auditor()

        auditloop.emit("unconfigured")
        assert auditloop.flush(5)

        assert ["StdoutSink"] == [type(s).__name__ for s in auditor.sinks]
        assert '"action":"unconfigured"' in capsys.readouterr().out

    def test_configure_replaces_the_default_quietly(self) -> None:
        default = auditloop.get_auditor()
        memory = sinks.MemorySink()

        auditloop.configure(sinks=[memory])
        default.emit("late")  # handed over to the new configuration

        assert ["late"] == [e.action for e in memory.events]

    def test_a_kept_sync_sink_stays_open(self) -> None:
        memory = sinks.MemorySink()
        auditloop.configure(sinks=[memory])
        auditloop.configure(sinks=[memory])

        auditloop.emit("after")

        assert ["after"] == app_actions(memory.events)
        assert {} == auditloop.stats()["dropped"]

    def test_rules_see_events_and_report_stats(self) -> None:
        from datetime import timedelta

        from auditloop import rules

        fired: list[Any] = []
        auditloop.configure(
            sinks=[sinks.MemorySink()],
            rules=[
                rules.Threshold(
                    "two-deletes",
                    match=rules.match(action="doc.delete"),
                    at_least=2,
                    within=timedelta(minutes=1),
                    then=[fired.append],
                )
            ],
        )

        auditloop.emit("doc.delete")
        auditloop.emit("doc.delete")
        assert auditloop.flush(5)

        assert ["two-deletes"] == [alert.rule for alert in fired]
        assert "rules" in auditloop.stats()
        assert auditloop.shutdown(5)

    def test_flush_and_shutdown_without_configuration(self) -> None:
        assert auditloop.flush(1)
        assert auditloop.shutdown(1)

    def test_after_shutdown_a_fresh_default_is_used(self) -> None:
        first = auditloop.configure(sinks=[sinks.MemorySink()])
        auditloop.shutdown(5)

        assert first is not auditloop.get_auditor()

    def test_fake_clock_drives_event_time(self) -> None:
        clock = FakeClock(1_767_225_600.25)
        memory = sinks.MemorySink()
        auditloop.configure(sinks=[memory], clock=clock)

        auditloop.emit("a")
        clock.advance(90)
        auditloop.emit("b")

        assert ["2026-01-01T00:00:00.250000Z", "2026-01-01T00:01:30.250000Z"] == [
            e.time for e in memory.events
        ]


class TestStats:
    def test_shape(self) -> None:
        memory = sinks.MemorySink()
        auditloop.configure(sinks=[memory])
        auditloop.emit("a")

        stats = auditloop.stats()

        assert {
            "sinks",
            "dropped",
            "conversions",
            "processor_errors",
            "rule_errors",
            "internal_errors",
        } <= set(stats)
        assert {
            "mode": "sync",
            "written": 1,
            "queued": 0,
            "dropped": {},
            "errors": 0,
            "last_error": None,
        } == stats["sinks"]["MemorySink"]
        assert {} == stats["dropped"]
        assert isinstance(stats["conversions"], int)
        assert 0 == stats["internal_errors"]

    def test_an_event_lost_to_an_internal_error_is_counted(self) -> None:
        # A broken clock (NaN) fails inside Auditor.record: the event is lost,
        # but never silently.
        memory = sinks.MemorySink()
        auditloop.configure(sinks=[memory], clock=lambda: float("nan"))

        auditloop.emit("a")
        auditloop.emit("b")

        stats = auditloop.stats()
        assert ([], 2, {"internal": 2}) == (
            memory.lines,
            stats["internal_errors"],
            stats["dropped"],
        )

    def test_same_sink_types_get_numbered_names(self) -> None:
        auditloop.configure(
            sinks=[sinks.MemorySink(), sinks.StdoutSink(), sinks.MemorySink()]
        )

        assert ["MemorySink#1", "StdoutSink", "MemorySink#2"] == list(
            auditloop.stats()["sinks"]
        )

    def test_conversions_are_counted(self) -> None:
        auditloop.configure(sinks=[sinks.MemorySink()])
        before = auditloop.stats()["conversions"]

        auditloop.emit("a", when={1, 2}, what=object())

        assert 2 == auditloop.stats()["conversions"] - before
