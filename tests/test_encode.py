"""Encoding never raises and never loses an event, whatever the values."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import inspect
import math
import uuid
from collections import OrderedDict, UserDict
from collections.abc import Iterator, Mapping
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import auditloop
from auditloop import sinks
from auditloop._encode import MAX_STRING, conversions, encode, sanitize, to_jsonable


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: int


@attrs.define
class Box:
    label: str
    content: Any = None


class BrokenRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class BrokenStrError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")


class Incomparable:
    def __lt__(self, other: object) -> bool:
        raise ValueError("refuses to compare")

    def __hash__(self) -> int:
        return 1

    def __repr__(self) -> str:
        return "Incomparable()"


class Thing:
    def __repr__(self) -> str:
        return "Thing<1>"


class Long:
    def __repr__(self) -> str:
        return "x" * 1000


class Key:
    def __str__(self) -> str:
        raise RuntimeError("no")

    def __repr__(self) -> str:
        return "Key()"


class TupleSub(tuple):  # type: ignore[type-arg]
    pass


class ListSub(list):  # type: ignore[type-arg]
    pass


class BrokenMapping(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("cannot iterate")

    def __len__(self) -> int:
        return 0


def decoded(value: Any) -> Any:
    return orjson.loads(encode({"v": value}))["v"]


class TestKnownTypes:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ({3, 1, 2}, [1, 2, 3]),
            (frozenset({"b", "a"}), ["a", "b"]),
            (Decimal("1.10"), "1.10"),
            (PurePosixPath("/etc/passwd"), "/etc/passwd"),
            (Path("rel/x"), "rel/x"),
            (Color.RED, "red"),
            (
                uuid.UUID("12345678-1234-5678-1234-567812345678"),
                "12345678-1234-5678-1234-567812345678",
            ),
            (
                dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
                "2026-01-02T03:04:05+00:00",
            ),
            (dt.date(2026, 1, 2), "2026-01-02"),
            (ValueError("bad"), {"type": "ValueError", "message": "bad"}),
            (Point(1, 2), {"x": 1, "y": 2}),
            (
                Box("b", Box("inner")),
                {"label": "b", "content": {"label": "inner", "content": None}},
            ),
            (b"text", "text"),
            (bytearray(b"\xff\x00"), {"base64": "/wA="}),
            (memoryview(b"mv"), "mv"),
            (TupleSub((1, 2)), [1, 2]),
            (ListSub([3]), [3]),
            (UserDict({"a": 1}), {"a": 1}),
            (OrderedDict(a=1), {"a": 1}),
            (float("nan"), None),
            (float("inf"), None),
            (2**64 - 1, 2**64 - 1),
            (-(2**63), -(2**63)),
            (2**64, str(2**64)),
            (-(2**63) - 1, str(-(2**63) - 1)),
            (10**100, str(10**100)),
        ],
    )
    def test_conversion(self, value: Any, expected: Any) -> None:
        assert expected == decoded(value)

    def test_conversions_are_counted(self) -> None:
        before = conversions()

        encode({"a": {1, 2}, "b": Decimal(1)})

        assert 2 == conversions() - before

    def test_set_of_unorderable_values_becomes_a_list(self) -> None:
        assert ["<repr Incomparable: Incomparable()>"] * 2 == decoded(
            {Incomparable(), Incomparable()}
        )
        assert [1, "a"] == sorted(decoded({1, "a"}), key=str)

    def test_unknown_objects_become_a_marked_repr(self) -> None:
        assert "<repr Thing: Thing<1>>" == decoded(Thing())
        assert "<repr BrokenRepr: <unrepresentable: RuntimeError>>" == decoded(
            BrokenRepr()
        )

    def test_long_reprs_are_cut(self) -> None:
        text = decoded(Long())

        assert text.startswith("<repr Long: xxx")
        assert len(text) < 250

    def test_exception_with_broken_str(self) -> None:
        text = decoded(BrokenStrError())

        assert text.startswith("<repr BrokenStrError:")

    def test_to_jsonable_never_raises(self) -> None:
        for value in (BrokenMapping(), BrokenStrError(), {Incomparable()}):
            to_jsonable(value)


class TestSlowPath:
    def test_huge_strings_are_truncated_and_marked(self) -> None:
        line = encode({"big": "a" * (MAX_STRING + 10), "ok": "b"})

        record = orjson.loads(line)
        assert "a" * MAX_STRING + "…[truncated 10 chars]" == record["big"]
        assert "b" == record["ok"]

    def test_huge_keys_are_truncated(self) -> None:
        record = orjson.loads(encode({"k" * (MAX_STRING + 1): 1}))

        assert [len("k" * MAX_STRING + "…[truncated 1 chars]")] == [
            len(k) for k in record
        ]

    def test_non_string_keys_are_stringified(self) -> None:
        assert {"1": "a", "None": "b", "(1, 2)": "c", "2.5": "d"} == decoded(
            {1: "a", None: "b", (1, 2): "c", 2.5: "d"}
        )

    def test_unprintable_keys_become_marked_reprs(self) -> None:
        assert {"<repr Key: Key()>": 1} == decoded({Key(): 1})

    def test_lone_surrogates_are_escaped(self) -> None:
        assert {"k\\udc80": "a\\ud800b"} == decoded({"k\udc80": "a\ud800b"})

    def test_cycles_end_at_their_first_repetition(self) -> None:
        loop: dict[str, Any] = {"n": 1}
        loop["a"] = loop
        loop["b"] = [loop, loop]

        assert {"n": 1, "a": "<cyclic>", "b": ["<cyclic>", "<cyclic>"]} == decoded(loop)

    def test_cycles_through_converted_objects(self) -> None:
        box = Box("self")
        box.content = [box, box]

        assert {"label": "self", "content": ["<cyclic>", "<cyclic>"]} == decoded(box)

    def test_nesting_is_cut_at_64_levels(self) -> None:
        deep: Any = 1
        for _ in range(300):
            deep = [deep]

        value = sanitize(deep)

        for _ in range(64):
            value = value[0]
        assert "<too deep>" == value

    def test_unlistable_mapping(self) -> None:
        text = decoded(BrokenMapping())

        assert text.startswith("<repr BrokenMapping:")

    def test_natively_encodable_values_pass_through(self) -> None:
        when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

        assert when is sanitize(when)


class Broken:
    """Objects whose every dunder fails."""

    def __repr__(self) -> str:
        raise RuntimeError("repr")

    def __str__(self) -> str:
        raise RuntimeError("str")


def with_cycle(value: Any) -> Any:
    loop: list[Any] = [value]
    holder = {"loop": loop, "again": loop}
    loop.append(holder)
    return holder


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**64, max_value=2**200),
    st.integers(max_value=-(2**63) - 1, min_value=-(2**200)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
    st.text(alphabet=st.characters(categories=["Cs", "Lu", "Cc"]), max_size=5),
    st.just("x" * (MAX_STRING + 100)),
    st.binary(),
    st.decimals(allow_nan=True),
    st.datetimes(timezones=st.just(dt.UTC)),
    st.datetimes(),
    st.dates(),
    st.uuids(),
    st.just(Color.RED),
    st.just(PurePosixPath("/tmp/x")),
    st.builds(Point, st.integers(), st.integers()),
    st.builds(Box, st.text(max_size=3)),
    st.builds(ValueError, st.text(max_size=5)),
    st.builds(BrokenStrError),
    st.builds(Broken),
    st.builds(BrokenMapping),
    st.builds(Incomparable),
    st.frozensets(st.integers(), max_size=3),
    st.sets(st.text(max_size=3), max_size=3),
)
keys = st.one_of(
    st.text(max_size=10),
    st.sampled_from(["password", "token", "Authorization"]),
    st.integers(),
    st.none(),
    st.tuples(st.integers()),
    st.floats(allow_nan=False),
    st.builds(Broken),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(keys, inner, max_size=4),
        inner.map(with_cycle),
    ),
    max_leaves=25,
)


EMIT_PARAMETERS = set(inspect.signature(auditloop.Auditor.emit).parameters)


class TestEverythingIsWritten:
    @settings(
        max_examples=200,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        attributes=st.dictionaries(
            st.text(max_size=10).filter(lambda k: k not in EMIT_PARAMETERS),
            values,
            max_size=4,
        ),
        context=values,
        redact=st.booleans(),
    )
    def test_arbitrary_values_never_raise_nor_lose_the_event(
        self, attributes: dict[str, Any], context: Any, redact: bool
    ) -> None:
        memory = sinks.MemorySink()
        auditor = auditloop.Auditor(sinks=[memory], redact=redact)

        with auditloop.bind(actor="a", extra=context):
            auditor.emit("fuzz", target="t:1", **attributes)

        assert 1 == len(memory.lines)
        assert {} == auditor.counters.snapshot()
        record = orjson.loads(memory.lines[0])
        assert "fuzz" == record["action"]
        assert set(attributes) == set(record.get("attributes", {}))
        assert "extra" in record["context"]
        event = memory.events[0]
        assert "auditloop/1" == event.schema

    @settings(max_examples=100, deadline=None)
    @given(value=values)
    def test_encode_always_returns_one_json_object(self, value: Any) -> None:
        line = encode({"id": "i", "v": value})

        record = orjson.loads(line)
        assert "i" == record["id"]
        assert b"\n" not in line

    @given(number=st.floats())
    def test_floats(self, number: float) -> None:
        result = decoded(number)

        assert (None if math.isnan(number) or math.isinf(number) else number) == result
