"""Turn unknown or misspelt keyword options into a clear ConfigurationError."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from auditloop.exceptions import ConfigurationError

__all__ = ["checked_options"]

P = ParamSpec("P")
R = TypeVar("R")


def checked_options(fn: Callable[P, R]) -> Callable[P, R]:
    """Check a configure-time call's arguments against *fn*'s signature first.

    An unknown keyword raises :class:`ConfigurationError` naming it and the
    closest valid option, instead of a bare ``TypeError``. Only for
    configure-time callables: it costs a signature bind per call.
    """
    label = fn.__qualname__.removesuffix(".__init__")

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        import inspect  # lazily: keeps `import auditloop` cheap

        signature = inspect.signature(fn)
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            unknown = [k for k in kwargs if k not in signature.parameters]
            if unknown:
                import difflib

                names = [p for p in signature.parameters if p != "self"]
                close = difflib.get_close_matches(unknown[0], names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                msg = f"{label}: unknown option {unknown[0]!r}{hint}"
                raise ConfigurationError(msg) from None
            raise ConfigurationError(f"{label}: {exc}") from None
        return fn(*args, **kwargs)

    return wrapper
