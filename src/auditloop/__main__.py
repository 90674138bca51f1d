"""The ``auditloop`` command line (also ``python -m auditloop``).

See ``auditloop --help`` and ``docs/cli.md``.
"""

from __future__ import annotations

from auditloop._cli import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
