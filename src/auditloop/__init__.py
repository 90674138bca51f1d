"""auditloop: audit events, delivery you can trust, rules that close the loop.

Record with :func:`audited`, :func:`audit` and :func:`emit`; scope actors
with :func:`bind`; deliver through :mod:`auditloop.sinks`; react with
:mod:`auditloop.rules`; read back with :func:`read_events`.
"""

from __future__ import annotations

import importlib
from typing import Any

from auditloop._auditor import Auditor
from auditloop._capture import Recorder
from auditloop._config import (
    audit,
    audited,
    configure,
    emit,
    flush,
    get_auditor,
    shutdown,
    stats,
)
from auditloop._context import bind
from auditloop._event import OUTCOMES, SCHEMA, SEVERITIES, Actor, AuditEvent, Target
from auditloop._policy import Policy, PolicyRule
from auditloop._reader import ReadIssue, ReadWarning, read_events
from auditloop._selfaudit import suspended
from auditloop._verify import Finding, VerifyResult, chain_head, verify
from auditloop.exceptions import (
    AuditError,
    AuditloopError,
    ConfigurationError,
    DropEvent,
)

__version__ = "0.1.0.dev0"

# The public submodules load on first use (``auditloop.rules.Threshold`` works
# after a plain ``import auditloop``) so the import itself stays cheap.
_SUBMODULES = frozenset({"processors", "rules", "sinks", "testing"})


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"auditloop.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "OUTCOMES",
    "SCHEMA",
    "SEVERITIES",
    "Actor",
    "AuditError",
    "AuditEvent",
    "AuditloopError",
    "Auditor",
    "ConfigurationError",
    "DropEvent",
    "Finding",
    "Policy",
    "PolicyRule",
    "ReadIssue",
    "ReadWarning",
    "Recorder",
    "Target",
    "VerifyResult",
    "audit",
    "audited",
    "bind",
    "chain_head",
    "configure",
    "emit",
    "flush",
    "get_auditor",
    "read_events",
    "shutdown",
    "stats",
    "suspended",
    "verify",
]
