"""``import auditloop`` stays lean: no integration, no optional dependency."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import json, sys, time
start = time.perf_counter()
import auditloop
elapsed = time.perf_counter() - start
print(json.dumps({"elapsed": elapsed, "modules": sorted(sys.modules)}))
"""

# Modules an application may not even have installed, or that are slow to
# import; auditloop imports them only inside the integration that needs them.
FORBIDDEN = [
    "auditloop.integrations",
    "fastapi",
    "flask",
    "opentelemetry",
    "starlette",
    "uvicorn",
    "werkzeug",
]


def probe() -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    data: dict[str, object] = json.loads(result.stdout)
    return data


@pytest.fixture(scope="module")
def probes() -> list[dict[str, object]]:
    return [probe() for _ in range(5)]


class TestImportAuditloop:
    @pytest.mark.parametrize("name", FORBIDDEN)
    def test_does_not_import_optional_modules(
        self, probes: list[dict[str, object]], name: str
    ) -> None:
        modules = probes[0]["modules"]
        assert isinstance(modules, list)
        loaded = [m for m in modules if m == name or m.startswith(name + ".")]

        assert [] == loaded

    def test_does_not_import_structlog_stdlib_bridge(
        self, probes: list[dict[str, object]]
    ) -> None:
        modules = probes[0]["modules"]
        assert isinstance(modules, list)

        assert "structlog.stdlib" not in modules
