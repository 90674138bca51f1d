"""``auditloop summary``: counts, rates, top failing actors, an hourly histogram."""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from auditloop._cli._common import HelpFormatter, Issues, expand_paths, scan
from auditloop._cli._format import (
    Style,
    add_color_argument,
    dumps_safe,
    format_table,
    short,
)
from auditloop._cli._stats import TrailStats

__all__ = ["register", "run", "summary_dict", "summary_text"]

#: Histogram rows at most; a longer trail is shown per day instead of per hour.
MAX_HOUR_ROWS: Final = 72
MAX_DAY_ROWS: Final = 366
_BAR_WIDTH: Final = 40

EXAMPLES = """\
examples:
  auditloop summary audit.jsonl
  auditloop summary audit.jsonl* --top 5
  auditloop summary audit.jsonl --json | jq .failure_rate
"""


def register(commands: Any) -> None:
    """Add the ``summary`` subcommand to the *commands* subparsers."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "summary",
        help="counts by action, actor, outcome, category; rates; histogram",
        description="Summarise audit files: counts by action, actor, outcome and "
        "category, failure and denial rates, the actors with the most failed or "
        "denied events, and events per hour as a text histogram.",
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "files", nargs="+", metavar="FILE", help="JSON-lines audit file"
    )
    parser.add_argument(
        "--top", type=_positive, default=10, metavar="N", help="rows per table (10)"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (all counts, not only the top N)",
    )
    add_color_argument(parser)
    parser.set_defaults(run=run)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def _sorted(counts: Counter[str]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def summary_dict(stats: TrailStats, *, top: int, unreadable: int) -> dict[str, Any]:
    """The ``summary --json`` object for *stats*."""
    return {
        "events": stats.events,
        "first": stats.first,
        "last": stats.last,
        "unreadable_lines": unreadable,
        "untimed_events": stats.untimed,
        "by_outcome": _sorted(stats.by(2)),
        "by_action": _sorted(stats.by(0)),
        "by_actor": _sorted(stats.by(1)),
        "by_category": _sorted(stats.by(3)),
        "failure_rate": stats.rate("failure"),
        "denial_rate": stats.rate("denied"),
        "top_failing_actors": stats.actors_by_failures(top),
        "per_hour": stats.per_hour(),
    }


def _counts_table(title: str, counts: Counter[str], top: int, total: int) -> str:
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    rows = [[short(k, 60), str(n), f"{n / total:.1%}"] for k, n in ranked[:top]]
    text = format_table([title, "EVENTS", "SHARE"], rows)
    if len(ranked) > top:
        text += f"\n(+{len(ranked) - top} more)"
    return text


def _histogram(per_hour: dict[str, int]) -> tuple[str, str]:
    """Return (title, rows) with empty hours filled in, or per day when long."""
    if not per_hour:
        return "Events per hour", "(no timed events)"
    times = [datetime.fromisoformat(k.replace("Z", "+00:00")) for k in per_hour]
    step = timedelta(hours=1)
    label = "%Y-%m-%d %H:00"
    title = "Events per hour (UTC)"
    counts = dict(zip(times, per_hour.values(), strict=True))
    if (times[-1] - times[0]) / step >= MAX_HOUR_ROWS:
        # Per day; for a span of years, per as many days as keep it readable.
        span_days = (times[-1] - times[0]).days + 1
        step = timedelta(days=math.ceil(span_days / MAX_DAY_ROWS))
        label = "%Y-%m-%d"
        title = (
            "Events per day (UTC)"
            if step.days == 1
            else f"Events per {step.days} days (UTC)"
        )
        origin = times[0].replace(hour=0)
        days: Counter[datetime] = Counter()
        for moment, n in counts.items():
            days[origin + (moment - origin) // step * step] += n
        counts = dict(days)
    start, end = min(counts), max(counts)
    peak = max(counts.values())
    lines = []
    moment = start
    while moment <= end:
        n = counts.get(moment, 0)
        bar = "#" * max(1 if n else 0, round(n / peak * _BAR_WIDTH))
        lines.append(f"{moment.astimezone(UTC).strftime(label)}  {n:>8}  {bar}")
        moment += step
    return title, "\n".join(lines)


def summary_text(stats: TrailStats, *, top: int, unreadable: int, style: Style) -> str:
    """The readable ``summary`` report for *stats*."""
    if not stats.events:
        text = "No events."
        if unreadable:
            text += f" ({unreadable} unreadable lines skipped)"
        return text
    outcomes = stats.by(2)
    failure_rate = style("failure", f"{stats.rate('failure'):.1%}")
    denial_rate = style("denied", f"{stats.rate('denied'):.1%}")
    head = [
        style("bold", f"{stats.events} events")
        + (f" from {stats.first} to {stats.last}" if stats.first else ""),
        (
            f"failure rate {failure_rate} ({outcomes['failure']}), "
            f"denial rate {denial_rate} ({outcomes['denied']})"
        ),
    ]
    if unreadable:
        head.append(f"{unreadable} unreadable lines skipped")
    if stats.untimed:
        head.append(f"{stats.untimed} events without a valid time")
    sections = ["\n".join(head)]
    total = stats.events
    sections.append(_counts_table("OUTCOME", outcomes, top, total))
    sections.append(_counts_table("ACTION", stats.by(0), top, total))
    sections.append(_counts_table("ACTOR", stats.by(1), top, total))
    sections.append(_counts_table("CATEGORY", stats.by(3), top, total))
    failing = stats.actors_by_failures(top)
    if failing:
        rows = [
            [
                short(r["actor"], 60),
                str(r["failures"]),
                str(r["denied"]),
                str(r["events"]),
            ]
            for r in failing
        ]
        sections.append(
            style("bold", "Actors with the most failed or denied events")
            + "\n"
            + format_table(["ACTOR", "FAILURES", "DENIED", "EVENTS"], rows)
        )
    title, histogram = _histogram(stats.per_hour())
    sections.append(style("bold", title) + "\n" + histogram)
    return "\n\n".join(sections)


def run(args: argparse.Namespace) -> int:
    """Run ``summary``.

    Returns:
        0, or 2 when a file could not be read.
    """
    issues = Issues()
    stats = TrailStats()
    stats.add_all(scan(expand_paths(args.files), issues))
    if args.json:
        data = summary_dict(stats, top=args.top, unreadable=issues.lines)
        sys.stdout.write(dumps_safe(data, indent=True).decode() + "\n")
    else:
        style = Style.for_stream(args.color, sys.stdout)
        print(summary_text(stats, top=args.top, unreadable=issues.lines, style=style))
    sys.stdout.flush()
    return issues.close()
