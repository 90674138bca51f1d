"""The event model: ``AuditEvent``, ``Actor``, ``Target`` and the wire form."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import attrs
import orjson
import pytest

import auditloop
from auditloop import Actor, AuditEvent, Target, sinks
from auditloop._event import CATEGORIES, actor_dict, target_dict

WIRE_ORDER = [
    "id",
    "time",
    "action",
    "category",
    "outcome",
    "severity",
    "actor",
    "target",
    "reason",
    "error",
    "duration_ms",
    "attributes",
    "context",
    "source",
    "schema",
]


def full_event() -> AuditEvent:
    return AuditEvent(
        id="0190b7a4-0000-7000-8000-000000000000",
        time="2026-01-01T00:00:00.000000Z",
        action="role.grant",
        outcome="denied",
        category="permission",
        severity="high",
        actor=Actor("alice", type="user", name="Alice", ip="10.0.0.1", roles=("a",)),
        target=Target("user:42", type="user", name="Bob"),
        reason="not an admin",
        error={"type": "PermissionError", "message": "no"},
        duration_ms=1.5,
        attributes={"role": "admin"},
        context={"request_id": "r-1"},
        source={"service": "billing"},
    )


class TestVocabulary:
    def test_schema_outcomes_severities_categories(self) -> None:
        assert "auditloop/1" == auditloop.SCHEMA
        assert ("success", "failure", "denied", "unknown") == auditloop.OUTCOMES
        assert ("info", "low", "medium", "high", "critical") == auditloop.SEVERITIES
        assert {
            "authentication",
            "authorization",
            "permission",
            "data",
            "deployment",
            "configuration",
            "exception",
            "system",
        } == set(CATEGORIES)


class TestAuditEvent:
    def test_is_frozen(self) -> None:
        event = full_event()

        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            event.action = "other"  # type: ignore[misc]

    def test_classes_are_slotted(self) -> None:
        for obj in (full_event(), Actor("a"), Target("t")):
            assert not hasattr(obj, "__dict__")

    def test_wire_round_trip(self) -> None:
        event = full_event()

        assert event == AuditEvent.from_dict(
            orjson.loads(orjson.dumps(event.to_dict()))
        )

    def test_to_dict_follows_schema_order_and_drops_empty_keys(self) -> None:
        event = AuditEvent(id="i", time="t", action="a")

        assert {
            "id": "i",
            "time": "t",
            "action": "a",
            "outcome": "unknown",
            "schema": "auditloop/1",
        } == event.to_dict()
        assert WIRE_ORDER == list(full_event().to_dict())

    def test_from_dict_tolerates_missing_and_odd_fields(self) -> None:
        event = AuditEvent.from_dict({"actor": "not-a-mapping", "target": 5})

        assert AuditEvent(id="", time="", action="") == event

    def test_integrity_fields_round_trip(self) -> None:
        wire = {**full_event().to_dict(), "seq": 3, "prev": "p", "hash": "h"}

        event = AuditEvent.from_dict(wire)

        assert (3, "p", "h") == (event.seq, event.prev, event.hash)
        assert wire == event.to_dict()

    def test_emitted_events_use_the_schema_field_order(self) -> None:
        memory = sinks.MemorySink()
        auditor = auditloop.Auditor(service="svc", sinks=[memory])
        with auditloop.bind(actor="alice", request_id="r-1"):
            auditor.emit(
                "role.grant",
                target="user:42",
                outcome="failure",
                category="permission",
                severity="high",
                reason="why",
                error=ValueError("bad"),
                duration_ms=2.0,
                role="admin",
            )

        assert WIRE_ORDER == list(orjson.loads(memory.lines[0]))


class TestActorAndTarget:
    def test_actor_wire_form(self) -> None:
        assert {"id": "a", "type": "user"} == Actor("a").to_dict()
        assert {"id": "a", "type": "service", "roles": ["x", "y"]} == Actor(
            "a", type="service", roles=("x", "y")
        ).to_dict()

    def test_actor_from_dict(self) -> None:
        assert Actor("7", roles=("r",)) == Actor.from_dict({"id": 7, "roles": ["r"]})

    def test_target_wire_form(self) -> None:
        assert {"id": "doc:1", "type": "doc"} == Target("doc:1", type="doc").to_dict()
        assert Target("x", name="n") == Target.from_dict({"id": "x", "name": "n"})

    @pytest.mark.parametrize(
        ("given", "expected"),
        [
            (None, None),
            ("alice", {"id": "alice", "type": "user"}),
            (Actor("svc", type="service"), {"id": "svc", "type": "service"}),
            ({"id": 5, "ip": "::1"}, {"id": "5", "ip": "::1", "type": "user"}),
            ({"name": "anon"}, {"id": "unknown", "name": "anon", "type": "user"}),
            (42, {"id": "42", "type": "user"}),
        ],
    )
    def test_actor_dict_normalises(self, given: object, expected: object) -> None:
        assert expected == actor_dict(given)

    @pytest.mark.parametrize(
        ("given", "expected"),
        [
            (None, None),
            ("document:42", {"id": "document:42", "type": "document"}),
            ("plain", {"id": "plain"}),
            (":odd", {"id": ":odd"}),
            (Target("t", type="k"), {"id": "t", "type": "k"}),
            ({"id": 1, "name": "n"}, {"id": "1", "name": "n"}),
            ({}, {"id": "unknown"}),
            (42, {"id": "42"}),
        ],
    )
    def test_target_dict_normalises(self, given: object, expected: object) -> None:
        assert expected == target_dict(given)


class BadStr:
    def __str__(self) -> str:
        raise RuntimeError("broken __str__")


class BrokenMapping(Mapping[str, object]):
    """A mapping whose items cannot be read."""

    def __getitem__(self, key: str) -> object:
        raise RuntimeError("unreadable")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("unreadable")

    def __len__(self) -> int:
        return 1


class TestNormalisationNeverRaises:
    @pytest.mark.parametrize(
        ("given", "expected"),
        [
            (BadStr(), {"id": "<unprintable BadStr>", "type": "user"}),
            ({"id": BadStr()}, {"id": "<unprintable BadStr>", "type": "user"}),
            (BrokenMapping(), {"id": "<unreadable actor>", "type": "user"}),
        ],
    )
    def test_actor_dict(self, given: object, expected: object) -> None:
        assert expected == actor_dict(given)

    @pytest.mark.parametrize(
        ("given", "expected"),
        [
            (BadStr(), {"id": "<unprintable BadStr>"}),
            ({"id": BadStr()}, {"id": "<unprintable BadStr>"}),
            (BrokenMapping(), {"id": "<unreadable target>"}),
        ],
    )
    def test_target_dict(self, given: object, expected: object) -> None:
        assert expected == target_dict(given)


class TestFromDictOddShapes:
    @pytest.mark.parametrize(
        ("roles", "expected"),
        [
            (5, ("5",)),
            ("admin", ("admin",)),
            (None, ()),
            (["a", "b"], ("a", "b")),
            ({"a": 1}, ("{'a': 1}",)),
        ],
    )
    def test_roles_of_any_shape(self, roles: object, expected: object) -> None:
        actor = Actor.from_dict({"id": "a", "roles": roles})

        assert expected == actor.roles

    def test_non_mapping_error_attributes_context_source(self) -> None:
        event = AuditEvent.from_dict(
            {
                "action": "x",
                "error": "boom",
                "attributes": [1, 2],
                "context": "ctx",
                "source": 7,
            }
        )

        assert (
            {"message": "boom"},
            {"value": [1, 2]},
            {"value": "ctx"},
            {"value": 7},
        ) == (event.error, event.attributes, event.context, event.source)
        assert "x" == AuditEvent.from_dict(event.to_dict()).action
