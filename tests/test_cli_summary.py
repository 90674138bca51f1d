"""``auditloop summary`` against counts computed independently of the CLI."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest

from auditloop._cli import main
from cli_trail import Trail, make_trail


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Trail:
    return make_trail(tmp_path_factory.mktemp("summary"))


@pytest.fixture(scope="module")
def summary(trail: Trail) -> dict[str, object]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert 0 == main(["summary", str(trail.base), "--json", "--top", "3"])
    data: dict[str, object] = orjson.loads(out.getvalue())
    return data


def ranked(counts: Counter[str]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


class TestSummaryJson:
    def test_totals_and_time_range(
        self, trail: Trail, summary: dict[str, object]
    ) -> None:
        assert len(trail.events) == summary["events"]
        assert trail.events[0].stamp == summary["first"]
        assert trail.events[-1].stamp == summary["last"]
        assert trail.garbage_lines == summary["unreadable_lines"]

    @pytest.mark.parametrize(
        ("key", "field"),
        [
            ("by_action", "action"),
            ("by_actor", "actor"),
            ("by_outcome", "outcome"),
            ("by_category", "category"),
        ],
    )
    def test_counts_by_field_most_first(
        self, trail: Trail, summary: dict[str, object], key: str, field: str
    ) -> None:
        expected = ranked(Counter(getattr(e, field) for e in trail.events))

        assert expected == summary[key]
        assert list(expected) == list(summary[key])  # type: ignore[call-overload]

    def test_failure_and_denial_rates(
        self, trail: Trail, summary: dict[str, object]
    ) -> None:
        outcomes = Counter(e.outcome for e in trail.events)

        assert outcomes["failure"] / len(trail.events) == summary["failure_rate"]
        assert outcomes["denied"] / len(trail.events) == summary["denial_rate"]

    def test_top_actors_by_failures(
        self, trail: Trail, summary: dict[str, object]
    ) -> None:
        rows = []
        for actor in {e.actor for e in trail.events}:
            mine = [e for e in trail.events if e.actor == actor]
            rows.append(
                {
                    "actor": actor,
                    "failures": sum(e.outcome == "failure" for e in mine),
                    "denied": sum(e.outcome == "denied" for e in mine),
                    "events": len(mine),
                }
            )
        rows.sort(key=lambda r: (-(r["failures"] + r["denied"]), r["actor"]))

        assert rows[:3] == summary["top_failing_actors"]

    def test_events_per_hour(self, trail: Trail, summary: dict[str, object]) -> None:
        hours = Counter(e.time.strftime("%Y-%m-%dT%H:00:00Z") for e in trail.events)

        assert dict(sorted(hours.items())) == summary["per_hour"]


class TestSummaryText:
    def test_headline_tables_and_histogram(
        self, trail: Trail, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code = main(["summary", str(trail.base), "--top", "2"])

        out = capsys.readouterr().out
        outcomes = Counter(e.outcome for e in trail.events)
        hours = Counter(e.time.strftime("%Y-%m-%d %H:00") for e in trail.events)
        n = len(trail.events)
        assert 0 == code
        assert out.startswith(
            f"{n} events from {trail.events[0].stamp} to {trail.events[-1].stamp}\n"
            f"failure rate {outcomes['failure'] / n:.1%} ({outcomes['failure']}), "
            f"denial rate {outcomes['denied'] / n:.1%} ({outcomes['denied']})\n"
            f"{trail.garbage_lines} unreadable lines skipped\n"
        )
        assert "(+2 more)" in out  # 4 actions, top 2 shown
        peak = max(hours.values())
        for hour, count in hours.items():
            bar = "#" * max(1, round(count / peak * 40))
            assert f"{hour}  {count:>8}  {bar}\n" in out

    def test_empty_hours_are_shown_as_empty_rows(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "gap.jsonl"
        times = ["2026-01-01T00:10:00.000000Z", "2026-01-01T03:59:00.000000Z"]
        path.write_bytes(b"".join(orjson.dumps({"time": t}) + b"\n" for t in times))

        main(["summary", str(path)])

        out = capsys.readouterr().out
        assert "2026-01-01 01:00         0  \n" in out
        assert "2026-01-01 02:00         0  \n" in out

    def test_a_long_trail_is_shown_per_day(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "long.jsonl"
        times = [f"2026-01-{day:02d}T12:00:00.000000Z" for day in (1, 1, 2, 9)]
        path.write_bytes(b"".join(orjson.dumps({"time": t}) + b"\n" for t in times))

        main(["summary", str(path)])

        out = capsys.readouterr().out
        assert "Events per day (UTC)" in out
        assert "2026-01-01         2  " in out
        assert "2026-01-05         0  " in out

    def test_an_empty_trail(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "empty.jsonl"
        path.write_bytes(b"garbage\n")

        code = main(["summary", str(path)])

        captured = capsys.readouterr()
        assert 0 == code
        assert "No events. (1 unreadable lines skipped)\n" == captured.out

    def test_odd_field_types_are_counted_not_fatal(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "odd.jsonl"
        rows = [
            {"action": ["a", "list"], "actor": "bare-id", "outcome": 1},
            {"action": "x", "actor": {"id": {"nested": 1}}, "time": 5},
            {"action": "x", "actor": {"id": "ok"}, "time": "not a time"},
        ]
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))

        code = main(["summary", str(path), "--json"])

        data = orjson.loads(capsys.readouterr().out)
        assert 0 == code
        assert 3 == data["events"]
        assert 3 == data["untimed_events"]
        assert {"bare-id": 1, "ok": 1} == {
            k: v for k, v in data["by_actor"].items() if k in ("bare-id", "ok")
        }


class TestOddTimes:
    def test_times_that_only_look_canonical_or_are_out_of_range_are_untimed(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "odd.jsonl"
        times = [
            "2026-01-31T09:00:00.000000Z",
            "2026-01-31 09:30:00.000000Z",  # a space: parsed, counted
            "xxxxxxxxxxTxxxxxxxxxxxxxxxZ",  # the right length and shape only
            "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
        ]
        path.write_bytes(
            b"".join(orjson.dumps({"action": "a.b", "time": t}) + b"\n" for t in times)
        )

        assert 0 == main(["summary", str(path), "--json"])
        data = orjson.loads(capsys.readouterr().out)
        assert 2 == data["untimed_events"]
        assert {"2026-01-31T09:00:00Z": 2} == data["per_hour"]
        assert 0 == main(["summary", str(path)])
        assert 0 == main(["report", str(path), "-o", str(tmp_path / "r.html")])

    def test_a_span_of_millennia_keeps_the_histogram_short(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "span.jsonl"
        path.write_bytes(
            orjson.dumps({"action": "a", "time": "1971-01-01T00:00:00.000000Z"})
            + b"\n"
            + orjson.dumps({"action": "a", "time": "9000-01-01T00:00:00.000000Z"})
            + b"\n"
        )

        assert 0 == main(["summary", str(path)])
        out = capsys.readouterr().out
        assert len(out.splitlines()) < 450
        assert "Events per " in out
        report = tmp_path / "r.html"
        assert 0 == main(["report", str(path), "-o", str(report)])
        assert report.stat().st_size < 200_000
