"""Redaction of secrets, on by default: by key name and by value pattern.

Key names catch ``password=...``; value patterns catch the secrets that hide
under innocent keys or inside free text: bearer tokens, JWTs, AWS access key
ids, private key blocks, card numbers that pass the Luhn check and, when
asked, e-mail addresses. Scanning a string costs a few hundred nanoseconds
at most: short strings are skipped, longer ones pass cheap substring and
digit-count prechecks before any regular expression runs, and strings found
clean are remembered.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

import orjson

from auditloop._encode import to_jsonable
from auditloop.exceptions import ConfigurationError

__all__ = [
    "DEFAULT_REDACT_KEYS",
    "REDACTED",
    "REDACTION_FAILED",
    "Redactor",
]

REDACTED: Final = "[REDACTED]"
#: The attribute a ``strict`` Redactor leaves when it could not redact an event.
REDACTION_FAILED: Final = "redaction_failed"

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

Mode = Literal["best-effort", "strict"]

_MAX_DEPTH: Final = 64
_MAX_CONTAINERS: Final = 10_000  # per event: beyond, the rest is cut
_SCALARS: Final = frozenset({str, int, float, bool, type(None)})
_PLAIN: Final = frozenset({float, bool, type(None)})
_CACHE_LIMIT: Final = 4096
#: Shortest string any default pattern matches (a 13-digit card number).
_MIN_SCAN: Final = 13
_CLEAN_MAX_LEN: Final = 512  # longer clean strings are not worth remembering
_DIGITS: Final = b"0123456789"

_BEARER: Final = re.compile(
    r"(?<![A-Za-z0-9])((?:[Bb]earer|BEARER)\s+)([A-Za-z0-9._~+/-]{8,}=*)"
)
_JWT: Final = re.compile(r"eyJ[A-Za-z0-9_-]{7,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_AWS: Final = re.compile(
    r"(?<![A-Z0-9])(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|APKA|AROA|ASCA)"
    r"[A-Z0-9]{16}(?![A-Z0-9])"
)
_AWS_PRECHECK: Final = re.compile(r"A[BCGIKNPRS][A-Z]{2}[A-Z0-9]{16}")
_PRIVATE_KEY: Final = re.compile(
    r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----"
    r"(?:.*?-----END[A-Z0-9 ]*PRIVATE KEY-----|.*)",
    re.DOTALL,
)
# Runs of digits joined by single spaces or hyphens, standing alone like a
# word (as \b would have it): digits inside an id such as a hex request id
# ("...fbae9918490129819...") can pass the Luhn check but are no card. Card
# numbers are found among each run's consecutive groups (so "order 12 4111
# 1111 1111 1111" still yields the card).
_DIGIT_RUN: Final = re.compile(
    r"(?<![0-9A-Za-z_])[0-9]+(?:[ -][0-9]+)*(?![0-9A-Za-z_])"
)
_GROUP: Final = re.compile(r"[0-9]+")
# A UUID's groups can be all digits and pass the Luhn check ("21681-8824-7152"
# in 01a21681-8824-7152-...): event and request ids are never card numbers.
_UUID: Final = re.compile(
    r"(?<![0-9A-Fa-f-])[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}"
    r"(?![0-9A-Fa-f-])"
)
_EMAIL: Final = re.compile(
    r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
)
# Hash mode: a whole value that is "Bearer <token>" hashes as its token, so a
# secret-named key and a value pattern give the same token for one credential.
_BEARER_WHOLE: Final = re.compile(
    r"\s*(?:[Bb]earer|BEARER)\s+([A-Za-z0-9._~+/-]{8,}=*)\s*"
)
_CARD_SEPARATORS: Final = str.maketrans("", "", " -")


def _normalise(key: str) -> str:
    norm = key.lower().replace("-", "_")
    if norm.startswith("x_"):
        norm = norm[2:]
    return norm.lstrip("_")


def _key_text(key: object) -> str:
    """A mapping key as the encoder writes it (``str(key)`` for non-strings)."""
    return key if isinstance(key, str) else str(key)


def _secret_text(value: str) -> str:
    """The part of a redacted string that identifies the secret, for hashing.

    ``"Bearer <token>"`` -> ``<token>``; a Luhn-valid card number grouped by
    spaces or hyphens -> its digits; anything else as is.
    """
    if "earer" in value or "EARER" in value:
        match = _BEARER_WHOLE.fullmatch(value)
        if match is not None:
            return match.group(1)
    digits = value.translate(_CARD_SEPARATORS)
    if (
        13 <= len(digits) <= 19
        and digits.isascii()
        and digits.isdigit()
        and luhn_ok(digits)
    ):
        return digits
    return value


def luhn_ok(digits: str) -> bool:
    """Tell whether the digit string *digits* passes the Luhn checksum."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_spans(text: str) -> list[tuple[int, int]]:
    """Spans of *text* holding a 13-19 digit, Luhn-valid number (not in a UUID)."""
    spans: list[tuple[int, int]] = []
    if "-" in text:  # blank UUIDs out (same length, so spans still fit text)
        text = _UUID.sub(lambda m: "u" * len(m.group()), text)
    for run in _DIGIT_RUN.finditer(text):
        groups = list(_GROUP.finditer(text, run.start(), run.end()))
        i = 0
        while i < len(groups):
            found = None
            digits = ""
            for j in range(i, len(groups)):
                digits += groups[j].group()
                if len(digits) > 19:
                    break
                if len(digits) >= 13 and luhn_ok(digits):
                    found = j  # keep going: prefer the longest valid number
            if found is None:
                i += 1
                continue
            spans.append((groups[i].start(), groups[found].end()))
            i = found + 1
    return spans


class _RedactionFailedError(Exception):
    """A strict Redactor met a value it could not walk."""


class _Walk:
    """State of one redaction walk: the containers on the current path (a
    container met again inside itself is a cycle) and a budget of containers,
    so a structure that shares sub-containers cannot make the walk explode."""

    __slots__ = ("active", "budget")

    def __init__(self) -> None:
        self.active: set[int] = set()
        self.budget = _MAX_CONTAINERS

    def enter(self, container: object) -> bool:
        self.budget -= 1
        if self.budget < 0 or id(container) in self.active:
            return False
        self.active.add(id(container))
        return True

    def leave(self, container: object) -> None:
        self.active.discard(id(container))

    def refusal(self, container: object) -> str:
        return "<cyclic>" if id(container) in self.active else "<too large>"


class Redactor:
    """Processor that removes secrets from events, by key and by value.

    **Keys.** A key is secret when, lower-cased with ``-`` read as ``_`` and
    a leading ``x_`` or ``_`` removed, it equals a listed name or ends with
    ``_`` plus one (``X-Api-Key``, ``_password``, ``db_password``,
    ``github_token`` are all caught; ``token_count`` is not). Its value is
    replaced whole.

    **Values.** Every string (and every non-negative integer, for card
    numbers) under ``attributes``, ``context``, ``error``, ``actor`` and
    ``target``, and the event's ``reason``, is scanned for bearer tokens
    (``Bearer``/``bearer``/``BEARER`` followed by a token of 8+
    characters), JWTs, AWS access key ids, PEM private key blocks (to their
    end marker, or to the end of the string when it is missing), 13-19 digit
    numbers (optionally grouped by single spaces or hyphens) that pass the
    Luhn check, and, with ``emails=True``, e-mail addresses (not in
    ``actor`` and ``target``: they say who did what). Only the matching
    part of a string is replaced (``"Bearer [REDACTED]"``). Mapping keys
    are scanned too, as the encoder writes them (``str(key)`` for an int,
    bytes or tuple key); a key is scanned once and then remembered, unless
    it holds a secret.

    **Modes.** ``"best-effort"`` (default) redacts what it can: a part of an
    event that cannot be walked (a mapping whose ``items()`` raises) is
    replaced by the marker. ``"strict"``, when anything in ``attributes``
    or ``context`` cannot be walked, removes all the event's attributes and
    context and flags it (``attributes == {"redaction_failed": True}``),
    rather than risk a leak. Values that are not plain JSON (sets,
    dataclasses, attrs instances, bytes, arbitrary objects) are converted
    the way the encoder would convert them and then scanned, in both modes.

    **Hash mode.** With ``hash_key``, a redacted value becomes
    ``"[REDACTED:<16 hex digits>]"``: a keyed HMAC-SHA256 of the secret, so
    the same secret maps to the same token (for correlation) without being
    revealed; without the key, tokens cannot be confirmed by guessing. A
    whole value ``"Bearer <token>"`` hashes as ``<token>`` and a card
    number as its digits, so a credential gets one token whether a key
    name or a value pattern caught it, grouped or not, string or integer.

    Redaction never mutates the caller's objects, stops at 64 levels (where
    a cyclic structure is cut), and never raises. Thread-safe.

    Args:
        extra_keys: names added to the default list.
        keys: names replacing the default list entirely.
        marker: the replacement value (without ``hash_key``).
        values: scan values for secret patterns (default ``True``).
        emails: also redact e-mail addresses (default ``False``).
        mode: ``"best-effort"`` or ``"strict"``.
        hash_key: key (bytes or str) for hash mode; ``None`` for the marker.

    Raises:
        ConfigurationError: on an invalid argument, naming it.
    """

    __slots__ = (
        "_cache",
        "_clean",
        "_clean_actor",
        "_clean_target",
        "_hash_key",
        "_identity",
        "_last_context",
        "_min_scan",
        "_plain_fields",
        "_strict",
        "_suffixes",
        "emails",
        "keys",
        "marker",
        "mode",
        "values",
    )

    def __init__(
        self,
        *,
        extra_keys: Iterable[str] = (),
        keys: Iterable[str] | None = None,
        marker: str = REDACTED,
        values: bool = True,
        emails: bool = False,
        mode: Mode = "best-effort",
        hash_key: bytes | str | None = None,
    ) -> None:
        base = DEFAULT_REDACT_KEYS if keys is None else keys
        if isinstance(base, str) or isinstance(extra_keys, str):
            raise ConfigurationError(
                "Redactor: keys and extra_keys take lists of names"
            )
        if not isinstance(marker, str):
            raise ConfigurationError(
                f"Redactor: marker must be a string, got {marker!r}"
            )
        for name, flag in (("values", values), ("emails", emails)):
            if not isinstance(flag, bool):
                raise ConfigurationError(
                    f"Redactor: {name} must be True or False, got {flag!r}"
                )
        if mode not in ("best-effort", "strict"):
            raise ConfigurationError(
                f'Redactor: mode must be "best-effort" or "strict", got {mode!r}'
            )
        if isinstance(hash_key, str):
            hash_key = hash_key.encode()
        if hash_key is not None and (
            not isinstance(hash_key, bytes | bytearray) or not hash_key
        ):
            raise ConfigurationError(
                f"Redactor: hash_key must be non-empty bytes or str, got {hash_key!r}"
            )
        names = (*base, *extra_keys)  # read once: they may be iterators
        self.keys = frozenset(_normalise(k) for k in names)
        self._suffixes = tuple("_" + k for k in self.keys)
        # The schema's fields of actor, target and error, unless listed as
        # secret: the fast path of ``_flat`` needs no per-key lookup for them.
        self._plain_fields = frozenset(
            name
            for name in ("id", "type", "name", "ip", "message")
            if name not in self.keys and not name.endswith(self._suffixes)
        )
        self.marker = marker
        self.values = values
        self.emails = emails
        self.mode = mode
        self._strict = mode == "strict"
        self._hash_key = bytes(hash_key) if hash_key is not None else None
        # Strings shorter than this cannot hold a secret pattern; with e-mail
        # addresses on, short strings are still checked for an "@".
        self._min_scan = _MIN_SCAN if values else 1 << 62
        # Keys seen before whose text holds no secret pattern -> whether the
        # key name is secret. A key whose text needs redacting is never
        # remembered, so it is scanned (and redacted) every time.
        self._cache: dict[object, bool] = {}
        self._clean: set[str] = set()
        # The context dict usually is one bound scope's, shared by many events
        # and never mutated: remember the last one redacted (input, output).
        # Likewise the last actor and target found clean: the bound actor, an
        # audited() function's target (built once per decorated function).
        self._last_context: tuple[object, Any] = (None, None)
        self._clean_actor: object = None
        self._clean_target: object = None
        # actor and target are walked without e-mail redaction (an e-mail
        # address there says who did what) and without strict failure (an
        # unwalkable part is replaced, the event kept): a twin built once.
        self._identity = (
            self
            if not emails and mode == "best-effort"
            else Redactor(
                keys=names,
                marker=marker,
                values=values,
                hash_key=hash_key,
            )
        )

    def __repr__(self) -> str:
        parts = [f"mode={self.mode!r}", f"values={self.values}"]
        if self.emails:
            parts.append("emails=True")
        if self._hash_key is not None:
            parts.append("hash_key=<set>")
        if self.keys != DEFAULT_REDACT_KEYS:
            parts.append(f"keys={sorted(self.keys)!r}")
        return f"Redactor({', '.join(parts)})"

    # -- replacement -------------------------------------------------------

    def token(self, value: object) -> str:
        """Return what a redacted *value* is replaced with.

        The marker, or in hash mode ``"[REDACTED:<hmac>]"`` where ``<hmac>``
        is the first 16 hex digits of HMAC-SHA256(hash_key, value as text;
        non-strings as their JSON encoding). A string that is a whole
        ``"Bearer <token>"`` is hashed as ``<token>``, a card number
        (grouped or not) as its digits: one secret, one token.
        """
        if self._hash_key is None:
            return self.marker
        import hashlib  # only hash mode needs it: keeps ``import auditloop`` lean
        import hmac

        if isinstance(value, str):
            data = _secret_text(value).encode("utf-8", "surrogatepass")
        else:
            try:
                data = orjson.dumps(value, default=to_jsonable)
            except Exception:
                data = repr(type(value)).encode()
        digest = hmac.new(self._hash_key, data, hashlib.sha256).hexdigest()
        return f"[REDACTED:{digest[:16]}]"

    def is_secret(self, key: object) -> bool:
        """Tell whether values under *key* are redacted."""
        hit = self._cache.get(key)
        if hit is None:
            hit = self._new_key(key)[0]
        return hit

    def _new_key(self, key: object) -> tuple[bool, object]:
        """(Is *key* a secret name, *key* as written with secrets replaced).

        A key whose text holds no secret is remembered (up to 4,096): the
        next time it costs one dict lookup.
        """
        text = _key_text(key)
        # Raw ASGI headers are bytes pairs: b"cookie" is matched as "cookie"
        # (its text as written stays "b'cookie'", what the encoder writes).
        norm = _normalise(key.decode("latin-1") if isinstance(key, bytes) else text)
        secret = norm in self.keys or norm.endswith(self._suffixes)
        scanned = self.scan(text)
        if scanned is not text:
            return secret, scanned
        if len(self._cache) < _CACHE_LIMIT:
            self._cache[key] = secret
        return secret, key

    def scan(self, text: str) -> str:
        """Return *text* with every secret-looking part replaced."""
        if len(text) < self._min_scan:
            if self.emails and self.values and "@" in text:
                return self._scan_families(text, email=True)
            return text
        clean = self._clean
        if text in clean:
            return text
        result = self._scan_families(text, email=self.emails)
        if result is text and len(text) <= _CLEAN_MAX_LEN:
            if len(clean) >= _CACHE_LIMIT:
                clean.clear()
            clean.add(text)
        return result

    def _scan_families(self, text: str, *, email: bool) -> str:
        # Cheap prechecks decide which (slow) regular expressions run at all.
        out = text
        if "PRIVATE KEY" in out:
            out = _PRIVATE_KEY.sub(lambda m: self.token(m.group()), out)
        if "eyJ" in out:
            out = _JWT.sub(lambda m: self.token(m.group()), out)
        if "earer" in out or "EARER" in out:
            out = _BEARER.sub(lambda m: m.group(1) + self.token(m.group(2)), out)
        if "A" in out and _AWS_PRECHECK.search(out) is not None:
            out = _AWS.sub(lambda m: self.token(m.group()), out)
        raw = out.encode("utf-8", "surrogatepass")
        if len(raw) - len(raw.translate(None, _DIGITS)) >= 13:
            spans = _card_spans(out)
            for start, end in reversed(spans):
                out = out[:start] + self.token(out[start:end]) + out[end:]
        if email and "@" in out:
            out = _EMAIL.sub(lambda m: self.token(m.group()), out)
        return text if out == text else out

    def _int(self, value: int) -> Any:
        if value >= 10**12 and value < 10**19 and luhn_ok(str(value)):
            return self.token(value)
        return value

    # -- walking -----------------------------------------------------------

    def redact(self, value: Any, depth: int = 0, walk: _Walk | None = None) -> Any:
        """Return *value* with secrets replaced, at any depth.

        Never raises in ``best-effort`` mode (an unwalkable part becomes the
        marker); in ``strict`` mode raises only the private failure signal
        the processor turns into a flagged event.
        """
        if isinstance(value, Mapping):
            if depth >= _MAX_DEPTH:
                return "<too deep or cyclic>"
            if walk is None:
                walk = _Walk()
            if not walk.enter(value):
                return walk.refusal(value)
            cache, out = self._cache, {}
            scan_values, min_scan = self.values, self._min_scan
            emails = self.emails and scan_values
            try:
                for k, v in value.items():
                    secret = cache.get(k)
                    if secret is None:
                        # A new key, or one holding a secret: the key, redacted.
                        secret, k = self._new_key(k)  # noqa: PLW2901
                    if secret:
                        out[k] = self.token(v)
                        continue
                    kind = type(v)
                    if kind is str:
                        out[k] = self.scan(v) if len(v) >= min_scan or emails else v
                    elif kind in _PLAIN or (kind is int and not scan_values):
                        out[k] = v
                    elif kind is int:
                        out[k] = self._int(v) if v >= 10**12 else v
                    else:
                        out[k] = self.redact(v, depth + 1, walk)
            except _RedactionFailedError:
                raise
            except Exception as exc:  # a mapping that cannot be iterated
                return self._failed(exc)
            finally:
                walk.leave(value)
            return out
        if isinstance(value, list | tuple | set | frozenset):
            if depth >= _MAX_DEPTH:
                return "<too deep or cyclic>"
            if walk is None:
                walk = _Walk()
            if not walk.enter(value):
                return walk.refusal(value)
            try:
                # A set is written as the encoder writes it: sorted if possible.
                items = (
                    to_jsonable(value) if isinstance(value, set | frozenset) else value
                )
                return [self.redact(v, depth + 1, walk) for v in items]
            finally:
                walk.leave(value)
        kind = type(value)
        if kind is str:
            return self.scan(value) if self.values else value
        if kind is int:
            return self._int(value) if self.values else value
        if kind in _SCALARS or not self.values:
            return value
        # Not plain JSON: convert it as the encoder would, then scan the result
        # (a dataclass's fields, an object's repr can carry secrets too).
        try:
            converted = to_jsonable(value)
        except Exception as exc:  # pragma: no cover - to_jsonable never raises
            return self._failed(exc)
        if converted is value or type(converted) is type(value):
            return value
        return self.redact(converted, depth + 1, walk)

    def _flat(self, value: object) -> Any:
        """Redact an actor, target or error: *value* itself when it is clean.

        The common case, a small dict of short strings under known keys,
        costs one pass without copying. Never raises: a part that cannot be
        walked is replaced by the marker, in both modes.
        """
        if type(value) is dict:
            plain, min_scan, emails = self._plain_fields, self._min_scan, self.emails
            for k, v in value.items():
                if k not in plain or type(v) is not str:
                    break
                if (emails or len(v) >= min_scan) and self.scan(v) is not v:
                    break
            else:
                return value
        try:
            return self.redact(value)
        except Exception:  # strict mode's failure signal: hide the whole value
            return self.marker

    def _failed(self, exc: Exception) -> Any:
        if self._strict:
            raise _RedactionFailedError from exc
        return self.marker

    def __call__(
        self, auditor: object, method: str, event: dict[str, Any]
    ) -> dict[str, Any]:
        """Redact ``attributes``, ``context``, ``reason``, ``error.message``.

        A processor: never raises. In ``strict`` mode an event whose
        attributes or context cannot be fully walked loses both and gets
        ``attributes = {"redaction_failed": True}`` (counted as
        ``redaction_failed`` in the auditor's counters).
        """
        actor = event.get("actor")
        if actor is not None and actor is not self._clean_actor:
            redacted = self._identity._flat(actor)
            if redacted is actor:
                self._clean_actor = actor
            else:
                event["actor"] = redacted
        target = event.get("target")
        if target is not None and target is not self._clean_target:
            redacted = self._identity._flat(target)
            if redacted is target:
                self._clean_target = target
            else:
                event["target"] = redacted
        if "attributes" not in event and "reason" not in event and "error" not in event:
            # The common case: only the bound context, usually redacted before.
            seen, redacted = self._last_context
            context = event.get("context")
            if context is None:
                return event
            if context is seen:
                event["context"] = redacted
                return event
        return self._redact_event(auditor, event)

    def _redact_event(self, auditor: object, event: dict[str, Any]) -> dict[str, Any]:
        try:
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
        except Exception:  # _RedactionFailedError in strict mode, or a bug
            event["attributes"] = {REDACTION_FAILED: True}
            event.pop("context", None)
            counters = getattr(auditor, "counters", None)
            if counters is not None:
                counters.incr("redaction_failed")
        if self.values:
            reason = event.get("reason")
            if type(reason) is str:
                event["reason"] = self.scan(reason)
        error = event.get("error")
        if error:
            # Built by the auditor as a flat dict of strings: walked like
            # attributes (key names too), never failing, never copied if clean.
            event["error"] = self._flat(error)
        return event
