"""Audit policy: levels decide what is recorded; the first matching rule wins."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import auditloop
from auditloop import Auditor, sinks
from auditloop._policy import Policy, PolicyRule
from auditloop.exceptions import ConfigurationError


def auditor_with(policy: object) -> tuple[Auditor, sinks.MemorySink]:
    memory = sinks.MemorySink()
    return Auditor(sinks=[memory], policy=policy), memory


def run_calls(auditor: Auditor) -> None:
    @auditor.audited("doc.delete", capture=["doc_id", "return"])
    def delete(doc_id: str) -> str:
        return f"deleted {doc_id}"

    with auditloop.bind(actor="alice"):
        delete("d-1")
        auditor.emit("doc.read", target="doc:1", size=10)
        with auditor.audit("doc.share", target="doc:1") as rec:
            rec.set(to="bob")


class TestLevels:
    def test_none_records_nothing(self) -> None:
        auditor, memory = auditor_with([{"level": "none", "action": "doc.*"}])

        run_calls(auditor)

        assert [] == memory.events
        assert 3 == auditor.counters.get("policy_skipped")

    def test_metadata_keeps_who_what_outcome_but_no_attributes(self) -> None:
        auditor, memory = auditor_with([{"level": "metadata"}])

        run_calls(auditor)

        assert ["doc.delete", "doc.read", "doc.share"] == [
            e.action for e in memory.events
        ]
        assert [{}, {}, {}] == [dict(e.attributes) for e in memory.events]
        assert ["alice"] * 3 == [e.actor.id for e in memory.events if e.actor]
        assert ["success"] * 3 == [e.outcome for e in memory.events]
        assert "doc:1" == memory.events[1].target.id  # type: ignore[union-attr]

    def test_request_keeps_captured_arguments_but_not_the_return_value(self) -> None:
        auditor, memory = auditor_with([{"level": "request"}])

        run_calls(auditor)

        assert [{"doc_id": "d-1"}, {"size": 10}, {"to": "bob"}] == [
            dict(e.attributes) for e in memory.events
        ]

    def test_full_keeps_the_return_value_too(self) -> None:
        auditor, memory = auditor_with([{"level": "full"}])

        run_calls(auditor)

        assert {"doc_id": "d-1", "return": "deleted d-1"} == dict(
            memory.events[0].attributes
        )

    def test_without_a_policy_everything_captured_is_recorded(self) -> None:
        auditor, memory = auditor_with(None)

        run_calls(auditor)

        assert auditor.policy is None
        assert {"doc_id": "d-1", "return": "deleted d-1"} == dict(
            memory.events[0].attributes
        )

    def test_an_emitted_attribute_named_return_is_kept_at_request(self) -> None:
        auditor, memory = auditor_with([{"level": "request"}])

        fields: dict[str, Any] = {"return": 1}
        auditor.emit("x.y", **fields)

        assert {"return": 1} == dict(memory.events[0].attributes)


class TestMatching:
    def test_the_first_matching_rule_wins(self) -> None:
        auditor, memory = auditor_with(
            [
                {"level": "metadata", "action": "doc.*", "actor": "alice"},
                {"level": "none", "action": "doc.*"},
            ]
        )

        auditor.emit("doc.read", actor="alice", size=1)
        auditor.emit("doc.read", actor="bob", size=2)
        auditor.emit("user.login", actor="bob", size=3)

        assert [("doc.read", "alice", {}), ("user.login", "bob", {"size": 3})] == [
            (e.action, e.actor.id, dict(e.attributes))  # type: ignore[union-attr]
            for e in memory.events
        ]

    def test_decisions_are_cached_per_actor(self) -> None:
        auditor, memory = auditor_with([{"level": "none", "actor": "svc-*"}])

        for actor in ("svc-a", "alice", "svc-b", "alice"):
            auditor.emit("doc.read", actor=actor)

        assert ["alice", "alice"] == [e.actor.id for e in memory.events if e.actor]

    def test_the_bound_actor_is_matched(self) -> None:
        auditor, memory = auditor_with([{"level": "none", "actor": "robot"}])

        with auditloop.bind(actor="robot"):
            auditor.emit("doc.read")
        auditor.emit("doc.read")

        assert 1 == len(memory.events)

    def test_category_patterns_need_a_category(self) -> None:
        auditor, memory = auditor_with(
            [{"level": "none", "category": ["data", "deploy*"]}]
        )

        auditor.emit("a", category="data")
        auditor.emit("b", category="deployment")
        auditor.emit("c", category="permission")
        auditor.emit("d")

        assert ["c", "d"] == [e.action for e in memory.events]

    def test_unmatched_events_get_the_default(self) -> None:
        policy = Policy([PolicyRule("full", action="important.*")], default="none")
        auditor, memory = auditor_with(policy)

        auditor.emit("important.thing")
        auditor.emit("noise")

        assert ["important.thing"] == [e.action for e in memory.events]

    def test_auditloops_own_events_cannot_be_silenced(self) -> None:
        auditor, memory = auditor_with([{"level": "none"}])

        auditor.emit("auditloop.custom", detail=1)
        auditor.emit("anything.else")

        assert [("auditloop.custom", {"detail": 1})] == [
            (e.action, dict(e.attributes)) for e in memory.events
        ]

    def test_level_for(self) -> None:
        policy = Policy(
            [PolicyRule("metadata", action=["a.*", "b"]), PolicyRule("request")]
        )

        assert "metadata" == policy.level_for("a.x")
        assert "metadata" == policy.level_for("b")
        assert "request" == policy.level_for("bb")
        assert "full" == policy.level_for("auditloop.configured")


class TestLoading:
    def test_configure_takes_a_list_of_dicts(self) -> None:
        memory = sinks.MemorySink()

        auditloop.configure(sinks=[memory], policy=[{"level": "none"}])
        auditloop.emit("doc.read")

        assert [] == memory.events

    def test_a_toml_file(self, tmp_path: Path) -> None:
        path = tmp_path / "policy.toml"
        path.write_text(
            """
            [policy]
            default = "metadata"

            [[policy.rules]]
            level = "none"
            action = ["health.*", "metrics.*"]

            [[policy.rules]]
            level = "full"
            actor = "admin-*"
            """
        )
        memory = sinks.MemorySink()

        auditloop.configure(sinks=[memory], policy=str(path))
        auditloop.emit("health.check")
        auditloop.emit("doc.read", actor="admin-1", n=1)
        auditloop.emit("doc.read", actor="alice", n=2)

        assert [("admin-1", {"n": 1}), ("alice", {})] == [
            (e.actor.id, dict(e.attributes))  # type: ignore[union-attr]
            for e in memory.events
        ]

    def test_to_dict_round_trips(self) -> None:
        policy = Policy(
            [
                PolicyRule("none", action="a.*", actor=["x", "y"]),
                PolicyRule("metadata", category="data"),
            ],
            default="request",
        )

        assert policy == Policy.load(policy.to_dict())

    def test_a_policy_object_is_used_as_is(self) -> None:
        policy = Policy([PolicyRule("none")])

        assert policy is Policy.load(policy)


class TestInvalidPolicies:
    @pytest.mark.parametrize(
        ("policy", "message"),
        [
            (
                [{"level": "meta"}],
                (
                    "policy.rules[0]: level must be one of none, metadata, "
                    "request, full; got 'meta'"
                ),
            ),
            (
                [{"level": "none"}, {"level": "full", "acton": "x"}],
                "policy.rules[1]: unknown key 'acton' (did you mean 'action'?)",
            ),
            ([{"action": "x"}], "policy.rules[0]: level is missing"),
            (
                [{"level": "none", "actor": 5}],
                "policy.rules[0]: actor must be a glob pattern or a list of them",
            ),
            ([{"level": "none", "action": [""]}], "policy.rules[0]: action must be"),
            (["none"], "policy.rules[0]: must be a table/dict"),
            ({"rules": [], "defualt": "none"}, "policy: unknown key 'defualt'"),
            ({"default": "all"}, "policy: default: level must be one of"),
            ({"rules": "none"}, "policy: rules must be a list"),
            (
                [{"level": "none", "action": []}],
                "policy.rules[0]: action is an empty list (leave action out",
            ),
            (
                [{"level": "metadata", "actor": ()}],
                "policy.rules[0]: actor is an empty list",
            ),
            (
                [{"level": "none", "category": {"a": 1}}],
                "policy.rules[0]: category must be a glob pattern or a list",
            ),
            (
                [{"level": "none", "action": b"health.*"}],
                "policy.rules[0]: action must be a glob pattern or a list",
            ),
            ({"rules": {"level": "none"}}, "policy: rules must be a list"),
            (42, "policy must be a Policy, a list of rule dicts"),
        ],
    )
    def test_fails_at_configure_time_naming_the_rule(
        self, policy: Any, message: str
    ) -> None:
        with pytest.raises(ConfigurationError) as info:
            auditloop.configure(sinks=[], policy=policy)

        assert str(info.value).startswith(message)

    def test_an_emptied_list_in_toml_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "policy.toml"
        path.write_text('[policy]\n[[policy.rules]]\nlevel = "none"\naction = []\n')

        with pytest.raises(ConfigurationError) as info:
            auditloop.configure(sinks=[], policy=str(path))

        assert str(info.value).startswith("policy.rules[0]: action is an empty list")

    def test_a_table_of_patterns_in_toml_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "policy.toml"
        path.write_text(
            '[policy]\n[[policy.rules]]\nlevel = "none"\n'
            "[policy.rules.category]\na = 1\n"
        )

        with pytest.raises(ConfigurationError, match=r"rules\[0\]: category must"):
            Policy.load(path)

    def test_a_file_that_is_not_utf8(self, tmp_path: Path) -> None:
        path = tmp_path / "latin1.toml"
        path.write_bytes(b'[policy]\n# r\xe9gle\n[[policy.rules]]\nlevel = "none"\n')

        with pytest.raises(ConfigurationError) as info:
            Policy.load(path)

        assert str(info.value).startswith(f"policy: {str(path)!r} is not UTF-8")

    def test_empty_or_mapping_patterns_are_refused_by_policy_rule(self) -> None:
        cases: list[dict[str, Any]] = [
            {"action": []},
            {"category": set()},
            {"actor": {"a": "b"}},
        ]
        for kwargs in cases:
            with pytest.raises(ConfigurationError, match="PolicyRule: "):
                PolicyRule("none", **kwargs)

    def test_any_other_iterable_of_patterns_is_read_once(self) -> None:
        from_generator = PolicyRule("none", action=(p for p in ["a.*", "b.*"]))
        from_set = PolicyRule("none", action={"b.*", "a.*"})

        assert ("a.*", "b.*") == from_generator.action == from_set.action
        assert from_generator.matches("b.x", None, None)
        assert not from_generator.matches("c.x", None, None)

    def test_a_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigurationError, match="policy: cannot read"):
            Policy.load(tmp_path / "nope.toml")

    def test_a_file_that_is_not_toml(self, tmp_path: Path) -> None:
        path = tmp_path / "p.toml"
        path.write_text("[policy\n")

        with pytest.raises(ConfigurationError, match="is not TOML"):
            Policy.load(path)

    def test_a_toml_file_without_a_policy_table(self, tmp_path: Path) -> None:
        path = tmp_path / "p.toml"
        path.write_text('[[rules]]\nlevel = "none"\n')

        with pytest.raises(ConfigurationError, match=r"has no \[policy\] table"):
            Policy.load(path)

    def test_policy_objects_validate_too(self) -> None:
        with pytest.raises(ConfigurationError, match="PolicyRule: level"):
            PolicyRule("everything")  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match=r"Policy: rules\[0\]"):
            Policy(["none"])  # type: ignore[list-item]
        with pytest.raises(ConfigurationError, match="Policy: default"):
            Policy([], default="some")  # type: ignore[arg-type]


class TestCache:
    def test_rule_objects_and_dicts_mix_in_a_list(self) -> None:
        policy = Policy.load([PolicyRule("none", action="a"), {"level": "metadata"}])

        assert ("none", "metadata") == (policy.level_for("a"), policy.level_for("b"))

    def test_a_full_cache_starts_over_and_still_decides(self) -> None:
        auditor, memory = auditor_with([{"level": "none", "action": "noise.*"}])

        for i in range(5000):
            auditor.emit(f"noise.{i}")
        auditor.emit("signal")

        assert ["signal"] == [e.action for e in memory.events]
        assert 5000 == auditor.counters.get("policy_skipped")
