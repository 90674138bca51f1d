"""``bind``: scoped actor and correlation fields through contextvars."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Generator, Iterator
from typing import Any

import pytest
import structlog

import auditloop
from auditloop import Actor, AuditEvent, sinks
from auditloop._context import current_scope

WAIT = 10.0


@pytest.fixture
def memory() -> sinks.MemorySink:
    sink = sinks.MemorySink()
    auditloop.configure(sinks=[sink])
    return sink


@pytest.fixture
def structlog_vars() -> Iterator[None]:
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()


def actor_id(event: AuditEvent) -> str | None:
    return event.actor.id if event.actor else None


class TestBindScopes:
    def test_actor_and_context_reach_events(self, memory: sinks.MemorySink) -> None:
        with auditloop.bind(actor="alice", request_id="r-1", tenant="t"):
            auditloop.emit("x")

        event = memory.events[0]
        assert Actor("alice") == event.actor
        assert {"request_id": "r-1", "tenant": "t"} == event.context

    def test_scopes_nest_override_and_restore(self, memory: sinks.MemorySink) -> None:
        with auditloop.bind(actor="alice", request_id="r-1"):
            auditloop.emit("outer")
            with auditloop.bind(actor="bob", span_id="s-2") as fields:
                auditloop.emit("inner")
                assert {"actor": "bob", "request_id": "r-1", "span_id": "s-2"} == (
                    dict(fields)
                )
            auditloop.emit("outer-again")
        auditloop.emit("outside")

        outer, inner, again, outside = memory.events
        assert ("alice", {"request_id": "r-1"}) == (actor_id(outer), outer.context)
        assert ("bob", {"request_id": "r-1", "span_id": "s-2"}) == (
            actor_id(inner),
            inner.context,
        )
        assert ("alice", {"request_id": "r-1"}) == (actor_id(again), again.context)
        assert (None, {}) == (actor_id(outside), outside.context)

    def test_scope_is_restored_when_the_block_raises(self) -> None:
        with pytest.raises(KeyError), auditloop.bind(actor="a"):
            raise KeyError

        assert {} == current_scope().fields

    def test_explicit_actor_wins_over_the_bound_one(
        self, memory: sinks.MemorySink
    ) -> None:
        with auditloop.bind(actor="alice"):
            auditloop.emit("x", actor="system")

        assert "system" == actor_id(memory.events[0])

    def test_actor_object_and_mapping(self, memory: sinks.MemorySink) -> None:
        with auditloop.bind(actor=Actor("svc", type="service", roles=("deployer",))):
            auditloop.emit("a")
        with auditloop.bind(actor={"id": "u1", "ip": "10.1.1.1"}):
            auditloop.emit("b")

        first, second = memory.events
        assert Actor("svc", type="service", roles=("deployer",)) == first.actor
        assert Actor("u1", ip="10.1.1.1") == second.actor

    def test_same_bind_object_reentered(self) -> None:
        scope = auditloop.bind(request_id="r")
        with scope, scope:
            assert {"request_id": "r"} == current_scope().fields
        assert {} == current_scope().fields

    def test_one_bind_object_entered_by_threads_at_once(self) -> None:
        shared = auditloop.bind(request_id="shared")
        both_inside = threading.Barrier(2)
        first_left = threading.Event()
        seen: dict[str, Any] = {}
        errors: list[BaseException] = []

        def worker(name: str) -> None:
            try:
                with auditloop.bind(actor=name), shared:
                    both_inside.wait(WAIT)
                    if name == "b":  # leave after "a" has left
                        assert first_left.wait(WAIT)
                if name == "a":
                    first_left.set()
                seen[name] = dict(current_scope().fields)
            except BaseException as exc:
                errors.append(exc)
                first_left.set()

        threads = [threading.Thread(target=worker, args=(n,)) for n in "ab"]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        assert [] == errors
        assert {"a": {}, "b": {}} == seen

    def test_bound_secrets_are_redacted(self, memory: sinks.MemorySink) -> None:
        with auditloop.bind(actor="a", session="s3cr3t", request_id="r"):
            auditloop.emit("x")
            auditloop.emit("y")

        for event in memory.events:
            assert {"session": "[REDACTED]", "request_id": "r"} == event.context
        assert b"s3cr3t" not in b"".join(memory.lines)


class TestBindDecorator:
    def test_sync_function(self, memory: sinks.MemorySink) -> None:
        @auditloop.bind(actor="cron", job="nightly")
        def job(n: int) -> int:
            auditloop.emit("job.step")
            return n + 1

        assert 2 == job(1)
        assert {} == current_scope().fields
        event = memory.events[0]
        assert ("cron", {"job": "nightly"}) == (actor_id(event), event.context)
        assert "job" == job.__name__

    def test_async_function(self, memory: sinks.MemorySink) -> None:
        @auditloop.bind(actor="worker")
        async def handle() -> str:
            await asyncio.sleep(0)
            auditloop.emit("handled")
            return "ok"

        assert "ok" == asyncio.run(handle())
        assert "worker" == actor_id(memory.events[0])

    def test_async_with(self, memory: sinks.MemorySink) -> None:
        async def main() -> None:
            async with auditloop.bind(actor="async-user"):
                auditloop.emit("x")
            auditloop.emit("y")

        asyncio.run(main())

        assert ["async-user", None] == [actor_id(e) for e in memory.events]


class TestPropagation:
    def test_asyncio_tasks_inherit_and_isolate(self, memory: sinks.MemorySink) -> None:
        async def request(user: str) -> None:
            with auditloop.bind(actor=user, request_id=f"req-{user}"):
                await asyncio.sleep(0)
                await asyncio.gather(child(), child())

        async def child() -> None:
            await asyncio.sleep(0)
            auditloop.emit("child")

        async def main() -> None:
            await asyncio.gather(*(request(u) for u in ("u1", "u2", "u3")))

        asyncio.run(main())

        seen = sorted((actor_id(e), e.context["request_id"]) for e in memory.events)
        assert [
            ("u1", "req-u1"),
            ("u1", "req-u1"),
            ("u2", "req-u2"),
            ("u2", "req-u2"),
            ("u3", "req-u3"),
            ("u3", "req-u3"),
        ] == seen

    def test_threads_started_with_copy_context_run(
        self, memory: sinks.MemorySink
    ) -> None:
        def work(i: int) -> None:
            auditloop.emit("thread.work", i=i)

        with auditloop.bind(actor="alice", request_id="r-7"):
            threads = [
                threading.Thread(target=contextvars.copy_context().run, args=(work, i))
                for i in range(4)
            ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        assert 4 == len(memory.events)
        for event in memory.events:
            assert ("alice", {"request_id": "r-7"}) == (actor_id(event), event.context)

    def test_plain_threads_do_not_see_the_scope(self, memory: sinks.MemorySink) -> None:
        with auditloop.bind(actor="alice"):
            t = threading.Thread(target=auditloop.emit, args=("bare",))
            t.start()
            t.join()

        assert memory.events[0].actor is None


class TestStructlogContextvars:
    def test_structlog_bound_values_are_merged(
        self, memory: sinks.MemorySink, structlog_vars: None
    ) -> None:
        structlog.contextvars.bind_contextvars(
            request_id="from-structlog", trace_id="t"
        )
        auditloop.emit("a")
        with auditloop.bind(request_id="from-auditloop"):
            auditloop.emit("b")

        first, second = memory.events
        assert {"request_id": "from-structlog", "trace_id": "t"} == first.context
        assert {"request_id": "from-auditloop", "trace_id": "t"} == second.context

    def test_structlog_actor_becomes_the_actor(
        self, memory: sinks.MemorySink, structlog_vars: None
    ) -> None:
        structlog.contextvars.bind_contextvars(actor="slog-user")
        auditloop.emit("a")

        assert "slog-user" == actor_id(memory.events[0])

    def test_cleared_structlog_context_stops_merging(
        self, memory: sinks.MemorySink, structlog_vars: None
    ) -> None:
        structlog.contextvars.bind_contextvars(x=1)
        structlog.contextvars.clear_contextvars()
        auditloop.emit("a")

        assert {} == memory.events[0].context


class TestBindExitRobustness:
    def test_unprintable_actor_never_raises(self, memory: sinks.MemorySink) -> None:
        class BadStr:
            def __str__(self) -> str:
                raise RuntimeError("broken __str__")

        with auditloop.bind(actor=BadStr()):
            auditloop.emit("x")

        assert ["<unprintable BadStr>"] == [actor_id(e) for e in memory.events]

    def test_exit_in_another_copy_of_the_context_never_raises(self) -> None:
        # What anyio's run_sync does to a FastAPI sync ``yield`` dependency:
        # enter in one copy of the request's context, exit in another.
        scope = auditloop.bind(actor="alice")
        with auditloop.bind(request_id="r-1"):
            contextvars.copy_context().run(scope.__enter__)
            contextvars.copy_context().run(scope.__exit__, None, None, None)

            assert {"request_id": "r-1"} == dict(current_scope().fields)
        assert {} == dict(current_scope().fields)

    def test_out_of_order_exit_restores_the_scope_it_replaced(self) -> None:
        outer = auditloop.bind(actor="bob")
        inner = auditloop.bind(tenant="t1")
        outer.__enter__()
        inner.__enter__()

        outer.__exit__(None, None, None)
        assert {} == dict(current_scope().fields)

        inner.__exit__(None, None, None)  # already gone with its outer scope
        assert {} == dict(current_scope().fields)

    def test_a_generator_left_inside_its_bind_does_not_leak(
        self, memory: sinks.MemorySink
    ) -> None:
        def rows() -> Generator[int, None, None]:
            with auditloop.bind(tenant="t1"):
                yield 1
                yield 2

        with auditloop.bind(actor="bob"):
            gen = rows()
            for _row in gen:
                break  # the generator stays suspended inside its bind
        auditloop.emit("after.block")
        gen.close()
        auditloop.emit("after.close")

        assert [(None, {}), (None, {})] == [
            (actor_id(e), dict(e.context)) for e in memory.events
        ]

    def test_exiting_twice_changes_nothing(self) -> None:
        with auditloop.bind(request_id="r-1"):
            scope = auditloop.bind(actor="alice")
            scope.__enter__()
            scope.__exit__(None, None, None)
            scope.__exit__(None, None, None)

            assert {"request_id": "r-1"} == dict(current_scope().fields)
