"""``auditloop demo`` end to end (what ``make demo`` runs), in a child process."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from auditloop._cli import main

RULES = {
    "permission-storm",
    "failed-logins",
    "login-after-failures",
    "mass-deletion",
    "error-ratio",
    "deploy-heartbeat-missing",
}


@pytest.fixture(scope="module")
def demo(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str], float]:
    directory = tmp_path_factory.mktemp("demo") / "out"
    start = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "auditloop",
            "demo",
            "--dir",
            str(directory),
            "--seconds",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return directory, done, time.monotonic() - start


def trail_alerts(trail: Path) -> list[tuple[str, str, str, str]]:
    found = []
    for line in trail.read_bytes().splitlines():
        record = orjson.loads(line)
        if record["action"] != "auditloop.alert":
            continue
        attributes = record["attributes"]
        status = attributes["status"]
        when = attributes["resolved_at" if status == "resolved" else "fired_at"]
        found.append((attributes["rule"], status, repr(attributes["group"]), when))
    return found


class TestDemo:
    def test_runs_the_whole_loop_and_exits_0(
        self, demo: tuple[Path, subprocess.CompletedProcess[str], float]
    ) -> None:
        directory, done, elapsed = demo

        assert 0 == done.returncode, done.stderr
        assert "" == done.stderr
        assert elapsed < 30
        for name in ("audit.jsonl", "audit.key", "rules.toml", "report.html"):
            assert (directory / name).is_file()
            assert f"  {name}" in done.stdout
        assert "Integrity: Chain intact" in done.stdout
        assert (
            "Replay: the trail replays to the same 12 alert transitions" in done.stdout
        )
        assert f"auditloop verify {directory / 'audit.jsonl'} --key-file" in done.stdout

    def test_every_rule_fires_and_alerts_print_as_they_fire(
        self, demo: tuple[Path, subprocess.CompletedProcess[str], float]
    ) -> None:
        _, done, _ = demo
        alert_lines = [line for line in done.stdout.splitlines() if "ALERT " in line]

        fired = {line.split()[3] for line in alert_lines if " FIRING " in line}
        assert RULES == fired
        assert 12 == len(alert_lines)
        # Printed live, before the summary that follows the simulation.
        assert done.stdout.index("ALERT ") < done.stdout.index(" events from ")

    def test_the_cli_replays_the_live_trail_to_the_live_alerts(
        self,
        demo: tuple[Path, subprocess.CompletedProcess[str], float],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        directory, _, _ = demo
        trail = directory / "audit.jsonl"

        code = main(
            ["replay", str(trail), "--rules", str(directory / "rules.toml"), "--json"]
        )

        replayed = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert 0 == code
        assert trail_alerts(trail) == [
            (t["rule"], t["status"], repr(t["group"]), t["time"]) for t in replayed
        ]

    def test_the_trail_verifies_with_the_key(
        self,
        demo: tuple[Path, subprocess.CompletedProcess[str], float],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        directory, _, _ = demo

        code = main(
            [
                "verify",
                str(directory / "audit.jsonl"),
                "--key-file",
                str(directory / "audit.key"),
            ]
        )

        assert 0 == code
        assert capsys.readouterr().out.startswith("Chain intact")

    def test_never_overwrites_a_trail(
        self,
        demo: tuple[Path, subprocess.CompletedProcess[str], float],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        directory, _, _ = demo

        code = main(["demo", "--dir", str(directory), "--seconds", "0"])

        assert 2 == code
        assert "choose an empty --dir" in capsys.readouterr().err

    @pytest.mark.parametrize("name", ["rules.toml", "audit.key", "report.html"])
    def test_never_overwrites_any_of_its_files(
        self, tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        (tmp_path / name).write_text("mine\n")

        code = main(["demo", "--dir", str(tmp_path), "--seconds", "0"])

        assert 2 == code
        assert f"{tmp_path / name} exists" in capsys.readouterr().err
        assert "mine\n" == (tmp_path / name).read_text()
        assert not (tmp_path / "audit.jsonl").exists()

    @pytest.mark.parametrize("seconds", ["-1", "soon", "4000"])
    def test_a_bad_duration_is_a_usage_error(self, seconds: str) -> None:
        with pytest.raises(SystemExit) as exited:
            main(["demo", "--seconds", seconds])

        assert 2 == exited.value.code


class TestDemoInProcess:
    def test_the_same_run_in_process(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code = main(["demo", "--dir", str(tmp_path / "d"), "--seconds", "0"])

        out = capsys.readouterr().out
        assert 0 == code
        assert 12 == out.count("ALERT ")
        assert "the trail replays to the same 12 alert transitions" in out

    def test_a_failing_simulation_is_reported(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        from auditloop._cli import demo

        def broken() -> object:
            def act(step: int, rng: object) -> None:
                if step == 3:
                    raise RuntimeError("the admin console crashed")

            return act

        monkeypatch.setattr(demo, "_admin", broken)

        code = main(["demo", "--dir", str(tmp_path / "d"), "--seconds", "0"])

        assert 2 == code
        assert "the simulation failed: RuntimeError('the admin console crashed')" in (
            capsys.readouterr().err
        )
