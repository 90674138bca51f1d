"""The processor chain: enrichment, redaction, user processors, DropEvent."""

from __future__ import annotations

from typing import Any

import pytest

import auditloop
from auditloop import ConfigurationError, DropEvent, sinks
from auditloop._context import current_scope


class TestProcessors:
    def test_called_with_auditor_method_and_event_dict(self) -> None:
        calls: list[tuple[Any, str, dict[str, Any]]] = []

        def spy(auditor: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
            calls.append((auditor, method, dict(event)))
            return event

        memory = sinks.MemorySink()
        auditor = auditloop.configure(sinks=[memory], processors=[spy])

        auditloop.emit("a")

        @auditloop.audited("b")
        def b() -> None:
            pass

        b()
        with auditloop.audit("c"):
            pass

        assert ["emit", "audited", "audit"] == [method for _, method, _ in calls]
        assert all(a is auditor for a, _, _ in calls)
        assert ["a", "b", "c"] == [event["action"] for _, _, event in calls]
        assert "auditloop/1" == calls[0][2]["schema"]

    def test_changes_reach_the_sinks_in_order(self) -> None:
        def tag(auditor: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
            event["attributes"] = {**event.get("attributes", {}), "tag": "t"}
            return event

        def upper(auditor: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
            event["attributes"] = {k: v.upper() for k, v in event["attributes"].items()}
            return event

        memory = sinks.MemorySink()
        auditloop.configure(sinks=[memory], processors=[tag, upper])

        auditloop.emit("x", name="n")

        assert {"name": "N", "tag": "T"} == memory.events[0].attributes

    def test_processors_as_instances_with_any_kind_of_call(self) -> None:
        class Method:
            def __call__(self, auditor: Any, method: str, event: Any) -> Any:
                event["attributes"] = {**event.get("attributes", {}), "m": 1}
                return event

        class Static:
            @staticmethod
            def __call__(auditor: Any, method: str, event: Any) -> Any:
                event["attributes"] = {**event.get("attributes", {}), "s": 1}
                return event

        class Inherited(Method):
            pass

        memory = sinks.MemorySink()
        auditor = auditloop.configure(
            sinks=[memory], processors=[Method(), Static(), Inherited()]
        )

        auditloop.emit("x")

        assert {"m": 1, "s": 1} == memory.events[0].attributes
        assert 0 == auditor.stats()["processor_errors"]

    def test_user_processors_see_redacted_values(self) -> None:
        seen: list[Any] = []

        def spy(auditor: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
            seen.append(event["attributes"]["password"])
            return event

        auditloop.configure(sinks=[sinks.MemorySink()], processors=[spy])

        auditloop.emit("x", password="p")

        assert ["[REDACTED]"] == seen

    def test_source_enrichment(self) -> None:
        memory = sinks.MemorySink()
        auditloop.configure(service="billing", sinks=[memory])

        auditloop.emit("x")

        source = memory.events[0].source
        assert "billing" == source["service"]
        assert {"service", "host", "pid", "function"} == set(source)
        assert (
            f"{__name__}:TestProcessors.test_source_enrichment" == (source["function"])
        )

    def test_mutating_shared_dicts_without_redaction_is_safe(self) -> None:
        def vandal(auditor: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
            event["source"]["vandal"] = True
            event.setdefault("context", {})["vandal"] = True
            return event

        memory = sinks.MemorySink()
        auditor = auditloop.configure(sinks=[memory], processors=[vandal], redact=False)

        with auditloop.bind(request_id="r"):
            auditloop.emit("a")
            auditloop.emit("b")
            scope_context = dict(current_scope().context)

        assert {"request_id": "r"} == scope_context
        assert "vandal" not in auditor.source_base
        assert {"request_id": "r", "vandal": True} == memory.events[1].context


class TestDropEvent:
    def test_drop_event_drops_and_counts(self) -> None:
        def drop_health(
            auditor: Any, method: str, event: dict[str, Any]
        ) -> dict[str, Any]:
            if event["action"] == "health.check":
                raise DropEvent
            return event

        memory = sinks.MemorySink()
        auditloop.configure(sinks=[memory], processors=[drop_health])

        auditloop.emit("health.check")
        auditloop.emit("health.check")
        auditloop.emit("user.login")

        assert ["user.login"] == [e.action for e in memory.events]
        assert {"processor": 2} == auditloop.stats()["dropped"]

    def test_dropped_events_reach_no_tap_and_no_later_processor(self) -> None:
        later: list[str] = []

        def drop(auditor: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
            raise DropEvent

        def after(auditor: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
            later.append(event["action"])
            return event

        auditloop.configure(sinks=[], processors=[drop, after])

        from auditloop.testing import capture

        with capture() as events:
            auditloop.emit("x")

        assert [] == events
        assert [] == later


class TestBrokenProcessor:
    def test_raising_processor_is_counted_and_the_event_kept(self) -> None:
        def broken(auditor: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
            event["attributes"] = {"half": "done"}
            raise RuntimeError("processor bug")

        def fine(auditor: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
            event["attributes"] = {**event.get("attributes", {}), "fine": True}
            return event

        memory = sinks.MemorySink()
        auditloop.configure(sinks=[memory], processors=[broken, fine])

        auditloop.emit("x", a=1)
        auditloop.emit("y")

        assert ["x", "y"] == [e.action for e in memory.events]
        assert memory.events[1].attributes["fine"] is True
        assert 2 == auditloop.stats()["processor_errors"]
        assert {} == auditloop.stats()["dropped"]

    @pytest.mark.parametrize("bad", [42, "upper", None])
    def test_non_callable_processor_is_a_configuration_error(self, bad: Any) -> None:
        with pytest.raises(ConfigurationError, match=r"processors\[1\]"):
            auditloop.configure(processors=[lambda a, m, e: e, bad])

    def test_processors_must_be_a_list(self) -> None:
        with pytest.raises(ConfigurationError, match="processors"):
            auditloop.configure(processors=42)  # type: ignore[arg-type]


class TestProcessorReturningNoDict:
    @pytest.mark.parametrize("result", [None, ["not", "a", "dict"], "text"])
    def test_is_counted_and_the_previous_event_kept(self, result: object) -> None:
        seen: list[dict[str, Any]] = []

        def forgetful(
            auditor: Any, method: str, event: dict[str, Any]
        ) -> dict[str, Any]:
            event["attributes"] = {**event.get("attributes", {}), "tagged": True}
            return result  # type: ignore[return-value]

        def after(auditor: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
            seen.append(event)
            return event

        memory = sinks.MemorySink()
        auditloop.configure(sinks=[memory], processors=[forgetful, after])

        auditloop.emit("x", a=1)

        [event] = memory.events
        assert ("x", {"a": 1, "tagged": True}) == (event.action, event.attributes)
        assert ["x"] == [e["action"] for e in seen]
        assert 1 == auditloop.stats()["processor_errors"]

    def test_a_dict_subclass_is_accepted(self) -> None:
        class Event(dict[str, Any]):
            pass

        def wrapping(
            auditor: Any, method: str, event: dict[str, Any]
        ) -> dict[str, Any]:
            return Event(event, attributes={"wrapped": True})

        memory = sinks.MemorySink()
        auditloop.configure(sinks=[memory], processors=[wrapping])

        auditloop.emit("x")

        assert {"wrapped": True} == memory.events[0].attributes
        assert 0 == auditloop.stats()["processor_errors"]
