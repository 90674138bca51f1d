"""``auditloop query`` against counts computed independently of the CLI."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from auditloop._cli import main
from cli_trail import GARBAGE, START, Expected, Trail, make_trail


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Trail:
    return make_trail(tmp_path_factory.mktemp("query"))


def query_json(
    trail: Trail, capsys: pytest.CaptureFixture[str], *flags: str
) -> tuple[list[dict[str, object]], str]:
    code = main(["query", str(trail.base), "--json", *flags])
    captured = capsys.readouterr()
    assert 0 == code
    return [orjson.loads(line) for line in captured.out.splitlines()], captured.err


def ids(trail: Trail, keep: Callable[[Expected], bool]) -> list[str]:
    return [e.stamp for e in trail.events if keep(e)]


class TestQueryInputs:
    def test_the_trail_really_is_rotated_and_gzipped(self, trail: Trail) -> None:
        gzipped = [p for p in trail.files if p.suffix == ".gz"]

        assert len(gzipped) >= 3
        assert trail.files[-1] == trail.base

    def test_every_event_of_every_file_in_written_order(
        self, trail: Trail, capsys: pytest.CaptureFixture[str]
    ) -> None:
        events, _ = query_json(trail, capsys)

        assert [e.stamp for e in trail.events] == [e["time"] for e in events]

    def test_unreadable_lines_are_reported_with_file_and_line(
        self, trail: Trail, capsys: pytest.CaptureFixture[str]
    ) -> None:
        _, err = query_json(trail, capsys)

        total_lines = trail.base.read_bytes().count(b"\n") + 1
        first_bad = total_lines - len(GARBAGE)
        # An object cut short is "torn" wherever it sits (a crash mid-write
        # that FileSink ended on reopen); any other bad line is "malformed".
        kinds = ["torn" if line.startswith(b"{") else "malformed" for line in GARBAGE]
        expected = [
            f"auditloop: {trail.base}:{first_bad + i}: {kind} line:"
            for i, kind in enumerate(kinds)
        ] + [f"auditloop: {trail.base}:{total_lines}: torn line:"]
        reported = err.splitlines()
        assert len(expected) == len(reported)
        for prefix, line in zip(expected, reported, strict=True):
            assert line.startswith(prefix)

    def test_a_corrupt_gzip_is_reported_and_the_rest_still_read(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        small = make_trail(tmp_path, n=40, max_bytes=None, garbage=False)
        (tmp_path / "audit.jsonl.1.gz").write_bytes(b"not gzip at all")

        code = main(["query", str(small.base), "--json"])

        captured = capsys.readouterr()
        assert 2 == code
        assert f"{tmp_path / 'audit.jsonl.1.gz'}: cannot read" in captured.err
        assert 40 == len(captured.out.splitlines())

    def test_a_truncated_gzip_yields_its_readable_part(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        data = b"".join(
            orjson.dumps({"id": str(i), "time": "2026-01-01T00:00:00.000000Z"}) + b"\n"
            for i in range(2000)
        )
        packed = gzip.compress(data)
        (tmp_path / "cut.jsonl.gz").write_bytes(packed[: len(packed) // 2])

        code = main(["query", str(tmp_path / "cut.jsonl.gz"), "--json"])

        captured = capsys.readouterr()
        assert 2 == code
        assert "cut.jsonl.gz: cannot read" in captured.err


class TestQueryFilters:
    @pytest.mark.parametrize(
        ("flags", "keep"),
        [
            (["--actor", "alice"], lambda e: e.actor == "alice"),
            (
                ["--actor", "alice", "--actor", "bob"],
                lambda e: e.actor in ("alice", "bob"),
            ),
            (["--action", "document.*"], lambda e: e.action.startswith("document.")),
            (["--action", "user.login"], lambda e: e.action == "user.login"),
            (["--action", "*.gr?nt"], lambda e: e.action == "permission.grant"),
            (
                ["--outcome", "failure", "--outcome", "denied"],
                lambda e: e.outcome in ("failure", "denied"),
            ),
            (["--category", "permission"], lambda e: e.category == "permission"),
            (["--target", "document:7"], lambda e: e.target == "document:7"),
            (
                ["--target", "document:1?"],
                lambda e: len(e.target) == 11 and e.target[9] == "1",
            ),
            (["--where", "attributes.tenant=acme"], lambda e: e.tenant == "acme"),
            (["--where", "source.service=cli-test"], lambda e: True),
            (["--where", "attributes.tenant=initech"], lambda e: False),
            (
                [
                    "--actor",
                    "mallory",
                    "--outcome",
                    "denied",
                    "--where",
                    "attributes.tenant=globex",
                ],
                lambda e: (
                    e.actor == "mallory"
                    and e.outcome == "denied"
                    and e.tenant == "globex"
                ),
            ),
        ],
    )
    def test_filters_select_what_was_emitted(
        self,
        trail: Trail,
        capsys: pytest.CaptureFixture[str],
        flags: list[str],
        keep: Callable[[Expected], bool],
    ) -> None:
        events, _ = query_json(trail, capsys, *flags)

        assert ids(trail, keep) == [e["time"] for e in events]

    def test_since_is_inclusive_and_until_exclusive(
        self, trail: Trail, capsys: pytest.CaptureFixture[str]
    ) -> None:
        since = trail.events[100].time
        until = trail.events[250].time

        events, _ = query_json(
            trail,
            capsys,
            "--since",
            since.isoformat(),
            "--until",
            until.isoformat(),
        )

        assert ids(trail, lambda e: since <= e.time < until) == [
            e["time"] for e in events
        ]
        assert 150 == len(events)

    def test_relative_since_counts_back_from_now(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        import time

        from auditloop._clock import format_rfc3339

        now = time.time()
        path = tmp_path / "recent.jsonl"
        ages = [7200, 3000, 1200, 10]
        path.write_bytes(
            b"".join(
                orjson.dumps(
                    {"id": str(a), "time": format_rfc3339(int((now - a) * 1e9))}
                )
                + b"\n"
                for a in ages
            )
        )

        code = main(["query", str(path), "--json", "--since", "1h"])

        out = capsys.readouterr().out
        assert 0 == code
        assert ["3000", "1200", "10"] == [
            orjson.loads(x)["id"] for x in out.splitlines()
        ]

    def test_where_compares_non_strings_as_json(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "typed.jsonl"
        rows = [
            {"id": "a", "attributes": {"retries": 3, "admin": True}},
            {"id": "b", "attributes": {"retries": "3", "admin": False}},
            {"id": "c", "attributes": {"retries": 4}},
            {"id": "d"},
        ]
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))

        main(["query", str(path), "--json", "--where", "attributes.retries=3"])
        threes = [orjson.loads(x)["id"] for x in capsys.readouterr().out.splitlines()]
        main(["query", str(path), "--json", "--where", "attributes.admin=true"])
        admins = [orjson.loads(x)["id"] for x in capsys.readouterr().out.splitlines()]

        assert ["a", "b"] == threes
        assert ["a"] == admins

    def test_times_in_other_offsets_are_compared_as_instants(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "offsets.jsonl"
        rows = [
            {
                "id": "early",
                "time": "2026-01-01T00:30:00+01:00",
            },  # 23:30Z the day before
            {"id": "late", "time": "2026-01-01T02:30:00+01:00"},  # 01:30Z
            {"id": "none"},
        ]
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))

        main(["query", str(path), "--json", "--since", START.isoformat()])

        out = capsys.readouterr().out
        assert ["late"] == [orjson.loads(x)["id"] for x in out.splitlines()]

    @pytest.mark.parametrize("bad", ["tenant", "=x", "attributes..x=1"])
    def test_a_bad_where_is_a_usage_error(
        self, trail: Trail, bad: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        with pytest.raises(SystemExit) as exited:
            main(["query", str(trail.base), "--where", bad])

        assert 2 == exited.value.code
        assert "is not PATH=VALUE" in capsys.readouterr().err


class TestQueryOutput:
    def test_table_has_a_header_and_one_row_per_event(
        self, trail: Trail, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code = main(["query", str(trail.base), "--table", "--actor", "carol"])

        lines = capsys.readouterr().out.splitlines()
        expected = [e for e in trail.events if e.actor == "carol"]
        assert 0 == code
        assert lines[0].split() == ["TIME", "OUTCOME", "ACTOR", "ACTION", "TARGET"]
        assert len(expected) == len(lines) - 1
        assert lines[1].split() == [
            expected[0].stamp,
            expected[0].outcome,
            "carol",
            expected[0].action,
            expected[0].target,
        ]

    def test_readable_lines_by_default(
        self, trail: Trail, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code = main(["query", str(trail.base), "--outcome", "denied"])

        lines = capsys.readouterr().out.splitlines()
        expected = [e for e in trail.events if e.outcome == "denied"]
        assert 0 == code
        assert len(expected) == len(lines)
        first = expected[0]
        assert (
            f"{first.stamp} DENIED  {first.actor} {first.action} {first.target} "
            f"tenant={first.tenant}"
        ) == lines[0]

    def test_no_match_is_not_an_error(
        self, trail: Trail, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code = main(["query", str(trail.base), "--actor", "nobody"])

        assert 0 == code
        assert "" == capsys.readouterr().out
