"""rules.load: TOML and dicts into rule objects; errors name rule, field, reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from auditloop import rules
from auditloop.exceptions import ConfigurationError, RuleError
from auditloop.rules import Alert

FULL = """
[[rules]]
name = "permission-storm"
kind = "threshold"
at_least = 5
within = "10m"
group_by = ["actor.id"]
then = ["test_rules_load:page"]
severity = "high"
labels = { team = "security" }
[rules.match]
action = "permission.*"

[[rules]]
name = "failing-logins"
kind = "ratio"
above = 0.2
min_count = 10
within = "5m"
for_ = "1m"
cooldown = "1h"
group_by = ["actor.id"]
[rules.match]
action = "user.login"
outcome = ["failure", "denied"]
[rules.of]
action = "user.login"

[[rules]]
name = "spree"
kind = "distinct"
field = "target.id"
at_least = 50
within = "1h"
group_by = ["actor.id"]
[rules.match]
action = "document.*"

[[rules]]
name = "no-deploys"
kind = "absence"
within = "2d"
group_by = ["target.id"]
expected = ["service:billing"]
[rules.match]
action = "deploy.finished"

[[rules]]
name = "takeover"
kind = "sequence"
within = "30m"
group_by = ["actor.id"]
then = ["pager"]
[[rules.steps]]
action = "user.login"
outcome = "failure"
[[rules.steps]]
action = "user.login"
outcome = "success"
[[rules.steps]]
action = "permission.grant"
where = "is-admin-grant"
"""

paged: list[Alert] = []


def page(alert: Alert) -> None:
    paged.append(alert)


@pytest.fixture(autouse=True)
def _registered() -> None:
    rules.register("pager", page)
    rules.register(
        "is-admin-grant",
        lambda event: event.get("attributes", {}).get("role") == "admin",
    )


def base(**changes: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "name": "storm",
        "kind": "threshold",
        "at_least": 5,
        "within": "10m",
        "group_by": ["actor.id"],
        "match": {"action": "permission.*"},
    }
    rule.update(changes)
    return {"rules": [{k: v for k, v in rule.items() if v is not None}]}


class TestLoad:
    def test_every_kind_from_a_file(self, tmp_path: Path) -> None:
        path = tmp_path / "rules.toml"
        path.write_text(FULL)
        loaded = rules.load(path)
        assert [
            ("permission-storm", "threshold"),
            ("failing-logins", "ratio"),
            ("spree", "distinct"),
            ("no-deploys", "absence"),
            ("takeover", "sequence"),
        ] == [(r.name, r.kind) for r in loaded]
        storm, ratio, spree, absence, takeover = loaded
        assert isinstance(storm, rules.Threshold)
        assert (5, 600.0, ("actor.id",), (page,), "high", {"team": "security"}) == (
            storm.at_least,
            storm.within,
            storm.group_by,
            storm.then,
            storm.severity,
            storm.labels,
        )
        assert storm.match == rules.match(action="permission.*")
        assert isinstance(ratio, rules.Ratio)
        assert (0.2, 10, 60.0, 3600.0) == (
            ratio.above,
            ratio.min_count,
            ratio.for_,
            ratio.cooldown,
        )
        assert ratio.match == rules.match(
            action="user.login", outcome=("failure", "denied")
        )
        assert isinstance(spree, rules.Distinct)
        assert "target.id" == spree.field
        assert isinstance(absence, rules.Absence)
        assert (172800.0, ("service:billing",)) == (absence.within, absence.expected)
        assert isinstance(takeover, rules.Sequence)
        assert 3 == len(takeover.steps)
        assert takeover.steps[2](
            {"action": "permission.grant", "attributes": {"role": "admin"}}
        )
        assert not takeover.steps[2](
            {"action": "permission.grant", "attributes": {"role": "x"}}
        )

    def test_a_dict_works_the_same(self) -> None:
        (rule,) = rules.load(base())
        assert ("storm", 5) == (rule.name, rule.threshold)

    def test_dotted_import_paths_resolve(self) -> None:
        (rule,) = rules.load(base(then=["os.path.join", "os.path:basename"]))
        import os.path

        assert (os.path.join, os.path.basename) == rule.then

    def test_actions_false_skips_importing_actions_but_checks_their_form(self) -> None:
        (rule,) = rules.load(base(then=["nowhere.module:fn"]), actions=False)
        assert ((), ()) == (rule.then, rule.on_resolve)
        with pytest.raises(RuleError, match="then: must be a list of names"):
            rules.load(base(then=[42]), actions=False)

    def test_numbers_are_seconds(self) -> None:
        (rule,) = rules.load(base(within=90))
        assert 90.0 == rule.within


class TestLoadErrors:
    @pytest.mark.parametrize(
        ("data", "message"),
        [
            (
                base(kind="treshold"),
                "rule 'storm': kind: unknown kind 'treshold'.*did you mean 'threshold'",
            ),
            (base(within="10 mins"), "rule 'storm': within: bad duration '10 mins'"),
            (base(within="-5m"), "rule 'storm': within: bad duration"),
            (base(at_least=-1), "rule 'storm': at_least: must be at least 1, got -1"),
            (base(at_least="5"), "rule 'storm': at_least: must be an integer"),
            (
                base(group_by=["actor.idd"]),
                "rule 'storm': group_by: unknown path 'actor.idd'",
            ),
            (
                base(group_by=["user.id"]),
                "rule 'storm': group_by: unknown path 'user.id': events have no 'user'",
            ),
            (
                base(match={"acton": "x"}),
                r"rule 'storm': match.acton: not a match criterion; did you mean 'a",
            ),
            (base(match={"action": 5}), "rule 'storm': match: action must be a string"),
            (
                base(at_least=None),
                "rule 'storm': at_least: required for a threshold rule",
            ),
            (
                base(then=["nowhere.module:fn"]),
                "rule 'storm': then: 'nowhere.module:fn': cannot import 'nowhere",
            ),
            (
                base(then=["unregistered"]),
                "rule 'storm': then: 'unregistered' is neither a registered name",
            ),
            (base(then=["os:sep"]), "rule 'storm': then: 'os:sep' is not callable"),
            (
                base(severity="urgent"),
                "rule 'storm': severity: must be one of info, low",
            ),
            (
                base(windw="5m"),
                "rule 'storm': windw: not an option of a threshold rule",
            ),
            (base(name=""), r"rules\[0\]: name: required"),
            (
                {"rules": [base()["rules"][0], base()["rules"][0]]},
                "rule 'storm': name: used by more than one rule",
            ),
            (
                base(kind="ratio", at_least=None, above=1.5, of={"action": "x"}),
                "rule 'storm': above: must be a fraction",
            ),
            (
                base(
                    kind="sequence", at_least=None, match=None, steps=[{"action": "a"}]
                ),
                "rule 'storm': steps: needs at least 2 steps",
            ),
            (
                base(kind="distinct", field="actor.id"),
                "rule 'storm': field: 'actor.id' is also a group_by path",
            ),
            ({"rule": []}, "unknown top-level key 'rule'"),
            ({"rules": {"name": "x"}}, r"'rules' must be an array of tables"),
        ],
    )
    def test_messages_name_rule_field_and_reason(
        self, data: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(RuleError, match=message):
            rules.load(data)

    def test_bad_toml_and_missing_file(self, tmp_path: Path) -> None:
        bad = tmp_path / "bad.toml"
        bad.write_text("[[rules]\nname = 1")
        with pytest.raises(RuleError, match=r"bad.toml: not valid TOML"):
            rules.load(bad)
        with pytest.raises(RuleError, match=r"missing.toml: cannot read"):
            rules.load(tmp_path / "missing.toml")

    def test_rule_error_is_a_configuration_error(self) -> None:
        assert issubclass(RuleError, ConfigurationError)
        assert issubclass(RuleError, ValueError)


class TestRegister:
    def test_register_returns_the_callable_and_rejects_junk(self) -> None:
        assert page is rules.register("page-again", page)
        with pytest.raises(RuleError, match="not callable"):
            rules.register("x", 42)  # type: ignore[arg-type]
        with pytest.raises(RuleError, match="non-empty"):
            rules.register("", page)
