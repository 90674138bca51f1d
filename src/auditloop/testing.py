"""Helpers for testing code that audits, shipped as part of the product.

- :func:`capture` collects every event emitted inside a ``with`` block,
  whatever sinks are configured.
- :class:`FakeClock` drives event time (and rule windows) without sleeping.
- :class:`RuleHarness` feeds events to rules at given times and asserts the
  exact alerts, in the spirit of ``promtool test rules``;
  :func:`run_rule_tests` runs such tests written in TOML (what
  ``auditloop test-rules`` does).

The pytest plugin (installed with the package) exposes ``audit_events`` and
``rule_harness`` fixtures.
"""

from __future__ import annotations

import contextlib
import os
import threading
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import attrs

from auditloop._auditor import Auditor, add_tap, remove_tap
from auditloop._clock import parse_rfc3339
from auditloop._event import AuditEvent
from auditloop.exceptions import RuleError
from auditloop.rules._alert import Alert, rfc3339
from auditloop.rules._duration import format_duration, parse_duration
from auditloop.rules._engine import RuleEngine
from auditloop.rules._kinds import Rule
from auditloop.rules._load import load, load_rule_list

__all__ = [
    "FakeClock",
    "RuleHarness",
    "RuleTestFailure",
    "RuleTestResult",
    "capture",
    "run_rule_tests",
]

#: Where a :class:`RuleHarness` starts by default: 2026-01-01T00:00:00Z.
DEFAULT_START: Final = 1_767_225_600.0


@contextlib.contextmanager
def capture() -> Iterator[list[AuditEvent]]:
    """Collect the events emitted (by any auditor) while the block runs.

    Events are appended as soon as they are emitted, in their final form
    (after processors and redaction, as encoded for the sinks), so no flush
    is needed. Sinks still receive them as usual.
    """
    events: list[AuditEvent] = []
    add_tap(events)
    try:
        yield events
    finally:
        remove_tap(events)


def _unix_seconds(when: float | datetime) -> float:
    """Unix seconds of *when*; a naive ``datetime`` is read as UTC."""
    if isinstance(when, datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.timestamp()
    return float(when)


class FakeClock:
    """A clock that only moves when told to; pass it as ``clock=``.

    Calling it returns Unix time in seconds, like ``time.time``. A naive
    ``datetime`` (no ``tzinfo``) given as *start* or to :meth:`set` is
    read as UTC, whatever the machine's time zone. Thread-safe.
    """

    def __init__(self, start: float | datetime = 1_767_225_600.0) -> None:
        self._lock = threading.Lock()
        self._now = _unix_seconds(start)

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float | timedelta) -> float:
        """Move the clock forward and return the new time."""
        step = seconds.total_seconds() if isinstance(seconds, timedelta) else seconds
        if step < 0:
            raise ValueError("FakeClock only moves forward")
        with self._lock:
            self._now += step
            return self._now

    def set(self, when: float | datetime) -> None:
        """Jump to *when* (forward only; a naive ``datetime`` is UTC)."""
        target = _unix_seconds(when)
        with self._lock:
            if target < self._now:
                raise ValueError("FakeClock only moves forward")
            self._now = target


# -- the rule harness ---------------------------------------------------------

When = float | int | str | timedelta | datetime
AlertSpec = Mapping[str, Any] | tuple[str, Mapping[str, Any]]


def _describe(alert: Mapping[str, Any]) -> str:
    group = ", ".join(f"{k}={v!r}" for k, v in sorted(alert["group"].items()))
    text = f"{alert['rule']} {{{group}}}"
    if alert.get("value") is not None:
        text += f" value={alert['value']:g}"
    return text


def _normalise(spec: AlertSpec) -> dict[str, Any]:
    if isinstance(spec, tuple):
        rule, group = spec
        spec = {"rule": rule, "group": group}
    if not isinstance(spec, Mapping) or not isinstance(spec.get("rule"), str):
        raise ValueError(f"an expected alert needs a rule name: {spec!r}")
    unknown = set(spec) - {"rule", "group", "value"}
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)} in expected alert {spec!r}")
    group = spec.get("group", {})
    if not isinstance(group, Mapping):
        raise ValueError(f"group must be a table of path = value: {spec!r}")
    value = spec.get("value")
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int | float)
    ):
        raise ValueError(f"value must be a number: {spec!r}")
    return {"rule": spec["rule"], "group": dict(group), "value": value}


def _compare(label: str, expected: list[dict[str, Any]], got: list[Alert]) -> list[str]:
    """Return diff lines (empty when *got* is exactly *expected*)."""
    remaining = [
        {"rule": a.rule, "group": dict(a.group), "value": a.value} for a in got
    ]
    missing = []
    for exp in expected:
        for i, candidate in enumerate(remaining):
            if (
                candidate["rule"] == exp["rule"]
                and candidate["group"] == exp["group"]
                and (exp["value"] is None or candidate["value"] == exp["value"])
            ):
                del remaining[i]
                break
        else:
            missing.append(exp)
    if not missing and not remaining:
        return []
    lines = [f"  {label}:"]
    lines += [f"    expected: {_describe(e)}" for e in expected] or [
        "    expected: (none)"
    ]
    got_dicts = [
        {"rule": a.rule, "group": dict(a.group), "value": a.value} for a in got
    ]
    lines += [f"    got:      {_describe(g)}" for g in got_dicts] or [
        "    got:      (none)"
    ]
    lines += [f"    - missing:    {_describe(m)}" for m in missing]
    lines += [f"    + unexpected: {_describe(u)}" for u in remaining]
    return lines


class RuleHarness:
    """Drive rules with events at chosen times and assert the exact alerts.

    Events go through a real :class:`~auditloop.Auditor` (processors,
    redaction, wire form) whose clock is a :class:`FakeClock`, so rules see
    exactly what they would in production; alerts are also emitted as
    ``auditloop.alert`` events (visible to :func:`capture`). The rules'
    actions do not run unless *run_actions* is true. Nothing sleeps.

    Times (``at=``) are offsets from *start* (seconds, ``timedelta`` or a
    duration like ``"5m"``) or absolute ``datetime`` values (naive ones
    are UTC); time only moves forward.

    Args:
        rules: rule objects, or a path to a TOML rule file (whose actions
            are only imported when *run_actions* is true).
        start: the clock's start (Unix seconds or datetime).
        processors: extra processors for the harness's Auditor.
        run_actions: run ``then``/``on_resolve`` actions (on the dispatcher
            thread; :meth:`close` waits for them).

    Raises:
        RuleError: for invalid rules.
    """

    def __init__(
        self,
        rules: Sequence[Rule] | str | os.PathLike[str],
        *,
        start: float | datetime = DEFAULT_START,
        processors: Iterable[Any] = (),
        run_actions: bool = False,
    ) -> None:
        rule_list = (
            load(rules, actions=run_actions)
            if isinstance(rules, str | os.PathLike)
            else list(rules)
        )
        self.clock = FakeClock(start)
        self.start = self.clock()
        self.auditor = Auditor(clock=self.clock, processors=processors)
        self.engine = RuleEngine(
            rule_list,
            auditor=self.auditor,
            clock=self.clock,
            actions=run_actions,
            ticker=False,
        )
        self.auditor.rules = self.engine
        #: Every alert notification so far (firing and resolved), in order.
        self.alerts: list[Alert] = []
        self.engine.add_listener(self.alerts.append)
        self._checked = 0

    # -- time ----------------------------------------------------------------

    def time_of(self, when: When) -> float:
        """Unix seconds of *when* (an offset from start, or a datetime).

        Raises:
            ValueError: for something that is neither.
        """
        if isinstance(when, datetime):
            return _unix_seconds(when)
        try:
            return self.start + parse_duration(when, allow_zero=True)
        except RuleError as exc:
            if isinstance(when, str):
                try:
                    return parse_rfc3339(when)
                except ValueError:
                    pass
            raise ValueError(f"not an offset or a time: {when!r} ({exc})") from None

    @property
    def now(self) -> float:
        """Current harness time in Unix seconds."""
        return self.clock()

    @property
    def elapsed(self) -> float:
        """Seconds since start."""
        return self.clock() - self.start

    def advance(self, by: float | str | timedelta) -> None:
        """Move the clock forward by *by* and let the rules notice.

        Raises:
            ValueError: for a negative or unreadable duration.
        """
        try:
            seconds = parse_duration(by, allow_zero=True)
        except RuleError as exc:
            raise ValueError(str(exc)) from None
        self._move(self.now + seconds)

    def advance_to(self, when: When) -> None:
        """Move the clock to *when* and let the rules notice.

        Raises:
            ValueError: when *when* is earlier than the current time.
        """
        self._move(self.time_of(when))

    def _move(self, target: float) -> None:
        if target < self.now:
            raise ValueError(
                f"cannot go back in time: {self._label(target)} is before "
                f"{self._label(self.now)}"
            )
        self.clock.set(target)
        self.engine.tick(target)

    # -- events --------------------------------------------------------------

    def emit(self, action: str, *, at: When | None = None, **fields: Any) -> None:
        """Emit one event at *at* (default: now), like ``auditloop.emit``.

        Keyword arguments are those of :func:`auditloop.emit` (``actor``,
        ``target``, ``outcome``, ``category``, ``severity``, ``reason``;
        others become attributes).
        """
        if at is not None:
            self._move(self.time_of(at))
        self.auditor.emit(action, **fields)

    # -- alerts --------------------------------------------------------------

    def firing(self) -> list[Alert]:
        """The alerts firing now."""
        return self.engine.firing()

    def resolved(self) -> list[Alert]:
        """Resolutions since the last :meth:`assert_alerts` (or the start)."""
        return [a for a in self.alerts[self._checked :] if a.status == "resolved"]

    def check(
        self,
        *,
        firing: Iterable[AlertSpec] = (),
        resolved: Iterable[AlertSpec] = (),
        at: When | None = None,
    ) -> str | None:
        """Compare the alerts with the expectation; return a diff or ``None``.

        See :meth:`assert_alerts`.
        """
        if at is not None:
            self._move(self.time_of(at))
        expected_firing = [_normalise(s) for s in firing]
        expected_resolved = [_normalise(s) for s in resolved]
        lines = _compare("firing", expected_firing, self.firing())
        lines += _compare("resolved", expected_resolved, self.resolved())
        self._checked = len(self.alerts)
        if not lines:
            return None
        return "\n".join([f"alerts at {self._label(self.now)} differ:", *lines])

    def assert_alerts(
        self,
        *,
        firing: Iterable[AlertSpec] = (),
        resolved: Iterable[AlertSpec] = (),
        at: When | None = None,
    ) -> None:
        """Assert exactly which alerts fire now and which resolved recently.

        Moves to *at* first (if given). ``firing`` lists every alert that
        must be firing now, ``resolved`` every alert that resolved since the
        previous assertion; any other alert fails. An expected alert is
        ``{"rule": name, "group": {path: value}}`` (optionally with
        ``"value"``) or ``(name, group)``.

        Raises:
            AssertionError: with an expected/got diff.
        """
        diff = self.check(firing=firing, resolved=resolved, at=at)
        if diff is not None:
            raise AssertionError(diff)

    def _label(self, when: float) -> str:
        offset = when - self.start
        sign = "-" if offset < 0 else "+"
        text = format_duration(abs(offset)) if offset else "0s"
        return f"{sign}{text} ({rfc3339(datetime.fromtimestamp(when, UTC))})"

    # -- lifecycle -----------------------------------------------------------

    def close(self, timeout: float = 5.0) -> None:
        """Wait for actions (if running) and stop the harness's threads."""
        self.auditor.shutdown(timeout)

    def __enter__(self) -> RuleHarness:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


# -- rule tests in TOML -------------------------------------------------------

_EVENT_KEYS: Final = frozenset(
    {
        "at",
        "action",
        "actor",
        "target",
        "outcome",
        "category",
        "severity",
        "reason",
        "attributes",
        "repeat",
        "every",
    }
)


@attrs.frozen
class RuleTestFailure:
    """One failed expectation of a rule test."""

    test: str
    at: str
    message: str

    def __str__(self) -> str:
        return f"{self.test}: {self.message}"


@attrs.frozen
class RuleTestResult:
    """The outcome of :func:`run_rule_tests`."""

    tests: int
    failures: tuple[RuleTestFailure, ...] = ()

    @property
    def ok(self) -> bool:
        """True when every expectation held."""
        return not self.failures

    def report(self) -> str:
        """A promtool-style text report."""
        if self.ok:
            return f"SUCCESS: {self.tests} rule test(s) passed"
        lines = [
            f"FAILED: {len(self.failures)} of the expectations in {self.tests} test(s)"
        ]
        for failure in self.failures:
            lines.append(f"  {failure.test}:")
            lines += [f"  {line}" for line in failure.message.splitlines()]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()


def _time_value(value: object, where: str) -> object:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return value
    raise RuleError(
        f"{where}: at must be an offset like '5m' or a date-time, got {value!r}"
    )


def run_rule_tests(
    source: str | os.PathLike[str] | Mapping[str, Any],
    *,
    rules: Sequence[Rule] | None = None,
) -> RuleTestResult:
    """Run rule tests written as data: events at times, expected alerts at times.

    The TOML form (see ``docs/testing-rules.md``)::

        rule_files = ["rules.toml"]      # relative to this file; or [[rules]]

        [[tests]]
        name = "storm by alice"
        [[tests.events]]
        at = "0s"
        action = "permission.grant"
        actor = "alice"
        repeat = 5
        every = "1m"
        [[tests.expect]]
        at = "4m"
        firing = [{ rule = "permission-storm", group = { "actor.id" = "alice" } }]

    Each test starts from a fresh state. At each expectation's time, every
    event up to that time has been fed; ``firing`` must be exactly the
    alerts firing then, ``resolved`` exactly those resolved since the
    previous expectation. Actions do not run, and the rule files' ``then``
    and ``on_resolve`` are not even imported (``where`` callables are).

    Args:
        source: a TOML file or the equivalent dict.
        rules: the rules to test (instead of ``rule_files``/``[[rules]]``).

    Returns:
        A :class:`RuleTestResult`; ``.ok`` and ``.report()``.

    Raises:
        RuleError: for a test file (or rule file) that cannot be used.
    """
    if isinstance(source, Mapping):
        data: Mapping[str, Any] = source
        origin, base = "tests", Path.cwd()
    else:
        path = Path(source)
        origin, base = str(path), path.parent
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise RuleError(f"{origin}: cannot read: {exc.strerror or exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise RuleError(f"{origin}: not valid TOML: {exc}") from None
    unknown = set(data) - {"rule_files", "rules", "tests"}
    if unknown:
        raise RuleError(f"{origin}: unknown top-level key {sorted(unknown)[0]!r}")
    rule_list = list(rules) if rules is not None else _test_rules(data, origin, base)
    tests = data.get("tests")
    if not isinstance(tests, list) or not tests:
        raise RuleError(f"{origin}: no tests: add [[tests]] tables")
    failures: list[RuleTestFailure] = []
    for index, test in enumerate(tests):
        failures += _run_test(test, rule_list, f"{origin}: tests[{index}]")
    return RuleTestResult(tests=len(tests), failures=tuple(failures))


def _test_rules(data: Mapping[str, Any], origin: str, base: Path) -> list[Rule]:
    result: list[Rule] = []
    files = data.get("rule_files", [])
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise RuleError(f"{origin}: rule_files must be a list of paths")
    # Actions never run in rule tests: do not import them.
    for name in files:
        result += load(base / name, actions=False)
    result += load_rule_list(data.get("rules", []), origin, actions=False)
    if not result:
        raise RuleError(f"{origin}: no rules: give rule_files or [[rules]]")
    return result


def _run_test(test: object, rules: Sequence[Rule], where: str) -> list[RuleTestFailure]:
    if not isinstance(test, Mapping):
        raise RuleError(f"{where}: a test must be a table")
    unknown = set(test) - {"name", "start", "events", "expect"}
    if unknown:
        raise RuleError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    name = str(test.get("name", where))
    start = test.get("start", DEFAULT_START)
    if isinstance(start, str):
        try:
            start = parse_rfc3339(start)
        except ValueError:
            raise RuleError(
                f"{where}: start must be a date-time, got {start!r}"
            ) from None
    if isinstance(start, datetime) and start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    if not isinstance(start, float | int | datetime) or isinstance(start, bool):
        raise RuleError(f"{where}: start must be a date-time, got {start!r}")
    steps: list[tuple[float, int, int, Mapping[str, Any]]] = []
    events = test.get("events", [])
    if not isinstance(events, list):
        raise RuleError(f"{where}: events must be an array of tables")
    with RuleHarness(rules, start=start) as harness:
        for i, event in enumerate(events):
            steps += _event_steps(harness, event, f"{where}.events[{i}]", i)
        expectations = test.get("expect", [])
        if not isinstance(expectations, list) or not expectations:
            raise RuleError(f"{where}: no expectations: add [[tests.expect]] tables")
        for i, expect in enumerate(expectations):
            if not isinstance(expect, Mapping):
                raise RuleError(f"{where}.expect[{i}]: must be a table")
            extra = set(expect) - {"at", "firing", "resolved"}
            if extra:
                raise RuleError(
                    f"{where}.expect[{i}]: unknown key {sorted(extra)[0]!r}"
                )
            when = _resolve(harness, expect.get("at"), f"{where}.expect[{i}]")
            steps.append((when, 1, i, expect))
        steps.sort(key=lambda step: step[:3])
        failures = []
        for when, kind, i, spec in steps:
            harness._move(max(when, harness.now))
            if kind == 0:
                harness.emit(**spec)
                continue
            try:
                firing = [_normalise(s) for s in spec.get("firing", [])]
                resolved = [_normalise(s) for s in spec.get("resolved", [])]
            except (ValueError, TypeError) as exc:
                raise RuleError(f"{where}.expect[{i}]: {exc}") from None
            diff = harness.check(firing=firing, resolved=resolved)
            if diff is not None:
                failures.append(
                    RuleTestFailure(name, format_duration(when - harness.start), diff)
                )
    return failures


def _resolve(harness: RuleHarness, value: object, where: str) -> float:
    if value is None:
        raise RuleError(f"{where}: at is required")
    try:
        return harness.time_of(_time_value(value, where))  # type: ignore[arg-type]
    except ValueError as exc:
        raise RuleError(f"{where}: {exc}") from None


def _event_steps(
    harness: RuleHarness, event: object, where: str, index: int
) -> list[tuple[float, int, int, Mapping[str, Any]]]:
    if not isinstance(event, Mapping):
        raise RuleError(f"{where}: an event must be a table")
    unknown = set(event) - _EVENT_KEYS
    if unknown:
        raise RuleError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    if not isinstance(event.get("action"), str):
        raise RuleError(f"{where}: action is required")
    start = _resolve(harness, event.get("at", 0), where)
    repeat = event.get("repeat", 1)
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise RuleError(f"{where}: repeat must be a positive integer, got {repeat!r}")
    try:
        every = parse_duration(event.get("every", 0), allow_zero=True)
    except RuleError as exc:
        raise RuleError(f"{where}: every: {exc}") from None
    attributes = event.get("attributes", {})
    if not isinstance(attributes, Mapping):
        raise RuleError(f"{where}: attributes must be a table")
    fields = {
        k: v
        for k, v in event.items()
        if k not in {"at", "repeat", "every", "attributes"}
    }
    fields["attributes"] = dict(attributes)
    return [(start + n * every, 0, index, fields) for n in range(repeat)]
