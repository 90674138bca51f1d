"""HTTPSink: batched, retried, spooled delivery to an HTTP collector.

Standard library only (``http.client``, ``ssl``, ``zlib``). The shared
delivery engine queues and batches; this sink turns a batch into requests:

- split by bytes, encode in the chosen format, gzip above a size, POST on a
  persistent connection (one per thread; a forked child opens its own);
- classify the answer: 2xx delivered; 413 split in halves down to single
  events; 408/429/5xx and connection errors retried with jittered
  exponential backoff (``Retry-After`` honoured); other 4xx dropped and
  counted (``http_4xx``) — retrying cannot fix them;
- without a spool, retry within ``deadline`` seconds, then drop and count
  (``retry_exhausted``); with ``spool_dir``, try once and move what failed
  to disk at once, so the writer thread (and the in-memory queue behind it)
  never waits for the collector: a replay thread sends the spool in order.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import functools
import hashlib
import http.client
import io
import math
import os
import random
import re
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC
from pathlib import Path
from typing import Any, Final, cast
from urllib.parse import unquote, urlsplit

from auditloop._counters import Counters
from auditloop._delivery import Delivery
from auditloop._options import checked_options
from auditloop.exceptions import ConfigurationError
from auditloop.sinks._formats import FORMATS, Format, ResponseCheck, make_format
from auditloop.sinks._spool import Spool

__all__ = ["HTTPSink"]

#: A ``Retry-After`` longer than this is treated as this long (seconds).
RETRY_AFTER_MAX: Final = 3600.0
# Answers worth trying again: the same request may succeed later.
_RETRY_STATUSES: Final = frozenset((408, 429))
# Read at most this much of a response; a bigger one is abandoned with its
# connection rather than buffered.
_MAX_RESPONSE: Final = 8 * 1024 * 1024
# How often the replay thread looks for spool directories of dead processes.
_ADOPT_EVERY: Final = 30.0
# Connection errors that mean "the kept-alive connection had gone stale".
# TLS alerts by which a server refuses our client certificate (or its
# absence): like a certificate we refuse, they do not fix themselves soon.
_CERTIFICATE_ALERTS: Final = frozenset(
    {
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "SSLV3_ALERT_CERTIFICATE_REVOKED",
        "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
        "TLSV1_ALERT_UNKNOWN_CA",
        "TLSV1_ALERT_ACCESS_DENIED",
    }
)
_STALE: Final = (
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
    http.client.BadStatusLine,
    # A TLS peer that went away without close_notify (a restarted process).
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
)
# http.client refuses these in a request line (it raises InvalidURL).
_BAD_URL_CHAR: Final = re.compile("[\x00-\x20\x7f]")

_BULK_PATHS: Final = frozenset(("", "/", "/_bulk"))

# How hard _deliver tries before giving up on a batch.
_DIRECT: Final = 0  # once; failures go to the spool
_DEADLINE: Final = 1  # until the deadline; then drop (no spool)
_REPLAY: Final = 2  # until delivered or the sink closes (spool replay)


class _Outcome:
    """What one request attempt came to."""

    __slots__ = ("check", "kind", "message", "reason", "retry_after", "status")

    def __init__(
        self,
        kind: str,
        *,
        status: int | None = None,
        reason: str = "",
        message: str | None = None,
        retry_after: float | None = None,
        check: ResponseCheck | None = None,
    ) -> None:
        self.kind = kind  # "ok" | "split" | "retry" | "drop"
        self.status = status
        self.reason = reason  # failure kind for stats, drop reason for "drop"
        self.message = message
        self.retry_after = retry_after
        self.check = check


class _Client:
    """One keep-alive connection, used by one thread."""

    __slots__ = ("conn", "requests")

    def __init__(self) -> None:
        self.conn: http.client.HTTPConnection | None = None
        self.requests = 0

    def close(self) -> None:
        conn, self.conn = self.conn, None
        self.requests = 0
        if conn is not None:
            # Already broken or not: there is nothing else to release.
            with contextlib.suppress(Exception):
                conn.close()

    def abandon(self) -> None:
        """Forget the connection without closing it (it is the parent's)."""
        self.conn = None
        self.requests = 0


def _certificate_refused(exc: ssl.SSLError) -> bool:
    """A certificate was refused: theirs by us, or ours by them."""
    return isinstance(exc, ssl.SSLCertVerificationError) or (
        getattr(exc, "reason", None) in _CERTIFICATE_ALERTS
    )


class _DeadlineReader(io.RawIOBase):
    """Reads a response through the socket's own *raw* file, failing once
    *deadline* has passed.

    A per-operation socket timeout never fires against a server that
    trickles one byte at a time; this bounds the whole answer instead.
    Reading through the socket's file (not the socket) keeps the socket
    open while the body is read, also after ``Connection: close`` made
    http.client close the connection object.
    """

    def __init__(self, raw: Any, sock: Any, deadline: float, limit: float) -> None:
        super().__init__()
        self._raw = raw
        self._sock = sock
        self._deadline = deadline
        self._limit = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the request took longer than timeout")
        self._sock.settimeout(min(self._limit, remaining))
        return int(self._raw.readinto(buffer) or 0)

    def close(self) -> None:
        if not self.closed:
            self._raw.close()  # releases the file's hold on the socket
        super().close()


class _Response(http.client.HTTPResponse):
    """An HTTPResponse whose reads end at a deadline (monotonic seconds)."""

    def __init__(
        self,
        sock: Any,
        debuglevel: int = 0,
        method: str | None = None,
        url: str | None = None,
        *,
        deadline: float,
        limit: float,
    ) -> None:
        super().__init__(sock, debuglevel, method, url)
        raw = self.fp.detach()  # the socket's own file, unbuffered, still open
        self.fp = io.BufferedReader(_DeadlineReader(raw, sock, deadline, limit))


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Return the wait a ``Retry-After`` header asks for, in seconds.

    Accepts delay-seconds and HTTP-dates (relative to *now*, Unix seconds);
    returns None for a missing or unreadable value. Capped at
    :data:`RETRY_AFTER_MAX`.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), RETRY_AFTER_MAX)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, when.timestamp() - now), RETRY_AFTER_MAX)


def _number(
    name: str, value: object, *, minimum: float = 0.0, infinite: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"HTTPSink: {name} must be a number, got {value!r}")
    if math.isnan(value) or value <= minimum or (math.isinf(value) and not infinite):
        finite = "" if infinite else " and finite"
        raise ConfigurationError(
            f"HTTPSink: {name} must be greater than {minimum:g}{finite}, got {value!r}"
        )
    return float(value)


def _integer(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigurationError(
            f"HTTPSink: {name} must be a positive integer, got {value!r}"
        )
    return value


def _optional_str(name: str, value: object) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigurationError(
            f"HTTPSink: {name} must be a non-empty string, got {value!r}"
        )
    return value


def _header_safe(text: str) -> bool:
    # http.client sends header values as Latin-1: anything else fails at
    # send time, so it is refused at construction instead.
    if "\r" in text or "\n" in text or "\0" in text:
        return False
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _path_option(name: str, value: object) -> None:
    if value is not None and not isinstance(value, str | os.PathLike):
        raise ConfigurationError(
            f"HTTPSink: {name} must be a path (str or os.PathLike), "
            f"got {type(value).__name__}"
        )


class HTTPSink:
    """Sends events to an HTTP collector in batches, with retries and a spool.

    Delivery is at least once: a batch may be sent again after a timeout or
    a reset connection, so receivers should deduplicate on the event ``id``
    (``format="elasticsearch-bulk"`` does so by itself, using it as
    ``_id``). Header values (tokens, passwords) never appear in errors,
    stats or events.

    Args:
        url: ``http://`` or ``https://`` collector URL. When its path is empty
            the format's usual path is used (``/v1/logs`` for ``otlp``,
            ``/services/collector/event`` for ``splunk-hec``, ``/_bulk`` for
            ``elasticsearch-bulk``). ``user:password@`` becomes basic auth
            (percent-decoded). Its query is never shown in errors.
        format: ``"ndjson"`` (default), ``"json-array"``, ``"otlp"``
            (OTLP/HTTP JSON logs), ``"splunk-hec"`` or
            ``"elasticsearch-bulk"``.
        headers: extra request headers (e.g. ``{"Authorization": "Splunk T"}``).
        bearer_token: sends ``Authorization: Bearer <token>``.
        basic_auth: ``(user, password)`` for ``Authorization: Basic``.
        ca_file: PEM file of CAs to trust instead of the system's.
        client_cert: PEM client certificate (mutual TLS); ``client_key`` is
            its key when not in the same file.
        client_key: see ``client_cert``.
        timeout: seconds one request may take in total (connect, send and
            reading the answer); a slower one is abandoned as ``timeout``.
        deadline: without a spool, seconds a batch is retried before it is
            dropped as ``retry_exhausted``.
        backoff: first retry delay in seconds; doubles per retry, jittered
            (a delay is drawn between half and all of the current step).
        backoff_max: the largest retry delay.
        max_batch_bytes: a batch is split so that each request carries at
            most this many bytes of events (a single larger event is sent
            alone).
        gzip_min_bytes: bodies of at least this size are gzip-compressed;
            ``None`` never compresses.
        spool_dir: directory for undelivered batches; enables the
            never-wait, survive-restarts mode described in
            ``docs/http-sink.md``.
        spool_max_bytes: most bytes the spool keeps; past it the oldest
            segments are dropped and counted (``spool_full``).
        index: the index for ``splunk-hec`` and ``elasticsearch-bulk``
            (default for Elasticsearch: ``"auditloop"`` unless the URL path
            names one, as in ``/audit/_bulk``).
        source: ``splunk-hec`` ``source`` (default: the event's service).
        sourcetype: ``splunk-hec`` ``sourcetype`` (default ``"auditloop"``).
        delivery: the delivery policy (default: the Auditor's).
        clock: returns Unix seconds; used for ``Retry-After`` dates and
            deadlines (tests pass a ``FakeClock``).
        sleep: called with a delay in seconds to wait before a retry (tests
            pass a recorder); default: a wait that ``close()`` interrupts.

    Raises:
        ConfigurationError: a bad URL, format or option, an unreadable
            certificate file, or a spool directory that cannot be used.
    """

    @checked_options
    def __init__(
        self,
        url: str,
        *,
        format: str = "ndjson",  # noqa: A002 - the option's documented name
        headers: Mapping[str, str] | None = None,
        bearer_token: str | None = None,
        basic_auth: tuple[str, str] | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        client_cert: str | os.PathLike[str] | None = None,
        client_key: str | os.PathLike[str] | None = None,
        timeout: float = 10.0,
        deadline: float = 60.0,
        backoff: float = 0.5,
        backoff_max: float = 30.0,
        max_batch_bytes: int = 1024 * 1024,
        gzip_min_bytes: int | None = 1024,
        spool_dir: str | os.PathLike[str] | None = None,
        spool_max_bytes: int = 256 * 1024 * 1024,
        index: str | None = None,
        source: str | None = None,
        sourcetype: str | None = None,
        delivery: Delivery | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        if format not in FORMATS:
            raise ConfigurationError(
                f"HTTPSink: format must be one of {', '.join(FORMATS)}; got {format!r}"
            )
        if index is not None and format not in ("splunk-hec", "elasticsearch-bulk"):
            raise ConfigurationError(
                'HTTPSink: index applies to format="splunk-hec" or '
                f'"elasticsearch-bulk", not {format!r}'
            )
        if (source is not None or sourcetype is not None) and format != "splunk-hec":
            raise ConfigurationError(
                f'HTTPSink: source and sourcetype apply to format="splunk-hec", '
                f"not {format!r}"
            )
        index = _optional_str("index", index)
        source = _optional_str("source", source)
        sourcetype = _optional_str("sourcetype", sourcetype)
        self.timeout = _number("timeout", timeout)
        # inf: retry until the sink closes (a socket timeout must be finite).
        self.deadline = _number("deadline", deadline, infinite=True)
        self.backoff = _number("backoff", backoff)
        self.backoff_max = _number("backoff_max", backoff_max, infinite=True)
        self.max_batch_bytes = _integer("max_batch_bytes", max_batch_bytes)
        spool_max_bytes = _integer("spool_max_bytes", spool_max_bytes)
        self.gzip_min_bytes = (
            None
            if gzip_min_bytes is None
            else _integer("gzip_min_bytes", gzip_min_bytes)
        )
        if delivery is not None and not isinstance(delivery, Delivery):
            raise ConfigurationError(
                f"HTTPSink: delivery must be a sinks.Delivery, got {delivery!r}"
            )
        self.delivery = delivery
        self._fail_closed = delivery is not None and delivery.on_error == "raise"
        for name, fn in (("clock", clock), ("sleep", sleep)):
            if fn is not None and not callable(fn):
                raise ConfigurationError(
                    f"HTTPSink: {name} must be callable, got {fn!r}"
                )

        parts, path, userinfo = self._parse_url(url)
        if format == "elasticsearch-bulk" and index is None and path in _BULK_PATHS:
            index = "auditloop"  # the URL does not name one (/<index>/_bulk)
        import auditloop

        self.format: Format = make_format(
            format,
            version=auditloop.__version__,
            index=index,
            source=source,
            sourcetype=sourcetype,
        )
        if path in ("", "/"):
            path = self.format.default_path
        self._host = parts.hostname or ""
        self._https = parts.scheme == "https"
        self._port = parts.port or (443 if self._https else 80)
        self._path = f"{path}?{parts.query}" if parts.query else path
        host = f"[{self._host}]" if ":" in self._host else self._host
        #: The collector URL without credentials or query (safe to show).
        self.url = f"{parts.scheme}://{host}:{self._port}{path}"

        self._ssl = self._make_ssl_context(ca_file, client_cert, client_key)
        self._headers, self._secrets = self._make_headers(
            headers, bearer_token, basic_auth or userinfo, auditloop.__version__
        )
        # Never shown either: the URL's password as written (percent-encoded)
        # and its query, which may carry an API key.
        extra = {x for x in (parts.query, parts.password or "") if len(x) >= 4}
        self._secrets = tuple(sorted({*self._secrets, *extra}, key=len, reverse=True))
        self._headers = {"Content-Type": self.format.content_type, **self._headers}
        self._gzip_headers = {**self._headers, "Content-Encoding": "gzip"}

        self._now: Callable[[], float] = clock or time.time
        self._mono: Callable[[], float] = clock or time.monotonic
        self._sleep_fn = sleep
        #: Drop counts by reason; the delivery engine shares this object.
        self.drops = Counters()
        self._counts = Counters()
        self._failures = Counters()
        self.last_error: str | None = None
        self.last_status: int | None = None
        self._backoff_now = 0.0
        self._resume_at = 0.0  # no request before this (mono clock): Retry-After
        self._failing = False
        self._closed = False
        self._init_threading()
        self._spool: Spool | None = None
        if spool_dir is not None:
            self._spool = self._make_spool(spool_dir, spool_max_bytes)
            if self._spool.adopt():  # a previous process left batches behind
                self._start_replay()

    # -- construction helpers --------------------------------------------------

    @staticmethod
    def _parse_url(url: object) -> tuple[Any, str, tuple[str, str] | None]:
        if not isinstance(url, str):
            raise ConfigurationError(f"HTTPSink: url must be a string, got {url!r}")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ConfigurationError(
                f"HTTPSink: url must start with http:// or https://, got "
                f"{parts.scheme + '://' if parts.scheme else 'no scheme'}"
            )
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ConfigurationError("HTTPSink: url has an invalid port") from None
        if not parts.hostname:
            raise ConfigurationError("HTTPSink: url has no host")
        # The message never quotes the path or query: a query may hold a key.
        if "\r" in url or "\n" in url or "\0" in url:
            raise ConfigurationError("HTTPSink: url contains invalid characters")
        for what, text in (("path", parts.path), ("query", parts.query)):
            if not text.isascii() or _BAD_URL_CHAR.search(text):
                raise ConfigurationError(
                    f"HTTPSink: url {what} must be ASCII without spaces or control "
                    "characters (percent-encode them)"
                )
        userinfo = None
        if parts.username is not None:
            # user:p%40ss@ means the password "p@ss".
            userinfo = (unquote(parts.username), unquote(parts.password or ""))
        return parts, parts.path, userinfo

    def _make_ssl_context(
        self,
        ca_file: str | os.PathLike[str] | None,
        client_cert: str | os.PathLike[str] | None,
        client_key: str | os.PathLike[str] | None,
    ) -> ssl.SSLContext | None:
        _path_option("ca_file", ca_file)
        _path_option("client_cert", client_cert)
        _path_option("client_key", client_key)
        if not self._https:
            if ca_file is not None or client_cert is not None or client_key is not None:
                raise ConfigurationError(
                    "HTTPSink: ca_file, client_cert and client_key need an https:// url"
                )
            return None
        if client_key is not None and client_cert is None:
            raise ConfigurationError("HTTPSink: client_key needs client_cert")
        try:
            context = ssl.create_default_context(cafile=ca_file)
            if client_cert is not None:
                context.load_cert_chain(client_cert, client_key)
        except (OSError, ssl.SSLError, ValueError) as exc:
            which = "client_cert" if client_cert is not None else "ca_file"
            if ca_file is not None and "client" not in str(exc).lower():
                which = "ca_file or client_cert" if client_cert else "ca_file"
            raise ConfigurationError(
                f"HTTPSink: cannot load {which}: {type(exc).__name__}: {exc}"
            ) from None
        return context

    @staticmethod
    def _make_headers(
        headers: Mapping[str, str] | None,
        bearer_token: str | None,
        basic_auth: tuple[str, str] | None,
        version: str,
    ) -> tuple[dict[str, str], tuple[str, ...]]:
        result = {"User-Agent": f"auditloop/{version}"}
        secrets: set[str] = set()
        if bearer_token is not None and basic_auth is not None:
            raise ConfigurationError(
                "HTTPSink: give bearer_token or basic_auth, not both"
            )
        if bearer_token is not None:
            if not isinstance(bearer_token, str) or not bearer_token:
                raise ConfigurationError(
                    "HTTPSink: bearer_token must be a non-empty string"
                )
            if not _header_safe(bearer_token):
                raise ConfigurationError(
                    "HTTPSink: bearer_token contains invalid characters"
                )
            result["Authorization"] = f"Bearer {bearer_token}"
            secrets.add(bearer_token)
        if basic_auth is not None:
            if (
                not isinstance(basic_auth, tuple)
                or len(basic_auth) != 2
                or not all(isinstance(x, str) for x in basic_auth)
            ):
                raise ConfigurationError(
                    "HTTPSink: basic_auth must be a (user, password) tuple of strings"
                )
            token = base64.b64encode(":".join(basic_auth).encode()).decode()
            result["Authorization"] = f"Basic {token}"
            secrets.update((token, basic_auth[1]))
        if headers is not None:
            if not isinstance(headers, Mapping):
                raise ConfigurationError("HTTPSink: headers must be a mapping")
            for name, value in headers.items():
                if (
                    not isinstance(name, str)
                    or not name
                    or not name.isascii()
                    or not _header_safe(name)
                    or ":" in name
                    or any(c.isspace() for c in name)
                ):
                    raise ConfigurationError(
                        f"HTTPSink: headers has an invalid name {name!r}"
                    )
                if not isinstance(value, str) or not _header_safe(value):
                    # The value itself is never shown: it may be a secret.
                    raise ConfigurationError(
                        f"HTTPSink: headers[{name!r}] must be a Latin-1 string "
                        "without line breaks"
                    )
                result[name] = value
                secrets.add(value)
                secrets.update(value.split())
        if "Authorization" in result:
            secrets.add(result["Authorization"])
        # Longest first, so a whole header value is scrubbed before its parts.
        scrub = tuple(
            sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True)
        )
        return result, scrub

    def _make_spool(
        self, spool_dir: str | os.PathLike[str], spool_max_bytes: int
    ) -> Spool:
        # Batches spooled for one collector must never be replayed to another.
        tag = hashlib.sha256(f"{self.url} {self.format.name}".encode()).hexdigest()
        tag = tag[:12]
        try:
            import fcntl  # noqa: F401 - the spool's crash recovery needs flock
        except ImportError:  # pragma: no cover - POSIX only
            raise ConfigurationError(
                "HTTPSink: spool_dir needs POSIX file locks (fcntl)"
            ) from None
        try:
            return Spool(Path(spool_dir), spool_max_bytes, self.drops, tag)
        except (OSError, TypeError) as exc:
            raise ConfigurationError(
                f"HTTPSink: cannot use spool_dir {str(spool_dir)!r}: {exc}"
            ) from None

    def _init_threading(self) -> None:
        self._pid = os.getpid()
        self._writer_client = _Client()
        self._replay_client = _Client()
        self._route = threading.Lock()  # "send directly" vs "spool behind backlog"
        self._drained = threading.Condition(threading.Lock())
        self._stop = threading.Event()
        self._poke = threading.Event()  # cuts a backoff wait short
        self._wake = threading.Event()
        self._replay_thread: threading.Thread | None = None
        self._down = False
        # abandon(): the engine has counted the batch in write(); the sink
        # must neither count nor spool it too.
        self._abandon_lock = threading.Lock()
        self._abandoned = False
        self._writing: int | None = None  # ident of the thread in write()

    def __repr__(self) -> str:
        return f"HTTPSink({self.url!r}, format={self.format.name!r})"

    # -- the Sink protocol -----------------------------------------------------

    def write(self, batch: Sequence[bytes]) -> None:
        """Deliver *batch*, retrying, spooling or dropping as configured.

        Called by the delivery engine's writer thread. Blocks that thread
        only: without a spool for at most about ``deadline`` seconds of
        retries; with a spool for one attempt (bounded by ``timeout``).
        Never raises for delivery failures; they are retried, spooled or
        counted in :attr:`drops`.

        Raises:
            RuntimeError: the sink is closed; or, when its ``delivery`` is
                fail-closed (``Delivery(mode="sync", on_error="raise")``),
                some events were neither delivered nor spooled — the engine
                counts them and raises ``AuditError`` into the audited call.
        """
        self._check_pid()
        if self._closed:
            raise RuntimeError("HTTPSink is closed")
        if not batch:
            return
        events = list(batch)
        self._writing = threading.get_ident()
        try:
            self._write(events)
        finally:
            self._writing = None

    def _write(self, events: list[bytes]) -> None:
        # Fail-closed: an event that is neither delivered nor spooled must
        # raise (the engine turns it into AuditError), not just be counted.
        lost: list[str] | None = [] if self._fail_closed else None
        spool = self._spool
        if spool is None:
            self._deliver(self._writer_client, events, _DEADLINE, lost)
        else:
            with self._route:
                spool_it = self._down or spool.pending_events > 0
                if spool_it:
                    # Keep order and never wait: queue behind the backlog.
                    self._spool_unless_abandoned(spool, events, lost)
            if not spool_it:
                rest = self._deliver(self._writer_client, events, _DIRECT, lost)
                if rest:
                    with self._route:
                        self._down = True
                        self._spool_unless_abandoned(spool, rest, lost)
        if lost:
            raise RuntimeError(f"events not delivered: {', '.join(lost)}")

    def abandon(self) -> None:
        """Give up the batch a ``write()`` in progress is delivering.

        Called by the delivery engine when ``shutdown(timeout)`` runs out of
        time: the engine counts that batch as ``shutdown_timeout``, so from
        now on the sink neither counts nor spools it (a request already on
        the wire may still arrive). Also stops retries and the replay
        thread, as ``close()`` does; spooled batches stay on disk.
        Thread-safe, non-blocking.
        """
        with self._abandon_lock:
            self._abandoned = True
        self._stop.set()
        self._poke.set()
        self._wake.set()

    def _spool_unless_abandoned(
        self, spool: Spool, events: list[bytes], lost: list[str] | None
    ) -> None:
        with self._abandon_lock:
            if not self._abandoned:
                self._to_spool(spool, events, lost)

    def flush(self, timeout: float | None = None) -> None:
        """Make spooled batches durable and try to deliver them now.

        Without a spool there is nothing to do (``write`` returns only once
        a batch is delivered or counted). With one: fsyncs it, wakes the
        replay thread from any backoff to try at once, and waits up to
        *timeout* seconds for the spool to drain; what is left stays safely
        on disk. Blocks the calling (writer) thread meanwhile.
        """
        self._check_pid()
        spool = self._spool
        if spool is None or self._closed:
            return
        spool.sync()
        thread = self._replay_thread
        if thread is None or not thread.is_alive():
            return
        end = None if timeout is None else time.monotonic() + timeout
        self._poke.set()
        with self._drained:
            while spool.pending_events and not self._stop.is_set():
                remaining = None if end is None else end - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return
                self._drained.wait(remaining)

    def close(self, timeout: float | None = None) -> None:
        """Stop the replay thread and release connections and files.

        Waits up to *timeout* seconds for a request in flight; undelivered
        spooled batches stay on disk for the next process. Idempotent.
        """
        self._check_pid()
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._poke.set()
        self._wake.set()
        with self._drained:
            self._drained.notify_all()
        thread = self._replay_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if self._spool is not None:
            self._spool.close()
        self._writer_client.close()
        if thread is None or not thread.is_alive():
            self._replay_client.close()

    # -- health ------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Delivery figures, merged into ``auditloop.stats()`` for this sink.

        ``sent`` counts events the collector accepted (2xx), ``retried``
        retry attempts, ``spooled`` events moved to disk, ``replayed`` events
        delivered from the spool, ``dropped`` drops by reason, ``failures``
        failed attempts by kind (``connection``, ``timeout``, ``tls``,
        ``http_503`` …), ``backoff`` the current retry delay (0 when
        healthy). Thread-safe.
        """
        self._check_pid()
        counts = self._counts.snapshot()
        spool = self._spool
        return {
            "url": self.url,
            "format": self.format.name,
            "sent": counts.get("sent", 0),
            "requests": counts.get("requests", 0),
            "retried": counts.get("retried", 0),
            "spooled": spool.spooled if spool is not None else 0,
            "replayed": counts.get("replayed", 0),
            "duplicates": counts.get("duplicates", 0),
            "dropped": self.drops.snapshot(),
            "failures": self._failures.snapshot(),
            "last_error": self.last_error,
            "last_status": self.last_status,
            "backoff": self._backoff_now,
            "spool": spool.stats() if spool is not None else None,
        }

    # -- fork safety -------------------------------------------------------------

    def _check_pid(self) -> None:
        if os.getpid() != self._pid:
            self.after_fork_in_child()

    def after_fork_in_child(self) -> None:
        """Reset connections, threads and spool files in a forked child.

        Called by the delivery engine's at-fork hook right after ``fork()``
        (or lazily on first use when the sink is used without the engine):
        the child at once closes its copies of the parent's spool lock and
        segment descriptors, so the parent's spool can be adopted after the
        parent exits even while the child lives. Not thread-safe (the child
        has one thread at that point).
        """
        if os.getpid() == self._pid:
            return  # already done (the engine's hook, then a lazy check)
        # Sharing the parent's socket would interleave two processes' bytes
        # on one TCP stream; its spool directory stays the parent's.
        writer, replay = self._writer_client, self._replay_client
        self._init_threading()
        writer.abandon()
        replay.abandon()
        self._backoff_now = 0.0
        self._failing = False
        self._counts = Counters()
        self._failures = Counters()
        if self._spool is not None:
            self._spool.after_fork_in_child()

    # -- delivery ----------------------------------------------------------------

    def _to_spool(
        self, spool: Spool, events: list[bytes], lost: list[str] | None
    ) -> None:
        # Fail-closed (*lost* is a list): a refused batch is only described,
        # as write() raises and the engine counts it (sink_error) — once.
        spool.append(events, lost)
        self._start_replay()
        self._wake.set()

    def _start_replay(self) -> None:
        current = self._replay_thread
        # Also restarts a replay thread that died of an unexpected error.
        if (current is None or not current.is_alive()) and not self._closed:
            thread = threading.Thread(
                target=self._replay_loop, name="auditloop-http-replay", daemon=True
            )
            self._replay_thread = thread
            thread.start()

    def _replay_loop(self) -> None:
        spool = self._spool
        assert spool is not None  # only started with a spool
        client = self._replay_client
        next_adopt = time.monotonic() + _ADOPT_EVERY
        try:
            while not self._stop.is_set():
                if time.monotonic() >= next_adopt:
                    spool.adopt()
                    next_adopt = time.monotonic() + _ADOPT_EVERY
                record = spool.peek()
                if record is None:
                    with self._route:
                        if not spool.pending_events:
                            self._down = False
                    with self._drained:
                        self._drained.notify_all()
                    self._wake.wait(_ADOPT_EVERY)
                    self._wake.clear()
                    continue
                wait = self._resume_at - self._mono()
                if wait > 0:
                    spool.release(record)  # not sent: peeked again after
                    self._wait(wait)
                    self._resume_at = 0.0
                    continue  # re-check stop, and the spool, after waiting
                try:
                    rest = self._deliver(client, record.events, _REPLAY)
                except BaseException:
                    spool.release(record)
                    raise
                if rest:
                    # Closing: the record stays on disk (or, if the spool
                    # evicted it meanwhile, what is left is counted).
                    spool.release(record, len(rest))
                    break
                spool.ack(record)
                self._counts.incr("replayed", len(record.events))
                with self._drained:
                    self._drained.notify_all()
        except Exception as exc:  # pragma: no cover - defensive: keep counting
            self._note(f"replay stopped: {type(exc).__name__}: {exc}")
        finally:
            client.close()

    def _default_sleep(self, seconds: float) -> None:
        # close() and flush() poke: stop, or retry now.
        self._poke.wait(seconds)
        self._poke.clear()

    def _wait(self, seconds: float) -> None:
        self._backoff_now = seconds
        if self._sleep_fn is None:
            self._default_sleep(seconds)
        else:
            self._sleep_fn(seconds)

    def _delay(self, attempt: int) -> float:
        step = min(self.backoff_max, self.backoff * 2.0 ** min(attempt - 1, 62))
        return step / 2 + random.random() * step / 2

    def _chunks(self, events: list[bytes]) -> list[list[bytes]]:
        limit = self.max_batch_bytes
        if sum(map(len, events)) + len(events) <= limit:
            return [events]
        chunks: list[list[bytes]] = []
        current: list[bytes] = []
        size = 0
        for event in events:
            n = len(event) + 1
            if current and size + n > limit:
                chunks.append(current)
                current, size = [], 0
            current.append(event)
            size += n
        chunks.append(current)
        return chunks

    def _deliver(
        self,
        client: _Client,
        events: list[bytes],
        mode: int,
        lost: list[str] | None = None,
    ) -> list[bytes]:
        """Send *events*; return those left undelivered (never in _DEADLINE mode).

        Events given up are counted in :attr:`drops`, or, when *lost* is a
        list (fail-closed), described there for the caller to raise instead.
        """
        start = self._mono()
        chunks = self._chunks(events)
        for i, chunk in enumerate(chunks):
            rest = self._deliver_chunk(client, chunk, mode, start, lost)
            if rest:
                for later in chunks[i + 1 :]:
                    rest.extend(later)
                return rest
        return []

    def _deliver_chunk(
        self,
        client: _Client,
        events: list[bytes],
        mode: int,
        start: float,
        lost: list[str] | None,
    ) -> list[bytes]:
        attempt = 0
        events, body = self._encodable(events, lost)
        if not events:
            return []
        while True:
            outcome = self._attempt(client, events, body)
            if outcome.kind == "ok":
                events = self._settle(events, outcome, lost)
                body = None
                if not events:
                    return []
                # Some items failed retryably (Elasticsearch 429/5xx items).
                outcome = _Outcome("retry", reason="item_retry")
            elif outcome.kind == "split":
                if len(events) == 1:
                    self._drop("oversized", 1, lost)
                    return []
                mid = len(events) // 2
                rest = self._deliver_chunk(client, events[:mid], mode, start, lost)
                if rest:
                    return rest + events[mid:]
                return self._deliver_chunk(client, events[mid:], mode, start, lost)
            elif outcome.kind == "drop":
                self._drop(outcome.reason, len(events), lost)
                return []
            if mode == _DIRECT:
                if outcome.retry_after is not None:
                    # The replay thread takes over: it must wait as asked too.
                    self._resume_at = self._mono() + outcome.retry_after
                return events
            attempt += 1
            wait = self._delay(attempt)
            if outcome.retry_after is not None:
                # Retry-After may ask for longer than the backoff, never for
                # less: "0" or a past date must not turn retries into a storm.
                wait = max(wait, outcome.retry_after)
            if mode == _DEADLINE:
                if (
                    self._failing
                    or self._stop.is_set()
                    or self._mono() - start + wait > self.deadline
                ):
                    # Later batches get one try each until one succeeds, so
                    # a long outage drains the queue instead of stalling it.
                    self._failing = True
                    self._drop("retry_exhausted", len(events), lost)
                    return []
            elif self._stop.is_set():
                return events
            self._counts.incr("retried")
            self._wait(wait)
            if mode == _REPLAY and self._stop.is_set():
                return events

    def _drop(self, reason: str, n: int, lost: list[str] | None) -> None:
        if lost is None:
            with self._abandon_lock:
                if self._abandoned and self._writing == threading.get_ident():
                    return  # the engine counted the batch (shutdown_timeout)
                self.drops.incr(reason, n)
        else:
            lost.append(f"{n} {reason}")

    def _settle(
        self, events: list[bytes], outcome: _Outcome, lost: list[str] | None
    ) -> list[bytes]:
        """Count a 2xx answer; return the events it says to send again."""
        self._failing = False
        self._backoff_now = 0.0
        check = outcome.check
        if check is None or not (check.retry or check.rejected or check.rejected_count):
            self._counts.incr("sent", len(events))
            if check is not None and check.duplicates:
                self._counts.incr("duplicates", check.duplicates)
            return []
        if check.rejected:
            self._drop("http_4xx", len(check.rejected), lost)
            self._failures.incr("item_rejected", len(check.rejected))
        if check.rejected_count:
            self._drop("rejected", check.rejected_count, lost)
        if check.duplicates:
            self._counts.incr("duplicates", check.duplicates)
        if check.message:
            self._note(check.message)
        failed = len(check.retry) + len(check.rejected) + check.rejected_count
        self._counts.incr("sent", max(0, len(events) - failed))
        if check.retry:
            self._failures.incr("item_retry", len(check.retry))
        return [events[i] for i in check.retry if i < len(events)]

    def _encodable(
        self, events: list[bytes], lost: list[str] | None
    ) -> tuple[list[bytes], bytes | None]:
        """Return the events the format can encode, and their body.

        When the batch cannot be encoded (an event too deep for the format),
        encodes event by event so that only the bad ones are dropped and
        counted (``encode_error``) instead of the whole batch.
        """
        try:
            return events, self.format.encode(events)
        except Exception as exc:
            error: Exception = exc
        good: list[bytes] = []
        for event in events:
            try:
                self.format.encode([event])
            except Exception as exc:
                error = exc
            else:
                good.append(event)
        bad = len(events) - len(good)
        if bad:
            self._failures.incr("encode_error")
            self._note(
                f"cannot encode as {self.format.name}: {type(error).__name__}: {error}"
            )
            self._drop("encode_error", bad, lost)
        return good, None

    def _attempt(
        self, client: _Client, events: list[bytes], body: bytes | None = None
    ) -> _Outcome:
        """Make one request (plus one immediate retry on a stale connection)."""
        try:
            if body is None:
                body = self.format.encode(events)
            headers = self._headers
            if self.gzip_min_bytes is not None and len(body) >= self.gzip_min_bytes:
                body = zlib.compress(body, 1, wbits=31)
                headers = self._gzip_headers
            status, retry_after, data = self._post(client, body, headers)
        except ssl.SSLError as exc:
            if not _certificate_refused(exc):
                return self._failed("connection", exc)  # cut mid-handshake …
            # Certificate errors (theirs refused by us, or ours by them) do
            # not fix themselves soon: without a spool, drop (counted); with
            # one, keep the batch and keep trying.
            return self._failed("tls", exc, retryable=self._spool is not None)
        except TimeoutError as exc:
            return self._failed("timeout", exc)
        except (OSError, http.client.HTTPException) as exc:
            # Includes other TLS errors (a connection cut mid-handshake …).
            return self._failed("connection", exc)
        except Exception as exc:
            return self._failed("sink_error", exc, retryable=False)
        self.last_status = status
        if 200 <= status < 300:
            return _Outcome(
                "ok", status=status, check=self.format.check(data, len(events))
            )
        kind = f"http_{status}"
        self._failures.incr(kind)
        # Scrub before cutting: a secret across the cut would leak in part.
        window = 200 + max((len(x) for x in self._secrets), default=0)
        snippet = self._scrub(data[:window].decode("utf-8", "replace"))
        snippet = snippet[:200].strip()
        self._note(
            f"POST {self.url}: HTTP {status}" + (f": {snippet}" if snippet else "")
        )
        if status == 413:
            return _Outcome("split", status=status)
        if status in _RETRY_STATUSES or 500 <= status < 600:
            return _Outcome(
                "retry",
                status=status,
                reason=kind,
                retry_after=parse_retry_after(retry_after, self._now()),
            )
        reason = "http_4xx" if 400 <= status < 500 else f"http_{status // 100}xx"
        return _Outcome("drop", status=status, reason=reason)

    def _failed(
        self, kind: str, exc: BaseException, *, retryable: bool = True
    ) -> _Outcome:
        self._failures.incr(kind)
        self._note(f"POST {self.url}: {type(exc).__name__}: {exc}")
        return _Outcome("retry" if retryable else "drop", reason=kind)

    def _scrub(self, message: str) -> str:
        for secret in self._secrets:
            message = message.replace(secret, "[REDACTED]")
        return message

    def _note(self, message: str) -> None:
        """Keep *message* as ``last_error``, scrubbed of every header value."""
        message = self._scrub(message)
        self.last_error = message if len(message) <= 500 else message[:500] + "…"

    def _connect(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self.timeout, context=self._ssl
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)

    def _post(
        self, client: _Client, body: bytes, headers: dict[str, str]
    ) -> tuple[int, str | None, bytes]:
        self._counts.incr("requests")
        for fresh in (False, True):
            reused = client.conn is not None and client.requests > 0
            if client.conn is None:
                client.conn = self._connect()
            conn = client.conn
            # The whole request (connect, send, answer) must end within
            # timeout: each socket operation gets what is left of it.
            deadline = time.monotonic() + self.timeout
            conn.timeout = self.timeout
            conn.response_class = cast(
                "type[http.client.HTTPResponse]",
                functools.partial(_Response, deadline=deadline, limit=self.timeout),
            )
            try:
                if conn.sock is None:
                    conn.connect()
                assert conn.sock is not None
                conn.sock.settimeout(max(0.001, deadline - time.monotonic()))
                conn.request("POST", self._path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read(_MAX_RESPONSE)
            except _STALE:
                client.close()
                if reused and not fresh:
                    # The server closed an idle kept-alive connection: try
                    # once more at once on a new one, as browsers do.
                    self._failures.incr("connection")
                    self._counts.incr("retried")
                    continue
                raise
            except BaseException:
                client.close()
                raise
            client.requests += 1
            if response.will_close or not response.isclosed():
                client.close()
            return response.status, response.getheader("Retry-After"), data
        raise AssertionError("unreachable")  # pragma: no cover
