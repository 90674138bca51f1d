"""``auditloop replay``: backtest a rule set on a recorded trail."""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from auditloop._cli._common import (
    EXIT_FINDINGS,
    EXIT_OK,
    CLIError,
    HelpFormatter,
    Issues,
    expand_paths,
    parse_time_arg,
    scan,
)
from auditloop._cli._format import Style, add_color_argument, dumps_safe, short

__all__ = ["load_rules", "register", "run", "transitions"]

EXAMPLES = """\
examples:
  auditloop replay audit.jsonl --rules rules.toml
  auditloop replay audit.jsonl* --rules rules.toml --json | jq -c .group
  auditloop replay last-week.jsonl --rules candidate.toml --fail-on-alert   # in CI

Event time drives the rule clock, so a trail recorded live replays to the
alerts that fired live. Rule actions (then, on_resolve) are neither
imported nor run. An absence rule without group_by, or with expected=,
watches from the live process's start, which the trail does not record:
pass it as --start, else the replay watches from the first record.
exit status: 0, or 1 when an alert fired and --fail-on-alert is given,
2 for bad input (unreadable files, invalid rules).
"""


def register(commands: Any) -> None:
    """Add the ``replay`` subcommand to the *commands* subparsers."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "replay",
        help="run a recorded trail through rules: what would have fired",
        description="Backtest a rule set on historical audit files: every alert "
        "that would have fired and resolved, when (event time), for which group, "
        "with the ids of its evidence events.",
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "files", nargs="+", metavar="FILE", help="JSON-lines audit file"
    )
    parser.add_argument(
        "--rules", required=True, metavar="RULES.toml", help="the rule set (TOML)"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="one transition per line: rule, status, group, time, value, evidence",
    )
    parser.add_argument(
        "--start",
        type=parse_time_arg,
        metavar="WHEN",
        help="the rule clock's start (when the live process started; RFC 3339 "
        "or a duration ago): absence rules watch expected groups from then",
    )
    parser.add_argument(
        "--fail-on-alert",
        action="store_true",
        help="exit 1 when any alert fires (for CI)",
    )
    add_color_argument(parser)
    parser.set_defaults(run=run)


def load_rules(name: str, *, allow_empty: bool = False) -> list[Any]:
    """Load the rules of TOML file *name* without importing their actions.

    Raises:
        CLIError: when the file cannot be read, a rule is invalid, or
            (unless *allow_empty*) the file holds no rule.
    """
    from auditloop import rules
    from auditloop.exceptions import ConfigurationError

    path = Path(name)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CLIError(f"{name}: cannot read rules: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CLIError(f"{name}: not valid TOML: {exc}") from None
    try:
        loaded = rules.load(data, actions=False)  # no action runs in a replay
    except ConfigurationError as exc:
        message = str(exc).removeprefix("rules: ")
        raise CLIError(f"{name}: {message}") from None
    if not loaded and not allow_empty:
        raise CLIError(f"{name}: no [[rules]] in the file")
    return loaded


def transitions(
    paths: Sequence[Path],
    rule_list: Sequence[Any],
    issues: Issues,
    *,
    start: float | None = None,
) -> list[Any]:
    """Replay the records of *paths* (in order) through *rule_list*.

    *start* is the rule clock's start (see ``rules.replay``).
    """
    from auditloop import rules

    return list(rules.replay(scan(paths, issues), rule_list, start=start))


def _group(group: dict[str, Any]) -> str:
    return " ".join(f"{short(k)}={short(v)}" for k, v in group.items()) or "-"


def run(args: argparse.Namespace) -> int:
    """Run ``replay``.

    Returns:
        1 when an alert fired and ``--fail-on-alert`` was given, 2 on bad
        input, else 0.
    """
    rule_list = load_rules(args.rules)
    paths = expand_paths(args.files)
    issues = Issues()
    found = [
        t.to_dict() for t in transitions(paths, rule_list, issues, start=args.start)
    ]
    if args.json:
        out = sys.stdout.buffer
        for item in found:
            out.write(dumps_safe(item) + b"\n")
        out.flush()
    else:
        style = Style.for_stream(args.color, sys.stdout)
        for item in found:
            firing = item["status"] == "firing"
            status = style(
                "bad" if firing else "ok", f"{short(item['status']).upper():<8}"
            )
            evidence = ",".join(short(e) for e in item["evidence"])
            rule = style("bold", short(item["rule"]))
            print(
                f"{style('dim', item['time'])} {status} {rule} {_group(item['group'])}"
                f" value={short(item['value'])}"
                + (f" evidence={evidence}" if evidence and firing else "")
            )
        print(_summary(found, len(rule_list)))
    sys.stdout.flush()
    code = issues.close()
    if code:
        return code
    fired = any(item["status"] == "firing" for item in found)
    return EXIT_FINDINGS if fired and args.fail_on_alert else EXIT_OK


def _summary(found: Sequence[dict[str, Any]], rule_count: int) -> str:
    fired = sum(1 for t in found if t["status"] == "firing")
    resolved = len(found) - fired
    open_groups: dict[tuple[str, str], bool] = {}
    for item in found:
        key = (item["rule"], repr(sorted(item["group"].items())))
        open_groups[key] = item["status"] == "firing"
    still = sum(open_groups.values())
    rules = "rule" if rule_count == 1 else "rules"
    text = f"{fired} fired, {resolved} resolved ({rule_count} {rules})"
    if still:
        text += f"; {still} still firing at the end of the trail"
    return text
