"""Run every benchmark (``make bench``) and print one table per topic.

Each ``bench_<topic>.py`` exposes ``run() -> list[dict]`` (and optionally a
``TARGETS`` string). Pass topic names to run only some: ``run.py core rules``.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from _table import format_table  # noqa: E402


def main(argv: list[str]) -> int:
    topics = argv or sorted(
        p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py")
    )
    for topic in topics:
        module = importlib.import_module(f"bench_{topic}")
        print(f"\n## {topic}\n")
        start = time.perf_counter()
        print(format_table(module.run()))
        targets = getattr(module, "TARGETS", None)
        if targets:
            print(targets)
        print(f"({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
