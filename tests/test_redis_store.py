"""RedisStore against a real redis-server: same alerts as memory, one call per event.

The multi-process, outage and expiry tests are in test_redis_store_fleet.py.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import auditloop
from auditloop import rules
from auditloop.exceptions import ConfigurationError
from auditloop.rules import match
from auditloop.sinks import MemorySink
from auditloop.testing import FakeClock
from redis_helpers import RedisServer, running, server_fixture
from rules_helpers import STEPS, T0, Feed, Step, play

_prefixes = itertools.count()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from server_fixture(tmp_path_factory)


def fresh_prefix() -> str:
    return f"t{next(_prefixes)}:"


def store(server: RedisServer, **options: Any) -> rules.RedisStore:
    options.setdefault("prefix", fresh_prefix())
    options.setdefault("time", "event")
    return rules.RedisStore(server.url, **options)


def storm(**options: Any) -> rules.Threshold:
    params: dict[str, Any] = {
        "match": match(action="permission.*"),
        "group_by": ["actor.id"],
        "at_least": 3,
        "within": 60,
    }
    params.update(options)
    return rules.Threshold("storm", **params)


def alerts_of(feed: Feed) -> list[tuple[Any, ...]]:
    """Everything an alert says, with times relative to T0."""
    return [
        (
            a.rule,
            a.status,
            tuple(a.group.values()),
            round(a.time.timestamp() - T0, 6),
            round(a.value, 9),
            round(a.started_at.timestamp() - T0, 6),
            round(a.fired_at.timestamp() - T0, 6),
            tuple(e["id"] for e in a.evidence),
        )
        for a in feed.alerts
    ]


def ordered(alerts: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    # Groups due at the same instant are re-checked in no defined order;
    # each (rule, group)'s own order is kept by the stable sort.
    return sorted(alerts, key=lambda a: (a[3], a[0], repr(a[2])))


# -- the same alerts as MemoryStore ------------------------------------------------


def rule_set(for_: float, cooldown: float, evidence: int) -> list[rules.Rule]:
    common: dict[str, Any] = {
        "group_by": ["actor.id"],
        "for_": for_,
        "cooldown": cooldown,
        "evidence": evidence,
    }
    doc = match(action="doc.*")
    return [
        rules.Threshold("th", match=doc, at_least=3, within=6, **common),
        rules.Ratio(
            "ra",
            match=match(action="doc.*", outcome="failure"),
            of=doc,
            above=0.5,
            min_count=2,
            within=5,
            max_events=4,
            **common,
        ),
        rules.Distinct(
            "di", match=doc, field="target.id", at_least=2, within=4, **common
        ),
        rules.Absence(
            "ab",
            match=match(action="doc.write"),
            within=5,
            expected=["carol"],
            **common,
        ),
        rules.Sequence(
            "se",
            steps=[
                match(action="doc.read"),
                match(action="doc.write"),
                match(action="doc.share"),
            ],
            within=8,
            **common,
        ),
        rules.Threshold("all", match=match(), at_least=4, within=3, evidence=evidence),
    ]


class TestSameAlertsAsMemory:
    @settings(
        max_examples=120,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        steps=STEPS,
        for_=st.sampled_from([0.0, 0.0, 1.0, 3.0]),
        cooldown=st.sampled_from([0.0, 0.0, 2.0, 10.0]),
        evidence=st.sampled_from([0, 2, 5]),
    )
    def test_random_streams_give_the_same_transitions(
        self,
        redis_server: RedisServer,
        steps: list[Step],
        for_: float,
        cooldown: float,
        evidence: int,
    ) -> None:
        rule_list = rule_set(for_, cooldown, evidence)
        memory = Feed(*rule_list)
        shared = Feed(*rule_list, store=store(redis_server))
        now = play(steps, memory, shared)
        for feed in (memory, shared):
            feed.tick(now + 30)
        assert ordered(alerts_of(memory)) == ordered(alerts_of(shared))
        # Not `overflow`: memory also counts dropping events that already
        # left the window (unless it forgot the idle group first).
        counters = ("fired", "resolved", "suppressed", "late_events")
        mine = shared.engine.stats()["rules"]
        theirs = memory.engine.stats()["rules"]
        for name in mine:
            assert {c: theirs[name][c] for c in counters} == {
                c: mine[name][c] for c in counters
            }


# -- one round trip per event -------------------------------------------------------


def replica_of(server: RedisServer) -> tuple[str, ...]:
    """redis-server options for a read-only replica of *server*."""
    return ("--replicaof", "127.0.0.1", str(server.port))


def script_calls(server: RedisServer, *commands: str) -> int:
    """Calls of *commands* (default: every way of running the script)."""
    stats = server.client().info("commandstats")
    return sum(
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))
        for name in commands or ("fcall", "evalsha", "eval")
    )


class TestRoundTrips:
    def test_one_call_per_event_however_many_rules_match(
        self, redis_server: RedisServer
    ) -> None:
        doc = match(action="doc.*")
        rule_list = [
            rules.Threshold(
                "a", match=doc, group_by=["actor.id"], at_least=50, within=60
            ),
            rules.Ratio(
                "b",
                match=match(action="doc.*", outcome="failure"),
                of=doc,
                group_by=["actor.id"],
                above=0.9,
                within=60,
            ),
            rules.Distinct(
                "c",
                match=doc,
                field="target.id",
                group_by=["actor.id"],
                at_least=50,
                within=60,
            ),
        ]
        shared = store(redis_server)
        feed = Feed(*rule_list, store=shared)
        feed.event(0, "doc.read")  # loads the function library
        before_calls, before_trips = (
            script_calls(redis_server),
            shared.info()["round_trips"],
        )
        for i in range(100):
            feed.event(i * 0.001, "doc.read", target={"id": f"d{i % 7}"})
        for _ in range(20):
            feed.event(0.1, "unrelated.action")  # matches no rule: no call
        assert 100 == script_calls(redis_server) - before_calls
        assert 100 == shared.info()["round_trips"] - before_trips

    def test_redis_7_runs_a_function_library_loaded_once(
        self, redis_server: RedisServer
    ) -> None:
        feed = Feed(storm(), store=store(redis_server))
        before = script_calls(redis_server, "fcall", "evalsha", "eval")
        for i in range(3):
            feed.event(i, "permission.grant")
        assert ["firing"] == [a.status for a in feed.alerts]
        client = redis_server.client()
        # RESP2 entries: [b"library_name", name, b"engine", b"LUA", ...]
        entries = [
            dict(zip(e[::2], e[1::2], strict=True)) for e in client.function_list()
        ]
        assert any(e[b"library_name"].startswith(b"auditloop_") for e in entries)
        assert 3 == script_calls(redis_server, "fcall") - before

    def test_a_flushed_library_is_loaded_again(self, redis_server: RedisServer) -> None:
        shared = store(redis_server)
        feed = Feed(storm(), store=shared)
        feed.event(0, "permission.grant")
        redis_server.client().execute_command("FUNCTION", "FLUSH")
        trips = shared.info()["round_trips"]
        feed.event(1, "permission.grant")
        feed.event(2, "permission.grant")
        # Not found, FUNCTION LOAD, the call again; then one call.
        assert 4 == shared.info()["round_trips"] - trips
        assert ["firing"] == [a.status for a in feed.alerts]
        assert shared.info()["available"]

    def test_the_connection_is_reused(self, redis_server: RedisServer) -> None:
        before = int(redis_server.client().info("stats")["total_connections_received"])
        feed = Feed(storm(), store=store(redis_server))
        for i in range(50):
            feed.event(i, "permission.grant")
        after = int(redis_server.client().info("stats")["total_connections_received"])
        # One connection for the store (plus the one this test used to ask).
        assert 2 == after - before


@pytest.fixture(scope="module")
def old_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A server without FUNCTION (renamed away), like Redis < 7."""
    yield from server_fixture(tmp_path_factory, "--rename-command", "FUNCTION", "")


class TestWithoutFunctions:
    """A server that will not run function libraries (Redis < 7, a proxy, or
    FUNCTION renamed away as here) gets the same code as an EVAL script."""

    def test_the_script_runs_with_evalsha(self, old_server: RedisServer) -> None:
        shared = store(old_server)
        feed = Feed(storm(), store=shared)
        for i in range(3):
            feed.event(i, "permission.grant")
        assert ["firing"] == [a.status for a in feed.alerts]
        assert 0 == script_calls(old_server, "fcall")
        # The first call finds no script (EVALSHA) and sends it (EVAL).
        assert 3 == script_calls(old_server, "evalsha")
        assert 1 == script_calls(old_server, "eval")
        old_server.client().script_flush()
        feed.event(10, "permission.grant")
        assert 2 == script_calls(old_server, "eval")
        assert shared.info()["available"]


# -- fleet semantics inside one process (two engines share Redis) -----------------


class TestSharedState:
    def test_two_engines_count_together_and_fire_once(
        self, redis_server: RedisServer
    ) -> None:
        prefix = fresh_prefix()
        one = Feed(storm(), store=store(redis_server, prefix=prefix))
        two = Feed(storm(), store=store(redis_server, prefix=prefix))
        one.event(0, "permission.grant")
        two.event(1, "permission.grant")
        one.event(2, "permission.grant")
        two.event(3, "permission.grant")
        assert [("storm", "firing", ("alice",), 2.0)] == one.transitions()
        assert [] == two.transitions()

    def test_a_resolution_is_reported_once_by_whoever_rechecks_first(
        self, redis_server: RedisServer
    ) -> None:
        prefix = fresh_prefix()
        one = Feed(storm(), store=store(redis_server, prefix=prefix))
        two = Feed(storm(), store=store(redis_server, prefix=prefix))
        for t in (0, 1, 2):
            one.event(t, "permission.grant")
        two.tick(100)
        one.tick(100)
        assert [("storm", "resolved", ("alice",), 60.0)] == two.transitions()
        assert [("storm", "firing", ("alice",), 2.0)] == one.transitions()
        # The other process had never seen alice: the group comes from Redis.
        assert {"actor.id": "alice"} == dict(two.alerts[0].group)

    def test_compound_and_null_group_keys_round_trip(
        self, redis_server: RedisServer
    ) -> None:
        prefix = fresh_prefix()
        rule = storm(group_by=["actor.id", "target.id"], at_least=2)
        one = Feed(rule, store=store(redis_server, prefix=prefix))
        two = Feed(rule, store=store(redis_server, prefix=prefix))
        one.event(0, "permission.grant", actor=None, target={"id": 7})
        one.event(1, "permission.grant", actor=None, target={"id": 7})
        two.tick(100)
        assert [("storm", "resolved", (None, 7), 60.0)] == two.transitions()

    def test_a_changed_rule_starts_fresh_state(self, redis_server: RedisServer) -> None:
        prefix = fresh_prefix()
        old = Feed(storm(at_least=3), store=store(redis_server, prefix=prefix))
        new = Feed(storm(at_least=4), store=store(redis_server, prefix=prefix))
        old.event(0, "permission.grant")
        old.event(1, "permission.grant")
        for t in (2, 3, 4):
            new.event(t, "permission.grant")
        assert [] == new.transitions()
        new.event(5, "permission.grant")
        assert [("storm", "firing", ("alice",), 5.0)] == new.transitions()

    def test_transitions_of_rules_this_process_lacks_are_dropped_and_counted(
        self, redis_server: RedisServer
    ) -> None:
        prefix = fresh_prefix()
        other = rules.Threshold("other", match=match(), at_least=1, within=10)
        theirs = Feed(other, store=store(redis_server, prefix=prefix))
        mine_store = store(redis_server, prefix=prefix)
        mine = Feed(storm(), store=mine_store)
        theirs.event(0, "x")
        mine.tick(50)
        assert [] == mine.transitions()
        assert 1 == mine_store.info()["foreign_changes"]

    def test_absence_expected_groups_are_watched_once_for_the_fleet(
        self, redis_server: RedisServer
    ) -> None:
        prefix = fresh_prefix()
        rule = rules.Absence(
            "quiet",
            match=match(action="deploy"),
            group_by=["actor.id"],
            within=10,
            expected=["ci"],
        )
        one = Feed(rule, store=store(redis_server, prefix=prefix))
        two = Feed(rule, store=store(redis_server, prefix=prefix))
        one.tick(0)
        two.tick(5)  # started later: the watch from 0 stands
        two.tick(11)
        one.tick(11)
        assert [("quiet", "firing", ("ci",), 10.0)] == two.transitions()
        assert [] == one.transitions()
        one.event(12, "deploy", actor="ci")
        assert [("quiet", "resolved", ("ci",), 12.0)] == one.transitions()


class TestServerTime:
    def test_window_time_is_the_servers_whatever_the_event_times(
        self, redis_server: RedisServer
    ) -> None:
        prefix = fresh_prefix()
        early = Feed(storm(), store=store(redis_server, prefix=prefix, time="server"))
        late = Feed(storm(), store=store(redis_server, prefix=prefix, time="server"))
        early.event(-10_000, "permission.grant")  # far outside any window
        late.event(10_000, "permission.grant")
        early.event(-10_000, "permission.grant")
        assert 1 == len(early.alerts)
        server_now = time.time()
        assert abs(early.alerts[0].fired_at.timestamp() - server_now) < 5


# -- keys ---------------------------------------------------------------------------


class TestKeys:
    def test_every_key_has_a_ttl_of_window_plus_cooldown_plus_ttl(
        self, redis_server: RedisServer
    ) -> None:
        prefix = fresh_prefix()
        feed = Feed(
            storm(within=20, cooldown=5),
            store=store(redis_server, prefix=prefix, ttl=30, time="server"),
        )
        for t in (0, 1, 2):
            feed.event(t, "permission.grant")
        client = redis_server.client()
        keys = redis_server.keys(prefix)
        assert {"due", "h", "w"} == {k.rsplit(":", 1)[-1] for k in keys}
        for key in keys:
            # window + cooldown + ttl = 55 s, plus up to 10 s of slack (keys
            # are refreshed only once less than 55 s are left)
            assert 50_000 <= client.pttl(key) <= 65_000, key

    def test_key_names_carry_prefix_rule_and_a_digest(
        self, redis_server: RedisServer
    ) -> None:
        prefix = fresh_prefix()
        feed = Feed(storm(evidence=0), store=store(redis_server, prefix=prefix))
        feed.event(0, "permission.grant", actor="x" * 10_000)
        (h, w) = redis_server.keys(prefix)
        assert h.startswith(f"{prefix}storm:")
        assert h.endswith(":h")
        assert len(h) < 60
        assert w[:-1] == h[:-1]


# -- configuration -------------------------------------------------------------------


class TestConfiguration:
    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"prefix": ""}, "prefix must be a non-empty string"),
            ({"time": "local"}, "time must be 'server' or 'event'"),
            ({"timeout": 0}, "timeout must be a number of seconds > 0"),
            ({"timeout": "1"}, "timeout must be a number of seconds > 0"),
            ({"ttl": -1}, "ttl must be a number of seconds >= 0"),
            ({"retry_after": float("nan")}, "retry_after must be"),
            ({"report_interval": True}, "report_interval must be"),
            (
                {"on_unavailable": "raise"},
                "on_unavailable must be 'fallback' or 'skip'",
            ),
        ],
    )
    def test_bad_options_name_the_argument(
        self, options: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(ConfigurationError, match=message):
            rules.RedisStore("redis://127.0.0.1:1/0", **options)

    def test_bad_url_or_client(self) -> None:
        with pytest.raises(ConfigurationError, match="url_or_client"):
            rules.RedisStore("http://example/")
        with pytest.raises(ConfigurationError, match="url_or_client must be"):
            rules.RedisStore(42)

    def test_a_client_is_used_as_given(self, redis_server: RedisServer) -> None:
        shared = rules.RedisStore(
            redis_server.client(), prefix=fresh_prefix(), time="event"
        )
        feed = Feed(storm(at_least=1), store=shared)
        feed.event(0, "permission.grant")
        assert [("storm", "firing", ("alice",), 0.0)] == feed.transitions()

    def test_it_is_a_store_and_exported(self) -> None:
        assert "RedisStore" in rules.__all__
        assert isinstance(rules.RedisStore("redis://127.0.0.1:1/0"), rules.Store)

    def test_configure_takes_it_as_rule_store(self, redis_server: RedisServer) -> None:
        sink = MemorySink()
        clock = FakeClock(T0)
        auditloop.configure(
            sinks=[sink],
            rules=[storm(at_least=2)],
            rule_store=store(redis_server),
            clock=clock,
        )
        auditloop.emit("permission.grant", actor="alice")
        auditloop.emit("permission.grant", actor="alice")
        auditloop.flush()
        alerts = [e for e in sink.events if e.action == "auditloop.alert"]
        assert ["firing"] == [e.attributes["status"] for e in alerts]


# -- Redis unreachable (nothing listening, or a server that never answers) ----------


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"  # nothing listens there any more


class TestUnavailable:
    def test_fallback_counts_locally_and_reports_once(self) -> None:
        sink = MemorySink()
        clock = FakeClock(T0)
        shared = rules.RedisStore(dead_url(), time="event", retry_after=0)
        auditor = auditloop.Auditor(
            sinks=[sink], rules=[storm()], rule_store=shared, clock=clock
        )
        for _ in range(3):
            auditor.emit("permission.grant", actor="alice")
            clock.advance(1)
        reports = wait_for(sink, "auditloop.rule.store_unavailable")
        assert 1 == len(reports)
        assert "failure" == reports[0].outcome
        assert "ConnectionError" == reports[0].error["type"]
        assert {"store": "redis", "on_unavailable": "fallback"}.items() <= (
            reports[0].attributes.items()
        )
        stats = auditor.stats()["rules"]["rules"]["storm"]
        assert (1, 3) == (stats["fired"], stats["fallback_events"])
        assert 1 == len([e for e in sink.events if e.action == "auditloop.alert"])
        info = shared.info()
        assert (False, 1) == (info["available"], info["reports"])
        assert info["failures"] >= 3
        clock.advance(60)
        assert auditor.rules is not None
        auditor.rules.tick()  # the local window empties: resolved locally
        assert 1 == auditor.stats()["rules"]["rules"]["storm"]["resolved"]
        auditor.shutdown(timeout=5)

    def test_skip_counts_and_never_fires(self) -> None:
        shared = rules.RedisStore(dead_url(), time="event", on_unavailable="skip")
        feed = Feed(storm(), store=shared)
        for t in (0, 1, 2):
            feed.event(t, "permission.grant")
        assert [] == feed.transitions()
        assert 3 == feed.engine.stats()["rules"]["storm"]["skipped_events"]
        # retry_after (1 s) not over: only the first event tried Redis
        assert 1 == shared.info()["failures"]

    def test_a_server_that_never_answers_blocks_at_most_the_timeout(self) -> None:
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(16)  # accepts connections, never replies
            port = silent.getsockname()[1]
            shared = rules.RedisStore(
                f"redis://127.0.0.1:{port}/0", time="event", timeout=0.2
            )
            feed = Feed(storm(), store=shared)
            took = []
            for t in (0, 1, 2, 3):
                start = time.monotonic()
                feed.event(t, "permission.grant")
                took.append(time.monotonic() - start)
        assert max(took) < 1.0
        assert 1 == shared.info()["failures"]  # the others did not even try
        assert [("storm", "firing", ("alice",), 2.0)] == feed.transitions()

    def test_recovery_resolves_what_fired_locally_and_counts_in_redis_again(
        self, redis_server: RedisServer
    ) -> None:
        prefix = fresh_prefix()
        shared = rules.RedisStore(
            dead_url(), prefix=prefix, time="event", retry_after=0
        )
        feed = Feed(storm(), store=shared)
        for t in (0, 1, 2):
            feed.event(t, "permission.grant")
        assert [("storm", "firing", ("alice",), 2.0)] == feed.transitions()
        # Redis "comes back" (the same store now reaches a live server).
        shared._client = redis_server.client()
        feed.event(3, "permission.grant", actor="bob")
        assert [
            ("storm", "firing", ("alice",), 2.0),
            ("storm", "resolved", ("alice",), 3.0),
        ] == feed.transitions()
        assert 1 == shared.info()["recoveries"]
        assert shared.info()["available"]
        for t in (4, 5):
            feed.event(t, "permission.grant", actor="bob")
        assert ("storm", "firing", ("bob",), 5.0) == feed.transitions()[-1]
        assert redis_server.keys(prefix)


def wait_for(sink: MemorySink, action: str, timeout: float = 10) -> list[Any]:
    """Poll *sink* until an event with *action* arrived (it is emitted off-thread)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in sink.events if e.action == action]
        if found:
            return found
        threading.Event().wait(0.01)
    raise AssertionError(f"no {action} event within {timeout} s")


class TestMore:
    def test_late_events_are_counted_not_stored(
        self, redis_server: RedisServer
    ) -> None:
        feed = Feed(storm(within=10), store=store(redis_server))
        feed.event(20, "permission.grant")
        feed.event(5, "permission.grant")  # older than the window at 20
        feed.event(15, "permission.grant")  # late but inside: counted
        feed.event(16, "permission.grant")
        assert [("storm", "firing", ("alice",), 20.0)] == feed.transitions()
        assert 1 == feed.engine.stats()["rules"]["storm"]["late_events"]

    def test_a_tick_catches_up_on_more_due_groups_than_one_call_takes(
        self, redis_server: RedisServer
    ) -> None:
        feed = Feed(storm(at_least=1, within=10), store=store(redis_server))
        for i in range(300):
            feed.event(0, "permission.grant", actor=f"user-{i}")
        assert 300 == len(feed.transitions())
        feed.tick(20)
        resolved = [t for t in feed.transitions() if t[1] == "resolved"]
        assert 300 == len(resolved)
        assert {10.0} == {t[3] for t in resolved}

    def test_a_rule_of_an_unknown_kind_is_a_configuration_error(self) -> None:
        class Odd(rules.Rule):
            kind = "odd"

            def __init__(self) -> None:
                self._init_common(
                    "odd",
                    group_by=(),
                    within=1,
                    then=(),
                    on_resolve=None,
                    for_=0,
                    cooldown=0,
                    severity="low",
                    labels=None,
                    max_groups=1,
                    evidence=0,
                )
                self.matchers = (match(),)
                self.threshold = 1.0

        with pytest.raises(ConfigurationError, match="does not support rule 'odd'"):
            Feed(Odd(), store=rules.RedisStore("redis://127.0.0.1:1/0"))

    def test_a_forked_child_opens_its_own_connection(
        self, redis_server: RedisServer
    ) -> None:
        prefix = fresh_prefix()
        shared = store(redis_server, prefix=prefix)
        feed = Feed(storm(at_least=2), store=shared)
        feed.event(0, "permission.grant")  # the parent is connected now
        stats = redis_server.client().info("stats")
        before = int(stats["total_connections_received"])
        pid = os.fork()
        if pid == 0:  # the child: count one more grant, then report by exit code
            try:
                feed.event(1, "permission.grant")
                code = 0 if feed.transitions() else 1
            except BaseException:
                code = 2
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert 0 == os.waitstatus_to_exitcode(status)
        stats = redis_server.client().info("stats")
        # The child's own connection, and the one this test used to ask.
        assert 2 == int(stats["total_connections_received"]) - before
        feed.event(2, "permission.grant")  # the parent's connection still works
        assert [] == feed.transitions()  # (the child reported the firing)
        assert shared.info()["available"]


class TestReplyReader:
    """The store reads replies off the socket itself (see RedisStore._send)."""

    @staticmethod
    def read(*chunks: bytes) -> Any:
        from auditloop.rules._redis import _read_reply

        ours, theirs = socket.socketpair()
        with ours, theirs:
            ours.settimeout(2)

            def send() -> None:  # in pieces, as TCP may deliver them
                for chunk in chunks:
                    theirs.sendall(chunk)
                    time.sleep(0.005)

            sender = threading.Thread(target=send)
            sender.start()
            try:
                return _read_reply(ours)
            finally:
                sender.join()

    def test_every_reply_type_the_script_can_send(self) -> None:
        reply = b"*5\r\n$3\r\nabc\r\n:42\r\n$-1\r\n+OK\r\n*2\r\n$0\r\n\r\n_\r\n"
        assert [b"abc", 42, None, b"OK", [b"", None]] == self.read(reply)

    def test_a_reply_split_anywhere_is_read_whole(self) -> None:
        reply = b"*2\r\n$11\r\nhello world\r\n$2\r\nhi\r\n"
        for cut in range(1, len(reply)):
            assert [b"hello world", b"hi"] == self.read(reply[:cut], reply[cut:])

    def test_resp3_push_messages_before_the_reply_are_skipped(self) -> None:
        push = b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n"
        assert b"done" == self.read(push, b"$4\r\ndone\r\n")
        assert b"done" == self.read(push + b"$4\r\ndone\r\n")

    def test_an_error_reply_is_raised_with_its_code(self) -> None:
        from auditloop.rules._redis import _ReplyError

        with pytest.raises(_ReplyError, match="No matching script") as caught:
            self.read(b"-NOSCRIPT No matching script.\r\n")
        assert "NOSCRIPT" == caught.value.code

    @pytest.mark.parametrize(
        ("chunks", "message"),
        [
            ((b"$5\r\nab",), "closed"),  # the server went away mid-reply
            ((b"+OK\r\n+OK\r\n",), "after the reply"),  # a late reply
            ((b"%1\r\n",), "unexpected reply type"),  # RESP3 map: not ours
        ],
    )
    def test_anything_else_is_a_connection_error(
        self, chunks: tuple[bytes, ...], message: str
    ) -> None:
        from auditloop.rules._redis import _read_reply

        ours, theirs = socket.socketpair()
        with ours, theirs:
            for chunk in chunks:
                theirs.sendall(chunk)
            theirs.shutdown(socket.SHUT_WR)
            ours.settimeout(2)
            with pytest.raises(ConnectionError, match=message):
                _read_reply(ours)


class TestRebinding:
    """configure() again with the same store binds it anew while the old
    engine may still observe: nothing either sees is lost or misrouted."""

    def test_the_old_engine_keeps_counting_its_own_rules(
        self, redis_server: RedisServer
    ) -> None:
        shared = store(redis_server)
        old = Feed(storm(), store=shared)  # at least 3 within 60 s
        old.event(0, "permission.grant")
        new = Feed(storm(at_least=5), store=shared)  # binds the store again
        old.event(1, "permission.grant")
        old.event(2, "permission.grant")
        assert ["firing"] == [a.status for a in old.alerts]
        assert [] == new.alerts

    def test_engines_observing_at_once_each_get_their_own_updates(
        self, redis_server: RedisServer
    ) -> None:
        shared = store(redis_server)
        old = Feed(storm(at_least=20), store=shared)
        new = Feed(storm(at_least=20), store=shared)
        start = threading.Barrier(2)

        def grants(feed: Feed, actor: str) -> None:
            start.wait()
            for i in range(20):
                feed.event(i * 0.01, "permission.grant", actor=actor)

        threads = [
            threading.Thread(target=grants, args=(old, "a")),
            threading.Thread(target=grants, args=(new, "b")),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert [("firing", {"actor.id": "a"})] == [
            (a.status, a.group) for a in old.alerts
        ]
        assert [("firing", {"actor.id": "b"})] == [
            (a.status, a.group) for a in new.alerts
        ]

    def test_the_old_engines_updates_in_an_outage_are_counted_as_dropped(
        self,
    ) -> None:
        shared = rules.RedisStore("redis://127.0.0.1:1/0", retry_after=60)
        old = Feed(storm(), store=shared)
        new = Feed(storm(), store=shared)  # its rules own the local state now
        new.event(0, "permission.grant")
        old.event(1, "permission.grant")
        assert 1 == shared.info()["dropped_updates"]
        assert 1 == shared.stats()["storm"]["fallback_events"]


class TestErrorReplies:
    def test_a_transient_error_at_load_time_does_not_pin_evalsha(
        self, redis_server: RedisServer
    ) -> None:
        shared = store(redis_server, retry_after=0)
        feed = Feed(storm(), store=shared)
        client = redis_server.client()
        client.config_set("maxmemory", "1")  # FUNCTION LOAD: OOM
        try:
            feed.event(0, "permission.grant")
            assert not shared.info()["available"]
        finally:
            client.config_set("maxmemory", "0")
        before = script_calls(redis_server, "fcall", "evalsha", "eval")
        feed.event(1, "permission.grant")
        assert shared.info()["available"]
        assert 1 == script_calls(redis_server, "fcall") - before
        assert 1 == script_calls(redis_server, "fcall", "evalsha", "eval") - before

    def test_a_replica_s_readonly_reply_closes_the_connection(
        self, redis_server: RedisServer, tmp_path: Any
    ) -> None:
        # After a Sentinel failover the old master answers READONLY; a new
        # connection is what lets redis-py's Sentinel pool find the master.
        with running(tmp_path, *replica_of(redis_server)) as replica:
            shared = store(replica)
            feed = Feed(storm(), store=shared)
            feed.event(0, "permission.grant")
            assert not shared.info()["available"]
            assert "READONLY" in repr(shared._last_error)
            assert shared._connection._sock is None


class TestClientTimeout:
    def test_a_client_without_socket_timeout_still_times_out(
        self, redis_server: RedisServer
    ) -> None:
        import redis

        client = redis.Redis.from_url(redis_server.url, socket_timeout=None)
        shared = rules.RedisStore(client, prefix=fresh_prefix(), timeout=0.2)
        feed = Feed(storm(), store=shared)
        feed.event(0, "permission.grant")
        assert 0.2 == shared._connection._sock.gettimeout()


class TestForkWhileLocked:
    def test_a_child_forked_during_a_commit_does_not_block(
        self, redis_server: RedisServer
    ) -> None:
        shared = store(redis_server)
        feed = Feed(storm(at_least=1), store=shared)
        shared._lock.acquire()  # as if another thread were mid-commit
        try:
            pid = os.fork()
            if pid == 0:
                signal.alarm(20)  # a blocked child fails the test, not hangs it
                try:
                    feed.event(0, "permission.grant")
                    code = 0 if feed.transitions() else 1
                except BaseException:
                    code = 2
                os._exit(code)
        finally:
            shared._lock.release()
        _, status = os.waitpid(pid, 0)
        assert 0 == os.waitstatus_to_exitcode(status)


class _Proxy:
    """Like redis-py's CacheProxyConnection (client-side caching, Redis
    7.4+): a connection that wraps another and has no ``_sock``."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name == "_sock":
            raise AttributeError(name)
        return getattr(self._inner, name)


class TestConnectionWithoutSocket:
    def test_redis_py_s_own_path_is_used(self, redis_server: RedisServer) -> None:
        shared = store(redis_server)
        pool = redis_server.client().connection_pool
        shared._connection = _Proxy(pool.get_connection())
        feed = Feed(storm(), store=shared)
        for i in range(3):
            feed.event(i, "permission.grant")
        assert ["firing"] == [a.status for a in feed.alerts]
        assert shared.info()["available"]
        redis_server.client().execute_command("FUNCTION", "FLUSH")
        feed.event(4, "permission.grant")  # "Function not found": reloaded
        assert shared.info()["available"]

    def test_readonly_on_that_path_closes_the_connection_too(
        self, redis_server: RedisServer, tmp_path: Any
    ) -> None:
        with running(tmp_path, *replica_of(redis_server)) as replica:
            shared = store(replica)
            inner = replica.client().connection_pool.get_connection()
            shared._connection = _Proxy(inner)
            Feed(storm(), store=shared).event(0, "permission.grant")
            assert "READONLY" in str(shared._last_error)
            assert inner._sock is None  # closed: the next call connects anew


# -- regressions found in review ------------------------------------------------------


def per_group(feed: Feed) -> dict[Any, list[tuple[str, float]]]:
    found: dict[Any, list[tuple[str, float]]] = {}
    for a in feed.alerts:
        found.setdefault(tuple(a.group.values()), []).append(
            (a.status, round(a.time.timestamp() - T0, 6))
        )
    return found


class TestReviewRegressions:
    @pytest.mark.parametrize("kind", ["threshold", "absence"])
    def test_an_overdue_recheck_beyond_the_sweep_limit_comes_before_the_event(
        self, redis_server: RedisServer, kind: str
    ) -> None:
        # More groups are due than one call sweeps (32): a group the sweep
        # did not reach must still be re-checked before its new event counts.
        def make() -> rules.Rule:
            if kind == "absence":
                return rules.Absence(
                    "ab", match=match(action="a"), group_by=["actor.id"], within=10
                )
            return rules.Threshold(
                "th",
                match=match(action="a"),
                group_by=["actor.id"],
                at_least=2,
                within=10,
            )

        memory = Feed(make())
        redis = Feed(make(), store=store(redis_server))
        actors = [f"u{i}" for i in range(40)]
        for feed in (memory, redis):
            feed.tick(0)
            for actor in actors:  # 40 groups due at 10 (Threshold: fired at 4)
                feed.event(0, "a", actor=actor)
                if kind == "threshold":
                    feed.event(4, "a", actor=actor)
            feed.event(1, "a", actor="last")  # due at 11: after those 40
            if kind == "threshold":
                feed.event(5, "a", actor="last")
            # No tick in between: the call carrying last's event sweeps
            # only 32 of the groups due before it.
            for actor in ["last", *actors]:
                feed.event(12, "a", actor=actor)
        if kind == "threshold":
            expected = [("firing", 4.0), ("resolved", 10.0), ("firing", 12.0)]
            last = [("firing", 5.0), ("resolved", 11.0), ("firing", 12.0)]
        else:
            expected = [("firing", 10.0), ("resolved", 12.0)]
            last = [("firing", 11.0), ("resolved", 12.0)]
        want = {(actor,): expected for actor in actors}
        want["last",] = last
        assert want == per_group(memory)
        assert want == per_group(redis)

    def test_a_big_int_group_or_value_is_no_outage(
        self, redis_server: RedisServer
    ) -> None:
        prefix = fresh_prefix()
        big = 2**70

        def make() -> list[rules.Rule]:
            return [
                rules.Threshold(
                    "th",
                    match=match(action="a"),
                    group_by=["attributes.acct"],
                    at_least=2,
                    within=60,
                ),
                rules.Distinct(
                    "di",
                    match=match(action="a"),
                    field="attributes.n",
                    at_least=2,
                    within=60,
                ),
            ]

        one_store = store(redis_server, prefix=prefix)
        one = Feed(*make(), store=one_store)
        one.event(1, "a", attributes={"acct": big, "n": big})
        one.event(2, "a", attributes={"acct": big, "n": big + 1})
        assert {"available": True, "failures": 0} == {
            k: one_store.info()[k] for k in ("available", "failures")
        }
        stats = one.engine.stats()["rules"]["th"]
        assert (0, 0) == (stats["fallback_events"], stats["skipped_events"])
        assert [("th", "firing", (big,), 2.0), ("di", "firing", (), 2.0)] == (
            one.transitions()
        )
        # Another process reads the group back from Redis, exactly.
        two = Feed(*make(), store=store(redis_server, prefix=prefix))
        two.tick(100)
        resolved = [a for a in two.alerts if a.rule == "th"]
        assert [{"attributes.acct": big}] == [dict(a.group) for a in resolved]

    def test_true_one_and_one_point_zero_are_apart_as_in_memory(
        self, redis_server: RedisServer
    ) -> None:
        def distinct() -> rules.Rule:
            return rules.Distinct(
                "di",
                match=match(action="a"),
                field="attributes.v",
                at_least=3,
                within=60,
            )

        memory = Feed(distinct())
        redis = Feed(distinct(), store=store(redis_server))
        for feed in (memory, redis):
            for at, value in ((1, 1), (2, True), (3, 1.0)):
                feed.event(at, "a", attributes={"v": value})
        assert [("di", "firing", (), 3.0)] == memory.transitions()
        assert memory.transitions() == redis.transitions()

        def threshold() -> rules.Rule:
            return rules.Threshold(
                "th",
                match=match(action="a"),
                group_by=["attributes.code"],
                at_least=2,
                within=60,
            )

        prefix = fresh_prefix()
        one_store = store(redis_server, prefix=prefix)
        one = Feed(threshold(), store=one_store)
        two = Feed(threshold(), store=store(redis_server, prefix=prefix))
        # The process's key cache must not merge 1 and True either.
        one.event(1, "a", attributes={"code": 1})
        one.event(2, "a", attributes={"code": True})
        two.event(3, "a", attributes={"code": 1.0})
        assert [] == one.transitions() + two.transitions()
        two.event(4, "a", attributes={"code": True})
        assert [("th", "firing", (True,), 4.0)] == two.transitions()
        assert bool is type(two.alerts[0].group["attributes.code"])
