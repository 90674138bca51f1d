"""``auditloop replay``: backtesting rules on a trail, and live == replay."""

from __future__ import annotations

from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from auditloop import Auditor, rules
from auditloop._cli import main
from auditloop.sinks import Delivery, FileSink
from auditloop.testing import FakeClock
from cli_trail import START

RULES = """\
[[rules]]
name = "failed-logins"
kind = "threshold"
at_least = 3
within = "5m"
group_by = ["actor.id"]
then = ["nowhere.not_importable:page"]   # replay never imports actions
[rules.match]
action = "user.login"
outcome = "failure"

[[rules]]
name = "deploy-missing"
kind = "absence"
within = "10m"
group_by = ["target.id"]
[rules.match]
action = "deploy.finished"
"""


def stamp(seconds: float) -> str:
    return (START + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event(
    seconds: float, action: str, actor: str, outcome: str = "success", **extra: Any
) -> bytes:
    record = {
        "id": f"e-{seconds:g}-{actor}",
        "time": stamp(seconds),
        "action": action,
        "outcome": outcome,
        "actor": {"id": actor},
        **extra,
    }
    return orjson.dumps(record) + b"\n"


@pytest.fixture
def scenario(tmp_path: Path) -> tuple[Path, Path]:
    """Mallory fails 4 logins in a minute; the deploy stops after t=60 s."""
    lines = [
        event(0, "deploy.finished", "ci", target={"id": "service:api"}),
        event(10, "user.login", "mallory", "failure"),
        event(20, "user.login", "alice", "failure"),
        event(30, "user.login", "mallory", "failure"),
        event(40, "user.login", "mallory", "failure"),
        event(50, "user.login", "mallory", "failure"),
        event(60, "deploy.finished", "ci", target={"id": "service:api"}),
        event(1200, "document.read", "alice"),
    ]
    trail = tmp_path / "audit.jsonl"
    trail.write_bytes(b"".join(lines) + b"garbage\n")
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(RULES)
    return trail, rules_file


class TestReplay:
    def test_json_lists_every_transition_at_event_time(
        self, scenario: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
    ) -> None:
        trail, rules_file = scenario

        code = main(["replay", str(trail), "--rules", str(rules_file), "--json"])

        captured = capsys.readouterr()
        found = [orjson.loads(line) for line in captured.out.splitlines()]
        assert 0 == code
        assert [
            {
                "rule": "failed-logins",
                "status": "firing",
                "group": {"actor.id": "mallory"},
                "time": stamp(40),  # the third failure within 5 minutes
                "value": 3.0,
                "evidence": ["e-10-mallory", "e-30-mallory", "e-40-mallory"],
            },
            {
                "rule": "failed-logins",
                "status": "resolved",
                "group": {"actor.id": "mallory"},
                "time": stamp(330),  # the failure at 30 s left: only 2 remain
            },
            {
                "rule": "deploy-missing",
                "status": "firing",
                "group": {"target.id": "service:api"},
                "time": stamp(660),  # ten minutes after the last deploy
            },
        ] == [
            {k: v for k, v in t.items() if k in ("rule", "status", "group", "time")}
            | ({"value": t["value"], "evidence": t["evidence"]} if i == 0 else {})
            for i, t in enumerate(found)
        ]
        assert f"{trail}:9: malformed line" in captured.err

    def test_readable_output_and_totals(
        self, scenario: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
    ) -> None:
        trail, rules_file = scenario

        code = main(
            ["replay", str(trail), "--rules", str(rules_file), "--color", "never"]
        )

        out = capsys.readouterr().out.splitlines()
        assert 0 == code
        assert out[0] == (
            f"{stamp(40)} FIRING   failed-logins actor.id=mallory value=3.0 "
            "evidence=e-10-mallory,e-30-mallory,e-40-mallory"
        )
        assert out[1].startswith(
            f"{stamp(330)} RESOLVED failed-logins actor.id=mallory"
        )
        assert (
            "2 fired, 1 resolved (2 rules); 1 still firing at the end of the trail"
            == out[-1]
        )

    def test_fail_on_alert_exits_1_when_something_fired(
        self, scenario: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
    ) -> None:
        trail, rules_file = scenario

        code = main(
            ["replay", str(trail), "--rules", str(rules_file), "--fail-on-alert"]
        )

        assert 1 == code

    def test_fail_on_alert_exits_0_when_nothing_fired(
        self,
        tmp_path: Path,
        scenario: tuple[Path, Path],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        _, rules_file = scenario
        quiet = tmp_path / "quiet.jsonl"
        quiet.write_bytes(event(0, "document.read", "alice"))

        code = main(
            ["replay", str(quiet), "--rules", str(rules_file), "--fail-on-alert"]
        )

        assert 0 == code
        assert "0 fired, 0 resolved (2 rules)\n" == capsys.readouterr().out

    def test_start_watches_an_expected_group_from_then(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        # Live, `expected` groups are watched from the process's start; the
        # trail does not say when that was: --start does.
        rules_file = tmp_path / "rules.toml"
        rules_file.write_text(
            '[[rules]]\nname = "no-deploy"\nkind = "absence"\nwithin = "10m"\n'
            'group_by = ["target.id"]\nexpected = ["service:api"]\n'
            '[rules.match]\naction = "deploy.finished"\n'
        )
        trail = tmp_path / "audit.jsonl"
        trail.write_bytes(
            event(300, "document.read", "alice") + event(840, "document.read", "bob")
        )

        def fired(*options: str) -> list[str]:
            command = ["replay", str(trail), "--rules", str(rules_file), "--json"]
            assert 0 == main([*command, *options])
            out = capsys.readouterr().out
            return [orjson.loads(line)["time"] for line in out.splitlines()]

        # Without it the watch starts at the first record (5 min): the
        # replay ends (14 min) before the group is 10 minutes quiet.
        assert [] == fired()
        assert [stamp(600)] == fired("--start", stamp(0))

    @pytest.mark.parametrize(
        ("content", "message"),
        [
            (None, "cannot read rules"),
            ("[[rules]\nname=", "not valid TOML"),
            ('[[rules]]\nname = "x"\nkind = "threshold"\n', "at_least"),
            ("", "no [[rules]] in the file"),
        ],
    )
    def test_bad_rules_exit_2_naming_the_file(
        self,
        tmp_path: Path,
        scenario: tuple[Path, Path],
        content: str | None,
        message: str,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        trail, _ = scenario
        bad = tmp_path / "bad.toml"
        if content is not None:
            bad.write_text(content)

        code = main(["replay", str(trail), "--rules", str(bad)])

        err = capsys.readouterr().err
        assert 2 == code
        assert f"auditloop replay: error: {bad}: " in err
        assert message in err


class TestLiveEqualsReplay:
    def test_a_trail_recorded_live_replays_to_the_alerts_that_fired(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        rules_file = tmp_path / "rules.toml"
        actions = 'then = ["tests.live_alert"]\non_resolve = ["tests.live_alert"]\n'
        text = (
            RULES.replace('then = ["nowhere.not_importable:page"]', "")
            + '[[rules]]\nname = "burst"\nkind = "threshold"\nat_least = 4\n'
            'within = "2m"\ngroup_by = ["actor.id"]\n[rules.match]\n'
            'action = "document.*"\n'
        ).replace("[rules.match]", actions + "[rules.match]")
        rules_file.write_text(text)
        live: list[rules.Alert] = []
        rules.register("tests.live_alert", live.append)
        clock = FakeClock(START)
        trail = tmp_path / "live.jsonl"
        auditor = Auditor(
            sinks=[FileSink(trail, delivery=Delivery(mode="sync"))],
            rules=rules.load(rules_file),
            clock=clock,
        )
        script = [
            (0, "deploy.finished", "ci", "success"),
            *[(5 + 20 * i, "document.read", "alice", "success") for i in range(6)],
            *[(30 + 40 * i, "user.login", "mallory", "failure") for i in range(5)],
            (400, "deploy.finished", "ci", "success"),
            *[(500 + 7 * i, "document.delete", "bob", "success") for i in range(5)],
            (1500, "document.read", "carol", "success"),
        ]
        for seconds, action, actor, outcome in sorted(script):
            clock.set(START + timedelta(seconds=seconds))
            auditor.emit(action, actor=actor, target="service:api", outcome=outcome)
        auditor.shutdown(timeout=5)

        code = main(["replay", str(trail), "--rules", str(rules_file), "--json"])

        replayed = [orjson.loads(x) for x in capsys.readouterr().out.splitlines()]
        expected = [
            {
                "rule": a.rule,
                "status": a.status,
                "group": dict(a.group),
                "time": a.time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "value": a.value,
                "evidence": [str(e["id"]) for e in a.evidence],
            }
            for a in live
        ]
        assert 0 == code
        assert len(live) >= 5  # bursts by alice and bob, mallory, the deploy gap
        assert expected == replayed
