"""``auditloop report``: content against independent counts, and a real browser."""

from __future__ import annotations

import gzip
import re
import struct
import subprocess
import zlib
from collections import Counter
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import orjson
import pytest

from auditloop import rules
from auditloop._cli import main
from cli_trail import Trail, make_chained, make_trail

CHROMIUM = Path("/usr/bin/chromium")
COLOURS = {
    "success": (0x2F, 0x9E, 0x44),
    "denied": (0xF0, 0x8C, 0x00),
    "failure": (0xE0, 0x31, 0x31),
}
EVIL = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


def failure_rules() -> list[rules.Rule]:
    return [
        rules.Threshold(
            "failures",
            match=rules.match(outcome=("failure", "denied")),
            group_by=["actor.id"],
            at_least=4,
            within=timedelta(minutes=5),
        )
    ]


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Trail:
    directory = tmp_path_factory.mktemp("report")
    made = make_trail(directory, n=500, rule_list=failure_rules())
    with made.base.open("ab") as stream:  # after the torn line: now it is garbage
        stream.write(b"\n")
        stream.write(
            orjson.dumps(
                {
                    "id": "evil",
                    "time": made.events[-1].stamp,
                    "action": "document.read",
                    "outcome": "success",
                    "actor": {"id": EVIL},
                    "target": {"id": EVIL},
                }
            )
            + b"\n"
        )
    return made


@pytest.fixture(scope="module")
def page(trail: Trail, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report-out") / "report.html"
    assert 0 == main(["report", str(trail.base), "-o", str(out)])
    return out


def alert_events(trail: Trail) -> list[dict[str, object]]:
    found = []
    for path in trail.files:
        data = (
            gzip.decompress(path.read_bytes())
            if path.suffix == ".gz"
            else path.read_bytes()
        )
        for line in data.splitlines():
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("action") == "auditloop.alert":
                found.append(record)
    return found


class Tags(HTMLParser):
    """Collects every tag and attribute name of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)


class TestReportContent:
    def test_is_self_contained(self, page: Path) -> None:
        html = page.read_text()
        parser = Tags()
        parser.feed(html)

        assert html.startswith("<!DOCTYPE html>")
        assert "Content-Security-Policy" in html
        assert {"html", "head", "meta", "title", "style", "body", "svg"} <= parser.tags
        assert not parser.tags & {"script", "link", "img", "iframe", "object", "embed"}
        assert not parser.attributes & {"src", "href", "xlink:href", "srcset", "action"}
        assert not [a for a in parser.attributes if a.startswith("on")]
        for outside in ("url(", "@import", "http://", "https://"):
            assert outside not in html.lower()

    def test_event_data_is_escaped(self, page: Path) -> None:
        html = page.read_text()

        assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img" in html
        assert "<img" not in html

    def test_cards_show_independent_counts(self, trail: Trail, page: Path) -> None:
        html = page.read_text()
        alerts = alert_events(trail)
        total = len(trail.events) + len(alerts) + 1  # + the evil event
        outcomes = Counter(e.outcome for e in trail.events)
        fired = sum(1 for a in alerts if a["attributes"]["status"] == "firing")  # type: ignore[index]

        assert f"<b>{total:,}</b><span>events</span>" in html
        assert f"failure rate ({outcomes['failure']:,})" in html
        assert f"denial rate ({outcomes['denied']:,})" in html
        assert re.search(rf">{fired}</span></b><span>alerts fired</span>", html)
        assert f"{trail.garbage_lines} unreadable lines skipped" in html

    def test_top_actors_rows_match(self, trail: Trail, page: Path) -> None:
        html = page.read_text()

        for actor in ("alice", "bob", "carol", "mallory"):
            mine = [e for e in trail.events if e.actor == actor]
            failures = sum(e.outcome == "failure" for e in mine)
            denied = sum(e.outcome == "denied" for e in mine)
            row = (
                f"<tr><td><code>{actor}</code></td><td class=n>{len(mine)}</td>"
                f"<td class=n>{failures}</td><td class=n>{denied}</td>"
            )
            assert row in html

    def test_the_chart_holds_every_event_once(self, trail: Trail, page: Path) -> None:
        html = page.read_text()
        chart = html[html.index('<svg id="events-chart"') :]
        chart = chart[: chart.index("</svg>")]
        per_bar = [int(n) for n in re.findall(r"UTC: (\d+) events", chart)]
        alerts = alert_events(trail)

        assert len(trail.events) + len(alerts) + 1 == sum(per_bar)
        assert 10 <= len(per_bar) <= 60
        assert chart.count('class="bar failure"') > 0

    def test_the_alert_table_lists_each_alert_event(
        self, trail: Trail, page: Path
    ) -> None:
        html = page.read_text()
        alerts = alert_events(trail)
        table = html[html.index("<table id=alerts>") :]
        table = table[: table.index("</table>")]

        assert len(alerts) >= 4
        assert len(alerts) == table.count("<tr>") - 1
        assert 'id="alert-timeline"' in html

    def test_an_unchained_trail_says_so(self, page: Path) -> None:
        html = page.read_text()

        assert 'class="warn"><b>Not chained' in html

    def test_a_chained_trail_is_verified(self, tmp_path: Path) -> None:
        key = b"report-key"
        trail = make_chained(tmp_path, key)
        (tmp_path / "k").write_bytes(key)
        out = tmp_path / "r.html"

        code = main(
            ["report", str(trail), "--key-file", str(tmp_path / "k"), "-o", str(out)]
        )

        assert 0 == code
        assert (
            'class="ok"><b>Chain intact: all 120 records verified.' in out.read_text()
        )

    def test_a_tampered_trail_lists_the_findings(self, tmp_path: Path) -> None:
        key = b"report-key"
        trail = make_chained(tmp_path, key)
        (tmp_path / "k").write_bytes(key)
        lines = trail.read_bytes().splitlines(keepends=True)
        lines[5] = lines[5].replace(b"document.read", b"document.edit")
        trail.write_bytes(b"".join(lines))
        out = tmp_path / "r.html"

        main(["report", str(trail), "--key-file", str(tmp_path / "k"), "-o", str(out)])

        html = out.read_text()
        assert 'class="bad"><b>Integrity check FAILED: 1 finding.' in html
        assert f"<code>{trail}:6</code></td><td>modified</td>" in html

    def test_an_unwritable_output_exits_2(
        self, trail: Trail, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        out = tmp_path / "missing-dir" / "r.html"

        code = main(["report", str(trail.base), "-o", str(out)])

        assert 2 == code
        assert f"{out}: cannot write" in capsys.readouterr().err

    def test_an_empty_trail_still_renders(self, tmp_path: Path) -> None:
        empty = tmp_path / "empty.jsonl"
        empty.write_bytes(b"")
        out = tmp_path / "r.html"

        assert 0 == main(["report", str(empty), "-o", str(out)])
        assert "No <code>auditloop.alert</code> events" in out.read_text()


# -- a real browser -------------------------------------------------------------


def chromium(
    page: Path, tmp_path: Path, *flags: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--enable-logging=stderr",
            "--v=0",
            *flags,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def console_messages(stderr: str) -> list[str]:
    """What the page logged to its console (Chromium prints it as CONSOLE lines)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA PNG into rows of RGB bytes (stdlib only)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks, header = 8, [], b""
    while pos < len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + size]
        pos += 12 + size
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8
    assert colour in (2, 6)
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * bpp
    previous = bytearray(stride)
    rows = []
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:
            for x in range(bpp, stride):
                line[x] = (line[x] + line[x - bpp]) & 0xFF
        elif kind == 2:
            line = bytearray(
                (a + b) & 0xFF for a, b in zip(line, previous, strict=True)
            )
        elif kind == 3:
            for x in range(stride):
                left = line[x - bpp] if x >= bpp else 0
                line[x] = (line[x] + (left + previous[x]) // 2) & 0xFF
        elif kind == 4:
            for x in range(stride):
                a = line[x - bpp] if x >= bpp else 0
                b = previous[x]
                c = previous[x - bpp] if x >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[x] = (line[x] + pred) & 0xFF
        rows.append(
            bytes(line)
            if bpp == 3
            else bytes(line[i] for i in range(stride) if i % 4 != 3)
        )
        previous = line
    return width, height, rows


def colour_pixels(rows: list[bytes]) -> Counter[str]:
    counts: Counter[str] = Counter()
    wanted = {bytes(rgb): name for name, rgb in COLOURS.items()}
    for row in rows:
        for x in range(0, len(row), 3):
            name = wanted.get(row[x : x + 3])
            if name:
                counts[name] += 1
    return counts


needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium is not installed (tools/ensure-chromium.sh installs it; "
    "make test runs it)",
)


@needs_chromium
class TestInChromium:
    def test_renders_its_charts_without_console_errors(
        self, page: Path, tmp_path: Path
    ) -> None:
        shot = tmp_path / "report.png"

        done = chromium(
            page, tmp_path, "--window-size=1100,900", f"--screenshot={shot}"
        )
        dom = chromium(page, tmp_path, "--dump-dom")

        assert 0 == done.returncode, done.stderr[-2000:]
        assert [] == console_messages(done.stderr)
        assert [] == console_messages(dom.stderr)
        assert '<svg id="events-chart"' in dom.stdout
        assert dom.stdout.count('<rect class="bar success"') >= 10
        width, height, rows = decode_png(shot.read_bytes())
        pixels = colour_pixels(rows)
        assert (1100, 900) == (width, height)
        # The stacked bars are on screen: thousands of pixels of each outcome.
        assert pixels["success"] > 5000, pixels
        assert pixels["failure"] > 500, pixels
        assert pixels["denied"] > 500, pixels

    def test_the_checks_catch_a_broken_page(self, tmp_path: Path) -> None:
        broken = tmp_path / "broken.html"
        broken.write_text(
            "<!DOCTYPE html><html><body><p>no chart</p>"
            "<script>console.error('boom'); missing();</script></body></html>"
        )
        shot = tmp_path / "broken.png"

        done = chromium(
            broken, tmp_path, "--window-size=400,300", f"--screenshot={shot}"
        )

        messages = console_messages(done.stderr)
        assert 2 == len(messages)
        assert "boom" in messages[0]
        assert "missing is not defined" in messages[1]
        assert Counter() == colour_pixels(decode_png(shot.read_bytes())[2])
