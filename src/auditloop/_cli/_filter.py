"""Event filters shared by ``tail`` and ``query``.

A filter is compiled once into a short list of predicates over the decoded
record dict; each predicate is one or two dict lookups and a comparison
(a regex only for a glob that needs one), so filtering costs little next to
JSON decoding.
"""

from __future__ import annotations

import argparse
import fnmatch
import re
from collections.abc import Callable, Sequence
from typing import Any, Final

import orjson

from auditloop._cli._common import canonical_time, parse_time_arg, time_key

__all__ = ["Predicate", "add_filter_arguments", "build_filter", "lookup"]

Predicate = Callable[[dict[str, Any]], bool]
_MISSING: Final = object()
_GLOB_CHARS: Final = frozenset("*?[")


def add_filter_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--actor --action --outcome --category --target --since --until
    --where`` to *parser*.

    Repeating a flag accepts any of its values (OR), except ``--where``,
    whose conditions must all hold; different flags must all match (AND).
    """
    group = parser.add_argument_group(
        "filters",
        "Repeat a flag to accept any of its values; different flags and "
        "repeated --where conditions must all hold.",
    )
    group.add_argument("--actor", action="append", metavar="ID", help="actor.id is ID")
    group.add_argument(
        "--action",
        action="append",
        metavar="GLOB",
        help="action matches GLOB, e.g. 'permission.*'",
    )
    group.add_argument(
        "--outcome",
        action="append",
        metavar="O",
        help="outcome is O (success, failure, denied, unknown)",
    )
    group.add_argument("--category", action="append", metavar="C", help="category is C")
    group.add_argument(
        "--target",
        action="append",
        metavar="ID",
        help="target.id is ID (a glob like 'document:*' works too)",
    )
    group.add_argument(
        "--since",
        type=parse_time_arg,
        metavar="WHEN",
        help="events at or after WHEN: a duration ago (90s, 15m, 1h, 2d, 1w) or "
        "an RFC 3339 time",
    )
    group.add_argument(
        "--until", type=parse_time_arg, metavar="WHEN", help="events before WHEN"
    )
    group.add_argument(
        "--where",
        action="append",
        type=_where,
        metavar="PATH=VALUE",
        help="the field at dotted PATH equals VALUE, e.g. attributes.tenant=acme "
        "(non-string fields compare as JSON: attributes.retries=3, "
        "attributes.admin=true)",
    )


def _where(text: str) -> tuple[tuple[str, ...], str]:
    path, sep, value = text.partition("=")
    if not sep or not path or any(not part for part in path.split(".")):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not PATH=VALUE (e.g. attributes.tenant=acme)"
        )
    return tuple(path.split(".")), value


def lookup(record: dict[str, Any], path: Sequence[str]) -> Any:
    """Return the value at dotted *path* in *record*, or a private sentinel."""
    value: Any = record
    for key in path:
        if not isinstance(value, dict):
            return _MISSING
        value = value.get(key, _MISSING)
        if value is _MISSING:
            return _MISSING
    return value


def _split(patterns: Sequence[str], glob: bool) -> tuple[frozenset[str], Any]:
    """Exact values, and one compiled regex for the globs (or None)."""
    exact = frozenset(p for p in patterns if not (glob and _GLOB_CHARS & set(p)))
    globs = [p for p in patterns if p not in exact]
    regex = re.compile("|".join(fnmatch.translate(p) for p in globs)) if globs else None
    return exact, regex


def _field(key: str, patterns: Sequence[str], glob: bool = False) -> Predicate:
    exact, regex = _split(patterns, glob)
    if regex is None:

        def predicate(record: dict[str, Any]) -> bool:
            try:
                return record.get(key) in exact
            except TypeError:  # an unhashable value: a list or an object
                return False

        return predicate
    match = regex.match

    def glob_predicate(record: dict[str, Any]) -> bool:
        value = record.get(key)
        return isinstance(value, str) and (value in exact or match(value) is not None)

    return glob_predicate


def _nested_id(key: str, patterns: Sequence[str], glob: bool = False) -> Predicate:
    """Match ``record[key]["id"]`` (or ``record[key]`` when it is a bare id)."""
    exact, regex = _split(patterns, glob)
    if regex is None:

        def predicate(record: dict[str, Any]) -> bool:
            value = record.get(key)
            if value.__class__ is dict:
                value = value.get("id")
            try:
                return value in exact
            except TypeError:
                return False

        return predicate
    match = regex.match

    def glob_predicate(record: dict[str, Any]) -> bool:
        value = record.get(key)
        if value.__class__ is dict:
            value = value.get("id")
        return isinstance(value, str) and (value in exact or match(value) is not None)

    return glob_predicate


def _equals(path: tuple[str, ...], expected: str) -> Predicate:
    def predicate(record: dict[str, Any]) -> bool:
        value = lookup(record, path)
        if value is _MISSING:
            return False
        if isinstance(value, str):
            return value == expected
        return orjson.dumps(value).decode() == expected

    return predicate


def _time_range(since: float | None, until: float | None) -> Predicate:
    low = canonical_time(since) if since is not None else None
    high = canonical_time(until) if until is not None else None

    def predicate(record: dict[str, Any]) -> bool:
        when = time_key(record.get("time"))
        if when is None:
            return False
        return (low is None or when >= low) and (high is None or when < high)

    return predicate


def build_filter(args: argparse.Namespace) -> Predicate | None:
    """Compile the filter flags in *args*; None when there are none."""
    predicates: list[Predicate] = []
    if args.actor:
        predicates.append(_nested_id("actor", args.actor))
    if args.action:
        predicates.append(_field("action", args.action, glob=True))
    if args.outcome:
        predicates.append(_field("outcome", args.outcome))
    if args.category:
        predicates.append(_field("category", args.category))
    if args.target:
        predicates.append(_nested_id("target", args.target, glob=True))
    if args.since is not None or args.until is not None:
        predicates.append(_time_range(args.since, args.until))
    predicates.extend(_equals(path, value) for path, value in args.where or ())
    if not predicates:
        return None
    if len(predicates) == 1:
        return predicates[0]
    checks = tuple(predicates)
    return lambda record: all(check(record) for check in checks)
