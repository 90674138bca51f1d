"""Rules that close the loop: thresholds, ratios, sequences, absences, alerts.

Run: python examples/rules_quickstart.py

A FakeClock drives time, so the script simulates an hour in a few
milliseconds: a permission storm, a brute-force login that succeeds and
escalates, a failure ratio, and a deploy heartbeat that stops. Every alert is
printed by an action and is itself audited as an ``auditloop.alert`` event.
"""

from datetime import timedelta

import auditloop
from auditloop import rules, sinks
from auditloop.testing import FakeClock


def show(alert: rules.Alert) -> None:
    group = " ".join(f"{k}={v}" for k, v in alert.group.items()) or "-"
    print(
        f"{alert.time:%H:%M:%S} {alert.status.upper():8} {alert.rule:<18} {group}"
        f" value={alert.value:g} evidence={len(alert.evidence)}"
    )


clock = FakeClock()
trail = sinks.MemorySink()
auditor = auditloop.configure(
    clock=clock,
    sinks=[trail],
    rules=[
        rules.Threshold(
            "permission-storm",
            match=rules.match(action="permission.*"),
            group_by=["actor.id"],
            at_least=5,
            within=timedelta(minutes=10),
            then=[show],
        ),
        rules.Ratio(
            "failing-logins",
            match=rules.match(action="user.login", outcome="failure"),
            of=rules.match(action="user.login"),
            group_by=["actor.ip"],
            above=0.5,
            min_count=4,
            within="5m",
            then=[show],
        ),
        rules.Sequence(
            "takeover",
            steps=[
                rules.match(action="user.login", outcome="failure"),
                rules.match(action="user.login", outcome="success"),
                rules.match(action="permission.grant"),
            ],
            group_by=["actor.id"],
            within="15m",
            severity="critical",
            then=[show],
        ),
        rules.Absence(
            "deploy-heartbeat",
            match=rules.match(action="deploy.heartbeat"),
            group_by=["target.id"],
            within="10m",
            then=[show],
        ),
    ],
)
assert auditor.rules is not None


def minutes(n: float) -> None:
    """Let time pass; the engine notices (what its ticker does in production)."""
    clock.advance(timedelta(minutes=n))
    auditor.rules.tick()


auditloop.emit("deploy.heartbeat", actor="ci", target="service:billing")
attacker = {"id": "mallory", "ip": "203.0.113.9"}
for _ in range(4):
    auditloop.emit("user.login", actor=attacker, outcome="failure")
    minutes(0.5)
auditloop.emit("user.login", actor=attacker, outcome="success")
for n in range(6):
    auditloop.emit("permission.grant", actor=attacker, target=f"user:{n}")
    minutes(1)
minutes(30)  # the storm's window empties; the heartbeat has stopped
auditloop.flush()

audited = [e for e in trail.events if e.action == "auditloop.alert"]
print(f"{len(audited)} alert transitions were audited as auditloop.alert events")
auditloop.shutdown()
