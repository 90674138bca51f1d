"""``auditloop demo``: the whole loop — record, deliver, trigger, review — in seconds.

A simulated document service runs in five threads against the real public
API (``@auditloop.audited``, ``auditloop.audit``, ``auditloop.bind``,
``auditloop.emit``, a hash-chained ``FileSink``, rules loaded from TOML with
callbacks). Two hours of simulated time pass in a few real seconds: a
:class:`~auditloop.testing.FakeClock` is moved one step at a time, and the
threads act in lockstep on each step, so the same alerts fire on every run.
Then the demo summarises, verifies, replays and reports on its own trail.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC
from pathlib import Path
from random import Random
from typing import Any, Final

from auditloop._cli._common import (
    EXIT_FINDINGS,
    EXIT_OK,
    CLIError,
    HelpFormatter,
    Issues,
    scan,
)
from auditloop._cli._format import Style, short

__all__ = ["RULES_TOML", "register", "run", "simulate"]

EXAMPLES = """\
examples:
  auditloop demo                       two simulated hours in about 12 seconds
  auditloop demo --seconds 0           as fast as the machine goes
  auditloop demo --dir ./demo-output   keep the files somewhere you choose
"""

#: Simulated seconds per step, and steps in the whole run (two hours).
STEP: Final = 10
STEPS: Final = 720
DEFAULT_SECONDS: Final = 12.0
SEED: Final = "auditloop-demo"

RULES_TOML: Final = """\
# The rules of `auditloop demo`. Replay them on the trail:
#   auditloop replay audit.jsonl --rules rules.toml
# (replay neither imports nor runs the `then`/`on_resolve` actions).

[[rules]]
name = "permission-storm"
kind = "threshold"
at_least = 5
within = "10m"
group_by = ["actor.id"]
severity = "high"
then = ["auditloop.demo.print_alert"]
on_resolve = ["auditloop.demo.print_alert"]
[rules.match]
action = "permission.*"

[[rules]]
name = "failed-logins"
kind = "threshold"
at_least = 5
within = "5m"
group_by = ["actor.ip"]
severity = "high"
then = ["auditloop.demo.print_alert"]
on_resolve = ["auditloop.demo.print_alert"]
[rules.match]
action = "user.login"
outcome = ["failure", "denied"]

[[rules]]
name = "login-after-failures"
kind = "sequence"
within = "10m"
group_by = ["actor.ip"]
severity = "critical"
then = ["auditloop.demo.print_alert"]
on_resolve = ["auditloop.demo.print_alert"]
[[rules.steps]]
action = "user.login"
outcome = "failure"
[[rules.steps]]
action = "user.login"
outcome = "success"

[[rules]]
name = "mass-deletion"
kind = "distinct"
field = "target.id"
at_least = 8
within = "10m"
group_by = ["actor.ip"]
severity = "high"
then = ["auditloop.demo.print_alert"]
on_resolve = ["auditloop.demo.print_alert"]
[rules.match]
action = "document.delete"

[[rules]]
name = "error-ratio"
kind = "ratio"
above = 0.5
min_count = 6
within = "10m"
group_by = ["actor.ip"]
then = ["auditloop.demo.print_alert"]
on_resolve = ["auditloop.demo.print_alert"]
[rules.match]
outcome = ["failure", "denied"]
[rules.of]
action = "*"

[[rules]]
name = "deploy-heartbeat-missing"
kind = "absence"
within = "15m"
group_by = ["target.id"]
severity = "critical"
then = ["auditloop.demo.print_alert"]
on_resolve = ["auditloop.demo.print_alert"]
[rules.match]
action = "deploy.heartbeat"
"""

# Who is who in the simulation: (actor id, ip) per user, and the thread
# that serves them. Every rule groups by a key only one thread produces, so
# the order in which threads interleave within a step cannot change an alert.
USERS: Final = {
    "web-1": (("alice", "10.0.0.11"), ("bob", "10.0.0.12")),
    "web-2": (("carol", "10.0.0.13"), ("dave", "10.0.0.14")),
}
ADMIN: Final = ("erin", "10.0.0.5")
ATTACKER_IP: Final = "203.0.113.66"
PASSWORDS: Final = {"alice": "a1", "bob": "b0b", "carol": "c4", "dave": "d4"}
MISSING: Final = frozenset(f"doc-{n}" for n in range(0, 200, 23))
LOCKED: Final = frozenset(f"doc-{n}" for n in range(3, 200, 7))


class InvalidCredentialsError(Exception):
    """A login with the wrong password (recorded as ``failure``)."""


def register(commands: Any) -> None:
    """Add the ``demo`` subcommand to the *commands* subparsers."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "demo",
        help="run a simulated application and review its trail (the whole loop)",
        description="Run a simulated document service for two simulated hours: "
        "users read and delete documents, an admin grants permissions in a burst, "
        "an attacker fails logins then gets in and deletes documents, a deploy "
        "heartbeat stops. Alerts print as they fire. Then the demo summarises "
        "the trail, verifies its hash chain, replays it through the rules and "
        "writes an HTML report, and tells you where each file is.",
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--dir",
        metavar="DIR",
        help="where to write the files (default: a new temporary directory)",
    )
    parser.add_argument(
        "--seconds",
        type=_seconds,
        default=DEFAULT_SECONDS,
        metavar="N",
        help=f"real seconds the simulation takes (default {DEFAULT_SECONDS:g}; "
        "0: as fast as possible)",
    )
    parser.set_defaults(run=run)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds (0-3600)"
        )
    return value


# -- the simulated application (the real public API) ------------------------


def _app() -> dict[str, Callable[..., Any]]:
    """Build the service's audited functions (at run time, not import time)."""
    import auditloop

    @auditloop.audited(
        "user.login",
        target=lambda username, **_: f"user:{username}",
        category="authentication",
    )
    def login(username: str, password: str) -> None:
        if PASSWORDS.get(username) != password:
            raise InvalidCredentialsError("wrong user name or password")

    @auditloop.audited(
        "document.read",
        target=lambda doc_id, **_: f"document:{doc_id}",
        category="data",
    )
    def read_document(doc_id: str) -> str:
        if doc_id in MISSING:
            raise KeyError(doc_id)
        return f"contents of {doc_id}"

    @auditloop.audited(
        "document.delete",
        target=lambda doc_id, **_: f"document:{doc_id}",
        category="data",
        severity="medium",
    )
    def delete_document(doc_id: str) -> None:
        if doc_id in LOCKED:
            raise PermissionError(f"{doc_id} is under legal hold")

    def grant(user: str, role: str) -> None:
        with auditloop.audit(
            "permission.grant", target=f"user:{user}", category="permission"
        ) as record:
            record.set(role=role)
            record.reason = "access request"

    def heartbeat(version: str) -> None:
        auditloop.emit(
            "deploy.heartbeat",
            actor={"id": "ci", "type": "service"},
            target="service:billing",
            category="deployment",
            version=version,
        )

    return {
        "login": login,
        "read": read_document,
        "delete": delete_document,
        "grant": grant,
        "heartbeat": heartbeat,
    }


def _quietly(call: Callable[..., Any], *args: Any) -> None:
    """Call the service; its errors are what the audit trail records."""
    with contextlib.suppress(InvalidCredentialsError, KeyError, PermissionError):
        call(*args)


def _web(users: Sequence[tuple[str, str]]) -> Callable[[int, Random], None]:
    import auditloop

    app = _app()
    logged_in: set[str] = set()

    def act(step: int, rng: Random) -> None:
        for user, ip in users:
            if rng.random() >= 0.3:
                continue
            with auditloop.bind(
                actor={"id": user, "ip": ip}, request_id=f"r-{step}-{user}"
            ):
                if user not in logged_in:
                    app["login"](user, PASSWORDS[user])
                    logged_in.add(user)
                    continue
                roll = rng.random()
                doc = f"doc-{rng.randrange(200)}"
                if roll < 0.85:
                    _quietly(app["read"], doc)
                else:
                    _quietly(app["delete"], doc)

    return act


def _admin() -> Callable[[int, Random], None]:
    import auditloop

    app = _app()
    burst = set(range(180, 187))  # minute 30: seven grants in 70 seconds

    def act(step: int, rng: Random) -> None:
        if step % 150 == 75 or step in burst:
            user = rng.choice(["alice", "bob", "carol", "dave", "frank"])
            with auditloop.bind(actor={"id": ADMIN[0], "ip": ADMIN[1]}):
                app["grant"](user, rng.choice(["viewer", "editor", "admin"]))

    return act


def _attacker() -> Callable[[int, Random], None]:
    import auditloop

    app = _app()
    # Minute 55: six wrong passwords for bob, then the right one, then a
    # sweep of deletions as bob.
    failures = range(330, 336)
    success = 337
    sweep = range(340, 352)

    def act(step: int, _rng: Random) -> None:
        if step not in failures and step != success and step not in sweep:
            return
        with auditloop.bind(actor={"id": "bob", "ip": ATTACKER_IP}):
            if step in failures:
                _quietly(app["login"], "bob", f"guess-{step}")
            elif step == success:
                app["login"]("bob", PASSWORDS["bob"])
            else:
                _quietly(app["delete"], f"doc-{100 + step - sweep.start}")

    return act


def _deploy() -> Callable[[int, Random], None]:
    app = _app()

    def act(step: int, _rng: Random) -> None:
        # A heartbeat every 5 minutes, except from minute 75 to minute 100.
        minute, second = divmod(step * STEP, 60)
        if second == 0 and minute % 5 == 0 and not 75 <= minute < 100:
            app["heartbeat"]("1.4.2" if minute < 100 else "1.4.3")

    return act


def simulate(
    clock: Any, start: float, pace: float, steps: int = STEPS
) -> list[BaseException]:
    """Run the five service threads in lockstep for *steps* clock steps.

    Each step the clock moves :data:`STEP` seconds, every thread does its
    work for that moment, and the driver waits *pace* real seconds.

    Returns:
        Exceptions that escaped a thread (none in a healthy run).
    """
    actors: dict[str, Callable[[int, Random], None]] = {
        name: _web(users) for name, users in USERS.items()
    }
    actors["admin"] = _admin()
    actors["attacker"] = _attacker()
    actors["deploy"] = _deploy()
    barrier = threading.Barrier(len(actors) + 1)
    errors: list[BaseException] = []

    def worker(name: str, act: Callable[[int, Random], None]) -> None:
        rng = Random(f"{SEED}-{name}")
        try:
            for step in range(steps):
                barrier.wait(timeout=60)
                try:
                    act(step, rng)
                finally:
                    barrier.wait(timeout=60)
        except threading.BrokenBarrierError:
            pass
        except Exception as exc:
            errors.append(exc)
            barrier.abort()

    threads = [
        threading.Thread(target=worker, args=(name, act), name=f"demo-{name}")
        for name, act in actors.items()
    ]
    for thread in threads:
        thread.start()
    try:
        for step in range(steps):
            clock.set(start + step * STEP)
            barrier.wait(timeout=60)  # go
            barrier.wait(timeout=60)  # everyone is done with this moment
            if pace:
                time.sleep(pace)
    except threading.BrokenBarrierError:
        pass
    finally:
        barrier.abort()
        for thread in threads:
            thread.join(timeout=60)
    return errors


# -- the review half ---------------------------------------------------------


class _Printer:
    """Prints alerts from the rule dispatcher thread without tearing lines."""

    def __init__(self, style: Style) -> None:
        self.style = style
        self.lock = threading.Lock()
        self.count = 0

    def __call__(self, alert: Any) -> None:
        firing = alert.status == "firing"
        when = alert.time.astimezone(UTC).strftime("%H:%M:%S")
        group = " ".join(f"{short(k)}={short(v)}" for k, v in alert.group.items())
        status = self.style("bad" if firing else "ok", f"{alert.status.upper():<8}")
        line = (
            f"  {self.style('alert', 'ALERT')} {when} {status} "
            f"{self.style('bold', short(alert.rule))} {group} value={alert.value:g}"
        )
        if firing:
            line += f" ({len(alert.evidence)} evidence events)"
        with self.lock:
            self.count += 1
            print(line, flush=True)

    def say(self, text: str = "") -> None:
        with self.lock:
            print(text, flush=True)


def _live_alerts(records: Sequence[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """(rule, status, group, time) of the alert events the trail recorded."""
    found = []
    for record in records:
        if record.get("action") != "auditloop.alert":
            continue
        attributes = record.get("attributes") or {}
        status = str(attributes.get("status"))
        when = attributes.get("resolved_at" if status == "resolved" else "fired_at")
        found.append(
            (
                str(attributes.get("rule")),
                status,
                repr(attributes.get("group")),
                str(when),
            )
        )
    return found


def run(args: argparse.Namespace) -> int:
    """Run ``demo``.

    Returns:
        0 when the loop closed (the trail verifies and replays to the live
        alerts), 1 otherwise, 2 on a bad ``--dir``.
    """
    import auditloop
    from auditloop import rules, sinks
    from auditloop._cli import replay as replay_cli
    from auditloop._cli._stats import TrailStats
    from auditloop._cli.report import render_report
    from auditloop._cli.summary import summary_text
    from auditloop._cli.verify import check_integrity
    from auditloop.testing import FakeClock

    directory = (
        Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="auditloop-demo-"))
    )
    trail = directory / "audit.jsonl"
    for name in ("audit.jsonl", "audit.key", "rules.toml", "report.html"):
        if (directory / name).exists():
            raise CLIError(
                f"{directory / name} exists: choose an empty --dir "
                "(the demo never overwrites)"
            )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        key = secrets.token_hex(32)
        # Created private (0600) and new: never readable by others, even briefly.
        fd = os.open(
            directory / "audit.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600
        )
        with os.fdopen(fd, "w") as key_file:
            key_file.write(key + "\n")
        (directory / "rules.toml").write_text(RULES_TOML)
    except OSError as exc:
        raise CLIError(f"{directory}: cannot write: {exc.strerror or exc}") from None

    style = Style.for_stream("auto", sys.stdout)
    out = _Printer(style)
    rules.register("auditloop.demo.print_alert", out)
    rule_list = rules.load(directory / "rules.toml")
    start = float(int(time.time()) // 60 * 60 - STEPS * STEP)  # ends about now
    clock = FakeClock(start)
    out.say(
        style("bold", "auditloop demo")
        + f": two simulated hours of a document service, in about {args.seconds:g} s"
    )
    out.say(f"  trail: {trail} (hash-chained; key in {directory / 'audit.key'})")
    out.say(f"  rules: {', '.join(r.name for r in rule_list)}")
    out.say()
    auditloop.configure(
        service="docs-api",
        sinks=[sinks.FileSink(trail, chain=True, key=key, key_id="demo")],
        rules=rule_list,
        clock=clock,
    )
    try:
        errors = simulate(clock, start, args.seconds / STEPS)
    finally:
        auditloop.shutdown(timeout=10)
    if errors:
        raise CLIError(f"the simulation failed: {errors[0]!r}")

    issues = Issues()
    records = list(scan([trail], issues))
    stats = TrailStats()
    stats.add_all(records)
    out.say()
    out.say(summary_text(stats, top=5, unreadable=issues.lines, style=style))

    out.say()
    verdict = check_integrity([trail], key.encode())
    verdict_style = {"ok": "ok", "failed": "bad"}.get(verdict.status, "denied")
    out.say(style("bold", "Integrity: ") + style(verdict_style, verdict.headline))

    live = _live_alerts(records)
    replayed = [
        (t.rule, t.status, repr(dict(t.group)), t.to_dict()["time"])
        for t in replay_cli.transitions(
            [trail], replay_cli.load_rules(str(directory / "rules.toml")), Issues()
        )
    ]
    same = sorted(live) == sorted(replayed)
    out.say(
        style("bold", "Replay: ")
        + (
            style("ok", f"the trail replays to the same {len(live)} alert transitions")
            + " that fired live."
            if same
            else style(
                "bad",
                f"replay found {len(replayed)} transitions, {len(live)} fired live",
            )
        )
    )

    report = directory / "report.html"
    report.write_text(
        render_report(
            stats,
            files=[str(trail)],
            verdict=verdict,
            unreadable=issues.lines,
            generated=time.time(),
        ),
        encoding="utf-8",
    )
    _print_files(out, style, directory, trail, report)
    return EXIT_OK if verdict.status == "ok" and same and out.count else EXIT_FINDINGS


def _print_files(
    out: _Printer, style: Style, directory: Path, trail: Path, report: Path
) -> None:
    key = directory / "audit.key"
    rules_file = directory / "rules.toml"
    out.say()
    out.say(style("bold", f"Files in {directory}:"))
    out.say(
        f"  {trail.name:<12} the audit trail: one JSON event per line, hash-chained"
    )
    out.say(f"  {key.name:<12} the chain's HMAC key")
    out.say(f"  {rules_file.name:<12} the rules that raised the alerts above")
    out.say(f"  {report.name:<12} the HTML report: open it in a browser")
    out.say()
    out.say(style("bold", "Try next:"))
    for line in (
        f"auditloop tail {trail} -n 20",
        f"auditloop query {trail} --actor bob --table",
        f"auditloop summary {trail}",
        f"auditloop replay {trail} --rules {rules_file}",
        f"auditloop verify {trail} --key-file {key}",
        f"auditloop report {trail} --key-file {key} -o {report}",
    ):
        out.say(f"  {line}")
