"""auditloop: audit events, delivery you can trust, rules that close the loop.

Record with :func:`audited`, :func:`audit` and :func:`emit`; scope actors
with :func:`bind`; deliver through :mod:`auditloop.sinks`; react with
:mod:`auditloop.rules`; read back with :func:`read_events`.
"""

from __future__ import annotations

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
from auditloop._reader import ReadIssue, ReadWarning, read_events
from auditloop.exceptions import (
    AuditError,
    AuditloopError,
    ConfigurationError,
    DropEvent,
)

__version__ = "0.1.0.dev0"

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
    "ReadIssue",
    "ReadWarning",
    "Recorder",
    "Target",
    "audit",
    "audited",
    "bind",
    "configure",
    "emit",
    "flush",
    "get_auditor",
    "read_events",
    "shutdown",
    "stats",
]
