"""Event matching and field access for rules, compiled once at configure time.

Rules read events in their wire form (the dict that is encoded for sinks), so
fields are named by dotted paths: ``actor.id``, ``target.id``,
``attributes.tenant``. Each path is turned into a small getter closure when
the rule is built; matching criteria are split into the action (which the
engine indexes) and the rest (checked only for rules whose action matched).
"""

from __future__ import annotations

import fnmatch
import functools
import json
import re
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Final

import orjson

from auditloop.exceptions import RuleError

__all__ = [
    "INTERNAL_PREFIX",
    "Getter",
    "KeyFunction",
    "Match",
    "Typed",
    "compile_key",
    "compile_path",
    "hashable",
    "match",
    "plain",
    "to_json",
]

#: Actions auditloop emits about itself (``auditloop.alert``,
#: ``auditloop.rule.error``, ``auditloop.dropped``). Only criteria that name
#: such an action explicitly can match them, so ``action="*"`` never feeds a
#: rule its own alerts.
INTERNAL_PREFIX: Final = "auditloop."

Event = Mapping[str, Any]
Getter = Callable[[Event], Any]
KeyFunction = Callable[[Event], Any]

# Paths are checked against the ``auditloop/1`` schema so that a typo in a
# rule fails at configure time instead of silently grouping everything under
# null.
_SCALAR_FIELDS: Final = frozenset(
    {
        "action",
        "category",
        "duration_ms",
        "id",
        "outcome",
        "reason",
        "schema",
        "severity",
        "time",
    }
)
_OBJECT_FIELDS: Final[Mapping[str, frozenset[str] | None]] = {
    "actor": frozenset({"id", "type", "name", "ip", "roles"}),
    "target": frozenset({"id", "type", "name"}),
    "error": frozenset({"type", "message"}),
    "attributes": None,  # user-defined keys
    "context": None,
    "source": None,
}
#: Scalars that are their own group key / distinct value. ``bool`` and
#: ``float`` are not: ``1``, ``True`` and ``1.0`` are equal dict keys but
#: different JSON values (``1``, ``true``, ``1.0``), so they are wrapped in a
#: :class:`Typed` (see :func:`hashable`).
_SCALARS: Final = frozenset({str, int, type(None)})


class Typed:
    """A bool or float group key (or distinct value) that equals only itself.

    Keeps ``True``, ``1`` and ``1.0`` apart as dict keys, as their JSON
    forms are (what :class:`RedisStore` keys on), so every store counts them
    as different values. :func:`plain` unwraps it.
    """

    __slots__ = ("_id", "value")

    def __init__(self, value: bool | float) -> None:
        self.value = value
        # repr: also NaN equals itself and -0.0 differs from 0.0, as in JSON.
        self._id = repr(value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Typed) and self._id == other._id

    def __hash__(self) -> int:
        return hash(self._id)

    def __repr__(self) -> str:
        return repr(self.value)


def plain(value: Any) -> Any:
    """Undo :func:`hashable`'s wrapping of a bool or float (else unchanged)."""
    return value.value if value.__class__ is Typed else value


def _fallback(value: Any) -> Any:
    # For json.dumps and orjson.dumps: what they cannot encode themselves.
    if value.__class__ is Typed:
        return value.value
    return repr(value)


def to_json(value: Any, *, sort_keys: bool = False) -> bytes:
    """Encode *value* (a group key, a distinct value) as JSON; never raises.

    A :class:`Typed` key is written as its bool or float. Integers beyond
    64 bits (which orjson refuses) are written exactly by the standard
    library; objects JSON has no form for as their ``repr``.
    """
    try:
        return orjson.dumps(
            value,
            option=orjson.OPT_SORT_KEYS if sort_keys else 0,
            default=_fallback,
        )
    except TypeError:  # an int beyond 64 bits (rare: the slow path)
        pass
    try:
        return json.dumps(
            value,
            default=_fallback,
            sort_keys=sort_keys,
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode("utf-8", "surrogatepass")
    except (TypeError, ValueError):  # e.g. non-string dict keys, cycles
        return orjson.dumps(repr(value))


def hashable(value: Any) -> Any:
    """Return a dict key standing for *value* as a group key or distinct value.

    Strings, ints and ``None`` stand for themselves; a bool or float is
    wrapped in a :class:`Typed` (so ``True``, ``1`` and ``1.0`` stay apart);
    another hashable value stands for itself; an unhashable one (a list, a
    dict) becomes its canonical JSON string.
    """
    cls = value.__class__
    if cls in _SCALARS:
        return value
    if cls is bool or cls is float:
        return Typed(value)
    try:
        hash(value)
    except TypeError:
        return to_json(value, sort_keys=True).decode("utf-8", "surrogatepass")
    return value


def check_path(path: object) -> str:
    """Validate a dotted event path against the schema.

    Raises:
        RuleError: naming the path and why it is not valid (the caller adds
            the rule and field).
    """
    if not isinstance(path, str) or not path:
        raise RuleError(f"a path must be a non-empty string, got {path!r}")
    head, _, rest = path.partition(".")
    if head in _SCALAR_FIELDS:
        if rest:
            raise RuleError(f"unknown path {path!r}: {head!r} has no sub-fields")
        return path
    if head not in _OBJECT_FIELDS:
        known = ", ".join(sorted(_SCALAR_FIELDS | set(_OBJECT_FIELDS)))
        raise RuleError(
            f"unknown path {path!r}: events have no {head!r} (known: {known})"
        )
    if not rest or "" in rest.split("."):
        raise RuleError(
            f"unknown path {path!r}: name a field of {head!r}, like {head}.id"
        )
    allowed = _OBJECT_FIELDS[head]
    sub = rest.split(".", 1)[0]
    if allowed is not None and sub not in allowed:
        raise RuleError(
            f"unknown path {path!r}: {head} has {', '.join(sorted(allowed))}"
        )
    return path


def compile_path(path: str) -> Getter:
    """Return a function reading *path* from a wire-form event (None if absent)."""
    parts = path.split(".")
    if len(parts) == 1:
        (only,) = parts

        def get_top(event: Event) -> Any:
            return event.get(only)

        return get_top
    if len(parts) == 2:
        outer, inner = parts

        def get_nested(event: Event) -> Any:
            d = event.get(outer)
            if d.__class__ is dict:  # the common case, without an ABC check
                return d.get(inner)
            return d.get(inner) if isinstance(d, Mapping) else None

        return get_nested

    def get_deep(event: Event) -> Any:
        value: Any = event
        for part in parts:
            if not isinstance(value, Mapping):
                return None
            value = value.get(part)
        return value

    return get_deep


@functools.lru_cache(maxsize=256)
def compile_key(paths: tuple[str, ...]) -> KeyFunction:
    """Return the group key function for *paths*.

    The key is ``None`` for no paths, the (hashable) value for one path, and
    a tuple of values for several; a missing field is ``None`` (the explicit
    null group). Rules with the same paths share one function, so the engine
    computes a key once per event for all of them.
    """
    if not paths:
        return lambda _event: None
    getters = tuple(compile_path(p) for p in paths)
    scalars = _SCALARS
    if len(paths) == 1 and paths[0].count(".") == 1:
        # The common case (``actor.id``) in one function call: this runs for
        # every matching event.
        outer, inner = paths[0].split(".")

        def key_nested(event: Event) -> Any:
            d = event.get(outer)
            if d.__class__ is dict or isinstance(d, Mapping):
                value = d.get(inner)
            else:
                return None
            return value if value.__class__ in scalars else hashable(value)

        return key_nested
    if len(getters) == 1:
        (get,) = getters

        def key_one(event: Event) -> Any:
            value = get(event)
            return value if value.__class__ in scalars else hashable(value)

        return key_one

    def key_many(event: Event) -> Any:
        return tuple(hashable(g(event)) for g in getters)

    return key_many


class _Criterion:
    """One string criterion: literal alternatives plus compiled globs."""

    __slots__ = ("literals", "patterns", "texts")

    def __init__(self, field: str, spec: object) -> None:
        texts: tuple[str, ...]
        if isinstance(spec, str):
            texts = (spec,)
        elif isinstance(spec, tuple | list | frozenset | set) and spec:
            texts = tuple(spec)
        else:
            raise RuleError(
                f"match: {field} must be a string or a non-empty tuple of strings, "
                f"got {spec!r}"
            )
        for text in texts:
            if not isinstance(text, str) or not text:
                raise RuleError(
                    f"match: {field} alternatives must be non-empty strings, "
                    f"got {text!r}"
                )
        self.texts = texts
        self.literals = frozenset(t for t in texts if not _is_glob(t))
        globs = [t for t in texts if _is_glob(t)]
        self.patterns = (
            re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs))
            if globs
            else None
        )

    def __call__(self, value: object) -> bool:
        if not isinstance(value, str):
            return False
        if value in self.literals:
            return True
        return self.patterns is not None and self.patterns.match(value) is not None

    @property
    def internal(self) -> bool:
        """True when some alternative names an ``auditloop.`` action explicitly."""
        return any(t.startswith(INTERNAL_PREFIX) for t in self.texts)


def _is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


class Match:
    """Compiled matching criteria; build it with :func:`match`.

    All given criteria must hold (AND); alternatives within one criterion
    are ORed. Instances are immutable and may be shared between rules.
    """

    __slots__ = ("_action", "_criteria", "_spec", "_where", "residual")

    _action: _Criterion | None
    _criteria: tuple[tuple[Getter, _Criterion], ...]
    _where: Callable[[Event], object] | None
    _spec: dict[str, object]
    #: Checks every criterion but the action; None when there is none.
    residual: Callable[[Event], bool] | None

    def __init__(
        self,
        *,
        action: object = None,
        category: object = None,
        outcome: object = None,
        actor: object = None,
        target: object = None,
        severity: object = None,
        where: Callable[[Event], object] | None = None,
    ) -> None:
        spec = {
            "action": action,
            "category": category,
            "outcome": outcome,
            "actor": actor,
            "target": target,
            "severity": severity,
        }
        self._spec = {k: v for k, v in spec.items() if v is not None}
        if where is not None:
            if not callable(where):
                raise RuleError(f"match: where must be callable, got {where!r}")
            self._spec["where"] = where
        self._action = _Criterion("action", action) if action is not None else None
        paths = {"actor": "actor.id", "target": "target.id"}
        self._criteria = tuple(
            (compile_path(paths.get(name, name)), _Criterion(name, value))
            for name, value in spec.items()
            if value is not None and name != "action"
        )
        self._where = where
        self.residual = self._compile_residual()

    def _compile_residual(self) -> Callable[[Event], bool] | None:
        criteria = self._criteria
        where = self._where
        if not criteria and where is None:
            return None
        if len(criteria) == 1 and where is None:
            ((get, crit),) = criteria

            def one(event: Event) -> bool:
                return crit(get(event))

            return one

        def every(event: Event) -> bool:
            for get, crit in criteria:
                if not crit(get(event)):
                    return False
            return where is None or bool(where(event))

        return every

    def action_matches(self, action: object) -> bool:
        """Whether the action criterion accepts *action* (internal rule aside)."""
        if self._action is None:
            return True
        return self._action(action)

    @property
    def deterministic(self) -> bool:
        """True without ``where``: the same event always gets the same answer."""
        return self._where is None

    @property
    def criteria_key(self) -> Hashable:
        """Equal for matches that select the same events.

        Two matches with the same criteria (and no ``where``, which may be
        arbitrary code) compare equal here, so rules written separately can
        share state in the store; a match with ``where`` is only itself.
        """
        if self._where is not None:
            return self
        # Values were validated: a string, or a collection of strings.
        return tuple(
            sorted(
                (name, frozenset((value,) if isinstance(value, str) else value))  # type: ignore[call-overload]
                for name, value in self._spec.items()
            )
        )

    @property
    def internal(self) -> bool:
        """True when this match names an ``auditloop.*`` action explicitly."""
        return self._action is not None and self._action.internal

    def __call__(self, event: Event) -> bool:
        """Whether *event* (wire form) satisfies every criterion.

        Exceptions from ``where`` propagate; the engine catches and counts
        them.
        """
        action = event.get("action")
        internal = isinstance(action, str) and action.startswith(INTERNAL_PREFIX)
        if internal and not self.internal:
            return False
        if not self.action_matches(action):
            return False
        return self.residual is None or self.residual(event)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._spec.items())
        return f"match({args})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Match):
            return NotImplemented
        return self._spec == other._spec

    def __hash__(self) -> int:
        return hash(repr(self))

    def describe(self) -> dict[str, object]:
        """The criteria as given (for error messages and docs)."""
        return dict(self._spec)


def match(
    *,
    action: str | tuple[str, ...] | None = None,
    category: str | tuple[str, ...] | None = None,
    outcome: str | tuple[str, ...] | None = None,
    actor: str | tuple[str, ...] | None = None,
    target: str | tuple[str, ...] | None = None,
    severity: str | tuple[str, ...] | None = None,
    where: Callable[[Event], object] | None = None,
) -> Match:
    """Describe which events a rule counts.

    String criteria accept glob patterns (``"permission.*"``; ``*`` also
    matches dots) and tuples of alternatives. ``actor`` and ``target``
    compare with ``actor.id`` and ``target.id``. ``where`` receives the event
    as a wire-form dict and returns a truthy value to match; if it raises,
    the event does not match and the error is counted.

    Events whose action starts with ``auditloop.`` (alerts, rule errors, drop
    reports) match only criteria that name such an action explicitly, and a
    rule never matches the alerts it raised itself.

    Patterns are compiled here, once. Thread-safe to use from any thread.

    Raises:
        RuleError: when a criterion is not a string or tuple of strings, or
            ``where`` is not callable.
    """
    return Match(
        action=action,
        category=category,
        outcome=outcome,
        actor=actor,
        target=target,
        severity=severity,
        where=where,
    )
