"""Wire formats for :class:`~auditloop.sinks.HTTPSink`.

Each format turns a batch of encoded events (JSON objects, one per event,
without newlines) into one request body, and knows how to read the parts of
a successful response that can still carry per-event failures (Elasticsearch
bulk items, OTLP partial success). Formats are pure functions of their
input: no I/O, no shared state, safe from any thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import attrs
import orjson

__all__ = [
    "FORMATS",
    "OTLP_MAX_DEPTH",
    "Format",
    "ResponseCheck",
    "make_format",
    "time_ns",
]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
#: Values nested deeper than this (JSON levels) go to OTLP as a JSON string.
OTLP_MAX_DEPTH: Final = 32
_INT64_MAX: Final = 2**63 - 1
_INT64_MIN: Final = -(2**63)

#: auditloop severities → OTLP SeverityNumber (INFO=9, INFO2=10, WARN=13,
#: ERROR=17, FATAL=21), so backends colour them the usual way.
_SEVERITY_NUMBER: Final = {
    "info": 9,
    "low": 10,
    "medium": 13,
    "high": 17,
    "critical": 21,
}
_SEVERITY_TEXT: Final = {9: "INFO", 10: "INFO2", 13: "WARN", 17: "ERROR", 21: "FATAL"}
# Schema fields whose object values are flattened into dotted OTLP attributes.
_FLATTENED: Final = frozenset(
    ("actor", "target", "error", "context", "source", "attributes")
)
_HEX: Final = frozenset("0123456789abcdef")


@attrs.frozen
class ResponseCheck:
    """What a 2xx response says about the events of the request.

    Attributes:
        retry: indexes (into the request's events) that failed retryably and
            should be sent again (Elasticsearch 429/5xx items).
        rejected: indexes refused for good, and one example reason; counted
            as ``http_4xx`` drops by the sink.
        rejected_count: events refused without saying which (OTLP partial
            success); counted as ``rejected`` drops.
        duplicates: events the receiver already had (Elasticsearch 409 on a
            ``create`` with the same ``_id``): delivered earlier by a retry.
        message: a short description of the first rejection, for stats.
    """

    retry: tuple[int, ...] = ()
    rejected: tuple[int, ...] = ()
    rejected_count: int = 0
    duplicates: int = 0
    message: str | None = None


_OK: Final = ResponseCheck()


def _load(line: bytes) -> dict[str, Any]:
    """Decode one encoded event; never raises (the engine only hands us JSON
    objects, but a sink must not crash on a hand-written batch)."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return {"message": line.decode("utf-8", "replace")}
    return value if isinstance(value, dict) else {"message": value}


def time_ns(text: object) -> int | None:
    """Parse an RFC 3339 time exactly (no float rounding) into Unix nanoseconds."""
    if not isinstance(text, str):
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return ((parsed - _EPOCH) // _MICROSECOND) * 1000


class Format:
    """Base: NDJSON, one event per line (the default format)."""

    name = "ndjson"
    content_type = "application/x-ndjson"
    default_path = "/"

    def encode(self, events: Sequence[bytes]) -> bytes:
        """Return the request body for *events*."""
        return b"\n".join(events) + b"\n"

    def check(self, body: bytes, count: int) -> ResponseCheck:
        """Read a 2xx response body for per-event failures (none by default)."""
        return _OK


class _JsonArray(Format):
    name = "json-array"
    content_type = "application/json"

    def encode(self, events: Sequence[bytes]) -> bytes:
        return b"[" + b",".join(events) + b"]"


def _any_value(value: object, depth: int = 0) -> dict[str, Any]:
    """Map a JSON value to an OTLP ``AnyValue`` (JSON mapping).

    Each JSON level becomes about four OTLP JSON levels; values nested
    deeper than :data:`OTLP_MAX_DEPTH` are sent as a JSON ``stringValue`` so
    the request stays within JSON encoders' nesting limits.
    """
    if isinstance(value, list | dict) and depth >= OTLP_MAX_DEPTH:
        return {"stringValue": orjson.dumps(value).decode()}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            # int64 is a string in the protobuf JSON mapping.
            return {"intValue": str(value)}
        return {"stringValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list):
        values = [_any_value(v, depth + 1) for v in value]
        return {"arrayValue": {"values": values}}
    if isinstance(value, dict):
        return {"kvlistValue": {"values": _key_values(value, depth + 1)}}
    return {}


def _key_values(mapping: dict[str, Any], depth: int = 0) -> list[dict[str, Any]]:
    return [{"key": str(k), "value": _any_value(v, depth)} for k, v in mapping.items()]


def _hex_id(value: object, length: int) -> str | None:
    if (
        isinstance(value, str)
        and len(value) == length
        and set(value) <= _HEX
        and value.strip("0")
    ):
        return value
    return None


class _Otlp(Format):
    """OTLP/HTTP JSON ``ExportLogsServiceRequest``.

    One ``resourceLogs`` per (service, host, pid) with ``service.name``,
    ``host.name`` and ``process.pid``; one ``logRecord`` per event with the
    action as ``body``, the event's other fields as typed, dotted attributes
    (``actor.id``, ``attributes.role`` …) and ``traceId``/``spanId`` as hex,
    as the OTLP/JSON encoding requires.
    """

    name = "otlp"
    content_type = "application/json"
    default_path = "/v1/logs"

    def __init__(self, version: str) -> None:
        self.scope = {"name": "auditloop", "version": version}

    def record(self, event: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Return (resource key, logRecord) for one decoded event."""
        record: dict[str, Any] = {}
        nanos = time_ns(event.get("time"))
        if nanos is not None:
            record["timeUnixNano"] = str(nanos)
        severity = event.get("severity")
        number = _SEVERITY_NUMBER.get(severity, 9) if isinstance(severity, str) else 9
        record["severityNumber"] = number
        record["severityText"] = (
            severity if isinstance(severity, str) else _SEVERITY_TEXT[number]
        )
        record["body"] = _any_value(event.get("action", ""))
        attributes: list[dict[str, Any]] = []
        source = event.get("source")
        source = source if isinstance(source, dict) else {}
        context = event.get("context")
        trace_id = span_id = None
        if isinstance(context, dict):
            trace_id = _hex_id(context.get("trace_id"), 32)
            span_id = _hex_id(context.get("span_id"), 16)
        for key, value in event.items():
            if key in ("time", "severity"):
                continue
            if key in _FLATTENED and isinstance(value, dict):
                for sub, sub_value in value.items():
                    if key == "source" and sub in ("service", "host", "pid"):
                        continue  # carried by the resource
                    if key == "context" and (
                        (sub == "trace_id" and trace_id)
                        or (sub == "span_id" and span_id)
                    ):
                        continue  # carried by traceId / spanId
                    attributes.append(
                        {"key": f"{key}.{sub}", "value": _any_value(sub_value)}
                    )
            else:
                attributes.append({"key": key, "value": _any_value(value)})
        record["attributes"] = attributes
        if trace_id:
            record["traceId"] = trace_id
        if span_id:
            record["spanId"] = span_id
        resource = (source.get("service"), source.get("host"), source.get("pid"))
        return resource, record

    def encode(self, events: Sequence[bytes]) -> bytes:
        groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for line in events:
            resource, record = self.record(_load(line))
            groups.setdefault(resource, []).append(record)
        resource_logs = []
        for (service, host, pid), records in groups.items():
            attributes = []
            if service is not None:
                attributes.append(
                    {"key": "service.name", "value": _any_value(str(service))}
                )
            if host is not None:
                attributes.append({"key": "host.name", "value": _any_value(host)})
            if pid is not None:
                attributes.append({"key": "process.pid", "value": _any_value(pid)})
            resource_logs.append(
                {
                    "resource": {"attributes": attributes},
                    "scopeLogs": [{"scope": self.scope, "logRecords": records}],
                }
            )
        return orjson.dumps({"resourceLogs": resource_logs})

    def check(self, body: bytes, count: int) -> ResponseCheck:
        # ExportLogsServiceResponse.partialSuccess: rejected records must not
        # be retried (OTLP spec), and the response does not say which ones.
        if b"partialSuccess" not in body:
            return _OK
        try:
            partial = orjson.loads(body).get("partialSuccess") or {}
            rejected = int(partial.get("rejectedLogRecords") or 0)
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            return _OK
        if rejected <= 0:
            return _OK
        message = str(partial.get("errorMessage") or "")[:200]
        return ResponseCheck(
            rejected_count=min(rejected, count),
            message=f"OTLP partial success: {rejected} rejected: {message}",
        )


class _SplunkHec(Format):
    """Splunk HTTP Event Collector envelopes, one JSON object per line."""

    name = "splunk-hec"
    content_type = "application/json"
    default_path = "/services/collector/event"

    def __init__(
        self, source: str | None, sourcetype: str | None, index: str | None
    ) -> None:
        self.source = source
        self.sourcetype = sourcetype or "auditloop"
        self.index = index

    def envelope(self, line: bytes) -> bytes:
        """Wrap one encoded event, keeping its bytes unchanged as ``event``."""
        event = _load(line)
        head: dict[str, Any] = {}
        nanos = time_ns(event.get("time"))
        if nanos is not None:
            head["time"] = round(nanos / 1e9, 6)
        source = event.get("source")
        source = source if isinstance(source, dict) else {}
        if source.get("host") is not None:
            head["host"] = str(source["host"])
        head["source"] = self.source or str(source.get("service") or "auditloop")
        head["sourcetype"] = self.sourcetype
        if self.index is not None:
            head["index"] = self.index
        # Splice the original bytes in: no second encode of the event.
        return orjson.dumps(head)[:-1] + b',"event":' + line + b"}"

    def encode(self, events: Sequence[bytes]) -> bytes:
        return b"\n".join([self.envelope(line) for line in events]) + b"\n"


class _ElasticBulk(Format):
    """Elasticsearch/OpenSearch ``_bulk`` with ``create`` actions.

    The event ``id`` is the document ``_id``, so a retried batch cannot index
    an event twice: the second ``create`` answers 409, which counts as
    delivered. ``@timestamp`` (the event time) is added to each document so
    data streams accept it.
    """

    name = "elasticsearch-bulk"
    content_type = "application/x-ndjson"
    default_path = "/_bulk"

    def __init__(self, index: str | None) -> None:
        self.index = index

    def encode(self, events: Sequence[bytes]) -> bytes:
        parts: list[bytes] = []
        for line in events:
            event = _load(line)
            action: dict[str, Any] = {}
            if self.index is not None:
                action["_index"] = self.index
            if isinstance(event.get("id"), str):
                action["_id"] = event["id"]
            parts.append(orjson.dumps({"create": action}))
            stamp = event.get("time")
            if "@timestamp" in event:
                # Already there (an ECS processor): a second would be a
                # duplicate key, which Elasticsearch refuses.
                parts.append(line if line.startswith(b"{") else orjson.dumps(event))
            elif isinstance(stamp, str) and line.startswith(b"{") and len(line) > 2:
                parts.append(b'{"@timestamp":' + orjson.dumps(stamp) + b"," + line[1:])
            else:
                parts.append(orjson.dumps({"@timestamp": stamp, **event}))
        parts.append(b"")
        return b"\n".join(parts)

    def check(self, body: bytes, count: int) -> ResponseCheck:
        try:
            reply = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _OK
        if not isinstance(reply, dict) or not reply.get("errors"):
            return _OK
        items = reply.get("items")
        if not isinstance(items, list):
            return _OK
        retry: list[int] = []
        rejected: list[int] = []
        duplicates = 0
        message = None
        for i, item in enumerate(items[:count]):
            result: Any = (
                next(iter(item.values()), {}) if isinstance(item, dict) else {}
            )
            status = result.get("status", 0) if isinstance(result, dict) else 0
            if not isinstance(status, int) or 200 <= status < 300:
                continue
            if status == 409:
                duplicates += 1
            elif status == 429 or status >= 500:
                retry.append(i)
            else:
                rejected.append(i)
                if message is None:
                    error = result.get("error")
                    if isinstance(error, dict):
                        error = f"{error.get('type')}: {error.get('reason')}"
                    message = f"Elasticsearch item status {status}: {error}"[:300]
        return ResponseCheck(
            retry=tuple(retry),
            rejected=tuple(rejected),
            duplicates=duplicates,
            message=message,
        )


#: The names accepted by ``HTTPSink(format=...)``.
FORMATS: Final = ("ndjson", "json-array", "otlp", "splunk-hec", "elasticsearch-bulk")


def make_format(
    name: str,
    *,
    version: str,
    index: str | None,
    source: str | None,
    sourcetype: str | None,
) -> Format:
    """Build the format called *name* (assumed valid: see :data:`FORMATS`)."""
    if name == "json-array":
        return _JsonArray()
    if name == "otlp":
        return _Otlp(version)
    if name == "splunk-hec":
        return _SplunkHec(source, sourcetype, index)
    if name == "elasticsearch-bulk":
        return _ElasticBulk(index)
    return Format()
