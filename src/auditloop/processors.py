"""Processors: structlog-style callables that see every event before sinks.

A processor is called as ``processor(auditor, method, event_dict)`` and
returns the (possibly changed) event dict; raising :class:`DropEvent` drops
the event (counted in ``stats()["dropped"]["processor"]``). ``method`` is
``"audited"``, ``"audit"`` or ``"emit"``.

The chain runs in this order: enrichment (``source``: service, host, pid,
function — precomputed when a function is decorated), then the
:class:`Redactor` (on by default), then your processors.
"""

from __future__ import annotations

from auditloop._redact import DEFAULT_REDACT_KEYS, REDACTED, Redactor
from auditloop._types import Processor
from auditloop.exceptions import DropEvent

__all__ = ["DEFAULT_REDACT_KEYS", "REDACTED", "DropEvent", "Processor", "Redactor"]
