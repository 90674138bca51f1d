"""Recording calls: ``audited``, ``audit()`` and ``emit()``."""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import AsyncGenerator, Generator
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


class BadStr:
    """An object whose ``str()`` and ``repr()`` both raise."""

    def __str__(self) -> str:
        raise RuntimeError("broken __str__")

    __repr__ = __str__


class TestUnprintableActorAndTarget:
    def test_emit_records_placeholders_instead_of_raising(
        self, memory: sinks.MemorySink
    ) -> None:
        auditloop.emit("x", actor=BadStr())
        auditloop.emit("y", target=BadStr())

        actor_event, target_event = memory.events
        assert "<unprintable BadStr>" == (
            actor_event.actor.id if actor_event.actor else None
        )
        assert "<unprintable BadStr>" == (
            target_event.target.id if target_event.target else None
        )

    def test_audit_block_keeps_the_applications_exception(
        self, memory: sinks.MemorySink
    ) -> None:
        original = KeyError("original")

        def block() -> None:
            with auditloop.audit("role.grant", actor=BadStr()) as rec:
                rec.target = BadStr()
                raise original

        with pytest.raises(KeyError) as raised:
            block()

        event = only(memory)
        assert raised.value is original
        assert ("failure", "<unprintable BadStr>", "<unprintable BadStr>") == (
            event.outcome,
            event.actor.id if event.actor else None,
            event.target.id if event.target else None,
        )


class TestTargetErrorWithBrokenRepr:
    class Weird(Exception):
        def __repr__(self) -> str:
            raise RuntimeError("broken __repr__")

    def test_call_returns_and_the_event_names_the_error_type(
        self, memory: sinks.MemorySink
    ) -> None:
        def target(doc_id: str, **_: Any) -> str:
            raise self.Weird("no target")

        @auditloop.audited("doc.delete", target=target)
        def delete(doc_id: str) -> str:
            return "deleted"

        assert "deleted" == delete("d1")
        event = only(memory)
        assert {"target_error": "<unprintable Weird>"} == event.attributes

    def test_the_applications_exception_propagates_unchanged(
        self, memory: sinks.MemorySink
    ) -> None:
        def target(doc_id: str, **_: Any) -> str:
            raise self.Weird("no target")

        error = ValueError("app error")

        @auditloop.audited("doc.delete", target=target)
        def delete(doc_id: str) -> str:
            raise error

        with pytest.raises(ValueError) as raised:
            delete("d1")
        assert raised.value is error
        assert "failure" == only(memory).outcome


def add(a: int, b: int) -> int:
    return a + b


async def async_add(a: int, b: int) -> int:
    return a + b


class Adder:
    def __call__(self, x: int) -> int:
        return x + 1


class TestAuditedOtherCallables:
    def test_partial_is_named_after_its_function(
        self, memory: sinks.MemorySink
    ) -> None:
        wrapped = auditloop.audited("x.add", capture=["b"])(functools.partial(add, 1))

        assert 3 == wrapped(2)
        event = only(memory)
        assert (f"{__name__}:add", {"b": 2}) == (
            event.source["function"],
            event.attributes,
        )

    def test_callable_instance_is_named_after_its_class(
        self, memory: sinks.MemorySink
    ) -> None:
        wrapped = auditloop.audited("x.adder")(Adder())

        assert 2 == wrapped(1)
        assert f"{__name__}:Adder" == only(memory).source["function"]

    def test_async_partial_stays_a_coroutine_function(
        self, memory: sinks.MemorySink
    ) -> None:
        wrapped = auditloop.audited("x.add")(functools.partial(async_add, 1))

        assert inspect.iscoroutinefunction(wrapped)
        assert 3 == asyncio.run(wrapped(2))
        assert "success" == only(memory).outcome


class TestAuditedGenerators:
    def test_stays_a_generator_function_with_its_metadata(self) -> None:
        @auditloop.audited("export.rows")
        def rows(n: int) -> Generator[int, None, None]:
            """Yield rows."""
            yield from range(n)

        assert inspect.isgeneratorfunction(rows)
        assert ("rows", "Yield rows.") == (rows.__name__, rows.__doc__)
        assert ["n"] == list(inspect.signature(rows).parameters)

    def test_records_success_once_when_exhausted(
        self, memory: sinks.MemorySink
    ) -> None:
        @auditloop.audited("export.rows", capture=["n", "return"])
        def rows(n: int) -> Generator[int, None, str]:
            yield from range(n)
            return "done"

        gen = rows(3)
        assert [] == memory.events  # nothing ran yet
        assert [0, 1, 2] == list(gen)

        event = only(memory)
        assert ("success", {"n": 3, "return": "done"}) == (
            event.outcome,
            event.attributes,
        )

    def test_records_a_failure_during_iteration(self, memory: sinks.MemorySink) -> None:
        error = RuntimeError("export failed mid-way")

        @auditloop.audited("export.rows")
        def rows() -> Generator[int, None, None]:
            yield 1
            raise error

        got: list[int] = []
        with pytest.raises(RuntimeError) as raised:
            got.extend(rows())

        event = only(memory)
        assert ([1], error) == (got, raised.value)
        assert ("failure", {"type": "RuntimeError", "message": str(error)}) == (
            event.outcome,
            event.error,
        )

    def test_early_close_is_a_success_marked_closed_early(
        self, memory: sinks.MemorySink
    ) -> None:
        cleaned: list[bool] = []

        @auditloop.audited("export.rows")
        def rows() -> Generator[int, None, None]:
            try:
                yield 1
                yield 2
            finally:
                cleaned.append(True)

        gen = rows()
        assert 1 == next(gen)
        gen.close()

        event = only(memory)
        assert ([True], "success", None, {"closed_early": True}) == (
            cleaned,
            event.outcome,
            event.error,
            event.attributes,
        )

    def test_never_iterated_records_nothing(self, memory: sinks.MemorySink) -> None:
        @auditloop.audited("export.rows")
        def rows() -> Generator[int, None, None]:
            yield 1

        rows().close()
        assert [] == memory.events

    def test_send_and_throw_reach_the_generator(self, memory: sinks.MemorySink) -> None:
        @auditloop.audited("echo")
        def echo() -> Generator[object, object, None]:
            received: object = None
            while True:
                try:
                    received = yield received
                except KeyError:
                    received = "caught"
                if received == "stop":
                    return

        gen = echo()
        assert None is next(gen)
        assert "hello" == gen.send("hello")
        assert "caught" == gen.throw(KeyError("k"))
        with pytest.raises(StopIteration):
            gen.send("stop")
        assert "success" == only(memory).outcome

    def test_duration_starts_at_the_first_iteration(
        self, memory: sinks.MemorySink, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        now = [0]
        monkeypatch.setattr(time, "perf_counter_ns", lambda: now[0])

        @auditloop.audited("export.rows")
        def rows() -> Generator[int, None, None]:
            now[0] += 1_000_000  # the body runs for 1 ms
            yield 1

        gen = rows()
        now[0] = 100_000_000  # 100 ms between creation and first iteration
        assert [1] == list(gen)

        assert 1.0 == only(memory).duration_ms


class TestAuditedAsyncGenerators:
    def test_stays_an_async_generator_function(self) -> None:
        @auditloop.audited("export.rows")
        async def rows() -> AsyncGenerator[int, None]:
            yield 1

        assert inspect.isasyncgenfunction(rows)
        assert "rows" == rows.__name__

    def test_success_when_exhausted(self, memory: sinks.MemorySink) -> None:
        @auditloop.audited("export.rows")
        async def rows(n: int) -> AsyncGenerator[int, None]:
            for i in range(n):
                yield i

        async def main() -> list[int]:
            return [row async for row in rows(3)]

        assert [0, 1, 2] == asyncio.run(main())
        assert "success" == only(memory).outcome

    def test_failure_during_iteration(self, memory: sinks.MemorySink) -> None:
        error = RuntimeError("async export failed")

        @auditloop.audited("export.rows")
        async def rows() -> AsyncGenerator[int, None]:
            yield 1
            raise error

        async def main() -> list[int]:
            got = []
            async for row in rows():
                got.append(row)
            return got

        with pytest.raises(RuntimeError) as raised:
            asyncio.run(main())

        event = only(memory)
        assert (error, "failure", "RuntimeError") == (
            raised.value,
            event.outcome,
            (event.error or {}).get("type"),
        )

    def test_aclose_is_a_success_marked_closed_early(
        self, memory: sinks.MemorySink
    ) -> None:
        cleaned: list[bool] = []

        @auditloop.audited("export.rows")
        async def rows() -> AsyncGenerator[int, None]:
            try:
                yield 1
                yield 2
            finally:
                cleaned.append(True)

        async def main() -> None:
            gen = rows()
            assert 1 == await anext(gen)
            await gen.aclose()

        asyncio.run(main())
        event = only(memory)
        assert ([True], "success", {"closed_early": True}) == (
            cleaned,
            event.outcome,
            event.attributes,
        )

    def test_asend_and_athrow_reach_the_generator(
        self, memory: sinks.MemorySink
    ) -> None:
        @auditloop.audited("echo")
        async def echo() -> AsyncGenerator[object, object]:
            received: object = None
            while True:
                try:
                    received = yield received
                except KeyError:
                    received = "caught"
                if received == "stop":
                    return

        async def main() -> list[object]:
            gen = echo()
            got = [await gen.asend(None), await gen.asend("hello")]
            got.append(await gen.athrow(KeyError("k")))
            with pytest.raises(StopAsyncIteration):
                await gen.asend("stop")
            return got

        assert [None, "hello", "caught"] == asyncio.run(main())
        assert "success" == only(memory).outcome

    def test_an_unhandled_athrow_is_a_failure(self, memory: sinks.MemorySink) -> None:
        @auditloop.audited("export.rows")
        async def rows() -> AsyncGenerator[int, None]:
            yield 1

        async def main() -> None:
            gen = rows()
            await anext(gen)
            await gen.athrow(ValueError("stop it"))

        with pytest.raises(ValueError, match="stop it"):
            asyncio.run(main())
        assert "failure" == only(memory).outcome


class TestAuditInsideGenerators:
    def test_break_out_of_the_generator_is_not_a_failure(
        self, memory: sinks.MemorySink
    ) -> None:
        def export() -> Generator[int, None, None]:
            with auditloop.audit("export.rows"):
                yield 1
                yield 2

        for _row in export():
            break

        event = only(memory)
        assert ("success", None, {"closed_early": True}) == (
            event.outcome,
            event.error,
            event.attributes,
        )

    def test_cancellation_is_still_a_failure(self, memory: sinks.MemorySink) -> None:
        async def work(started: asyncio.Event) -> None:
            async with auditloop.audit("job.run"):
                started.set()
                await asyncio.Event().wait()

        async def main() -> None:
            started = asyncio.Event()
            task = asyncio.create_task(work(started))
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(main())
        event = only(memory)
        assert ("failure", "CancelledError") == (
            event.outcome,
            (event.error or {}).get("type"),
        )
