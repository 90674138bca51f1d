"""Rule kinds and the alert lifecycle: exact crossings, windows, for_, cooldown."""

from __future__ import annotations

from datetime import timedelta

import pytest

from auditloop import rules
from auditloop.exceptions import RuleError
from auditloop.rules import match
from rules_helpers import T0, Feed


def storm(**options: object) -> rules.Threshold:
    params: dict[str, object] = {
        "match": match(action="permission.*"),
        "group_by": ["actor.id"],
        "at_least": 3,
        "within": 60,
    }
    params.update(options)
    return rules.Threshold("storm", **params)  # type: ignore[arg-type]


class TestThreshold:
    def test_fires_exactly_at_the_crossing_event(self) -> None:
        feed = Feed(storm())
        feed.event(0, "permission.grant")
        feed.event(10, "permission.grant")
        assert [] == feed.alerts  # one event short: nothing yet
        feed.event(20, "permission.grant")
        assert [("storm", "firing", ("alice",), 20.0)] == feed.transitions()
        assert 3.0 == feed.alerts[0].value

    def test_window_is_half_open_t_minus_within_to_t(self) -> None:
        # At t=60 the event at t=0 is out: (0, 60] holds only two events.
        feed = Feed(storm())
        feed.event(0, "permission.grant")
        feed.event(30, "permission.grant")
        feed.event(60, "permission.grant")
        assert [] == feed.alerts
        # At t=89.5 the window (29.5, 89.5] holds 30, 60 and 89.5: inclusive count.
        feed.event(89.5, "permission.grant")
        assert [("storm", "firing", ("alice",), 89.5)] == feed.transitions()

    def test_groups_are_isolated(self) -> None:
        feed = Feed(storm())
        for t in range(5):
            feed.event(t, "permission.grant", actor="alice")
        feed.event(5, "permission.grant", actor="bob")
        feed.event(6, "permission.grant", actor="bob")
        assert [("storm", "firing", ("alice",), 2.0)] == feed.transitions()
        assert [("storm", ("alice",))] == feed.firing()

    def test_resolves_when_the_window_empties_without_new_events_for_the_group(
        self,
    ) -> None:
        feed = Feed(storm())
        for t in (0, 10, 20):
            feed.event(t, "permission.grant")
        # An unrelated event advances the clock: alice's window lost t=0 at 60.
        feed.event(75, "login", actor="zoe")
        assert [
            ("storm", "firing", ("alice",), 20.0),
            ("storm", "resolved", ("alice",), 60.0),
        ] == feed.transitions()
        assert 2.0 == feed.alerts[1].value

    def test_a_tick_resolves_too_and_stamps_the_exact_time(self) -> None:
        feed = Feed(storm())
        for t in (0, 10, 20):
            feed.event(t, "permission.grant")
        feed.tick(59.999)
        assert 1 == len(feed.alerts)
        feed.tick(3600)
        assert ("storm", "resolved", ("alice",), 60.0) == feed.transitions()[-1]

    def test_one_notification_while_it_stays_firing(self) -> None:
        feed = Feed(storm())
        for t in range(0, 50, 5):
            feed.event(t, "permission.grant")
        assert [("storm", "firing", ("alice",), 10.0)] == feed.transitions()
        # The count drops below 3 when the oldest of the newest three (35) leaves.
        feed.tick(200)
        assert ("storm", "resolved", ("alice",), 95.0) == feed.transitions()[-1]

    def test_refires_after_resolution(self) -> None:
        feed = Feed(storm())
        for t in (0, 1, 2, 100, 101, 102):
            feed.event(t, "permission.grant")
        assert [
            ("storm", "firing", ("alice",), 2.0),
            ("storm", "resolved", ("alice",), 60.0),
            ("storm", "firing", ("alice",), 102.0),
        ] == feed.transitions()

    def test_missing_group_field_is_the_explicit_null_group(self) -> None:
        feed = Feed(storm())
        for t in (0, 1, 2):
            feed.event(t, "permission.grant", actor=None)
        assert [("storm", "firing", (None,), 2.0)] == feed.transitions()
        assert {"actor.id": None} == feed.alerts[0].group

    def test_compound_group_key(self) -> None:
        feed = Feed(storm(group_by=["actor.id", "attributes.tenant"]))
        for t, tenant in ((0, "a"), (1, "b"), (2, "a"), (3, "a")):
            feed.event(t, "permission.grant", attributes={"tenant": tenant})
        assert [("storm", "firing", ("alice", "a"), 3.0)] == feed.transitions()
        assert {"actor.id": "alice", "attributes.tenant": "a"} == feed.alerts[0].group

    def test_unhashable_group_values_are_grouped_by_their_json(self) -> None:
        feed = Feed(storm(group_by=["attributes.roles"]))
        for t in (0, 1, 2):
            feed.event(t, "permission.grant", attributes={"roles": ["b", "a"]})
        assert [("storm", "firing", ('["b","a"]',), 2.0)] == feed.transitions()

    def test_evidence_is_the_newest_events_bounded(self) -> None:
        feed = Feed(storm(at_least=5, evidence=2))
        events = [feed.event(t, "permission.grant") for t in range(5)]
        assert (events[3], events[4]) == feed.alerts[0].evidence

    def test_late_event_inside_the_window_counts_older_ones_are_ignored(self) -> None:
        feed = Feed(storm())
        feed.event(100, "permission.grant")
        feed.event(30, "permission.grant")  # 70 s late: outside (40, 100]
        feed.event(50, "permission.grant")  # late but inside the window
        assert [] == feed.alerts
        feed.event(101, "permission.grant")
        assert [("storm", "firing", ("alice",), 101.0)] == feed.transitions()
        assert 1 == feed.engine.stats()["late_events"]

    def test_timedelta_and_duration_strings(self) -> None:
        assert 600.0 == storm(within=timedelta(minutes=10)).within
        assert 5400.0 == storm(within="1h30m").within


class TestForAndCooldown:
    def test_for_fires_once_the_condition_held_long_enough(self) -> None:
        feed = Feed(storm(for_=30))
        for t in (0, 10, 20):
            feed.event(t, "permission.grant")
        assert [] == feed.alerts  # pending
        feed.event(40, "permission.grant")
        assert [] == feed.alerts
        feed.tick(50)
        assert [("storm", "firing", ("alice",), 50.0)] == feed.transitions()
        alert = feed.alerts[0]
        assert (T0 + 20, T0 + 50) == (
            alert.started_at.timestamp(),
            alert.fired_at.timestamp(),
        )

    def test_pending_that_stops_holding_never_fires(self) -> None:
        feed = Feed(storm(for_="1m"))
        for t in (0, 10, 20):
            feed.event(t, "permission.grant")
        feed.tick(300)  # the window lost t=0 at 60, before 20 + 60 = 80
        assert [] == feed.alerts
        assert 0 == feed.engine.stats()["fired"]

    def test_cooldown_suppresses_refiring_and_counts_it(self) -> None:
        feed = Feed(storm(cooldown=300))
        for t in (0, 1, 2):
            feed.event(t, "permission.grant")
        for t in (100, 101, 102):  # resolved at 60; crosses again at 102
            feed.event(t, "permission.grant")
        assert [
            ("storm", "firing", ("alice",), 2.0),
            ("storm", "resolved", ("alice",), 60.0),
        ] == feed.transitions()
        assert 1 == feed.engine.stats()["suppressed"]
        # Cooldown ends at 2 + 300 = 302; a crossing then fires.
        for t in (310, 311, 312):
            feed.event(t, "permission.grant")
        assert ("storm", "firing", ("alice",), 312.0) == feed.transitions()[-1]

    def test_cooldown_end_fires_a_still_holding_group(self) -> None:
        feed = Feed(storm(cooldown=100, within=60))
        for t in (0, 1, 2):
            feed.event(t, "permission.grant")
        for t in (61, 62, 63, 70, 80, 90, 100):  # crosses again at 63
            feed.event(t, "permission.grant")
        firing_times = [t for (_, s, _, t) in feed.transitions() if s == "firing"]
        assert [2.0] == firing_times
        feed.tick(102)
        assert ("storm", "firing", ("alice",), 102.0) == feed.transitions()[-1]


class TestRatio:
    def rule(self, **options: object) -> rules.Ratio:
        params: dict[str, object] = {
            "match": match(action="login", outcome="failure"),
            "of": match(action="login"),
            "group_by": "actor.id",
            "above": 0.5,
            "min_count": 4,
            "within": 60,
        }
        params.update(options)
        return rules.Ratio("failing", **params)  # type: ignore[arg-type]

    def test_waits_for_min_count_then_fires_at_the_crossing(self) -> None:
        feed = Feed(self.rule())
        for t in (0, 1, 2):
            feed.event(t, "login", outcome="failure")
        assert [] == feed.alerts  # 3/3 but only 3 of min_count 4
        feed.event(3, "login", outcome="success")
        assert [("failing", "firing", ("alice",), 3.0)] == feed.transitions()
        assert 0.75 == feed.alerts[0].value

    def test_ratio_must_be_strictly_above(self) -> None:
        feed = Feed(self.rule())
        for t, outcome in enumerate(("failure", "failure", "success", "success")):
            feed.event(t, "login", outcome=outcome)
        assert [] == feed.alerts  # exactly 0.5 is not above 0.5

    def test_resolves_when_failures_leave_the_window(self) -> None:
        feed = Feed(self.rule())
        for t, outcome in (
            (0, "failure"),
            (1, "failure"),
            (2, "failure"),
            (30, "success"),
        ):
            feed.event(t, "login", outcome=outcome)
        feed.event(40, "login", outcome="success")
        assert 1 == len(feed.alerts)  # 3/5 still above 0.5
        feed.tick(500)
        # At 60 the window (0, 60] holds 1, 2 (failures), 30, 40: 2/4 = 0.5.
        assert ("failing", "resolved", ("alice",), 60.0) == feed.transitions()[-1]

    def test_numerator_evidence(self) -> None:
        feed = Feed(self.rule(evidence=2))
        first = feed.event(0, "login", outcome="failure")
        second = feed.event(1, "login", outcome="failure")
        feed.event(2, "login", outcome="success")
        third = feed.event(3, "login", outcome="failure")
        assert first not in feed.alerts[0].evidence
        assert (second, third) == feed.alerts[0].evidence

    def test_max_events_overflow_is_counted(self) -> None:
        feed = Feed(self.rule(max_events=3, min_count=1))
        for t in range(5):
            feed.event(t, "login", outcome="success")
        assert 2 == feed.engine.stats()["overflow"]


class TestDistinct:
    def rule(self, **options: object) -> rules.Distinct:
        params: dict[str, object] = {
            "match": match(action="document.read"),
            "field": "target.id",
            "group_by": ["actor.id"],
            "at_least": 3,
            "within": 60,
        }
        params.update(options)
        return rules.Distinct("spree", **params)  # type: ignore[arg-type]

    def test_counts_distinct_values_and_fires_at_the_crossing(self) -> None:
        feed = Feed(self.rule())
        for t, doc in enumerate(("d1", "d1", "d2", "d2", "d1")):
            feed.event(t, "document.read", target={"id": doc})
        assert [] == feed.alerts
        feed.event(5, "document.read", target={"id": "d3"})
        assert [("spree", "firing", ("alice",), 5.0)] == feed.transitions()
        assert 3.0 == feed.alerts[0].value

    def test_a_repeated_value_refreshes_its_time(self) -> None:
        feed = Feed(self.rule())
        feed.event(0, "document.read", target={"id": "d1"})
        feed.event(1, "document.read", target={"id": "d2"})
        feed.event(50, "document.read", target={"id": "d1"})  # d1 now at 50
        feed.event(61, "document.read", target={"id": "d3"})  # d2 expired at 61
        assert [] == feed.alerts
        feed.event(62, "document.read", target={"id": "d4"})
        assert [("spree", "firing", ("alice",), 62.0)] == feed.transitions()
        feed.tick(1000)
        # d1 (50) leaves at 110: distinct drops to 2.
        assert ("spree", "resolved", ("alice",), 110.0) == feed.transitions()[-1]

    def test_events_without_the_field_do_not_count(self) -> None:
        feed = Feed(self.rule(at_least=1))
        feed.event(0, "document.read")
        assert [] == feed.alerts


class TestAbsence:
    def rule(self, **options: object) -> rules.Absence:
        params: dict[str, object] = {
            "match": match(action="deploy.heartbeat"),
            "group_by": ["target.id"],
            "within": 60,
        }
        params.update(options)
        return rules.Absence("silent", **params)  # type: ignore[arg-type]

    def test_fires_exactly_within_after_the_last_event_and_resolves_on_the_next(
        self,
    ) -> None:
        feed = Feed(self.rule())
        feed.event(0, "deploy.heartbeat", target={"id": "svc:a"})
        feed.event(30, "deploy.heartbeat", target={"id": "svc:a"})
        feed.tick(89.9)
        assert [] == feed.alerts
        feed.tick(95)
        assert [("silent", "firing", ("svc:a",), 90.0)] == feed.transitions()
        assert 60.0 == feed.alerts[0].value
        feed.event(100, "deploy.heartbeat", target={"id": "svc:a"})
        assert ("silent", "resolved", ("svc:a",), 100.0) == feed.transitions()[-1]

    def test_expected_groups_are_watched_from_the_start(self) -> None:
        feed = Feed(self.rule(expected=["svc:a", "svc:b"]))
        feed.event(10, "other")  # the engine starts watching at its first time
        feed.event(30, "deploy.heartbeat", target={"id": "svc:a"})
        feed.tick(70)
        # svc:b was expected since t=10 and never seen; svc:a is due at 90.
        assert [("silent", "firing", ("svc:b",), 70.0)] == feed.transitions()

    def test_without_group_by_the_single_group_is_watched(self) -> None:
        feed = Feed(self.rule(group_by=()))
        feed.event(0, "other")
        feed.tick(61)
        assert [("silent", "firing", (), 60.0)] == feed.transitions()

    def test_unrelated_groups_do_not_fire(self) -> None:
        feed = Feed(self.rule())
        feed.event(0, "other", target={"id": "svc:a"})
        feed.tick(1000)
        assert [] == feed.alerts

    def test_expected_needs_valid_keys(self) -> None:
        with pytest.raises(RuleError, match="rule 'silent': expected"):
            self.rule(group_by=["target.id", "actor.id"], expected=["svc:a"])
        with pytest.raises(RuleError, match="not group_by paths"):
            self.rule(expected=[{"actor.id": "x"}])
        keys = self.rule(
            group_by=["target.id", "actor.id"],
            expected=[("svc:a", "ci"), {"target.id": "svc:b", "actor.id": "ci"}],
        ).expected
        assert (("svc:a", "ci"), ("svc:b", "ci")) == keys


class TestSequence:
    def rule(self, **options: object) -> rules.Sequence:
        params: dict[str, object] = {
            "steps": [
                match(action="login", outcome="failure"),
                match(action="login", outcome="success"),
                match(action="permission.grant"),
            ],
            "group_by": ["actor.id"],
            "within": 60,
        }
        params.update(options)
        return rules.Sequence("takeover", **params)  # type: ignore[arg-type]

    def test_fires_at_the_event_completing_the_steps_in_order(self) -> None:
        feed = Feed(self.rule())
        first = feed.event(0, "login", outcome="failure")
        feed.event(5, "login", outcome="failure")
        second = feed.event(10, "login", outcome="success")
        assert [] == feed.alerts
        third = feed.event(20, "permission.grant")
        assert [("takeover", "firing", ("alice",), 20.0)] == feed.transitions()
        assert 3.0 == feed.alerts[0].value
        # The chain with the latest start: the failure at 5, not at 0.
        assert first not in feed.alerts[0].evidence
        assert (second, third) == feed.alerts[0].evidence[1:]

    def test_steps_out_of_order_do_not_fire(self) -> None:
        feed = Feed(self.rule())
        feed.event(0, "permission.grant")
        feed.event(1, "login", outcome="success")
        feed.event(2, "login", outcome="failure")
        assert [] == feed.alerts

    def test_the_whole_chain_must_fit_in_the_window(self) -> None:
        feed = Feed(self.rule())
        feed.event(0, "login", outcome="failure")
        feed.event(30, "login", outcome="success")
        feed.event(60, "permission.grant")  # chain starts at 0: (0, 60] excludes it
        assert [] == feed.alerts
        feed.event(61, "login", outcome="failure")
        feed.event(62, "login", outcome="success")
        feed.event(63, "permission.grant")
        assert [("takeover", "firing", ("alice",), 63.0)] == feed.transitions()
        feed.tick(500)
        assert ("takeover", "resolved", ("alice",), 121.0) == feed.transitions()[-1]

    def test_groups_do_not_mix(self) -> None:
        feed = Feed(self.rule())
        feed.event(0, "login", actor="alice", outcome="failure")
        feed.event(1, "login", actor="bob", outcome="success")
        feed.event(2, "permission.grant", actor="alice")
        assert [] == feed.alerts

    def test_one_event_advances_a_chain_one_step(self) -> None:
        both = match(action="x")
        feed = Feed(rules.Sequence("twice", steps=[both, both], within=60))
        feed.event(0, "x")
        assert [] == feed.alerts
        feed.event(1, "x")
        assert [("twice", "firing", (), 1.0)] == feed.transitions()


class TestMaxGroups:
    def test_least_recently_seen_group_is_evicted_and_counted(self) -> None:
        feed = Feed(storm(max_groups=2))
        feed.event(0, "permission.grant", actor="a")
        feed.event(1, "permission.grant", actor="b")
        feed.event(2, "permission.grant", actor="a")  # a is now the newest
        feed.event(3, "permission.grant", actor="c")  # evicts b
        feed.event(4, "permission.grant", actor="a")
        stats = feed.engine.stats()
        assert (2, 1) == (stats["groups"], stats["evicted_groups"])
        assert [("storm", "firing", ("a",), 4.0)] == feed.transitions()

    def test_idle_groups_are_forgotten(self) -> None:
        feed = Feed(storm())
        for i in range(10):
            feed.event(i, "permission.grant", actor=f"user-{i}")
        feed.tick(1000)
        stats = feed.engine.stats()
        assert (0, 10) == (stats["groups"], stats["expired_groups"])
