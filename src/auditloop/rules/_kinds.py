"""The rule kinds: what each one counts and when it fires.

A rule object is configuration only — name, match criteria, group paths,
window, thresholds and actions — validated and compiled when it is built.
Per-group window state lives in a store (see ``_store.py``), so the same rule
object can be evaluated by a live engine, a replay and a test harness at
once, and a shared store can hold the state for a fleet of processes. A rule
built with ``store=`` keeps its state in that store instead of the engine's
(replays still keep everything in memory).
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Sequence as Seq
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Final, NoReturn, ParamSpec, TypeVar

from auditloop._event import SEVERITIES
from auditloop.exceptions import RuleError
from auditloop.rules._duration import format_duration, parse_duration
from auditloop.rules._match import (
    Getter,
    KeyFunction,
    Match,
    check_path,
    compile_key,
    compile_path,
    hashable,
    plain,
)

if TYPE_CHECKING:
    from auditloop.rules._alert import Alert
    from auditloop.rules._store import Store

__all__ = ["Absence", "Action", "Distinct", "Ratio", "Rule", "Sequence", "Threshold"]

P = ParamSpec("P")
R = TypeVar("R")

#: A callback taking the :class:`Alert`; ``async def`` functions work too.
Action = Callable[["Alert"], object]
Duration = float | int | str | timedelta

_DEFAULT_MAX_GROUPS: Final = 10_000
_DEFAULT_EVIDENCE: Final = 5
_DEFAULT_MAX_EVENTS: Final = 10_000


def _rule_options(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn an unknown keyword into a RuleError naming the rule and option."""
    signature = inspect.signature(fn)
    names = [p for p in signature.parameters if p != "self"]
    kind = fn.__qualname__.removesuffix(".__init__")

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            name = args[1] if len(args) > 1 else kwargs.get("name", "?")
            unknown = [k for k in kwargs if k not in signature.parameters]
            if unknown:
                close = difflib.get_close_matches(unknown[0], names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                msg = f"rule {name!r}: {kind} has no option {unknown[0]!r}{hint}"
                raise RuleError(msg) from None
            raise RuleError(f"rule {name!r}: {kind}: {exc}") from None
        return fn(*args, **kwargs)

    return wrapper


class Rule:
    """Common configuration of every rule kind (not instantiated directly).

    Attributes are read-only after construction. Durations are stored in
    seconds.
    """

    #: ``"threshold"``, ``"ratio"``, ``"distinct"``, ``"absence"``, ``"sequence"``.
    kind: ClassVar[str] = ""
    #: Whether the condition can become true by time passing alone (so idle
    #: groups need clock-driven re-checks).
    time_can_fire: ClassVar[bool] = False

    __slots__ = (
        "cooldown",
        "evidence",
        "for_",
        "group_by",
        "key",
        "labels",
        "matchers",
        "max_groups",
        "name",
        "on_resolve",
        "severity",
        "store",
        "then",
        "threshold",
        "within",
    )

    name: str
    group_by: tuple[str, ...]
    within: float
    for_: float
    cooldown: float
    then: tuple[Action, ...]
    on_resolve: tuple[Action, ...]
    severity: str
    labels: Mapping[str, str]
    max_groups: int
    evidence: int
    #: The match objects this rule listens with: bit *i* of ``roles`` is
    #: ``matchers[i]``.
    matchers: tuple[Match, ...]
    #: Computes the group key of a wire-form event.
    key: KeyFunction
    #: The number the alert's ``value`` is compared with.
    threshold: float
    #: Where this rule's per-group state lives; ``None``: the engine's store
    #: (``configure(rule_store=...)``, by default in memory).
    store: Store | None

    def _init_common(
        self,
        name: object,
        *,
        group_by: str | Seq[str],
        within: Duration,
        then: Action | Iterable[Action],
        on_resolve: Action | Iterable[Action] | None,
        for_: Duration,
        cooldown: Duration,
        severity: str,
        labels: Mapping[str, str] | None,
        max_groups: int,
        evidence: int,
        store: object = None,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise RuleError(
                f"{type(self).__name__}: name must be a non-empty string, got {name!r}"
            )
        self.name = name
        self.group_by = self._group_by(group_by)
        self.key = compile_key(self.group_by)
        self.within = self._duration("within", within)
        self.for_ = self._duration("for_", for_, allow_zero=True)
        self.cooldown = self._duration("cooldown", cooldown, allow_zero=True)
        self.then = self._actions("then", then)
        self.on_resolve = (
            self.then if on_resolve is None else self._actions("on_resolve", on_resolve)
        )
        if severity not in SEVERITIES:
            self._fail(
                "severity", f"must be one of {', '.join(SEVERITIES)}, got {severity!r}"
            )
        self.severity = severity
        if labels is None:
            labels = {}
        if not isinstance(labels, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
        ):
            self._fail("labels", f"must map strings to strings, got {labels!r}")
        self.labels = dict(labels)
        self.max_groups = self._int("max_groups", max_groups, minimum=1)
        self.evidence = self._int("evidence", evidence, minimum=0)
        self.store = self._store(store)

    # -- validation helpers (configure time) ---------------------------------

    def _fail(self, field: str, reason: str) -> NoReturn:
        raise RuleError(f"rule {self.name!r}: {field}: {reason}")

    def _duration(
        self, field: str, value: object, *, allow_zero: bool = False
    ) -> float:
        try:
            return parse_duration(value, allow_zero=allow_zero)
        except RuleError as exc:
            raise RuleError(f"rule {self.name!r}: {field}: {exc}") from None

    def _int(self, field: str, value: object, *, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self._fail(field, f"must be an integer, got {value!r}")
        if value < minimum:
            self._fail(field, f"must be at least {minimum}, got {value!r}")
        return value

    def _store(self, store: object) -> Store | None:
        if store is None:
            return None
        # Imported here: the store module imports the rule kinds.
        from auditloop.rules._store import check_store

        return check_store(store, f"rule {self.name!r}: store:", RuleError)

    def _group_by(self, group_by: object) -> tuple[str, ...]:
        paths = (group_by,) if isinstance(group_by, str) else group_by
        if not isinstance(paths, Iterable):
            self._fail("group_by", f"must be a list of event paths, got {group_by!r}")
        result = []
        for path in paths:
            try:
                result.append(check_path(path))
            except RuleError as exc:
                raise RuleError(f"rule {self.name!r}: group_by: {exc}") from None
        if len(set(result)) != len(result):
            self._fail("group_by", f"lists a path twice: {result!r}")
        return tuple(result)

    def _match(self, field: str, value: object) -> Match:
        if not isinstance(value, Match):
            self._fail(field, f"must be rules.match(...), got {value!r}")
        return value

    def _actions(self, field: str, value: object) -> tuple[Action, ...]:
        items = (value,) if callable(value) else value
        if not isinstance(items, Iterable) or isinstance(items, str | bytes):
            self._fail(
                field, f"must be a callable or a list of callables, got {value!r}"
            )
        actions = tuple(items)
        for action in actions:
            if not callable(action):
                self._fail(field, f"{action!r} is not callable")
        return actions

    # -- helpers for stores and alerts ---------------------------------------

    def group_dict(self, key: object) -> dict[str, Any]:
        """Return the group of *key* as ``{path: value}``."""
        if not self.group_by:
            return {}
        if len(self.group_by) == 1:
            return {self.group_by[0]: plain(key)}
        assert isinstance(key, tuple)
        return {path: plain(v) for path, v in zip(self.group_by, key, strict=True)}

    def key_of(self, group: Mapping[str, Any]) -> object:
        """Return the store key of a group given as ``{path: value}``."""
        values = tuple(hashable(group.get(p)) for p in self.group_by)
        if not values:
            return None
        return values[0] if len(values) == 1 else values

    def __repr__(self) -> str:
        within = format_duration(self.within)
        return f"{type(self).__name__}({self.name!r}, within={within!r})"


class Threshold(Rule):
    """At least ``at_least`` matching events in the trailing window, per group.

    At time *t* the window holds the events with time in
    ``(t - within, t]``; the rule fires at the event that makes the count
    reach ``at_least`` and resolves when the count drops below it again.
    State per group: at most ``at_least`` timestamps (exact).

    Args:
        name: unique rule name.
        match: which events count (:func:`rules.match`).
        group_by: event paths that form the group key (``["actor.id"]``);
            events missing a path are grouped under ``None``.
        at_least: the count that fires (inclusive), at least 1.
        within: window length (seconds, ``timedelta`` or ``"10m"``).
        then: callables run with the :class:`Alert` when a group fires.
        on_resolve: callables run when it resolves; default: ``then``
            (they see ``alert.status == "resolved"``); ``[]`` opts out.
        for_: the condition must hold this long before firing (pending).
        cooldown: after a group fires, new firings of that group within
            this time are suppressed (and counted).
        severity: severity of the alert and its ``auditloop.alert`` event.
        labels: extra string labels copied onto every alert.
        max_groups: groups kept per rule; beyond it the least recently seen
            group is evicted (counted).
        evidence: most events kept per group as alert evidence.
        store: where this rule's per-group state lives (a
            :class:`~auditloop.rules.Store`, e.g. ``rules.RedisStore(url)``
            for a rule the whole fleet must count together); default: the
            engine's store (``configure(rule_store=...)``, in memory unless
            set). Rules given the same store object share it (one round
            trip per event for a :class:`~auditloop.rules.RedisStore`).

    Raises:
        RuleError: naming the rule and the field, for any invalid argument.
    """

    kind = "threshold"
    __slots__ = ("at_least", "match")

    @_rule_options
    def __init__(
        self,
        name: str,
        *,
        match: Match,
        at_least: int,
        within: Duration,
        group_by: str | Seq[str] = (),
        then: Action | Iterable[Action] = (),
        on_resolve: Action | Iterable[Action] | None = None,
        for_: Duration = 0,
        cooldown: Duration = 0,
        severity: str = "medium",
        labels: Mapping[str, str] | None = None,
        max_groups: int = _DEFAULT_MAX_GROUPS,
        evidence: int = _DEFAULT_EVIDENCE,
        store: Store | None = None,
    ) -> None:
        self._init_common(
            name,
            group_by=group_by,
            within=within,
            then=then,
            on_resolve=on_resolve,
            for_=for_,
            cooldown=cooldown,
            severity=severity,
            labels=labels,
            max_groups=max_groups,
            evidence=evidence,
            store=store,
        )
        self.match = self._match("match", match)
        self.at_least = self._int("at_least", at_least, minimum=1)
        self.matchers = (self.match,)
        self.threshold = float(self.at_least)


class Ratio(Rule):
    """The share of ``match`` events among ``of`` events exceeds ``above``.

    Evaluated only once the window holds at least ``min_count`` ``of``
    events (the denominator). An event can count in both (usually
    ``match`` is a narrower form of ``of``, e.g. failed logins among
    logins). Like every rule it fires at an event (the one that makes the
    ratio exceed ``above``); a firing group is re-checked whenever one of its
    events leaves the window, so it resolves at that instant even without
    new events.

    State per group: the timestamps in the window, at most ``max_events``
    (older ones are dropped early and counted as ``overflow``).

    Args:
        of: the denominator events (:func:`rules.match`).
        above: fires when matching / of > above (strictly), 0 <= above < 1.
        min_count: fewest ``of`` events in the window for the rule to fire.
        max_events: most events remembered per group.

    The other arguments are as for :class:`Threshold`.

    Raises:
        RuleError: naming the rule and the field, for any invalid argument.
    """

    kind = "ratio"
    __slots__ = ("above", "match", "max_events", "min_count", "of")

    @_rule_options
    def __init__(
        self,
        name: str,
        *,
        match: Match,
        of: Match,
        above: float,
        within: Duration,
        min_count: int = 1,
        group_by: str | Seq[str] = (),
        then: Action | Iterable[Action] = (),
        on_resolve: Action | Iterable[Action] | None = None,
        for_: Duration = 0,
        cooldown: Duration = 0,
        severity: str = "medium",
        labels: Mapping[str, str] | None = None,
        max_groups: int = _DEFAULT_MAX_GROUPS,
        evidence: int = _DEFAULT_EVIDENCE,
        max_events: int = _DEFAULT_MAX_EVENTS,
        store: Store | None = None,
    ) -> None:
        self._init_common(
            name,
            group_by=group_by,
            within=within,
            then=then,
            on_resolve=on_resolve,
            for_=for_,
            cooldown=cooldown,
            severity=severity,
            labels=labels,
            max_groups=max_groups,
            evidence=evidence,
            store=store,
        )
        self.match = self._match("match", match)
        self.of = self._match("of", of)
        if isinstance(above, bool) or not isinstance(above, int | float):
            self._fail("above", f"must be a fraction between 0 and 1, got {above!r}")
        if not 0 <= above < 1:
            self._fail("above", f"must be a fraction, 0 <= above < 1, got {above!r}")
        self.above = float(above)
        self.min_count = self._int("min_count", min_count, minimum=1)
        self.max_events = self._int("max_events", max_events, minimum=1)
        self.matchers = (self.match, self.of)
        self.threshold = self.above


class Distinct(Rule):
    """Distinct values of ``field`` within the window reach ``at_least``.

    For example one actor touching 50 different targets in an hour:
    ``Distinct(..., field="target.id", group_by=["actor.id"], at_least=50)``.
    Events without the field are not counted. State per group: at most
    ``at_least`` values with their latest time (exact).

    Args:
        field: the event path whose distinct values are counted.
        at_least: the number of distinct values that fires (inclusive).

    The other arguments are as for :class:`Threshold`.

    Raises:
        RuleError: naming the rule and the field, for any invalid argument.
    """

    kind = "distinct"
    __slots__ = ("at_least", "field", "field_value", "match")

    field_value: Getter

    @_rule_options
    def __init__(
        self,
        name: str,
        *,
        match: Match,
        field: str,
        at_least: int,
        within: Duration,
        group_by: str | Seq[str] = (),
        then: Action | Iterable[Action] = (),
        on_resolve: Action | Iterable[Action] | None = None,
        for_: Duration = 0,
        cooldown: Duration = 0,
        severity: str = "medium",
        labels: Mapping[str, str] | None = None,
        max_groups: int = _DEFAULT_MAX_GROUPS,
        evidence: int = _DEFAULT_EVIDENCE,
        store: Store | None = None,
    ) -> None:
        self._init_common(
            name,
            group_by=group_by,
            within=within,
            then=then,
            on_resolve=on_resolve,
            for_=for_,
            cooldown=cooldown,
            severity=severity,
            labels=labels,
            max_groups=max_groups,
            evidence=evidence,
            store=store,
        )
        self.match = self._match("match", match)
        try:
            self.field = check_path(field)
        except RuleError as exc:
            raise RuleError(f"rule {self.name!r}: field: {exc}") from None
        if self.field in self.group_by:
            self._fail(
                "field", f"{field!r} is also a group_by path, so it has one value"
            )
        self.field_value = compile_path(self.field)
        self.at_least = self._int("at_least", at_least, minimum=1)
        self.matchers = (self.match,)
        self.threshold = float(self.at_least)


class Absence(Rule):
    """No matching event for ``within``, per group.

    A group is watched once it has been seen (a matching event) and, with
    ``expected``, from the engine's start for the groups declared up front
    (a rule without ``group_by`` always watches its single group from the
    start). It fires at exactly ``last_seen + within`` — noticed when the
    clock reaches that time, by a later event or a tick — and resolves at
    the next matching event. The alert's ``value`` is the seconds since the
    last matching event.

    Args:
        expected: group keys watched from the start: values for a single
            ``group_by`` path, tuples or ``{path: value}`` dicts for several.

    The other arguments are as for :class:`Threshold`.

    Raises:
        RuleError: naming the rule and the field, for any invalid argument.
    """

    kind = "absence"
    time_can_fire = True
    __slots__ = ("expected", "match")

    expected: tuple[object, ...]

    @_rule_options
    def __init__(
        self,
        name: str,
        *,
        match: Match,
        within: Duration,
        group_by: str | Seq[str] = (),
        expected: Iterable[object] = (),
        then: Action | Iterable[Action] = (),
        on_resolve: Action | Iterable[Action] | None = None,
        for_: Duration = 0,
        cooldown: Duration = 0,
        severity: str = "medium",
        labels: Mapping[str, str] | None = None,
        max_groups: int = _DEFAULT_MAX_GROUPS,
        evidence: int = _DEFAULT_EVIDENCE,
        store: Store | None = None,
    ) -> None:
        self._init_common(
            name,
            group_by=group_by,
            within=within,
            then=then,
            on_resolve=on_resolve,
            for_=for_,
            cooldown=cooldown,
            severity=severity,
            labels=labels,
            max_groups=max_groups,
            evidence=evidence,
            store=store,
        )
        self.match = self._match("match", match)
        self.expected = self._expected(expected)
        self.matchers = (self.match,)
        self.threshold = self.within

    def _expected(self, expected: object) -> tuple[object, ...]:
        if isinstance(expected, str) or not isinstance(expected, Iterable):
            self._fail("expected", f"must be a list of group keys, got {expected!r}")
        keys: list[object] = []
        width = len(self.group_by)
        for item in expected:
            if width == 0:
                self._fail(
                    "expected",
                    "needs group_by (without it the single group is always watched)",
                )
            if isinstance(item, Mapping):
                unknown = set(item) - set(self.group_by)
                if unknown:
                    self._fail("expected", f"{sorted(unknown)} are not group_by paths")
                keys.append(self.key_of(item))
            elif width == 1:
                keys.append(hashable(item))
            elif isinstance(item, tuple | list) and len(item) == width:
                keys.append(tuple(hashable(v) for v in item))
            else:
                self._fail(
                    "expected",
                    f"{item!r} is not a key for group_by {list(self.group_by)}",
                )
        if width == 0:
            keys.append(None)
        return tuple(dict.fromkeys(keys))


class Sequence(Rule):
    """The steps happen in order for the same group within the window.

    Fires at the event that completes the last step when the whole chain
    (first step to last) lies in ``(t - within, t]``; for example failed
    logins, then a successful login, then a permission grant. Steps are
    taken in arrival order; one event can advance at most one step of a
    chain. The alert resolves when the chain's first event leaves the
    window. State per group: one partial chain per step (bounded).

    Args:
        steps: two or more :func:`rules.match` objects, in order.

    The other arguments are as for :class:`Threshold`.

    Raises:
        RuleError: naming the rule and the field, for any invalid argument.
    """

    kind = "sequence"
    __slots__ = ("steps",)

    steps: tuple[Match, ...]

    @_rule_options
    def __init__(
        self,
        name: str,
        *,
        steps: Seq[Match],
        within: Duration,
        group_by: str | Seq[str] = (),
        then: Action | Iterable[Action] = (),
        on_resolve: Action | Iterable[Action] | None = None,
        for_: Duration = 0,
        cooldown: Duration = 0,
        severity: str = "medium",
        labels: Mapping[str, str] | None = None,
        max_groups: int = _DEFAULT_MAX_GROUPS,
        evidence: int = _DEFAULT_EVIDENCE,
        store: Store | None = None,
    ) -> None:
        self._init_common(
            name,
            group_by=group_by,
            within=within,
            then=then,
            on_resolve=on_resolve,
            for_=for_,
            cooldown=cooldown,
            severity=severity,
            labels=labels,
            max_groups=max_groups,
            evidence=evidence,
            store=store,
        )
        if isinstance(steps, Match) or not isinstance(steps, Iterable):
            self._fail("steps", f"must be a list of rules.match(...), got {steps!r}")
        step_list = tuple(steps)
        if len(step_list) < 2:
            self._fail("steps", f"needs at least 2 steps, got {len(step_list)}")
        if len(step_list) > 32:
            self._fail("steps", f"allows at most 32 steps, got {len(step_list)}")
        self.steps = tuple(
            self._match(f"steps[{i}]", s) for i, s in enumerate(step_list)
        )
        self.matchers = self.steps
        self.threshold = float(len(self.steps))
