"""The audit event (schema ``auditloop/1``) as frozen, slotted attrs classes.

The hot path builds plain dicts in wire order and encodes them directly; these
classes are the typed view users get back from ``testing.capture()``,
``MemorySink`` and ``read_events()``, built by :meth:`AuditEvent.from_dict`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

import attrs

__all__ = [
    "CATEGORIES",
    "OUTCOMES",
    "SCHEMA",
    "SEVERITIES",
    "Actor",
    "AuditEvent",
    "Outcome",
    "Severity",
    "Target",
]

SCHEMA: Final = "auditloop/1"

Outcome = Literal["success", "failure", "denied", "unknown"]
Severity = Literal["info", "low", "medium", "high", "critical"]

OUTCOMES: Final[tuple[str, ...]] = ("success", "failure", "denied", "unknown")
SEVERITIES: Final[tuple[str, ...]] = ("info", "low", "medium", "high", "critical")
#: The built-in categories; any other string is accepted as the user's own.
CATEGORIES: Final[tuple[str, ...]] = (
    "authentication",
    "authorization",
    "permission",
    "data",
    "deployment",
    "configuration",
    "exception",
    "system",
)


def _drop_empty(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None and v not in ((), {})}


def _text(value: object) -> str:
    """``str(value)``, or a placeholder naming its type when ``__str__`` fails."""
    try:
        return str(value)
    except Exception:  # a broken __str__ must not raise into the application
        return f"<unprintable {type(value).__name__}>"


def _roles(value: object) -> tuple[str, ...]:
    """Roles as read back: a list is kept, a single value becomes one role."""
    if not value:
        return ()
    if isinstance(value, list | tuple):
        return tuple(value)
    return (_text(value),)


def _mapping(value: object) -> Mapping[str, Any]:
    """A mapping field as read back; any other non-empty value is wrapped."""
    if isinstance(value, Mapping):
        return value
    return {"value": value} if value else {}


@attrs.frozen
class Actor:
    """Who did it: ``{id, type, name?, ip?, roles?}``."""

    id: str
    type: str = "user"
    name: str | None = None
    ip: str | None = None
    roles: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return the wire form, without empty keys."""
        d = _drop_empty(attrs.asdict(self, recurse=False))
        if self.roles:
            d["roles"] = list(self.roles)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Actor:
        """Build an actor from its wire form."""
        return cls(
            id=_text(d.get("id")),
            type=_text(d.get("type", "user")),
            name=d.get("name"),
            ip=d.get("ip"),
            roles=_roles(d.get("roles")),
        )


@attrs.frozen
class Target:
    """What it was done to: ``{id, type?, name?}``."""

    id: str
    type: str | None = None
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the wire form, without empty keys."""
        return _drop_empty(attrs.asdict(self, recurse=False))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Target:
        """Build a target from its wire form."""
        return cls(id=_text(d.get("id")), type=d.get("type"), name=d.get("name"))


@attrs.frozen
class AuditEvent:
    """One audit event, as read back or captured.

    Field meanings are those of the ``auditloop/1`` schema (see
    ``docs/concepts.md``). ``time`` is the RFC 3339 string exactly as written.
    """

    id: str
    time: str
    action: str
    outcome: str = "unknown"
    category: str | None = None
    severity: str | None = None
    actor: Actor | None = None
    target: Target | None = None
    reason: str | None = None
    error: Mapping[str, Any] | None = None
    duration_ms: float | None = None
    attributes: Mapping[str, Any] = attrs.field(factory=dict)
    context: Mapping[str, Any] = attrs.field(factory=dict)
    source: Mapping[str, Any] = attrs.field(factory=dict)
    schema: str = SCHEMA
    seq: int | None = None
    prev: str | None = None
    hash: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AuditEvent:
        """Build an event from its wire form (as decoded from JSON).

        Tolerant of shapes the schema does not allow (a processor may have
        written them): ``roles`` that is not a list becomes one role, an
        ``error`` that is not a mapping becomes ``{"message": ...}`` and any
        other non-mapping ``attributes``/``context``/``source`` is wrapped
        as ``{"value": ...}``. Never raises for a decoded JSON object.
        """
        actor = d.get("actor")
        target = d.get("target")
        error = d.get("error")
        if error is not None and not isinstance(error, Mapping):
            error = {"message": _text(error)}
        return cls(
            id=str(d.get("id", "")),
            time=str(d.get("time", "")),
            action=str(d.get("action", "")),
            outcome=str(d.get("outcome", "unknown")),
            category=d.get("category"),
            severity=d.get("severity"),
            actor=Actor.from_dict(actor) if isinstance(actor, Mapping) else None,
            target=Target.from_dict(target) if isinstance(target, Mapping) else None,
            reason=d.get("reason"),
            error=error,
            duration_ms=d.get("duration_ms"),
            attributes=_mapping(d.get("attributes")),
            context=_mapping(d.get("context")),
            source=_mapping(d.get("source")),
            schema=str(d.get("schema", SCHEMA)),
            seq=d.get("seq"),
            prev=d.get("prev"),
            hash=d.get("hash"),
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the wire form: schema field order, empty keys left out."""
        d: dict[str, Any] = {
            "id": self.id,
            "time": self.time,
            "action": self.action,
            "category": self.category,
            "outcome": self.outcome,
            "severity": self.severity,
            "actor": self.actor.to_dict() if self.actor else None,
            "target": self.target.to_dict() if self.target else None,
            "reason": self.reason,
            "error": dict(self.error) if self.error else None,
            "duration_ms": self.duration_ms,
            "attributes": dict(self.attributes),
            "context": dict(self.context),
            "source": dict(self.source),
            "schema": self.schema,
            "seq": self.seq,
            "prev": self.prev,
            "hash": self.hash,
        }
        return _drop_empty(d)


def actor_dict(value: object) -> dict[str, Any] | None:
    """Normalise an actor given as id string, :class:`Actor` or mapping.

    Never raises: an id whose ``__str__`` fails becomes
    ``"<unprintable TypeName>"``, and a mapping that cannot be read becomes
    ``{"id": "<unreadable actor>"}``.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return {"id": value, "type": "user"}
    if isinstance(value, Actor):
        return value.to_dict()
    if isinstance(value, Mapping):
        try:
            d = dict(value)
        except Exception:  # a broken Mapping must not raise into the application
            return {"id": "<unreadable actor>", "type": "user"}
        d["id"] = _text(d.get("id", "unknown"))
        d.setdefault("type", "user")
        return d
    return {"id": _text(value), "type": "user"}


def target_dict(value: object) -> dict[str, Any] | None:
    """Normalise a target given as ``"type:id"`` string, :class:`Target` or mapping.

    A string's part before the first ``:`` becomes its ``type``
    (``"document:42"`` → ``{"id": "document:42", "type": "document"}``).
    Never raises (a broken ``__str__`` gives ``"<unprintable TypeName>"``).
    """
    if value is None:
        return None
    if isinstance(value, str):
        kind, sep, _ = value.partition(":")
        return {"id": value, "type": kind} if sep and kind else {"id": value}
    if isinstance(value, Target):
        return value.to_dict()
    if isinstance(value, Mapping):
        try:
            d = dict(value)
        except Exception:  # a broken Mapping must not raise into the application
            return {"id": "<unreadable target>"}
        d["id"] = _text(d.get("id", "unknown"))
        return d
    return target_dict(_text(value))
