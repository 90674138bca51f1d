"""The ``auditloop`` command line: read, analyse and check audit trails.

One module per command, each with ``register(commands)`` adding its
subparser (and setting ``run``) and ``run(args) -> int``. Exit codes are the
same for every command: 0 ok, 1 findings (integrity problems, alerts with
``--fail-on-alert``, failed rule tests), 2 usage or input errors.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Sequence

from auditloop._cli._common import EXIT_USAGE, CLIError, HelpFormatter
from auditloop._render import escape

__all__ = ["build_parser", "main"]

_COMMANDS = (
    "demo",
    "tail",
    "query",
    "summary",
    "replay",
    "test_rules",
    "verify",
    "report",
)

DESCRIPTION = """\
Read, analyse and check auditloop audit trails (JSON-lines files, rotated
FILE.N and gzipped FILE.N.gz siblings included).

exit codes: 0 ok, 1 findings (integrity problems, alerts with
--fail-on-alert, failed rule tests), 2 usage or input error.
"""

EXAMPLES = """\
examples:
  auditloop demo                            the whole loop in ~12 seconds
  auditloop tail -f audit.jsonl             watch events as they happen
  auditloop query audit.jsonl --actor alice --since 1h
  auditloop summary audit.jsonl*
  auditloop replay audit.jsonl --rules rules.toml --fail-on-alert
  auditloop test-rules rule_tests.toml
  auditloop verify audit.jsonl --key-file audit.key
  auditloop report audit.jsonl -o report.html

'auditloop COMMAND --help' shows each command's options and examples.
"""


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of every subcommand."""
    import importlib

    parser = argparse.ArgumentParser(
        prog="auditloop",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    from auditloop import __version__

    parser.add_argument(
        "--version", action="version", version=f"auditloop {__version__}"
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for name in _COMMANDS:
        module = importlib.import_module(f"auditloop._cli.{name}")
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``auditloop`` command line with *argv* (default: ``sys.argv``).

    Returns:
        The exit code: 0 ok, 1 findings, 2 usage or input error
        (130 after Ctrl-C).
    """
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            # Never die on a character the terminal's encoding lacks.
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except CLIError as exc:
        # Escaped: a message may quote a file name with control characters.
        message = escape(str(exc))
        print(f"{parser.prog} {_command(argv)}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, like coreutils.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130
    return code


def _command(argv: Sequence[str] | None) -> str:
    words = list(sys.argv[1:] if argv is None else argv)
    return next((w for w in words if not w.startswith("-")), "")
