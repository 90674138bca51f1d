"""Recording calls: the ``audited`` decorator and the ``audit`` context manager.

Everything that can be computed once is computed at decoration time (the
parameter names for argument capture, the ``module:qualname`` for
``source.function``, whether ``target`` is static), so a call pays only for
timing, one event build and one enqueue.
"""

from __future__ import annotations

import functools
import time
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Collection,
    Generator,
)
from types import TracebackType
from typing import Any, Final, ParamSpec, TypeVar, cast

from auditloop._auditor import Auditor, _caller
from auditloop._event import actor_dict, target_dict
from auditloop.exceptions import ConfigurationError

__all__ = ["Recorder", "make_audit", "make_audited"]

P = ParamSpec("P")
R = TypeVar("R")

_RETURN: Final = "return"  # never a parameter name: it is a Python keyword
#: The attribute marking a generator (or ``audit()`` block) closed early.
_CLOSED_EARLY: Final = "closed_early"
TargetSpec = str | Callable[..., object] | None


def _function_name(fn: Callable[..., Any]) -> str:
    """``module:qualname`` of *fn*, also for partials and callable instances."""
    inner = getattr(fn, "func", None)  # functools.partial: name what it wraps
    if inner is not None and isinstance(fn, functools.partial):
        return _function_name(inner)
    kind = type(fn)
    module = getattr(fn, "__module__", None) or kind.__module__
    qualname = getattr(fn, "__qualname__", None) or kind.__qualname__
    return f"{module}:{qualname}"


def _repr(value: object) -> str:
    """``repr(value)``, or a placeholder naming its type when ``__repr__`` fails."""
    try:
        return repr(value)
    except Exception:  # a broken __repr__ must not raise into the application
        return f"<unprintable {type(value).__name__}>"


class _CallSpec:
    """What ``audited`` precomputes about one decorated function."""

    __slots__ = (
        "action",
        "capture_args",
        "capture_return",
        "category",
        "defaults",
        "function",
        "get_auditor",
        "param_names",
        "severity",
        "source_cache",
        "target",
        "target_fn",
    )

    def __init__(  # noqa: PLR0917 - private, called once per decoration
        self,
        fn: Callable[..., Any],
        action: str,
        target: TargetSpec,
        category: str | None,
        severity: str | None,
        capture: Collection[str],
        get_auditor: Callable[[], Auditor],
    ) -> None:
        if not isinstance(action, str) or not action:
            raise ConfigurationError(
                f"audited: action must be a non-empty string, got {action!r}"
            )
        if isinstance(capture, str):
            raise ConfigurationError(
                f"audited: capture takes a list of names, got the string {capture!r}"
            )
        import inspect  # lazily: decoration time only, keeps the import cheap

        function_name = _function_name(fn)
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):  # a callable without a readable signature
            params = inspect.Signature().parameters
        self.param_names = tuple(
            name
            for name, p in params.items()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        )
        # Parameters left at their default still have a value the target
        # callable and ``capture=`` should see.
        self.defaults = {
            name: p.default for name, p in params.items() if p.default is not p.empty
        }
        accepts_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
        unknown = [
            n
            for n in capture
            if n != _RETURN and n not in params and not accepts_kwargs
        ]
        if unknown:
            raise ConfigurationError(
                f"audited({action!r}): capture names {unknown[0]!r}, which is not a "
                f"parameter of {function_name}"
            )
        if target is not None and not isinstance(target, str) and not callable(target):
            raise ConfigurationError(
                f"audited({action!r}): target must be a string or a callable, "
                f"got {target!r}"
            )
        self.action = action
        self.category = category
        self.severity = severity
        self.capture_args = tuple(n for n in capture if n != _RETURN)
        self.capture_return = _RETURN in capture
        self.target = target_dict(target) if isinstance(target, str) else None
        self.target_fn = target if callable(target) else None
        self.function = function_name
        self.get_auditor = get_auditor
        self.source_cache: tuple[object, dict[str, Any]] = (None, {})

    def named_arguments(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        named = dict(self.defaults)
        named.update(zip(self.param_names, args, strict=False))
        named.update(kwargs)
        return named

    @property
    def plain(self) -> bool:
        """True when a successful call needs nothing from its arguments or result."""
        return (
            self.target_fn is None and not self.capture_args and not self.capture_return
        )

    def refresh_source(self, auditor: Auditor) -> dict[str, Any]:
        """Rebuild the cached ``source`` (new auditor, or pid after a fork)."""
        source = auditor.source_for(self.function)
        self.source_cache = (auditor.source_base, source)
        return source

    def record(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        start_ns: int,
        exc: BaseException | None,
        result: object,
    ) -> None:
        duration_ms = (time.perf_counter_ns() - start_ns) / 1e6
        auditor = self.get_auditor()
        cached_base, source = self.source_cache
        if cached_base is not auditor.source_base:
            source = self.refresh_source(auditor)
        target = self.target
        attributes: dict[str, Any] | None = None
        if self.target_fn is not None or self.capture_args:
            named = self.named_arguments(args, kwargs)
            if self.target_fn is not None:
                try:
                    target = target_dict(self.target_fn(**named))
                except Exception as target_exc:
                    target = None
                    attributes = {"target_error": _repr(target_exc)}
            if self.capture_args:
                captured = {n: named[n] for n in self.capture_args if n in named}
                attributes = {**attributes, **captured} if attributes else captured
        if self.capture_return and exc is None:
            attributes = (
                {**attributes, _RETURN: result} if attributes else {_RETURN: result}
            )
        if isinstance(exc, GeneratorExit):
            # Closed before the end (the consumer stopped early): not a failure.
            attributes = {**(attributes or {}), _CLOSED_EARLY: True}
            exc = None
        if exc is None:
            outcome = "success"
        elif isinstance(exc, auditor.denied):
            outcome = "denied"
        else:
            outcome = "failure"
        auditor.record(
            "audited",
            self.action,
            outcome,
            source,
            None,
            target,
            self.category,
            self.severity,
            None,
            exc,
            duration_ms,
            attributes,
        )


def make_audited(
    get_auditor: Callable[[], Auditor],
    action: str,
    *,
    target: TargetSpec = None,
    category: str | None = None,
    severity: str | None = None,
    capture: Collection[str] = (),
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Build the ``audited`` decorator bound to an auditor lookup."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        if isinstance(fn, staticmethod | classmethod):
            wrapped = decorate(fn.__func__)
            return cast("Callable[P, R]", type(fn)(wrapped))
        spec = _CallSpec(fn, action, target, category, severity, capture, get_auditor)
        perf_counter_ns = time.perf_counter_ns

        import inspect

        if inspect.isgeneratorfunction(fn):
            return cast("Callable[P, R]", _generator_wrapper(fn, spec))
        if inspect.isasyncgenfunction(fn):
            return cast("Callable[P, R]", _async_generator_wrapper(fn, spec))
        if inspect.iscoroutinefunction(fn):
            async_fn = cast("Callable[P, Awaitable[Any]]", fn)

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                start = perf_counter_ns()
                try:
                    result = await async_fn(*args, **kwargs)
                except BaseException as exc:
                    spec.record(args, kwargs, start, exc, None)
                    raise
                spec.record(args, kwargs, start, None, result)
                return result

            return cast("Callable[P, R]", async_wrapper)

        if spec.plain:
            # The common case — a static target, nothing captured — records a
            # success straight from the wrapper, one frame less than
            # spec.record (which stays the path for failures).
            target_, category_, severity_ = spec.target, spec.category, spec.severity

            @functools.wraps(fn)
            def plain_wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                start = perf_counter_ns()
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    spec.record(args, kwargs, start, exc, None)
                    raise
                auditor = get_auditor()
                base, source = spec.source_cache
                if base is not auditor.source_base:
                    source = spec.refresh_source(auditor)
                auditor.record(
                    "audited",
                    action,
                    "success",
                    source,
                    None,
                    target_,
                    category_,
                    severity_,
                    None,
                    None,
                    (perf_counter_ns() - start) / 1e6,
                    None,
                )
                return result

            return plain_wrapper

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            start = perf_counter_ns()
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                spec.record(args, kwargs, start, exc, None)
                raise
            spec.record(args, kwargs, start, None, result)
            return result

        return wrapper

    return decorate


def _generator_wrapper(
    fn: Callable[..., Generator[Any, Any, Any]], spec: _CallSpec
) -> Callable[..., Generator[Any, Any, Any]]:
    """Wrap a generator function: one event when the generator finishes.

    ``yield from`` forwards ``send``/``throw``/``close`` unchanged. The
    duration runs from the first iteration to the end; a generator never
    iterated records nothing.
    """
    perf_counter_ns = time.perf_counter_ns

    @functools.wraps(fn)
    def generator_wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        start = perf_counter_ns()
        try:
            result = yield from fn(*args, **kwargs)
        except BaseException as exc:  # GeneratorExit too: spec.record sorts it
            spec.record(args, kwargs, start, exc, None)
            raise
        spec.record(args, kwargs, start, None, result)
        return result

    return generator_wrapper


def _async_generator_wrapper(
    fn: Callable[..., AsyncGenerator[Any, Any]], spec: _CallSpec
) -> Callable[..., AsyncGenerator[Any, Any]]:
    """Wrap an async generator function: one event when it finishes.

    Forwards ``asend``/``athrow``/``aclose`` to the wrapped generator (async
    generators have no ``yield from``). Records as :func:`_generator_wrapper`.
    """
    perf_counter_ns = time.perf_counter_ns

    @functools.wraps(fn)
    async def async_generator_wrapper(
        *args: Any, **kwargs: Any
    ) -> AsyncGenerator[Any, Any]:
        start = perf_counter_ns()
        inner = fn(*args, **kwargs)
        try:
            try:
                value = await inner.__anext__()
            except StopAsyncIteration:
                spec.record(args, kwargs, start, None, None)
                return
            while True:
                try:
                    sent = yield value
                except GeneratorExit:
                    await inner.aclose()
                    raise
                except BaseException as thrown:
                    # Thrown in by athrow(): the wrapped generator handles it.
                    try:
                        value = await inner.athrow(thrown)
                    except StopAsyncIteration:
                        break
                else:
                    try:
                        value = await inner.asend(sent)
                    except StopAsyncIteration:
                        break
        except BaseException as exc:  # GeneratorExit too: spec.record sorts it
            spec.record(args, kwargs, start, exc, None)
            raise
        spec.record(args, kwargs, start, None, None)

    return async_generator_wrapper


class Recorder:
    """The handle ``audit()`` yields: adjust the event before it is emitted.

    Attributes:
        target: what the action is done to (string, ``Target`` or mapping).
        outcome: set it to override the outcome recorded on exit (an
            exception in the block records ``failure``/``denied`` unless you
            set one; ``GeneratorExit`` records ``success`` with
            ``attributes.closed_early``).
        reason: why it was done, or why it was denied.
    """

    __slots__ = (
        "_auditor",
        "_function",
        "_start_ns",
        "action",
        "actor",
        "attributes",
        "category",
        "outcome",
        "reason",
        "severity",
        "target",
    )

    def __init__(
        self,
        get_auditor: Callable[[], Auditor],
        action: str,
        function: str | None,
        *,
        target: object,
        actor: object,
        category: str | None,
        severity: str | None,
        reason: str | None,
        attributes: dict[str, Any],
    ) -> None:
        self._auditor = get_auditor
        self._function = function
        self._start_ns = 0
        self.action = action
        self.target = target
        self.actor = actor
        self.category = category
        self.severity = severity
        self.reason = reason
        self.outcome: str | None = None
        self.attributes = attributes

    def set(self, **attributes: Any) -> None:
        """Add or replace attributes of the event."""
        self.attributes.update(attributes)

    def __enter__(self) -> Recorder:
        self._start_ns = time.perf_counter_ns()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        duration_ms = (time.perf_counter_ns() - self._start_ns) / 1e6
        auditor = self._auditor()
        outcome = self.outcome
        if isinstance(exc, GeneratorExit):
            # The enclosing generator was closed early (the consumer stopped
            # iterating): not a failure of the block.
            self.attributes[_CLOSED_EARLY] = True
            exc = None
        if outcome is None:
            if exc is None:
                outcome = "success"
            elif isinstance(exc, auditor.denied):
                outcome = "denied"
            else:
                outcome = "failure"
        auditor.record(
            "audit",
            self.action,
            outcome,
            auditor.source_for(self._function),
            actor_dict(self.actor),
            target_dict(self.target),
            self.category,
            self.severity,
            self.reason,
            exc,
            duration_ms,
            self.attributes,
        )

    async def __aenter__(self) -> Recorder:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def make_audit(
    get_auditor: Callable[[], Auditor],
    action: str,
    *,
    target: object = None,
    actor: object = None,
    category: str | None = None,
    severity: str | None = None,
    reason: str | None = None,
    attributes: dict[str, Any] | None = None,
    depth: int = 1,
) -> Recorder:
    """Build a :class:`Recorder` for the ``audit()`` context manager."""
    return Recorder(
        get_auditor,
        action,
        _caller(depth + 1),
        target=target,
        actor=actor,
        category=category,
        severity=severity,
        reason=reason,
        attributes=dict(attributes) if attributes else {},
    )
