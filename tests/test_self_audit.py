"""Self-audit: suspending, reconfiguring and failing sinks leave their own events."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import auditloop
from auditloop import AuditEvent, Auditor, sinks
from auditloop._selfaudit import suspended
from auditloop.exceptions import AuditError
from auditloop.processors import Redactor
from auditloop.testing import capture


class Recording(sinks.MemorySink):
    """A MemorySink whose events can be waited for (they come from threads)."""

    def __init__(self) -> None:
        super().__init__()
        self._written = threading.Condition()

    def write(self, batch: Sequence[bytes]) -> None:
        super().write(batch)
        with self._written:
            self._written.notify_all()

    def wait_for(self, action: str, timeout: float = 10.0) -> AuditEvent:
        def find() -> AuditEvent | None:
            return next((e for e in self.events if e.action == action), None)

        with self._written:
            assert self._written.wait_for(lambda: find() is not None, timeout)
        event = find()
        assert event is not None
        return event


def actions(memory: sinks.MemorySink) -> list[str]:
    return [e.action for e in memory.events]


class TestSuspended:
    def test_leaves_suspended_and_resumed_events_with_the_actor(self) -> None:
        memory = sinks.MemorySink()
        auditloop.configure(sinks=[memory])

        with auditloop.bind(actor="alice"):
            auditloop.emit("before")
            with suspended(reason="bulk import"):
                auditloop.emit("hidden.1")
                auditloop.emit("hidden.2")
            auditloop.emit("after")
        events = memory.events

        assert ["before", "auditloop.suspended", "auditloop.resumed", "after"] == [
            e.action for e in events
        ]
        assert ["alice", "alice"] == [e.actor.id for e in events[1:3] if e.actor]
        assert ["bulk import", "bulk import"] == [e.reason for e in events[1:3]]
        assert 2 == events[2].attributes["skipped"]
        assert events[2].attributes["suspended_ms"] >= 0
        assert 2 == auditloop.get_auditor().counters.get("suspended")

    def test_other_threads_keep_auditing(self) -> None:
        memory = sinks.MemorySink()
        auditloop.configure(sinks=[memory])
        inside = threading.Event()
        release = threading.Event()

        def pause() -> None:
            with suspended():
                auditloop.emit("skipped")
                inside.set()
                release.wait(10)

        pauser = threading.Thread(target=pause)
        pauser.start()
        assert inside.wait(10)
        auditloop.emit("recorded.elsewhere")
        release.set()
        pauser.join(10)

        assert "recorded.elsewhere" in actions(memory)
        assert "skipped" not in actions(memory)

    def test_nested_suspensions_each_leave_a_trace(self) -> None:
        memory = sinks.MemorySink()
        auditloop.configure(sinks=[memory])

        with suspended("outer"):
            auditloop.emit("a")
            with suspended("inner"):
                auditloop.emit("b")
            auditloop.emit("c")
        auditloop.emit("d")

        assert [
            ("auditloop.suspended", "outer", None),
            ("auditloop.suspended", "inner", None),
            ("auditloop.resumed", "inner", 1),
            ("auditloop.resumed", "outer", 2),
            ("d", None, None),
        ] == [(e.action, e.reason, e.attributes.get("skipped")) for e in memory.events]

    def test_async_with_suspends_the_task(self) -> None:
        memory = sinks.MemorySink()
        auditloop.configure(sinks=[memory])

        async def main() -> None:
            async with suspended():
                auditloop.emit("hidden")
                await asyncio.sleep(0)
            auditloop.emit("shown")

        asyncio.run(main())

        assert ["auditloop.suspended", "auditloop.resumed", "shown"] == actions(memory)

    def test_a_failing_fail_closed_sink_refuses_the_suspension(self) -> None:
        auditloop.configure(
            sinks=[Failing(sinks.Delivery(mode="sync", on_error="raise"))]
        )

        with pytest.raises(AuditError), suspended():
            pytest.fail("the block must not run")  # pragma: no cover

        assert 0 == Auditor.suspended_scopes


class TestSharedAndInherited:
    def test_one_instance_shared_by_two_tasks(self) -> None:
        memory = sinks.MemorySink()
        auditloop.configure(sinks=[memory])
        maintenance = suspended(reason="bulk import")  # module-level style

        async def job(
            n: int, first_done: asyncio.Event, second_in: asyncio.Event
        ) -> None:
            async with maintenance:
                auditloop.emit("invoice.import", n=n)
                if n == 0:
                    await second_in.wait()  # task 1 enters while task 0 is inside
                else:
                    second_in.set()
                    await first_done.wait()

        async def main() -> list[object]:
            first_done, second_in = asyncio.Event(), asyncio.Event()
            t0 = asyncio.create_task(job(0, first_done, second_in))
            t1 = asyncio.create_task(job(1, first_done, second_in))
            r0 = await asyncio.gather(t0, return_exceptions=True)
            first_done.set()
            r1 = await asyncio.gather(t1, return_exceptions=True)
            return [*r0, *r1]

        results = asyncio.run(main())
        auditloop.emit("after")

        assert [None, None] == results
        assert [
            ("auditloop.suspended", None),
            ("auditloop.suspended", None),
            ("auditloop.resumed", 1),
            ("auditloop.resumed", 1),
            ("after", None),
        ] == [(e.action, e.attributes.get("skipped")) for e in memory.events]
        assert 0 == Auditor.suspended_scopes

    def test_one_instance_shared_by_two_threads(self) -> None:
        memory = sinks.MemorySink()
        auditloop.configure(sinks=[memory])
        maintenance = suspended(reason="shared")
        both_in = threading.Barrier(2, timeout=10)
        first_out = threading.Event()
        errors: list[BaseException] = []

        def worker(n: int) -> None:
            try:
                with maintenance:
                    auditloop.emit(f"hidden.{n}")
                    both_in.wait()
                    if n == 1:
                        assert first_out.wait(10)  # exit in the other order
                auditloop.emit(f"shown.{n}")
            except BaseException as exc:  # pragma: no cover - the failure shown
                errors.append(exc)
            finally:
                if n == 0:
                    first_out.set()

        threads = [threading.Thread(target=worker, args=(n,)) for n in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)

        assert [] == errors
        assert ["shown.0", "shown.1"] == sorted(
            a for a in actions(memory) if a.startswith(("shown", "hidden"))
        )
        assert [1, 1] == [
            e.attributes["skipped"]
            for e in memory.events
            if e.action == "auditloop.resumed"
        ]
        assert 0 == Auditor.suspended_scopes

    @pytest.mark.parametrize("with_policy", [False, True])
    def test_a_task_started_inside_is_suspended_only_while_the_block_lasts(
        self, with_policy: bool
    ) -> None:
        memory = sinks.MemorySink()
        policy = [{"level": "none", "action": "health.*"}] if with_policy else None
        auditloop.configure(sinks=[memory], policy=policy)

        async def worker(emitted: asyncio.Event, ended: asyncio.Event) -> None:
            auditloop.emit("during.block")
            emitted.set()
            await ended.wait()
            auditloop.emit("payment.refund", amount=30)

        async def main() -> None:
            emitted, ended = asyncio.Event(), asyncio.Event()
            with suspended(reason="bulk re-import"):
                task = asyncio.create_task(worker(emitted, ended))
                await emitted.wait()  # the task ran inside the block
            ended.set()
            await task

        asyncio.run(main())

        assert [
            ("auditloop.suspended", None),
            ("auditloop.resumed", 1),
            ("payment.refund", None),
        ] == [(e.action, e.attributes.get("skipped")) for e in memory.events]

    def test_a_task_from_an_ended_inner_block_falls_back_to_the_outer(self) -> None:
        memory = sinks.MemorySink()
        auditloop.configure(sinks=[memory])

        async def worker(go: asyncio.Event) -> None:
            await go.wait()
            auditloop.emit("hidden.by.outer")

        async def main() -> None:
            go = asyncio.Event()
            with suspended("outer"):
                with suspended("inner"):
                    task = asyncio.create_task(worker(go))
                go.set()
                await task
            auditloop.emit("shown")

        asyncio.run(main())

        assert [
            ("auditloop.suspended", "outer", None),
            ("auditloop.suspended", "inner", None),
            ("auditloop.resumed", "inner", 0),
            ("auditloop.resumed", "outer", 1),
            ("shown", None, None),
        ] == [(e.action, e.reason, e.attributes.get("skipped")) for e in memory.events]

    def test_an_exit_from_another_thread_ends_the_suspension(self) -> None:
        memory = sinks.MemorySink()
        auditloop.configure(sinks=[memory])
        maintenance = suspended("handed over")
        maintenance.__enter__()
        auditloop.emit("hidden")
        errors: list[BaseException] = []

        def finish() -> None:
            try:
                maintenance.__exit__(None, None, None)
            except BaseException as exc:  # pragma: no cover - the failure shown
                errors.append(exc)

        closer = threading.Thread(target=finish)
        closer.start()
        closer.join(10)
        auditloop.emit("shown")
        maintenance.__exit__(None, None, None)  # one exit too many: ignored

        assert [] == errors
        assert [
            ("auditloop.suspended", None),
            ("auditloop.resumed", 1),
            ("shown", None),
        ] == [(e.action, e.attributes.get("skipped")) for e in memory.events]
        assert 0 == Auditor.suspended_scopes


class TestConfigured:
    def test_reconfiguring_records_what_changed_with_the_actor(
        self, tmp_path: Path
    ) -> None:
        memory = sinks.MemorySink()
        auditloop.configure(service="billing", sinks=[memory])

        with auditloop.bind(actor="ops-bob"):
            auditloop.configure(
                service="billing",
                sinks=[memory, sinks.FileSink(tmp_path / "a.jsonl")],
                policy=[{"level": "none", "action": "health.*"}],
            )
        (event,) = [e for e in memory.events if e.action == "auditloop.configured"]

        assert "ops-bob" == event.actor.id  # type: ignore[union-attr]
        assert "configuration" == event.category
        changed = event.attributes["changed"]
        assert {"sinks", "policy"} == set(changed)
        assert ["MemorySink"] == changed["sinks"]["from"]
        assert [
            "MemorySink",
            f"FileSink({str(tmp_path / 'a.jsonl')!r})",
        ] == changed["sinks"]["to"]
        assert [{"level": "none", "action": "health.*"}] == changed["policy"]["to"][
            "rules"
        ]

    def test_switching_every_sink_off_is_recorded_in_the_old_trail(self) -> None:
        memory = sinks.MemorySink()
        auditloop.configure(sinks=[memory])

        auditloop.configure(sinks=[])

        assert ["auditloop.configured"] == actions(memory)
        assert [] == memory.events[0].attributes["changed"]["sinks"]["to"]

    def test_no_secret_is_recorded(self, tmp_path: Path) -> None:
        memory = sinks.MemorySink()
        auditloop.configure(sinks=[memory])

        auditloop.configure(
            sinks=[
                memory,
                sinks.FileSink(
                    tmp_path / "a.jsonl", chain=True, key=b"KEY-SECRET", key_id="k7"
                ),
                sinks.HTTPSink(
                    "https://user:PASS-SECRET@collector.example:8443/in?token=QUERY-SECRET"
                ),
            ],
            redact=Redactor(hash_key=b"HASH-SECRET"),
        )
        line = next(x for x in memory.lines if b"auditloop.configured" in x)

        for secret in (b"KEY-SECRET", b"PASS-SECRET", b"QUERY-SECRET", b"HASH-SECRET"):
            assert secret not in line
        assert b"key_id='k7'" in line
        assert b"https://collector.example:8443/in" in line

    def test_the_first_configuration_records_nothing(self) -> None:
        memory = sinks.MemorySink()
        auditloop.emit("before.configure")  # goes to the implicit stdout default

        with capture() as captured:
            auditloop.configure(sinks=[memory])

        assert [] == [e.action for e in captured]


class Failing:
    """A sink that fails while ``broken`` is set."""

    def __init__(self, delivery: sinks.Delivery | None = None) -> None:
        self.delivery = delivery
        self.broken = threading.Event()
        self.broken.set()
        self.lines: list[bytes] = []

    def write(self, batch: Sequence[bytes]) -> None:
        if self.broken.is_set():
            raise OSError("disk full")
        self.lines.extend(batch)

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass


class TestSinkHealth:
    def test_failure_and_recovery_are_recorded(self) -> None:
        flaky = Failing(sinks.Delivery(flush_interval=0.01))
        memory = Recording()
        auditor = Auditor(sinks=[flaky, memory])

        auditor.emit("doc.read")
        failed = memory.wait_for("auditloop.sink_failed")
        flaky.broken.clear()
        auditor.emit("doc.read")
        recovered = memory.wait_for("auditloop.sink_recovered")
        auditor.shutdown()

        assert {"sink": "Failing", "error": "OSError: disk full"} == dict(
            failed.attributes
        )
        assert ("failure", "high") == (failed.outcome, failed.severity)
        assert "Failing" == recovered.attributes["sink"]
        assert recovered.attributes["errors"] >= 1
        assert 1 == actions(memory).count("auditloop.sink_failed")


class Hooked:
    """A third-party sink using the sink hook."""

    def __init__(self, delivery: sinks.Delivery) -> None:
        self.delivery = delivery
        self.lines: list[bytes] = []
        self.notify: Any = None

    def attach_auditor(self, notify: Any) -> None:
        self.notify = notify

    def write(self, batch: Sequence[bytes]) -> None:
        self.lines.extend(batch)
        if self.notify is not None and not any(b"auditloop." in x for x in batch):
            self.notify("auditloop.custom_notice", {"lines": len(batch)})

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass


class TestSinkHook:
    @pytest.mark.parametrize("mode", ["async", "sync"])
    def test_a_sink_records_its_own_events_through_its_auditor(self, mode: str) -> None:
        hooked = Hooked(sinks.Delivery(mode=mode))  # type: ignore[arg-type]
        memory = Recording()
        auditor = Auditor(sinks=[hooked, memory])

        auditor.emit("doc.read")
        notice = memory.wait_for("auditloop.custom_notice")
        auditor.flush()
        auditor.shutdown()

        assert {"lines": 1} == dict(notice.attributes)
        assert "auditloop" == notice.actor.id  # type: ignore[union-attr]
        assert any(b"auditloop.custom_notice" in line for line in hooked.lines)

    def test_a_broken_hook_does_not_break_configuration(self) -> None:
        class Broken(Hooked):
            def attach_auditor(self, notify: Any) -> None:
                raise RuntimeError("nope")

        auditor = Auditor(sinks=[Broken(sinks.Delivery())])

        assert 1 == auditor.counters.get("internal_errors")
        auditor.shutdown()


class TestDescriptions:
    def test_urls_lose_credentials_query_and_fragment(self) -> None:
        from auditloop._selfaudit import _public_url

        assert "https://host.example/in" == _public_url(
            "https://u:p@host.example/in?token=t#frag"
        )
        assert "http://h:8080/" == _public_url("http://h:8080/?a=1")
        assert "<unparsable url>" == _public_url("http://[::1")

    def test_a_sink_with_a_url_attribute_is_described_by_it(self) -> None:
        from auditloop._selfaudit import _describe_sink

        class Pusher:
            url = "https://user:pw@push.example/hook?key=abc"

        assert "Pusher('https://push.example/hook')" == _describe_sink(Pusher())


class TestResumeFailure:
    def test_a_resume_that_cannot_be_recorded_raises_after_a_clean_block(
        self,
    ) -> None:
        failing = Failing(sinks.Delivery(mode="sync", on_error="raise"))
        failing.broken.clear()
        auditloop.configure(sinks=[failing])

        with pytest.raises(AuditError), suspended():
            failing.broken.set()

        assert 0 == Auditor.suspended_scopes

    def test_an_error_in_the_block_wins_over_a_failed_resume(self) -> None:
        failing = Failing(sinks.Delivery(mode="sync", on_error="raise"))
        failing.broken.clear()
        auditloop.configure(sinks=[failing])

        def block() -> None:
            with suspended():
                failing.broken.set()
                raise KeyError("app")

        with pytest.raises(KeyError):
            block()


def tag(auditor: object, method: str, event: dict[str, Any]) -> dict[str, Any]:
    return event


class TestNeverRaises:
    def test_a_fail_closed_old_sink_cannot_block_reconfiguration(self) -> None:
        old = auditloop.configure(
            sinks=[Failing(sinks.Delivery(mode="sync", on_error="raise"))]
        )
        memory = sinks.MemorySink()

        new = auditloop.configure(sinks=[memory])

        assert new is auditloop.get_auditor()
        assert 1 == old.counters.get("internal_errors")

    def test_system_events_never_raise(self) -> None:
        from auditloop._selfaudit import system_event

        auditor = Auditor(
            sinks=[Failing(sinks.Delivery(mode="sync", on_error="raise"))]
        )

        system_event(auditor, "auditloop.custom", {"n": 1})

        assert 1 == auditor.counters.get("internal_errors")

    def test_processors_are_described_by_their_qualified_names(self) -> None:
        memory = sinks.MemorySink()
        auditloop.configure(sinks=[memory], processors=[tag])

        auditloop.configure(sinks=[memory])
        (event,) = memory.events

        assert {"from": ["test_self_audit:tag"], "to": []} == event.attributes[
            "changed"
        ]["processors"]
