"""pytest plugin (entry point ``pytest11``): auditloop's testing fixtures.

- ``audit_events``: the list of events emitted during the test (by any
  auditor), as :class:`~auditloop.AuditEvent` objects.
- ``rule_harness``: a factory ``rule_harness(rules, start=...)`` returning a
  :class:`~auditloop.testing.RuleHarness`, closed after the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from auditloop._event import AuditEvent
    from auditloop.testing import RuleHarness

# auditloop itself is imported inside the fixtures: pytest loads plugins before
# pytest-cov starts measuring, and an import here would hide auditloop's
# module-level lines from coverage.

__all__ = ["audit_events", "rule_harness"]


@pytest.fixture
def audit_events() -> Iterator[list[AuditEvent]]:
    """Collect every audit event emitted while the test runs."""
    from auditloop.testing import capture

    with capture() as events:
        yield events


@pytest.fixture
def rule_harness() -> Iterator[Callable[..., RuleHarness]]:
    """Make :class:`RuleHarness` objects that are closed after the test."""
    from auditloop.testing import RuleHarness

    made: list[RuleHarness] = []

    def make(rules: Any, **options: Any) -> RuleHarness:
        harness = RuleHarness(rules, **options)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()
