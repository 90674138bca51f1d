"""The public surface: each public module's ``__all__``, sorted and importable."""

from __future__ import annotations

import importlib
import pkgutil
import re
from types import ModuleType

import pytest

import auditloop

EXACT = {
    "auditloop": [
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
    ],
    "auditloop.processors": [
        "DEFAULT_REDACT_KEYS",
        "REDACTED",
        "DropEvent",
        "Processor",
        "Redactor",
    ],
    "auditloop.exceptions": [
        "AuditError",
        "AuditloopError",
        "ConfigurationError",
        "DropEvent",
        "RuleError",
    ],
}

# Modules other work extends: the core names must stay, others may join.
AT_LEAST = {
    "auditloop.sinks": ["Delivery", "FileSink", "MemorySink", "Sink", "StdoutSink"],
    "auditloop.testing": ["FakeClock", "capture"],
    "auditloop.rules": [],
}


def isort_key(name: str) -> tuple[int, list[object]]:
    """Ruff's RUF022 order: SCREAMING_CASE, then CamelCase, then the rest,
    each in natural order."""
    if name.upper() == name:
        group = 0
    elif name[0].isupper():
        group = 1
    else:
        group = 2
    parts = re.split(r"(\d+)", name)
    return group, [int(p) if p.isdigit() else p for p in parts]


def all_of(name: str) -> list[str]:
    module = importlib.import_module(name)
    names: list[str] = list(module.__all__)
    return names


def every_module() -> list[str]:
    found = ["auditloop"]
    for info in pkgutil.walk_packages(auditloop.__path__, "auditloop."):
        if info.name.endswith("__main__"):
            continue
        found.append(info.name)
    return found


class TestPublicModules:
    @pytest.mark.parametrize("name", sorted(EXACT))
    def test_exact_sorted_all(self, name: str) -> None:
        assert EXACT[name] == all_of(name)

    @pytest.mark.parametrize("name", sorted(AT_LEAST))
    def test_core_names_present(self, name: str) -> None:
        names = all_of(name)

        assert set(AT_LEAST[name]) <= set(names)

    @pytest.mark.parametrize("name", sorted(EXACT | AT_LEAST))
    def test_every_name_is_importable(self, name: str) -> None:
        module = importlib.import_module(name)

        for member in module.__all__:
            assert getattr(module, member) is not None, member
            exec(f"from {name} import {member}", {})

    def test_version(self) -> None:
        assert isinstance(auditloop.__version__, str)


class TestEveryModule:
    @pytest.mark.parametrize("name", every_module())
    def test_has_a_sorted_all_of_its_own_names(self, name: str) -> None:
        try:
            module: ModuleType = importlib.import_module(name)
        except ImportError as exc:  # an optional extra that is not installed
            pytest.skip(f"{name}: {exc}")

        assert hasattr(module, "__all__")
        names = list(module.__all__)
        assert sorted(names, key=isort_key) == names
        assert len(set(names)) == len(names)
        for member in names:
            assert hasattr(module, member), member
