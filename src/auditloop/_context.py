"""Scoped actor and correlation fields, carried by ``contextvars``.

One ``ContextVar`` holds an immutable snapshot (a dict never mutated after it
is set), so reading the scope on the hot path is a single ``get()`` and
asyncio tasks and ``copy_context().run`` threads inherit it for free.
"""

from __future__ import annotations

import contextvars
import functools
import sys
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Final, ParamSpec, TypeVar, cast

from auditloop._event import actor_dict

__all__ = ["Scope", "bind", "current_scope", "scope_get", "scope_with_structlog"]

P = ParamSpec("P")
R = TypeVar("R")


class Scope:
    """The fields bound in one context, split once into actor and context.

    Immutable after construction; events share its dicts read-only.
    """

    __slots__ = ("actor", "context", "fields", "outer", "owner", "token")

    def __init__(self, fields: Mapping[str, Any]) -> None:
        self.fields = fields
        # Set by bind() when this scope is entered: the bind object that
        # entered it, the scope it replaced and the token restoring that one.
        # Kept on the scope (which lives in the context), not on the bind
        # object, so one bind object entered by several threads or tasks at
        # once restores each one's own outer scope.
        self.owner: bind | None = None
        self.outer: Scope | None = None
        self.token: contextvars.Token[Scope] | None = None
        self.actor = actor_dict(fields.get("actor"))
        self.context = {k: v for k, v in fields.items() if k != "actor"}


_EMPTY: Final = Scope({})
_scope: contextvars.ContextVar[Scope] = contextvars.ContextVar(
    "auditloop_scope", default=_EMPTY
)

# structlog's bound contextvars are merged into every event's context. Importing
# structlog costs ~35 ms (it pulls in asyncio and ssl), so it is looked up in
# sys.modules instead: an application that binds with structlog has imported it.
_modules = sys.modules


def current_scope() -> Scope:
    """Return the scope bound with :class:`bind` in the current context."""
    return _scope.get()


#: The ContextVar's own ``get`` (a C method): the hot path's cheapest lookup.
scope_get = _scope.get


def scope_with_structlog() -> Scope:
    """Return the current scope merged over structlog's bound contextvars.

    auditloop's own ``bind()`` wins on conflicts. The structlog lookup is
    skipped entirely while structlog is not imported or nothing was ever
    bound with it.
    """
    own = _scope.get()
    structlog_cv = _modules.get("structlog.contextvars")
    if structlog_cv is None:
        return own
    variables = getattr(structlog_cv, "_CONTEXT_VARS", None)
    if variables is None:  # pragma: no cover - a structlog of another shape
        theirs = structlog_cv.get_contextvars()
    else:
        # structlog's get_contextvars() walks every variable of the context;
        # asking only its own (default: Ellipsis, meaning unset) is cheaper.
        theirs = {}
        cut = len(structlog_cv.STRUCTLOG_KEY_PREFIX)
        for name, var in variables.items():
            value = var.get(Ellipsis)
            if value is not Ellipsis:
                theirs[name[cut:]] = value
    if theirs:
        return Scope({**theirs, **own.fields})
    return own


class bind:  # noqa: N801 - used like a function: ``with bind(...)``, ``@bind(...)``
    """Bind actor and correlation fields for a scope.

    ``actor=`` accepts a string id, an ``Actor`` or a dict; any other keyword
    (``request_id``, ``tenant``, …) lands in each event's ``context``. Scopes
    nest: an inner scope sees the outer fields and overrides them; leaving it
    restores the outer scope exactly, even when the block raises.

    Usable as ``with``/``async with`` and as a decorator of sync or async
    functions. Thread-safe and task-safe: a scope entered in one thread or
    task is invisible to the others, except to tasks and
    ``copy_context().run`` calls started inside it, which inherit it.
    """

    __slots__ = ("_fields",)

    def __init__(self, **fields: Any) -> None:
        self._fields = fields

    def __enter__(self) -> Mapping[str, Any]:
        outer = _scope.get()
        scope = Scope({**outer.fields, **self._fields})
        scope.owner = self
        scope.outer = outer
        scope.token = _scope.set(scope)
        return scope.fields

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Restore the scope this entry replaced; never raises.

        Normally this entry's scope is the current one and is reset. If an
        inner scope is still current (exited out of order, or a generator
        suspended inside its own ``bind``), the current context returns to
        the scope this entry replaced, dropping the inner ones with it. If
        this entry is not in the current context at all (already undone, or
        entered in another copy of the context), nothing changes.
        """
        current = _scope.get()
        scope: Scope | None = current
        while scope is not None and scope.owner is not self:
            scope = scope.outer
        if scope is None or scope.outer is None:
            return
        if scope is current and scope.token is not None:
            try:
                _scope.reset(scope.token)
                return
            except (RuntimeError, ValueError):
                # The token belongs to another copy of the context (anyio's
                # run_sync enters and exits in two copies) or was used.
                pass
        _scope.set(scope.outer)

    async def __aenter__(self) -> Mapping[str, Any]:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate *fn* so every call runs inside this scope."""
        fields = self._fields
        import inspect  # lazily: decoration time only, keeps the import cheap

        if inspect.iscoroutinefunction(fn):
            async_fn = cast("Callable[P, Awaitable[Any]]", fn)

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                with bind(**fields):
                    return await async_fn(*args, **kwargs)

            return cast("Callable[P, R]", async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with bind(**fields):
                return fn(*args, **kwargs)

        return wrapper
