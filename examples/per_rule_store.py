"""One rule counted by the whole fleet, the others in this process's memory.

Run: python examples/per_rule_store.py

``store=`` on a rule keeps that rule's windows in its own store; rules
without it use the engine's store (``configure(rule_store=...)``, in memory
by default). Here the fleet-wide rule's store is a ``MemoryStore`` so the
script runs anywhere; on a fleet it is a ``RedisStore`` (the commented line
below), and only that rule costs a round trip to Redis per event.
A FakeClock drives time, so nothing sleeps.
"""

from __future__ import annotations

import auditloop
from auditloop import rules
from auditloop.testing import FakeClock


def show(alert: rules.Alert) -> None:
    group = dict(alert.group)
    print(f"{alert.status:9} {alert.rule:<15} {group} value={alert.value:g}")


# On a fleet: rules.RedisStore("redis://redis.internal:6379/0", prefix="billing:")
fleet = rules.MemoryStore()

clock = FakeClock()
auditor = auditloop.configure(
    clock=clock,
    rules=[
        # Counted across every process: state in the fleet's store.
        rules.Threshold(
            "tenant-exports",
            match=rules.match(action="report.export"),
            group_by=["attributes.tenant"],
            at_least=3,
            within="1h",
            then=[show],
            store=fleet,
        ),
        # Per process is right for these: state in this process's memory.
        rules.Threshold(
            "login-burst",
            match=rules.match(action="user.login", outcome="failure"),
            group_by=["actor.id"],
            at_least=3,
            within="1m",
            then=[show],
        ),
        rules.Absence(
            "no-heartbeat",
            match=rules.match(action="worker.heartbeat"),
            within="5m",
            then=[show],
        ),
    ],
)

for _ in range(3):
    auditloop.emit("report.export", actor="alice", tenant="acme")
    auditloop.emit("user.login", actor="bob", outcome="failure")
    auditloop.emit("worker.heartbeat", actor="worker-1")
    clock.advance(10)
clock.advance(600)
assert auditor.rules is not None
auditor.rules.tick()  # ten minutes without a heartbeat; the burst resolves
auditloop.flush()

print()
print("rules whose state is in the fleet store:", sorted(fleet.stats()))
print("all rules:", sorted(auditloop.stats()["rules"]["rules"]))
auditloop.shutdown()
