"""Shared fixtures: every test starts and ends with no global configuration."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import auditloop


@pytest.fixture(autouse=True)
def _fresh_global_config() -> Iterator[None]:
    """Shut the global Auditor down after each test, so no writer thread,
    sink or configuration leaks into the next one."""
    auditloop.shutdown(timeout=5)
    yield
    auditloop.shutdown(timeout=5)
