"""StdoutSink: JSON lines, or one readable line per event, on standard output."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Literal, TextIO

import orjson

from auditloop._delivery import Delivery
from auditloop._options import checked_options
from auditloop._render import render_line
from auditloop.exceptions import ConfigurationError

__all__ = ["StdoutSink"]


class StdoutSink:
    """Writes events to standard output (or another text stream).

    Args:
        format: ``"json"`` (default): one JSON object per line.
            ``"pretty"``: one readable line per event (time, outcome, actor,
            action, target, attributes), with control characters escaped.
        stream: where to write; ``None`` means whatever ``sys.stdout`` is at
            write time (so test runners' capture works).
        delivery: the delivery policy (default: async).
    """

    @checked_options
    def __init__(
        self,
        *,
        format: Literal["json", "pretty"] = "json",  # noqa: A002 - the natural name
        stream: TextIO | None = None,
        delivery: Delivery | None = None,
    ) -> None:
        if format not in ("json", "pretty"):
            raise ConfigurationError(
                f'StdoutSink: format must be "json" or "pretty", got {format!r}'
            )
        self.format = format
        self.stream = stream
        self.delivery = delivery

    def write(self, batch: Sequence[bytes]) -> None:
        """Write *batch* as lines."""
        stream = self.stream if self.stream is not None else sys.stdout
        if self.format == "json":
            text = b"\n".join(batch).decode("utf-8")
        else:
            text = "\n".join(render_line(orjson.loads(line)) for line in batch)
        stream.write(text + "\n")

    def flush(self, timeout: float | None = None) -> None:
        """Flush the stream."""
        (self.stream if self.stream is not None else sys.stdout).flush()

    def close(self, timeout: float | None = None) -> None:
        """Flush; the stream itself is not ours to close."""
        self.flush(timeout)
