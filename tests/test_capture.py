"""Recording calls: ``audited``, ``audit()`` and ``emit()``."""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any

import pytest

import auditloop
from auditloop import AuditEvent, ConfigurationError, Target, sinks
from auditloop.testing import FakeClock


@pytest.fixture
def memory() -> sinks.MemorySink:
    sink = sinks.MemorySink()
    auditloop.configure(service="svc", sinks=[sink])
    return sink


def only(memory: sinks.MemorySink) -> AuditEvent:
    events = memory.events
    assert 1 == len(events)
    return events[0]


class Boom(Exception):
    pass


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")


class TestAuditedSync:
    def test_success_records_outcome_duration_source(
        self, memory: sinks.MemorySink
    ) -> None:
        @auditloop.audited("doc.read", category="data", severity="low")
        def read(doc_id: str) -> str:
            return f"content of {doc_id}"

        result = read("d1")

        event = only(memory)
        assert "content of d1" == result
        assert ("doc.read", "success", "data", "low") == (
            event.action,
            event.outcome,
            event.category,
            event.severity,
        )
        assert event.duration_ms is not None
        assert event.duration_ms >= 0
        assert event.error is None
        assert "svc" == event.source["service"]
        assert f"{__name__}:{read.__qualname__}" == event.source["function"]
        assert "auditloop/1" == event.schema

    def test_return_value_is_the_very_same_object(
        self, memory: sinks.MemorySink
    ) -> None:
        sentinel = object()

        @auditloop.audited("x")
        def give() -> object:
            return sentinel

        assert sentinel is give()

    def test_duration_covers_the_call(self, memory: sinks.MemorySink) -> None:
        @auditloop.audited("slow")
        def slow() -> None:
            time.sleep(0.02)

        slow()

        duration = only(memory).duration_ms
        assert duration is not None
        assert duration >= 20.0

    def test_failure_reraises_the_same_exception_object(
        self, memory: sinks.MemorySink
    ) -> None:
        raised = Boom("it broke")

        @auditloop.audited("doc.delete")
        def delete() -> None:
            raise raised

        with pytest.raises(Boom) as info:
            delete()

        event = only(memory)
        assert raised is info.value
        assert info.value.__traceback__ is not None
        assert "failure" == event.outcome
        assert {"type": "Boom", "message": "it broke"} == event.error
        assert event.duration_ms is not None

    def test_permission_error_records_denied(self, memory: sinks.MemorySink) -> None:
        @auditloop.audited("admin.only")
        def guarded() -> None:
            raise PermissionError("not an admin")

        with pytest.raises(PermissionError):
            guarded()

        event = only(memory)
        assert "denied" == event.outcome
        assert {"type": "PermissionError", "message": "not an admin"} == event.error

    def test_configured_denied_types(self) -> None:
        memory = sinks.MemorySink()
        auditloop.configure(sinks=[memory], denied=(Boom,))

        @auditloop.audited("x")
        def f() -> None:
            raise Boom

        with pytest.raises(Boom):
            f()
        with pytest.raises(PermissionError), auditloop.audit("y"):
            raise PermissionError

        assert ["denied", "failure"] == [e.outcome for e in memory.events]

    def test_keeps_name_doc_and_signature(self) -> None:
        def original(a: int, b: str = "x", *, c: float) -> str:
            """Doc."""
            return ""

        wrapped = auditloop.audited("x")(original)

        assert "original" == wrapped.__name__
        assert "Doc." == wrapped.__doc__
        assert inspect.signature(original) == inspect.signature(wrapped)
        assert original is wrapped.__wrapped__  # type: ignore[attr-defined]


class TestAuditedAsync:
    def test_success(self, memory: sinks.MemorySink) -> None:
        @auditloop.audited("job.run", target="job:7")
        async def run(n: int) -> int:
            await asyncio.sleep(0)
            return n * 2

        assert inspect.iscoroutinefunction(run)
        assert 42 == asyncio.run(run(21))
        event = only(memory)
        assert "success" == event.outcome
        assert Target("job:7", type="job") == event.target
        assert event.duration_ms is not None

    def test_duration_covers_awaits(self, memory: sinks.MemorySink) -> None:
        @auditloop.audited("job.wait")
        async def wait() -> None:
            await asyncio.sleep(0.02)

        asyncio.run(wait())

        duration = only(memory).duration_ms
        assert duration is not None
        assert duration >= 20.0

    def test_failure_reraises_same_object(self, memory: sinks.MemorySink) -> None:
        raised = Boom("async boom")

        @auditloop.audited("job.fail")
        async def fail() -> None:
            await asyncio.sleep(0)
            raise raised

        with pytest.raises(Boom) as info:
            asyncio.run(fail())

        assert raised is info.value
        assert "failure" == only(memory).outcome

    def test_denied(self, memory: sinks.MemorySink) -> None:
        @auditloop.audited("job.secret")
        async def secret() -> None:
            raise PermissionError("nope")

        with pytest.raises(PermissionError):
            asyncio.run(secret())

        assert "denied" == only(memory).outcome


class Documents:
    def __init__(self) -> None:
        self.deleted: list[str] = []

    @auditloop.audited("document.delete", target=lambda doc_id, **_: f"doc:{doc_id}")
    def delete(self, doc_id: str) -> int:
        self.deleted.append(doc_id)
        return len(self.deleted)

    @staticmethod
    @auditloop.audited("document.lookup", capture=["name"])
    def lookup(name: str) -> str:
        return name.upper()

    @auditloop.audited("document.count", capture=["return"])
    @staticmethod
    def count() -> int:
        return 3

    @auditloop.audited("document.make", capture=["title"])
    @classmethod
    def make(cls, title: str) -> Documents:
        return cls()


class TestAuditedMethods:
    def test_instance_method(self, memory: sinks.MemorySink) -> None:
        docs = Documents()

        assert 1 == docs.delete("d9")

        event = only(memory)
        assert ["d9"] == docs.deleted
        assert Target("doc:d9", type="doc") == event.target
        assert event.source["function"].endswith(":Documents.delete")

    def test_staticmethod_under_and_over_the_decorator(
        self, memory: sinks.MemorySink
    ) -> None:
        assert "AB" == Documents.lookup("ab")
        assert 3 == Documents.count()
        assert 3 == Documents().count()

        first, second, third = memory.events
        assert ("document.lookup", {"name": "ab"}) == (first.action, first.attributes)
        assert ("document.count", {"return": 3}) == (second.action, second.attributes)
        assert "document.count" == third.action

    def test_classmethod(self, memory: sinks.MemorySink) -> None:
        made = Documents.make("T")

        event = only(memory)
        assert isinstance(made, Documents)
        assert {"title": "T"} == event.attributes
        assert event.source["function"].endswith(":Documents.make")


class TestCapture:
    def test_nothing_is_captured_by_default(self, memory: sinks.MemorySink) -> None:
        @auditloop.audited("user.login")
        def login(user: str, password: str) -> bool:
            return True

        login("alice", "hunter2")

        event = only(memory)
        assert {} == event.attributes
        assert "hunter2" not in memory.lines[0].decode()

    def test_named_arguments_positional_keyword_and_defaults(
        self, memory: sinks.MemorySink
    ) -> None:
        @auditloop.audited("file.copy", capture=["src", "dst", "force"])
        def copy(src: str, dst: str, *, force: bool = False, mode: int = 0) -> None:
            pass

        copy("a", dst="b")
        copy("c", "d", force=True)

        first, second = memory.events
        assert {"src": "a", "dst": "b", "force": False} == first.attributes
        assert {"src": "c", "dst": "d", "force": True} == second.attributes

    def test_return_value_is_captured_and_unchanged(
        self, memory: sinks.MemorySink
    ) -> None:
        result = {"n": 1}

        @auditloop.audited("calc", capture=["x", "return"])
        def calc(x: int) -> dict[str, int]:
            return result

        assert result is calc(5)
        assert {"x": 5, "return": {"n": 1}} == only(memory).attributes

    def test_return_is_not_captured_on_failure(self, memory: sinks.MemorySink) -> None:
        @auditloop.audited("calc", capture=["return"])
        def calc() -> int:
            raise Boom

        with pytest.raises(Boom):
            calc()

        assert {} == only(memory).attributes

    def test_captured_secrets_are_redacted(self, memory: sinks.MemorySink) -> None:
        @auditloop.audited("user.login", capture=["user", "password"])
        def login(user: str, password: str) -> None:
            pass

        login("alice", "hunter2")

        assert {"user": "alice", "password": "[REDACTED]"} == only(memory).attributes

    def test_names_from_var_keyword(self, memory: sinks.MemorySink) -> None:
        @auditloop.audited("cfg.set", capture=["key", "missing"])
        def set_cfg(**options: Any) -> None:
            pass

        set_cfg(key="k", other=1)

        assert {"key": "k"} == only(memory).attributes

    def test_unknown_name_is_a_configuration_error(self) -> None:
        def f(a: int) -> None:
            pass

        with pytest.raises(ConfigurationError, match="'b'"):
            auditloop.audited("x", capture=["a", "b"])(f)

    def test_a_plain_string_is_refused(self) -> None:
        def f(a: int) -> None:
            pass

        with pytest.raises(ConfigurationError, match="capture"):
            auditloop.audited("x", capture="a")(f)

    @pytest.mark.parametrize("action", ["", None, 5])
    def test_bad_action_is_refused(self, action: Any) -> None:
        with pytest.raises(ConfigurationError, match="action"):
            auditloop.audited(action)(lambda: None)


class TestTarget:
    def test_callable_receives_arguments_by_name(
        self, memory: sinks.MemorySink
    ) -> None:
        @auditloop.audited(
            "doc.share", target=lambda doc_id, user, **_: f"doc:{doc_id}/{user}"
        )
        def share(doc_id: str, user: str, note: str = "") -> None:
            pass

        share("d1", user="bob")

        assert Target("doc:d1/bob", type="doc") == only(memory).target

    def test_callable_sees_default_values(self, memory: sinks.MemorySink) -> None:
        @auditloop.audited("doc.open", target=lambda doc_id, **_: f"doc:{doc_id}")
        def open_doc(doc_id: str = "home") -> None:
            pass

        open_doc()

        assert Target("doc:home", type="doc") == only(memory).target

    def test_callable_may_return_target_or_mapping(
        self, memory: sinks.MemorySink
    ) -> None:
        @auditloop.audited("a", target=lambda x: Target(x, type="thing"))
        def a(x: str) -> None:
            pass

        @auditloop.audited("b", target=lambda x: {"id": x, "name": "N"})
        def b(x: str) -> None:
            pass

        a("t1")
        b("t2")

        assert [Target("t1", type="thing"), Target("t2", name="N")] == [
            e.target for e in memory.events
        ]

    def test_raising_target_callable_never_breaks_the_call(
        self, memory: sinks.MemorySink
    ) -> None:
        def broken(**_: Any) -> str:
            raise KeyError("no such field")

        @auditloop.audited("doc.read", target=broken)
        def read(doc_id: str) -> str:
            return "ok"

        assert "ok" == read("d1")

        event = only(memory)
        assert event.target is None
        assert "success" == event.outcome
        assert "KeyError" in event.attributes["target_error"]

    def test_bad_target_is_refused(self) -> None:
        with pytest.raises(ConfigurationError, match="target"):
            auditloop.audited("x", target=42)(lambda: None)  # type: ignore[arg-type]


class TestAuditContextManager:
    def test_records_block_with_set_target_outcome_reason(
        self, memory: sinks.MemorySink
    ) -> None:
        with auditloop.audit("role.grant", target="user:42", ticket="T-1") as rec:
            rec.set(role="admin")
            rec.set(role="owner", scope="org")
            rec.target = "user:43"
            rec.outcome = "unknown"
            rec.reason = "on-call request"

        event = only(memory)
        assert "role.grant" == event.action
        assert Target("user:43", type="user") == event.target
        assert "unknown" == event.outcome
        assert "on-call request" == event.reason
        assert {"ticket": "T-1", "role": "owner", "scope": "org"} == event.attributes
        assert event.duration_ms is not None
        test = TestAuditContextManager.test_records_block_with_set_target_outcome_reason
        assert f"{__name__}:{test.__qualname__}" == event.source["function"]

    def test_exception_records_failure_and_propagates(
        self, memory: sinks.MemorySink
    ) -> None:
        raised = Boom("half done")

        def migrate() -> None:
            with auditloop.audit("migrate") as rec:
                rec.set(step=1)
                raise raised

        with pytest.raises(Boom) as info:
            migrate()

        event = only(memory)
        assert raised is info.value
        assert "failure" == event.outcome
        assert {"type": "Boom", "message": "half done"} == event.error
        assert {"step": 1} == event.attributes

    def test_permission_error_records_denied(self, memory: sinks.MemorySink) -> None:
        with pytest.raises(PermissionError), auditloop.audit("admin.area"):
            raise PermissionError("admins only")

        event = only(memory)
        assert ("denied", "PermissionError") == (
            event.outcome,
            event.error["type"] if event.error else None,
        )

    def test_explicit_outcome_wins_over_the_exception(
        self, memory: sinks.MemorySink
    ) -> None:
        def refuse() -> None:
            with auditloop.audit("x") as rec:
                rec.outcome = "denied"
                raise Boom

        with pytest.raises(Boom):
            refuse()

        assert "denied" == only(memory).outcome

    def test_actor_category_severity(self, memory: sinks.MemorySink) -> None:
        with auditloop.audit(
            "x", actor="bob", category="data", severity="critical", reason="r"
        ):
            pass

        event = only(memory)
        assert ("bob", "data", "critical", "r") == (
            event.actor.id if event.actor else None,
            event.category,
            event.severity,
            event.reason,
        )

    def test_async_with(self, memory: sinks.MemorySink) -> None:
        async def main() -> None:
            async with auditloop.audit("deploy", target="service:api") as rec:
                await asyncio.sleep(0)
                rec.set(version="1.2")
            with pytest.raises(Boom):
                async with auditloop.audit("deploy"):
                    raise Boom

        asyncio.run(main())

        ok, failed = memory.events
        assert ("success", {"version": "1.2"}) == (ok.outcome, ok.attributes)
        assert "failure" == failed.outcome

    def test_duration_with_fake_clock_does_not_use_event_time(self) -> None:
        clock = FakeClock(1_767_225_600.000001)
        memory = sinks.MemorySink()
        auditloop.configure(sinks=[memory], clock=clock)

        with auditloop.audit("x"):
            clock.advance(3600)

        event = only(memory)
        assert "2026-01-01T01:00:00.000001Z" == event.time
        assert event.duration_ms is not None
        assert event.duration_ms < 3_600_000


class TestEmit:
    def test_one_shot_event(self, memory: sinks.MemorySink) -> None:
        auditloop.emit(
            "deploy.finished",
            actor="ci",
            target="service:billing",
            outcome="success",
            version="1.4.2",
        )

        event = only(memory)
        assert "deploy.finished" == event.action
        assert "ci" == (event.actor.id if event.actor else None)
        assert Target("service:billing", type="service") == event.target
        assert {"version": "1.4.2"} == event.attributes
        assert f"{__name__}:TestEmit.test_one_shot_event" == event.source["function"]

    def test_error_and_duration(self, memory: sinks.MemorySink) -> None:
        auditloop.emit(
            "job.done",
            outcome="failure",
            error=ValueError("bad input"),
            duration_ms=12.5,
        )
        auditloop.emit("job.done", outcome="failure", error="disk full")
        auditloop.emit("job.done", outcome="failure", error={"type": "E", "code": 3})

        first, second, third = memory.events
        assert {"type": "ValueError", "message": "bad input"} == first.error
        assert 12.5 == first.duration_ms
        assert {"type": "error", "message": "disk full"} == second.error
        assert {"type": "E", "code": "3"} == third.error

    def test_auditor_emit_merges_attributes_mapping(self) -> None:
        memory = sinks.MemorySink()
        auditor = auditloop.Auditor(sinks=[memory])

        auditor.emit("x", attributes={"a": 1, "b": 2}, b=3)
        auditor.emit("y", c=4)

        assert [{"a": 1, "b": 3}, {"c": 4}] == [e.attributes for e in memory.events]
        assert (
            memory.events[0]
            .source["function"]
            .endswith("test_auditor_emit_merges_attributes_mapping")
        )

    def test_ids_unique_and_time_ordered(self, memory: sinks.MemorySink) -> None:
        for i in range(200):
            auditloop.emit("tick", i=i)

        ids = [e.id for e in memory.events]
        assert 200 == len(set(ids))
        assert sorted(ids) == ids

    def test_unreadable_error_mapping_never_raises(
        self, memory: sinks.MemorySink
    ) -> None:
        class Unreadable(dict[str, str]):
            def items(self) -> Any:
                raise RuntimeError("no items")

        auditloop.emit("x", outcome="failure", error=Unreadable(a="b"))

        assert {"type": "error", "message": "<unreadable error mapping>"} == (
            only(memory).error
        )

    def test_unprintable_error_never_raises(self, memory: sinks.MemorySink) -> None:
        auditloop.emit("x", outcome="failure", error=Unprintable())

        assert {"type": "Unprintable", "message": "<unprintable message>"} == (
            only(memory).error
        )
