"""Testing rules with pytest: fake time, real rule engine, exact alerts.

Run: pytest examples/integrations_pytest_rules.py

Each test configures auditloop with a FakeClock, feeds events, advances the
clock instead of sleeping, and asserts the exact alerts (and the
``auditloop.alert`` events that audit them).
"""

from collections.abc import Iterator
from datetime import timedelta

import pytest

import auditloop
from auditloop import rules
from auditloop.rules import Alert
from auditloop.testing import FakeClock, capture

PERMISSION_STORM = {
    "match": rules.match(action="permission.*"),
    "group_by": ["actor.id"],
    "at_least": 3,
    "within": timedelta(minutes=10),
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def alerts(clock: FakeClock) -> Iterator[list[Alert]]:
    """Configure the rule under test; yield the alerts it raises."""
    raised: list[Alert] = []
    auditloop.configure(
        clock=clock,
        rules=[
            rules.Threshold(
                "permission-storm", then=[raised.append], **PERMISSION_STORM
            )
        ],
    )
    yield raised
    auditloop.shutdown()


def grant(actor: str) -> None:
    auditloop.emit("permission.grant", actor=actor, target="user:42")


class TestPermissionStorm:
    def test_fires_on_the_third_grant_within_ten_minutes(
        self, clock: FakeClock, alerts: list[Alert]
    ) -> None:
        with capture() as events:
            for _ in range(3):
                grant("mallory")
                clock.advance(timedelta(minutes=4))
            auditloop.flush()  # alert callbacks run on a dispatcher thread

        assert [("firing", {"actor.id": "mallory"})] == [
            (a.status, dict(a.group)) for a in alerts
        ]
        assert ["auditloop.alert"] == [
            e.action for e in events if e.action.startswith("auditloop.")
        ]

    def test_grants_spread_over_time_do_not_fire(
        self, clock: FakeClock, alerts: list[Alert]
    ) -> None:
        for _ in range(3):
            grant("alice")
            clock.advance(timedelta(minutes=6))
        auditloop.flush()

        assert [] == alerts

    def test_groups_are_counted_apart(
        self, clock: FakeClock, alerts: list[Alert]
    ) -> None:
        for actor in ["alice", "bob", "alice", "bob"]:
            grant(actor)
        auditloop.flush()

        assert [] == alerts
