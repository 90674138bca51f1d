"""Sinks: where audit events go.

A sink only writes batches of encoded events (see :class:`Sink`); the shared
delivery engine (chosen per sink with :class:`Delivery`) does the queueing,
batching, overflow handling and drop counting.
"""

from __future__ import annotations

from auditloop._delivery import Delivery
from auditloop._types import Sink
from auditloop.sinks._file import FileSink
from auditloop.sinks._http import HTTPSink
from auditloop.sinks._memory import MemorySink
from auditloop.sinks._stdout import StdoutSink

__all__ = ["Delivery", "FileSink", "HTTPSink", "MemorySink", "Sink", "StdoutSink"]
