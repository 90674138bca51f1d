"""Exceptions raised by auditloop.

Every exception has one root, :class:`AuditloopError`, and also subclasses
the builtin it refines, so ``except ValueError`` keeps working::

    AuditloopError(Exception)
    ├── ConfigurationError(AuditloopError, ValueError)
    │       bad arguments to configure(), a sink, a rule or a policy;
    │       raised at configure time, never while auditing
    │   └── RuleError(ConfigurationError)
    │           a rule that cannot be built or loaded; names rule and field
    ├── AuditError(AuditloopError, RuntimeError)
    │       an audit record could not be durably written in fail-closed mode
    │       (``Delivery(mode="sync", on_error="raise")``)
    └── DropEvent(AuditloopError)
            raised by a processor to drop the event it was given
"""

from __future__ import annotations

__all__ = [
    "AuditError",
    "AuditloopError",
    "ConfigurationError",
    "DropEvent",
    "RuleError",
]


class AuditloopError(Exception):
    """Root of every exception auditloop raises."""


class ConfigurationError(AuditloopError, ValueError):
    """An argument to ``configure()``, a sink, a rule or a policy is invalid."""


class RuleError(ConfigurationError):
    """A rule is invalid; the message names the rule, the field and the reason."""


class AuditError(AuditloopError, RuntimeError):
    """An audit record could not be written and delivery is fail-closed."""


class DropEvent(AuditloopError):  # noqa: N818 - structlog's established name
    """Raise from a processor to drop the current event (counted, not an error)."""
