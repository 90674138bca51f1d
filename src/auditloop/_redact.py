"""Key-based redaction of secrets, on by default."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from auditloop.exceptions import ConfigurationError

__all__ = ["DEFAULT_REDACT_KEYS", "REDACTED", "Redactor"]

REDACTED: Final = "[REDACTED]"

#: Key names whose values never reach a sink (compared after normalising: see
#: :class:`Redactor`).
DEFAULT_REDACT_KEYS: Final[frozenset[str]] = frozenset(
    {
        "access_key",
        "api_key",
        "apikey",
        "authorization",
        "card_number",
        "cardnumber",
        "client_secret",
        "cookie",
        "credit_card",
        "creditcard",
        "passwd",
        "password",
        "private_key",
        "secret",
        "session",
        "set_cookie",
        "token",
    }
)
_MAX_DEPTH: Final = 64
_SCALARS: Final = frozenset({str, int, float, bool, type(None)})
_CACHE_LIMIT: Final = 4096


def _normalise(key: str) -> str:
    norm = key.lower().replace("-", "_")
    if norm.startswith("x_"):
        norm = norm[2:]
    return norm.lstrip("_")


class Redactor:
    """Processor that replaces the values of secret-looking keys.

    A key is secret when, lower-cased with ``-`` read as ``_`` and a leading
    ``x_`` or ``_`` removed, it equals a listed name or ends with ``_`` plus
    one (``X-Api-Key``, ``_password``, ``db_password``, ``github_token`` are
    all caught; ``token_count`` is not). Redaction walks ``attributes`` and
    ``context`` at any depth, never mutates the caller's objects, and stops
    at 64 levels (where a cyclic structure is cut).

    Args:
        extra_keys: names added to the default list.
        keys: names replacing the default list entirely.
        marker: the replacement value.
    """

    __slots__ = ("_cache", "_last_context", "keys", "marker")

    def __init__(
        self,
        *,
        extra_keys: Iterable[str] = (),
        keys: Iterable[str] | None = None,
        marker: str = REDACTED,
    ) -> None:
        base = DEFAULT_REDACT_KEYS if keys is None else keys
        if isinstance(base, str) or isinstance(extra_keys, str):
            raise ConfigurationError(
                "Redactor: keys and extra_keys take lists of names"
            )
        self.keys = frozenset(_normalise(k) for k in (*base, *extra_keys))
        self.marker = marker
        self._cache: dict[object, bool] = {}
        # The context dict usually is one bound scope's, shared by many events
        # and never mutated: remember the last one redacted (input, output).
        self._last_context: tuple[object, Any] = (None, None)

    def is_secret(self, key: object) -> bool:
        """Tell whether values under *key* are redacted."""
        hit = self._cache.get(key)
        if hit is None:
            norm = _normalise(key if isinstance(key, str) else str(key))
            hit = norm in self.keys or any(norm.endswith("_" + k) for k in self.keys)
            if len(self._cache) < _CACHE_LIMIT:
                self._cache[key] = hit
        return hit

    def redact(self, value: Any, depth: int = 0) -> Any:
        """Return *value* with secret keys' values replaced, at any depth."""
        if isinstance(value, Mapping):
            if depth >= _MAX_DEPTH:
                return "<too deep or cyclic>"
            cache, out = self._cache, {}
            for k, v in value.items():
                secret = cache.get(k)
                if secret is None:
                    secret = self.is_secret(k)
                if secret:
                    out[k] = self.marker
                elif type(v) in _SCALARS:
                    out[k] = v
                else:
                    out[k] = self.redact(v, depth + 1)
            return out
        if isinstance(value, list | tuple):
            if depth >= _MAX_DEPTH:
                return "<too deep or cyclic>"
            return [self.redact(v, depth + 1) for v in value]
        return value

    def __call__(
        self, auditor: object, method: str, event: dict[str, Any]
    ) -> dict[str, Any]:
        """Redact ``attributes`` and ``context`` of *event* (a processor)."""
        attributes = event.get("attributes")
        if attributes:
            event["attributes"] = self.redact(attributes)
        context = event.get("context")
        if context:
            seen, redacted = self._last_context
            if context is not seen:
                redacted = self.redact(context)
                self._last_context = (context, redacted)
            event["context"] = redacted
        return event
