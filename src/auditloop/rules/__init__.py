"""Rules: react when audit events cross thresholds.

Build rules in Python (:class:`Threshold`, :class:`Ratio`, :class:`Distinct`,
:class:`Absence`, :class:`Sequence`, matching events with :func:`match`) or
load them from TOML with :func:`load`, and pass them to
``auditloop.configure(rules=[...])``. Alerts follow the Prometheus
lifecycle; actions (callables, :func:`webhook`) run off the audited call, and
every alert is itself audited as an ``auditloop.alert`` event.
:func:`replay` runs a recorded trail through rules to see what would have
fired.
"""

from __future__ import annotations

from auditloop.rules._alert import Alert, Transition
from auditloop.rules._engine import replay
from auditloop.rules._kinds import Absence, Distinct, Ratio, Rule, Sequence, Threshold
from auditloop.rules._load import load, register
from auditloop.rules._match import Match, match
from auditloop.rules._redis import RedisStore
from auditloop.rules._store import Change, MemoryStore, Store
from auditloop.rules._webhook import Webhook, webhook

__all__ = [
    "Absence",
    "Alert",
    "Change",
    "Distinct",
    "Match",
    "MemoryStore",
    "Ratio",
    "RedisStore",
    "Rule",
    "Sequence",
    "Store",
    "Threshold",
    "Transition",
    "Webhook",
    "load",
    "match",
    "register",
    "replay",
    "webhook",
]
