"""``auditloop report``: one self-contained HTML file with charts.

The page has no script at all and loads nothing: styles are inline, charts
are inline SVG (tooltips are SVG ``<title>`` elements), and a
Content-Security-Policy forbids every external fetch, so it can be mailed,
archived or opened offline. Every value from event data is HTML-escaped.
"""

from __future__ import annotations

import argparse
import html
import math
import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson

from auditloop._cli._common import (
    EXIT_OK,
    CLIError,
    HelpFormatter,
    Issues,
    expand_paths,
    scan,
    time_key,
)
from auditloop._cli._stats import TrailStats
from auditloop._cli.verify import Verdict, check_integrity, read_key

__all__ = ["Alert", "alert_rows", "register", "render_report", "run"]

EXAMPLES = """\
examples:
  auditloop report audit.jsonl -o report.html
  auditloop report audit.jsonl* --key-file audit.key -o report.html
"""

#: Outcomes in stacking order (bottom first) and their colours.
OUTCOME_COLOURS: Final = {
    "success": "#2f9e44",
    "unknown": "#868e96",
    "denied": "#f08c00",
    "failure": "#e03131",
}
#: Bucket lengths the time charts choose from (seconds), shortest first.
BUCKETS: Final = (60, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400, 604800)
MAX_BARS: Final = 60
TOP: Final = 10
MAX_ALERT_ROWS: Final = 200
MAX_TIMELINE_ROWS: Final = 30
MAX_FINDINGS: Final = 100

_CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
       margin: 0 auto; max-width: 1040px; padding: 24px; color: #212529; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 8px; border-bottom: 1px solid #dee2e6; }
.meta { color: #6c757d; margin: 0 0 16px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { border: 1px solid #dee2e6; border-radius: 6px; padding: 10px 14px;
        min-width: 130px; }
.card b { display: block; font-size: 22px; }
.card > span { color: #6c757d; }
.ok { color: #2b8a3e; } .bad { color: #c92a2a; } .warn { color: #e67700; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 3px 8px; border-bottom: 1px solid #f1f3f5;
         vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
.hbar { height: 10px; background: #4c6ef5; display: inline-block; }
.hbar.f { background: #e03131; } .hbar.d { background: #f08c00; }
.cols { display: grid; grid-template-columns: 1fr 1fr; gap: 24px; }
code { font-size: 12px; word-break: break-all; }
svg { display: block; max-width: 100%; height: auto; }
svg text { font: 11px system-ui, sans-serif; fill: #495057; }
.legend span { display: inline-block; margin-right: 14px; }
.legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px; }
footer { margin-top: 40px; color: #868e96; font-size: 12px; }
"""


def register(commands: Any) -> None:
    """Add the ``report`` subcommand to the *commands* subparsers."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "report",
        help="write a self-contained HTML report with charts",
        description="Write one self-contained HTML file (no scripts, no external "
        "fonts or styles): events over time stacked by outcome, failure rate, top "
        "actors and actions, the alert timeline (from auditloop.alert events) and "
        "the integrity verdict.",
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "files", nargs="+", metavar="FILE", help="JSON-lines audit file"
    )
    parser.add_argument(
        "-o", "--output", required=True, metavar="OUT.html", help="where to write"
    )
    parser.add_argument(
        "--key-file",
        metavar="K",
        help="HMAC key of a chained trail, for the integrity verdict",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``report``.

    Returns:
        0 when the report was written (whatever its verdict), 2 on bad input.
    """
    paths = expand_paths(args.files)
    key = read_key(args.key_file) if args.key_file else None
    issues = Issues()
    stats = TrailStats()
    stats.add_all(scan(paths, issues))
    verdict = check_integrity(paths, key)
    page = render_report(
        stats,
        files=[str(p) for p in paths],
        verdict=verdict,
        unreadable=issues.lines,
        generated=time.time(),
    )
    output = Path(args.output)
    try:
        output.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise CLIError(f"{args.output}: cannot write: {exc.strerror or exc}") from None
    code = issues.close()
    print(f"report written to {output} ({stats.events} events)")
    sys.stdout.flush()
    return code or EXIT_OK


# -- the page ---------------------------------------------------------------


def _e(value: Any) -> str:
    text = (
        value if isinstance(value, str) else orjson.dumps(value, default=repr).decode()
    )
    return html.escape(text, quote=True)


def _fmt_time(seconds: float, with_date: bool = True) -> str:
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%d %H:%M" if with_date else "%H:%M")


def _nice_max(value: int) -> int:
    """The smallest round number (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8 × 10^k,
    an even integer above 10) at or above *value*, so the axis halves are round."""
    if value <= 2:
        return 2
    magnitude = 1
    while True:
        for step in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8):
            nice = round(step * magnitude)
            if nice >= value and nice % 2 == 0:
                return nice
        magnitude *= 10


def _bucket_seconds(span: float) -> int:
    for seconds in BUCKETS:
        if span / seconds < MAX_BARS:
            return seconds
    weeks = math.ceil(span / BUCKETS[-1] / MAX_BARS)  # whole weeks, still 60 bars
    return BUCKETS[-1] * weeks


def _timeline(stats: TrailStats) -> tuple[int, list[tuple[float, Counter[str]]]]:
    """Buckets from the first to the last event, empty ones included."""
    if not stats.first or not stats.last:
        return 60, []
    first = _seconds(stats.first)
    last = _seconds(stats.last)
    seconds = _bucket_seconds(last - first)
    counts = stats.per_bucket(seconds)
    start = first - first % seconds
    buckets = []
    moment = start
    while moment <= last:
        buckets.append((moment, counts.get(moment, Counter())))
        moment += seconds
    return seconds, buckets


def _seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _events_chart(buckets: Sequence[tuple[float, Counter[str]]], seconds: int) -> str:
    width, height, left, bottom, top = 960, 260, 48, 28, 10
    plot_w, plot_h = width - left - 10, height - bottom - top
    peak = _nice_max(max((sum(c.values()) for _, c in buckets), default=1))
    slot = plot_w / max(len(buckets), 1)
    bar_w = max(slot * 0.8, 1.0)
    with_date = seconds >= 86400 or (
        len(buckets) > 1
        and _fmt_time(buckets[0][0])[:10] != _fmt_time(buckets[-1][0])[:10]
    )
    parts = [_svg_open("events-chart", width, height, "Events over time by outcome")]
    for fraction in (0, 0.5, 1):
        y = top + plot_h * (1 - fraction)
        parts.append(
            f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" '
            'stroke="#e9ecef"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{round(peak * fraction)}</text>"
        )
    label_every = max(1, len(buckets) // 8)
    for i, (start, counts) in enumerate(buckets):
        x = left + i * slot + (slot - bar_w) / 2
        total = sum(counts.values())
        y = top + plot_h
        detail = ", ".join(f"{n} {_e(o)}" for o, n in sorted(counts.items()))
        parts.append(
            f'<g class="bucket"><title>{_fmt_time(start)} UTC: {total} events'
            f"{': ' + detail if detail else ''}</title>"
        )
        for outcome in _stack_order(counts):
            n = counts[outcome]
            h = plot_h * n / peak
            y -= h
            known = outcome in OUTCOME_COLOURS
            colour = OUTCOME_COLOURS[outcome if known else "unknown"]
            parts.append(
                f'<rect class="bar {outcome if known else "other"}" '
                f'x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{colour}"/>'
            )
        parts.append("</g>")
        if i % label_every == 0:
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{height - 10}" text-anchor="middle">'
                f"{_fmt_time(start, with_date)}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _svg_open(name: str, width: int, height: int, label: str) -> str:
    return (
        f'<svg id="{name}" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{label}">'
    )


def _stack_order(counts: Counter[str]) -> list[str]:
    known = [o for o in OUTCOME_COLOURS if counts.get(o)]
    return known + sorted(o for o in counts if o not in OUTCOME_COLOURS and counts[o])


def _rate_chart(buckets: Sequence[tuple[float, Counter[str]]]) -> str:
    width, height, left, top, plot_h = 960, 120, 48, 10, 90
    plot_w = width - left - 10
    slot = plot_w / max(len(buckets), 1)
    points = []
    for i, (start, counts) in enumerate(buckets):
        total = sum(counts.values())
        if not total:
            continue
        rate = (counts["failure"] + counts["denied"]) / total
        x = left + i * slot + slot / 2
        y = top + plot_h * (1 - rate)
        points.append((x, y, start, rate, total))
    parts = [_svg_open("rate-chart", width, height, "Failure and denial rate")]
    for fraction in (0, 0.5, 1):
        y = top + plot_h * (1 - fraction)
        parts.append(
            f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="#e9ecef"/><text x="{left - 6}" y="{y + 4:.1f}" '
            f'text-anchor="end">{fraction:.0%}</text>'
        )
    if points:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y, *_ in points)
        parts.append(
            f'<polyline points="{path}" fill="none" stroke="#e03131" stroke-width="2"/>'
        )
        parts.extend(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#e03131"><title>'
            f"{_fmt_time(start)} UTC: {rate:.1%} of {total} failed or denied"
            "</title></circle>"
            for x, y, start, rate, total in points
        )
    parts.append("</svg>")
    return "".join(parts)


class Alert:
    """One ``auditloop.alert`` event, as the report shows it."""

    __slots__ = ("group", "rule", "status", "time", "value")

    def __init__(self, record: dict[str, Any]) -> None:
        attributes = record.get("attributes")
        attrs = attributes if isinstance(attributes, dict) else {}
        self.rule = str(attrs.get("rule", "?"))
        self.status = str(attrs.get("status", "?"))
        # When the transition happened (an Absence fires at its deadline, which
        # the engine notices at the next event): fired_at / resolved_at.
        moment = attrs.get("resolved_at" if self.status == "resolved" else "fired_at")
        self.time = time_key(moment) or time_key(record.get("time")) or ""
        group = attrs.get("group")
        self.group = (
            group
            if isinstance(group, str)
            else orjson.dumps(group, option=orjson.OPT_SORT_KEYS, default=repr).decode()
        )
        self.value = attrs.get("value")


def alert_rows(stats: TrailStats) -> list[Alert]:
    """The alert events of the trail, in time order."""
    return sorted((Alert(r) for r in stats.alerts), key=lambda a: a.time)


def _alert_timeline(alerts: Sequence[Alert], first: float, last: float) -> str:
    spans: dict[tuple[str, str], list[tuple[float, float | None]]] = {}
    for alert in alerts:
        lane = spans.setdefault((alert.rule, alert.group), [])
        moment = _seconds(alert.time) if alert.time else first
        if alert.status == "firing":
            if not lane or lane[-1][1] is not None:
                lane.append((moment, None))
        elif alert.status == "resolved" and lane and lane[-1][1] is None:
            lane[-1] = (lane[-1][0], moment)
    lanes = list(spans.items())[:MAX_TIMELINE_ROWS]
    row_h, label_w, width = 22, 300, 960
    plot_w = width - label_w - 10
    height = row_h * len(lanes) + 24
    span = max(last - first, 1.0)

    def x_of(moment: float) -> float:
        return label_w + plot_w * (moment - first) / span

    parts = [_svg_open("alert-timeline", width, height, "Alert timeline")]
    for i, ((rule, group), intervals) in enumerate(lanes):
        y = i * row_h + 4
        label = f"{rule} {group}"
        if len(label) > 48:
            label = label[:47] + "…"
        parts.append(
            f'<text x="0" y="{y + 13}">{_e(label)}<title>{_e(rule)} {_e(group)}'
            "</title></text>"
            f'<line x1="{label_w}" x2="{width - 10}" y1="{y + 9}" y2="{y + 9}" '
            'stroke="#e9ecef"/>'
        )
        for start, end in intervals:
            x0 = x_of(start)
            x1 = x_of(end if end is not None else last)
            state = f"resolved {_fmt_time(end)}" if end is not None else "still firing"
            parts.append(
                f'<rect class="alert-span" x="{x0:.1f}" y="{y + 2}" '
                f'width="{max(x1 - x0, 3):.1f}" height="14" rx="3" fill="#c92a2a" '
                f'fill-opacity="{0.85 if end is not None else 0.5}"><title>{_e(rule)} '
                f"fired {_fmt_time(start)} UTC, {state}</title></rect>"
            )
    axis_y = height - 6
    parts.append(
        f'<text x="{label_w}" y="{axis_y}">{_fmt_time(first)}</text>'
        f'<text x="{width - 10}" y="{axis_y}" text-anchor="end">'
        f"{_fmt_time(last)}</text></svg>"
    )
    return "".join(parts)


def _top_table(title: str, per_key: dict[str, Counter[str]]) -> str:
    ranked = sorted(per_key.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    peak = max((sum(c.values()) for _, c in ranked), default=1)
    rows = []
    for key, counts in ranked[:TOP]:
        n = sum(counts.values())
        failures, denied = counts["failure"], counts["denied"]
        bars = "".join(
            f'<span class="hbar{css}" style="width:{100 * part / peak:.1f}px"></span>'
            for css, part in (
                ("", n - failures - denied),
                (" f", failures),
                (" d", denied),
            )
        )
        rows.append(
            f"<tr><td><code>{_e(key)}</code></td><td class=n>{n}</td>"
            f"<td class=n>{failures}</td><td class=n>{denied}</td><td>{bars}</td></tr>"
        )
    more = len(ranked) - TOP
    caption = f"<p class=meta>+{more} more</p>" if more > 0 else ""
    return (
        f"<div><h2>Top {title}</h2><table><tr><th>{title[:-1]}</th><th class=n>events"
        "</th><th class=n>failed</th><th class=n>denied</th><th></th></tr>"
        + "".join(rows)
        + f"</table>{caption}</div>"
    )


def _verdict_html(verdict: Verdict) -> str:
    css = {"ok": "ok", "failed": "bad"}.get(verdict.status, "warn")
    parts = [
        f'<p id="integrity-verdict" class="{css}"><b>{_e(verdict.headline)}</b></p>'
    ]
    if verdict.findings:
        rows = "".join(
            f"<tr><td><code>{_e(f.file)}:{f.line}</code></td><td>{_e(f.kind)}</td>"
            f"<td>{_e(f.message)}</td></tr>"
            for f in verdict.findings[:MAX_FINDINGS]
        )
        parts.append(
            f"<table><tr><th>where</th><th>kind</th><th>finding</th></tr>{rows}</table>"
        )
        if len(verdict.findings) > MAX_FINDINGS:
            parts.append(
                f"<p class=meta>+{len(verdict.findings) - MAX_FINDINGS} more findings "
                "(auditloop verify lists them all)</p>"
            )
    return "".join(parts)


def render_report(
    stats: TrailStats,
    *,
    files: Sequence[str],
    verdict: Verdict,
    unreadable: int,
    generated: float,
) -> str:
    """Return the whole HTML page for *stats* (a pure function of its inputs)."""
    from auditloop import __version__

    outcomes = stats.by(2)
    failure_rate, denial_rate = stats.rate("failure"), stats.rate("denied")
    alerts = alert_rows(stats)
    fired = sum(1 for a in alerts if a.status == "firing")
    verdict_css = {"ok": "ok", "failed": "bad"}.get(verdict.status, "warn")
    cards = [
        (f"{stats.events:,}", "events"),
        (f"{len(stats.by(1)):,}", "actors"),
        (
            _span("bad" if failure_rate else "ok", f"{failure_rate:.1%}"),
            f"failure rate ({outcomes['failure']:,})",
        ),
        (
            _span("warn" if denial_rate else "ok", f"{denial_rate:.1%}"),
            f"denial rate ({outcomes['denied']:,})",
        ),
        (_span("bad" if fired else "ok", str(fired)), "alerts fired"),
        (_span(verdict_css, _e(verdict.label)), "integrity"),
    ]
    period = (
        f"{_e(stats.first)} to {_e(stats.last)}" if stats.first else "no timed events"
    )
    body = [
        "<h1>Audit trail report</h1>",
        f'<p class="meta">{period} · {len(files)} file(s)'
        + (f" · {unreadable} unreadable lines skipped" if unreadable else "")
        + "</p>",
        '<div class="cards">'
        + "".join(f"<div class=card><b>{v}</b><span>{k}</span></div>" for v, k in cards)
        + "</div>",
    ]
    seconds, buckets = _timeline(stats)
    if buckets:
        legend = "".join(
            f'<span><i style="background:{c}"></i>{o}</span>'
            for o, c in OUTCOME_COLOURS.items()
        )
        every = _duration(seconds)
        body += [
            f"<h2>Events over time <small class=meta>(per {every}, UTC)</small></h2>",
            f'<p class="legend">{legend}</p>',
            _events_chart(buckets, seconds),
            "<h2>Failure and denial rate</h2>",
            _rate_chart(buckets),
        ]
    body.append(
        '<div class="cols">'
        + _top_table("actors", stats.actor_outcomes())
        + _top_table("actions", stats.action_outcomes())
        + "</div>"
    )
    body.append("<h2>Alerts</h2>")
    if alerts and stats.first and stats.last:
        body.append(
            _alert_timeline(alerts, _seconds(stats.first), _seconds(stats.last))
        )
        rows = "".join(
            f"<tr><td>{_e(a.time)}</td><td><code>{_e(a.rule)}</code></td>"
            f'<td class="{"bad" if a.status == "firing" else "ok"}">{_e(a.status)}</td>'
            f"<td><code>{_e(a.group)}</code></td><td>{_e(a.value)}</td></tr>"
            for a in alerts[:MAX_ALERT_ROWS]
        )
        body.append(
            "<table id=alerts><tr><th>time</th><th>rule</th><th>status</th>"
            f"<th>group</th><th>value</th></tr>{rows}</table>"
        )
    else:
        body.append("<p>No <code>auditloop.alert</code> events in this trail.</p>")
    body += ["<h2>Integrity</h2>", _verdict_html(verdict)]
    generated_at = datetime.fromtimestamp(generated, UTC).strftime(
        "%Y-%m-%d %H:%M:%S UTC"
    )
    body.append(
        f"<footer>Generated by auditloop {_e(__version__)} at {generated_at} from "
        + ", ".join(f"<code>{_e(f)}</code>" for f in files)
        + "</footer>"
    )
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>auditloop report</title><style>{_CSS}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )


def _span(css: str, html_text: str) -> str:
    return f'<span class="{css}">{html_text}</span>'


def _duration(seconds: int) -> str:
    for unit, size in (
        ("week", 604800),
        ("day", 86400),
        ("hour", 3600),
        ("minute", 60),
    ):
        if seconds % size == 0:
            n = seconds // size
            return unit if n == 1 else f"{n} {unit}s"
    return f"{seconds} s"
