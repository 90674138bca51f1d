"""Alerts (what actions receive) and transitions (what replay reports)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import attrs

from auditloop._clock import format_rfc3339
from auditloop.rules._match import to_json

__all__ = ["Alert", "Transition", "fingerprint", "rfc3339", "to_datetime"]

Status = Literal["firing", "resolved"]


def to_datetime(seconds: float) -> datetime:
    """Unix seconds → aware UTC datetime (microsecond precision)."""
    return datetime.fromtimestamp(seconds, UTC)


def rfc3339(when: datetime) -> str:
    """Format *when* like event times: RFC 3339 UTC with microseconds."""
    micros = round(when.timestamp() * 1_000_000)
    return format_rfc3339(micros * 1000)


def fingerprint(rule: str, group: Mapping[str, Any]) -> str:
    """A stable id of (rule, group): equal across processes and restarts."""
    canonical = to_json([rule, group], sort_keys=True)  # never raises
    return hashlib.sha256(canonical).hexdigest()[:16]


@attrs.frozen
class Alert:
    """One notification: a group of a rule started firing, or resolved.

    Attributes:
        id: unique per notification (UUIDv7), so receivers can de-duplicate.
        rule: the rule name.
        status: ``"firing"`` or ``"resolved"``.
        group: the group key as ``{path: value}``, e.g. ``{"actor.id": "alice"}``.
        value: the measured value (count, ratio, distinct count, seconds
            since the last event for Absence, steps for Sequence) at the
            transition.
        threshold: what ``value`` was compared with.
        window: the rule's window in seconds.
        started_at: when the condition started holding (start of pending).
        fired_at: when the group started firing.
        resolved_at: when it resolved (``None`` while firing).
        fingerprint: stable id of (rule, group) across processes.
        evidence: the events that tripped the rule, in wire form, newest
            last, at most the rule's ``evidence`` limit.
        severity: the rule's severity.
        labels: the rule's labels.
    """

    id: str
    rule: str
    status: Status
    group: Mapping[str, Any]
    value: float
    threshold: float
    window: float
    started_at: datetime
    fired_at: datetime
    fingerprint: str
    evidence: tuple[Mapping[str, Any], ...] = ()
    severity: str = "medium"
    labels: Mapping[str, str] = attrs.field(factory=dict)
    resolved_at: datetime | None = None

    @property
    def time(self) -> datetime:
        """When this transition happened (``fired_at`` or ``resolved_at``)."""
        return self.resolved_at if self.resolved_at is not None else self.fired_at

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (times as RFC 3339 strings)."""
        return {
            "id": self.id,
            "rule": self.rule,
            "status": self.status,
            "group": dict(self.group),
            "value": self.value,
            "threshold": self.threshold,
            "window": self.window,
            "started_at": rfc3339(self.started_at),
            "fired_at": rfc3339(self.fired_at),
            "resolved_at": rfc3339(self.resolved_at) if self.resolved_at else None,
            "fingerprint": self.fingerprint,
            "severity": self.severity,
            "labels": dict(self.labels),
            "evidence": [dict(e) for e in self.evidence],
        }


@attrs.frozen
class Transition:
    """One alert transition found by :func:`rules.replay`.

    ``to_dict()`` is the line ``auditloop replay --json`` prints.
    """

    rule: str
    status: Status
    group: Mapping[str, Any]
    time: datetime
    value: float
    #: Ids of the evidence events.
    evidence: tuple[str, ...]
    alert: Alert = attrs.field(eq=False, repr=False)

    @classmethod
    def from_alert(cls, alert: Alert) -> Transition:
        """Build the transition an alert notification stands for."""
        return cls(
            rule=alert.rule,
            status=alert.status,
            group=alert.group,
            time=alert.time,
            value=alert.value,
            evidence=tuple(str(e.get("id", "")) for e in alert.evidence),
            alert=alert,
        )

    def to_dict(self) -> dict[str, Any]:
        """Return ``{rule, status, group, time, value, evidence}`` (JSON-ready)."""
        return {
            "rule": self.rule,
            "status": self.status,
            "group": dict(self.group),
            "time": rfc3339(self.time),
            "value": self.value,
            "evidence": list(self.evidence),
        }
