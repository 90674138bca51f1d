"""MemorySink: events kept in memory, for tests."""

from __future__ import annotations

import auditloop
from auditloop import AuditEvent
from auditloop._delivery import AsyncDelivery, SyncDelivery
from auditloop.sinks import Delivery, MemorySink


class TestMemorySink:
    def test_events_are_there_as_soon_as_emit_returns(self) -> None:
        memory = MemorySink()
        auditor = auditloop.Auditor(sinks=[memory])

        auditor.emit("a", n=1)

        assert isinstance(auditor.deliveries[0], SyncDelivery)
        (event,) = memory.events
        assert isinstance(event, AuditEvent)
        assert ("a", {"n": 1}) == (event.action, event.attributes)
        assert 1 == len(memory.lines)

    def test_clear(self) -> None:
        memory = MemorySink()
        auditor = auditloop.Auditor(sinks=[memory])
        auditor.emit("a")

        memory.clear()
        auditor.emit("b")

        assert ["b"] == [e.action for e in memory.events]

    def test_flush_and_close_keep_the_events(self) -> None:
        memory = MemorySink()
        auditor = auditloop.Auditor(sinks=[memory])
        auditor.emit("a")

        assert auditor.shutdown(5)

        assert ["a"] == [e.action for e in memory.events]

    def test_with_an_async_delivery(self) -> None:
        memory = MemorySink(delivery=Delivery())
        auditor = auditloop.Auditor(sinks=[memory])

        for i in range(10):
            auditor.emit("n", i=i)
        assert auditor.flush(5)

        assert isinstance(auditor.deliveries[0], AsyncDelivery)
        assert list(range(10)) == [e.attributes["i"] for e in memory.events]
        auditor.shutdown(5)


class TestTestingCapture:
    def test_capture_collects_whatever_is_configured(self) -> None:
        from auditloop.testing import capture

        auditloop.configure(sinks=[])
        with capture() as events:
            auditloop.emit("inside", password="p")
        auditloop.emit("outside")

        assert ["inside"] == [e.action for e in events]
        assert {"password": "[REDACTED]"} == events[0].attributes

    def test_nested_captures_each_see_their_own_span(self) -> None:
        from auditloop._auditor import remove_tap
        from auditloop.testing import capture

        auditloop.configure(sinks=[])
        with capture() as outer:
            auditloop.emit("a")
            with capture() as inner:
                auditloop.emit("b")
            auditloop.emit("c")
        remove_tap([])  # removing a list that was never added is harmless

        assert ["a", "b", "c"] == [e.action for e in outer]
        assert ["b"] == [e.action for e in inner]
