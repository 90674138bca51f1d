"""Sinks: where audit events go.

A sink only writes batches of encoded events (see :class:`Sink`); the shared
delivery engine (chosen per sink with :class:`Delivery`) does the queueing,
batching, overflow handling and drop counting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from auditloop._delivery import Delivery
from auditloop._types import Sink
from auditloop.sinks._file import FileSink
from auditloop.sinks._memory import MemorySink
from auditloop.sinks._stdout import StdoutSink

if TYPE_CHECKING:
    from auditloop.sinks._http import HTTPSink

__all__ = ["Delivery", "FileSink", "HTTPSink", "MemorySink", "Sink", "StdoutSink"]


def __getattr__(name: str) -> Any:
    # HTTPSink pulls in http.client and ssl (~30 ms): import it on first use.
    if name == "HTTPSink":
        from auditloop.sinks._http import HTTPSink

        return HTTPSink
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
