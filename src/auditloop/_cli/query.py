"""``auditloop query``: the events that match filters, as lines, JSON or a table."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from auditloop._cli._common import HelpFormatter, Issues, expand_paths, scan
from auditloop._cli._filter import add_filter_arguments, build_filter
from auditloop._cli._format import (
    EventWriter,
    Style,
    add_color_argument,
    format_table,
    short,
)

__all__ = ["register", "run"]

EXAMPLES = """\
examples:
  auditloop query audit.jsonl --actor alice
  auditloop query audit.jsonl* --action 'permission.*' --since 1h --table
  auditloop query audit.jsonl --outcome failure --outcome denied --json
  auditloop query audit.jsonl --where attributes.tenant=acme --since 2026-01-31
  auditloop query audit.jsonl --json | jq -r .target.id | sort | uniq -c
"""

_COLUMNS = ("TIME", "OUTCOME", "ACTOR", "ACTION", "TARGET")


def register(commands: Any) -> None:
    """Add the ``query`` subcommand to the *commands* subparsers."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "query",
        help="print the events that match filters",
        description="Print the events of audit files that match every filter, in "
        "file order. Rotated and gzipped files are read oldest first; unreadable "
        "lines are reported on stderr (file:line) and skipped.",
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "files", nargs="+", metavar="FILE", help="JSON-lines audit file"
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument(
        "--json", action="store_true", help="one JSON object per line (for jq)"
    )
    output.add_argument(
        "--table",
        action="store_true",
        help="aligned columns: time, outcome, actor, action, target",
    )
    add_color_argument(parser)
    add_filter_arguments(parser)
    parser.set_defaults(run=run)


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("id")
    return "-" if value is None else short(value, 80)


def run(args: argparse.Namespace) -> int:
    """Run ``query``.

    Returns:
        0 (also when nothing matched), or 2 when a file could not be read.
    """
    issues = Issues()
    accept = build_filter(args)
    records = scan(expand_paths(args.files), issues)
    if args.table:
        rows = [
            [
                _cell(r.get("time")),
                _cell(r.get("outcome")),
                _cell(r.get("actor")),
                _cell(r.get("action")),
                _cell(r.get("target")),
            ]
            for r in records
            if accept is None or accept(r)
        ]
        if rows:
            print(format_table(_COLUMNS, rows))
        sys.stdout.flush()
        return issues.close()
    writer = EventWriter(
        sys.stdout, json=args.json, style=Style.for_stream(args.color, sys.stdout)
    )
    write = writer.write
    if accept is None:
        for record in records:
            write(record)
    else:
        for record in records:
            if accept(record):
                write(record)
    writer.flush()
    return issues.close()
