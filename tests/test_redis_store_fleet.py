"""RedisStore with real processes: a fleet counts together, and survives outages.

Every worker is a separate Python process (``redis_helpers.py`` run with
``sys.executable``) with its own Auditor, talking to a real redis-server on
127.0.0.1 that the fixtures start.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import auditloop
from auditloop import rules
from auditloop.rules import match
from auditloop.sinks import MemorySink
from redis_helpers import (
    NO_REDIS,
    REDIS_SERVER,
    RedisServer,
    Worker,
    run_fleet,
    server_fixture,
)

_prefixes = itertools.count()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from server_fixture(tmp_path_factory)


def fresh_prefix() -> str:
    return f"fleet{next(_prefixes)}:"


def storm(at_least: int, within: float = 60) -> dict[str, Any]:
    return {
        "name": "permission-storm",
        "kind": "threshold",
        "at_least": at_least,
        "within": within,
        "group_by": ["actor.id"],
        "match": {"action": "permission.*"},
    }


def grants(n: int, actor: str = "alice") -> list[dict[str, Any]]:
    return [{"action": "permission.grant", "actor": actor}] * n


def summary(workers: list[Worker]) -> list[tuple[str, str, dict[str, Any], float]]:
    return [
        (a["rule"], a["status"], a["group"], a["value"])
        for w in workers
        for a in w.alerts
    ]


def poll(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        threading.Event().wait(0.02)


class TestFleet:
    def test_four_processes_of_three_events_trip_ten_exactly_once(
        self, redis_server: RedisServer
    ) -> None:
        config = {
            "store": "redis",
            "url": redis_server.url,
            "prefix": fresh_prefix(),
            "rules": [storm(at_least=10)],
            "events": grants(3),
        }
        workers = run_fleet([config] * 4)
        stats = [w.finish() for w in workers]
        assert [("permission-storm", "firing", {"actor.id": "alice"}, 10.0)] == summary(
            workers
        )
        assert 1 == sum(s["fired"] for s in stats)

    def test_the_same_fleet_with_in_memory_state_never_fires(self) -> None:
        # Why the store matters: each process sees only its own 3 events.
        config = {
            "store": "memory",
            "rules": [storm(at_least=10)],
            "events": grants(3),
        }
        workers = run_fleet([config] * 4)
        stats = [w.finish() for w in workers]
        assert [] == summary(workers)
        assert [0, 0, 0, 0] == [s["fired"] for s in stats]

    def test_eight_processes_hammering_one_group_fire_once_resolve_once(
        self, redis_server: RedisServer
    ) -> None:
        per_worker, workers_n = 40, 8
        total = per_worker * workers_n
        prefix = fresh_prefix()
        every = {"action": "permission.*"}
        rule_dicts = [
            storm(at_least=total, within=4),  # fires only if no update is lost
            {
                "name": "failing",
                "kind": "ratio",
                "match": {"action": "permission.*", "outcome": "failure"},
                "of": every,
                "above": 0.5,
                "min_count": 1000,  # never fires: only its counts are checked
                "within": 60,
                "group_by": ["actor.id"],
            },
            {
                "name": "targets",
                "kind": "distinct",
                "match": every,
                "field": "target.id",
                "at_least": 1000,
                "within": 60,
                "group_by": ["actor.id"],
            },
        ]
        configs = []
        for i in range(workers_n):
            events = []
            for j in range(per_worker):
                k = i * per_worker + j
                events.append(
                    {
                        "action": "permission.grant",
                        "actor": "alice",
                        "target": f"doc:{k % 37}",
                        "outcome": "failure" if k % 5 == 0 else "success",
                    }
                )
            configs.append(
                {
                    "store": "redis",
                    "url": redis_server.url,
                    "prefix": prefix,
                    "rules": rule_dicts,
                    "events": events,
                }
            )
        workers = run_fleet(configs)
        try:
            poll(
                lambda: any(
                    a["status"] == "resolved" for w in workers for a in w.alerts
                ),
                timeout=30,
                what="the resolution",
            )
            client = redis_server.client()
            (ratio,) = [
                k for k in redis_server.keys(prefix + "failing:") if k.endswith(":h")
            ]
            num, den = client.hmget(ratio, "x2", "x3")
            (distinct,) = [
                k for k in redis_server.keys(prefix + "targets:") if k.endswith(":w")
            ]
            # The reference: what the events were.
            assert (total // 5, total) == (int(float(num)), int(float(den)))
            assert 37 == client.zcard(distinct)
        finally:
            stats = [w.finish() for w in workers]
        alerts = sorted(summary(workers), key=lambda a: a[1])
        assert [
            ("permission-storm", "firing", {"actor.id": "alice"}),
            ("permission-storm", "resolved", {"actor.id": "alice"}),
        ] == [a[:3] for a in alerts]
        assert float(total) == alerts[0][3]  # fired at the very last event
        assert (1, 1) == (
            sum(s["fired"] for s in stats),
            sum(s["resolved"] for s in stats),
        )
        assert 0 == sum(s["fallback_events"] + s["internal_errors"] for s in stats)

    def test_skewed_clocks_agree_on_server_time(
        self, redis_server: RedisServer
    ) -> None:
        config = {
            "store": "redis",
            "url": redis_server.url,
            "prefix": fresh_prefix(),
            "rules": [storm(at_least=10, within=60)],
            "events": grants(3),
        }
        offsets = [300.0, -300.0, 300.0, -300.0]  # ±5 minutes
        workers = run_fleet([{**config, "offset": offset} for offset in offsets])
        for w in workers:
            w.finish()
        assert [("permission-storm", "firing", {"actor.id": "alice"}, 10.0)] == summary(
            workers
        )
        (alert,) = [a for w in workers for a in w.alerts]
        # Stamped with the server's clock, not the firing process's skewed one.
        assert abs(alert["fired_at"] - time.time()) < 20


@pytest.mark.skipif(REDIS_SERVER is None, reason=NO_REDIS)
class TestOutage:
    def test_redis_killed_and_restarted(self, tmp_path: Path) -> None:
        server = RedisServer(tmp_path)
        server.start()
        prefix = fresh_prefix()
        sink = MemorySink()
        shared = rules.RedisStore(
            server.url, prefix=prefix, timeout=0.25, retry_after=0.2
        )
        auditor = auditloop.Auditor(
            sinks=[sink],
            rules=[
                rules.Threshold(
                    "storm",
                    match=match(action="permission.*"),
                    group_by=["actor.id"],
                    at_least=3,
                    within=30,
                )
            ],
            rule_store=shared,
        )
        try:
            for _ in range(2):
                auditor.emit("permission.grant", actor="alice")
            assert server.keys(prefix)
            server.kill()
            took = []
            for _ in range(3):
                start = time.monotonic()
                auditor.emit("permission.grant", actor="bob")
                took.append(time.monotonic() - start)
            assert max(took) < 1.0  # at most about the timeout, never a hang
            poll(
                lambda: any(
                    e.action == "auditloop.rule.store_unavailable" for e in sink.events
                ),
                timeout=10,
                what="the store_unavailable event",
            )
            assert 3 == auditor.stats()["rules"]["fallback_events"]
            server.start()  # same port, empty (no persistence)
            poll(lambda: shared.info()["available"], timeout=10, what="recovery")
            for _ in range(3):
                auditor.emit("permission.grant", actor="dave")
            auditor.emit("permission.grant", actor="alice")
            auditor.flush(timeout=5)
            alerts = [
                (e.attributes["status"], e.attributes["group"]["actor.id"])
                for e in sink.events
                if e.action == "auditloop.alert"
            ]
            # bob fired from local state and was resolved on recovery; dave
            # fired from Redis; alice's two events died with the server.
            assert [
                ("firing", "bob"),
                ("resolved", "bob"),
                ("firing", "dave"),
            ] == alerts
            assert any(":h" in k for k in server.keys(prefix))
            stats = auditor.stats()["rules"]
            assert (0, 1) == (stats["internal_errors"], shared.info()["recoveries"])
            unavailable = [
                e for e in sink.events if e.action == "auditloop.rule.store_unavailable"
            ]
            assert 1 == len(unavailable)  # rate-limited: one per outage here
        finally:
            auditor.shutdown(timeout=5)
            server.stop()


class TestExpiry:
    def test_keys_of_idle_groups_expire(self, redis_server: RedisServer) -> None:
        prefix = fresh_prefix()
        every = match(action="doc.*")
        common: dict[str, Any] = {"group_by": ["actor.id"], "within": 1}
        auditor = auditloop.Auditor(
            rules=[
                rules.Threshold("th", match=every, at_least=2, **common),
                rules.Ratio(
                    "ra",
                    match=match(action="doc.*", outcome="failure"),
                    of=every,
                    above=0.1,
                    **common,
                ),
                rules.Distinct(
                    "di", match=every, field="target.id", at_least=3, **common
                ),
                rules.Absence("ab", match=every, **common),
                rules.Sequence(
                    "se",
                    steps=[match(action="doc.read"), match(action="doc.write")],
                    **common,
                ),
            ],
            rule_store=rules.RedisStore(redis_server.url, prefix=prefix, ttl=0.5),
        )
        try:
            for actor in ("ann", "ben", "cid"):
                auditor.emit("doc.read", actor=actor, target="d1", outcome="failure")
                auditor.emit("doc.write", actor=actor, target="d2")
            keys = redis_server.keys(prefix)
            assert {"due", "h", "w"} == {k.rsplit(":", 1)[-1] for k in keys}
            assert len(keys) > 20
            client = redis_server.client()
            # -2: expired (or deleted by a re-check) since the listing.
            # (window + ttl = 1.5 s, plus a quarter of slack)
            assert all(p == -2 or 0 < p <= 1875 for p in map(client.pttl, keys))
            poll(lambda: not redis_server.keys(prefix), timeout=20, what="expiry")
        finally:
            auditor.shutdown(timeout=5)


@pytest.mark.skipif(REDIS_SERVER is None, reason=NO_REDIS)
class TestExample:
    def test_the_example_fires_once_and_not_at_all_in_memory(self) -> None:
        example = Path(__file__).parent.parent / "examples" / "rules_redis.py"
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        outputs = [
            subprocess.run(
                [sys.executable, str(example), *flags],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
                env=env,
            ).stdout
            for flags in ([], ["--memory"])
        ]
        assert 1 == outputs[0].count("firing permission-storm")
        assert "firing" not in outputs[1]
