"""UUIDv7 ids and RFC 3339 timestamps (``auditloop._clock``)."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from auditloop import _clock
from auditloop._clock import format_rfc3339, parse_rfc3339, uuid7

RFC3339_MICROS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


@pytest.fixture(autouse=True)
def _restore_uuid_state() -> Iterator[None]:
    """Tests that feed far-future times must not push later ids into the future."""
    saved = (_clock._last_ms, _clock._counter, _clock._ms_prefix)
    yield
    _clock._last_ms, _clock._counter, _clock._ms_prefix = saved


class TestUuid7:
    def test_is_a_version_7_rfc_4122_variant_uuid(self) -> None:
        parsed = uuid.UUID(uuid7())

        assert 7 == parsed.version
        assert uuid.RFC_4122 == parsed.variant

    def test_carries_the_unix_milliseconds_it_was_given(self) -> None:
        ns = 1_767_225_600_123_456_789

        parsed = uuid.UUID(uuid7(ns))

        assert ns // 1_000_000 <= parsed.int >> 80

    def test_string_form_is_canonical(self) -> None:
        text = uuid7()

        assert str(uuid.UUID(text)) == text

    def test_ids_are_unique_and_strictly_increasing(self) -> None:
        ids = [uuid7() for _ in range(50_000)]

        assert len(ids) == len(set(ids))
        assert sorted(ids) == ids

    def test_one_millisecond_overflowing_the_counter_stays_ordered(self) -> None:
        # 5000 ids in one (fixed) millisecond exhaust the 12-bit counter: the
        # generator borrows the next millisecond instead of repeating or wrapping.
        ns = 1_900_000_000_000_000_000
        ids = [uuid7(ns) for _ in range(5000)]

        assert len(ids) == len(set(ids))
        assert sorted(ids) == ids
        assert all(uuid.UUID(i).version == 7 for i in ids)
        assert all(uuid.UUID(i).int >> 80 >= ns // 1_000_000 for i in ids)

    def test_a_clock_going_backwards_never_reorders_ids(self) -> None:
        later = uuid7(2_000_000_000_000_000_000)
        earlier_clock = uuid7(1_000_000_000_000_000_000)

        assert later < earlier_clock

    def test_unique_across_threads(self) -> None:
        results: list[list[str]] = [[] for _ in range(4)]

        def make(out: list[str]) -> None:
            out.extend(uuid7() for _ in range(10_000))

        threads = [threading.Thread(target=make, args=(r,)) for r in results]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        every = [i for r in results for i in r]

        assert 40_000 == len(set(every))
        for r in results:  # each thread sees its own ids in increasing order
            assert sorted(r) == r


class TestFormatRfc3339:
    def test_formats_utc_with_microseconds(self) -> None:
        ns = 1_767_225_600_123_456_789  # 2026-01-01T00:00:00.123456789Z

        assert "2026-01-01T00:00:00.123456Z" == format_rfc3339(ns)

    def test_matches_rfc_3339_with_six_fraction_digits(self) -> None:
        for ns in (0, 1, 999_999_999, 1_700_000_000_000_000_000):
            assert RFC3339_MICROS.match(format_rfc3339(ns))

    def test_cached_second_prefix_is_refreshed_at_a_second_boundary(self) -> None:
        before = format_rfc3339(1_767_225_599_999_999_000)
        after = format_rfc3339(1_767_225_600_000_001_000)
        again = format_rfc3339(1_767_225_599_500_000_000)

        assert "2025-12-31T23:59:59.999999Z" == before
        assert "2026-01-01T00:00:00.000001Z" == after
        assert "2025-12-31T23:59:59.500000Z" == again

    def test_agrees_with_datetime(self) -> None:
        ns = 1_712_345_678_901_234_000
        expected = (
            datetime.fromtimestamp(ns // 1000 / 1e6, UTC)
            .isoformat(timespec="microseconds")
            .replace("+00:00", "Z")
        )

        assert expected == format_rfc3339(ns)


class TestParseRfc3339:
    def test_round_trips_format(self) -> None:
        ns = 1_767_225_600_123_456_000

        assert ns / 1e9 == pytest.approx(parse_rfc3339(format_rfc3339(ns)), abs=1e-6)

    def test_offsets_are_honoured(self) -> None:
        assert 0.0 == parse_rfc3339("1970-01-01T01:00:00+01:00")

    def test_naive_times_are_utc(self) -> None:
        assert 3600.0 == parse_rfc3339("1970-01-01T01:00:00")

    def test_garbage_raises_value_error(self) -> None:
        with pytest.raises(ValueError):
            parse_rfc3339("yesterday")


class TestBefore1970:
    def test_the_second_before_the_epoch_is_formatted_in_full(self) -> None:
        from auditloop._clock import format_rfc3339

        assert "1969-12-31T23:59:59.500000Z" == format_rfc3339(-500_000_000)
        assert "1969-12-31T23:59:58.500000Z" == format_rfc3339(-1_500_000_000)
