"""``auditloop test-rules``: rule tests written as data, promtool-style."""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path
from typing import Any

from auditloop._cli._common import EXIT_FINDINGS, EXIT_OK, CLIError, HelpFormatter
from auditloop._cli._format import Style, add_color_argument, short
from auditloop._cli.replay import load_rules
from auditloop._render import escape

__all__ = ["register", "run"]

EXAMPLES = """\
examples:
  auditloop test-rules rule_tests.toml
  auditloop test-rules tests/rules/*.toml        # in CI: exit 1 on any failure

A test file names the rules (rule_files = ["rules.toml"], relative to the
test file, or inline [[rules]]) and holds [[tests]]: events at times
([[tests.events]] at = "2m", action = ..., repeat = 5, every = "30s") and the
alerts expected at times ([[tests.expect]] at = "5m", firing = [...],
resolved = [...]). Rule actions (then, on_resolve) are neither imported nor
run. See docs/testing-rules.md.
exit status: 0 when every test passes, 1 when one fails, 2 for a file that
cannot be used.
"""


def register(commands: Any) -> None:
    """Add the ``test-rules`` subcommand to the *commands* subparsers."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "test-rules",
        help="run rule tests written as data (events at times, expected alerts)",
        description="Run rule tests written in TOML, in the spirit of promtool "
        "test rules: feed events at given times through the rules and compare "
        "the alerts firing (and resolved) at given times with the expected "
        "ones. Failures print an expected/got diff.",
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "files", nargs="+", metavar="TESTS.toml", help="a rule test file"
    )
    add_color_argument(parser)
    parser.set_defaults(run=run)


def _run_file(name: str) -> Any:
    """Run the tests of file *name*; return the harness result.

    Raises:
        CLIError: for a file (or rule file) that cannot be used.
    """
    from auditloop.exceptions import ConfigurationError
    from auditloop.testing import run_rule_tests

    path = Path(name)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CLIError(f"{name}: cannot read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CLIError(f"{name}: not valid TOML: {exc}") from None
    files = data.get("rule_files", [])
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise CLIError(f"{name}: rule_files must be a list of paths")
    rule_list: list[Any] = []
    for rule_file in files:
        rule_list += load_rules(str(path.parent / rule_file), allow_empty=True)
    try:
        if data.get("rules"):
            from auditloop import rules

            rule_list += rules.load({"rules": data["rules"]}, actions=False)
        if not rule_list:
            raise CLIError(f"{name}: no rules: give rule_files or [[rules]]")
        return run_rule_tests(data, rules=rule_list)
    except ConfigurationError as exc:
        message = str(exc).removeprefix("tests: ").removeprefix("rules: ")
        raise CLIError(f"{name}: {message}") from None


def run(args: argparse.Namespace) -> int:
    """Run ``test-rules``.

    Returns:
        0 when every test passes, 1 when one fails, 2 on a bad file.
    """
    style = Style.for_stream(args.color, sys.stdout)
    failed = False
    for name in args.files:
        result = _run_file(name)
        lines = [escape(line) for line in result.report().splitlines()]
        headline, rest = lines[0], "\n".join(lines[1:])
        colour = "ok" if result.ok else "bad"
        print(
            f"{short(name)}: {style(colour, headline)}" + (f"\n{rest}" if rest else "")
        )
        failed = failed or not result.ok
    sys.stdout.flush()
    return EXIT_FINDINGS if failed else EXIT_OK
