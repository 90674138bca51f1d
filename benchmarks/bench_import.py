"""Cost of `import auditloop` in a fresh interpreter (target: under 50 ms).

Best of several runs, each in a new process, so no module is cached. Byte
code may be written (``PYTHONDONTWRITEBYTECODE`` is removed from the child's
environment, as in a normal install), and one warm-up run compiles it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

RUNS = 7
PROBE = """
import json, sys, time
start = time.perf_counter()
import auditloop
print(json.dumps({"ms": (time.perf_counter() - start) * 1000}))
"""

TARGETS = "target: import auditloop < 50 ms (best of runs)"


def _best(code: str) -> float:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    times = []
    for _ in range(RUNS + 1):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        ).stdout
        times.append(json.loads(out)["ms"])
    return min(times[1:])  # the first run compiled the byte code


def run() -> list[dict[str, Any]]:
    """Return one row: best import time of auditloop."""
    return [{"what": "import auditloop", "best_ms": _best(PROBE), "runs": RUNS}]


if __name__ == "__main__":
    print(run())
