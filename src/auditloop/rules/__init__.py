"""Rules: react when audit events cross thresholds."""

from __future__ import annotations

__all__: list[str] = []
