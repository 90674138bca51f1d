"""RedisStore: rule window state in Redis, shared by every process of a fleet.

With the default :class:`~auditloop.rules.MemoryStore` each process counts
only its own events: 24 workers each seeing a twenty-fourth of alice's
permission changes never reach a threshold. :class:`RedisStore` keeps the
windows and the alert lifecycle of every (rule, group) in Redis instead.

How it works:

- The engine's observers only queue the event's updates; ``commit()`` (once
  per event) sends them all in **one** call of a Lua function
  (``_redis_store.lua``: an ``FCALL`` on Redis >= 7, an ``EVALSHA`` script
  on older servers), which applies every update atomically, re-checks
  groups whose time came (resolutions, Absence), and returns the
  transitions. A transition is decided inside the script, so exactly one
  process reports each firing and each resolution.
- Times come from the Redis server's ``TIME`` (default), so hosts with
  skewed clocks share one timeline; ``time="event"`` uses event time
  instead (needed for replays and tests with a fake clock).
- Every key has a TTL (window + ``for_`` + ``cooldown`` + ``ttl``, plus
  some slack so it is not refreshed on every update), so idle groups vanish
  from Redis on their own.
- When Redis fails (connection error, timeout, error reply) the event's
  updates go to a local :class:`MemoryStore` (``on_unavailable="fallback"``)
  or are dropped (``"skip"``), counted either way; Redis is tried again
  after ``retry_after`` seconds, and an ``auditloop.rule.store_unavailable``
  event reports the outage (at most one per ``report_interval``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import socket
import threading
import weakref
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from time import monotonic
from typing import TYPE_CHECKING, Any, Final

import orjson

from auditloop._encode import encode
from auditloop.exceptions import ConfigurationError
from auditloop.rules._kinds import Absence, Distinct, Ratio, Rule, Threshold
from auditloop.rules._kinds import Sequence as SequenceRule
from auditloop.rules._match import hashable, to_json
from auditloop.rules._store import Change, MemoryStore, Observer

if TYPE_CHECKING:
    from auditloop.rules._engine import RuleEngine

__all__ = ["RedisStore"]

Event = Mapping[str, Any]
#: One queued update: (spec, key, event time, event, roles, engine time,
#: distinct value).
Pending = tuple["_Spec", Hashable, float, Event, int, float, Any]

_INF: Final = math.inf
#: Seconds between re-checks of the shared schedule while no event arrives.
_POLL: Final = 1.0
#: Due groups re-checked per call: few with an event (keeps the call short),
#: more on a tick (catches up after many windows closed at once). Beyond the
#: limit, a group with an update in the call is still re-checked first (see
#: the script's main), so the limit only delays other groups' transitions.
_SWEEP_WITH_EVENT: Final = 32
_SWEEP_ON_TICK: Final = 256
#: Sweeping calls per tick at most while more groups are due.
_MAX_SWEEPS: Final = 8
#: Group key names remembered per rule (to skip re-hashing hot groups);
#: beyond it the oldest is forgotten (about 0.5 KiB each).
_MAX_CACHED: Final = 16_384
_DIGEST_HEX: Final = 20
_SYSTEM_ACTOR: Final = {"id": "auditloop", "type": "system"}


def _bulk(value: bytes) -> bytes:
    """*value* as a RESP bulk string (arguments are packed once, joined)."""
    return b"$%d\r\n%b\r\n" % (len(value), value)


_EMPTY: Final = _bulk(b"")
_ZERO: Final = _bulk(b"0")
_ONE: Final = _bulk(b"1")
_SMALL: Final = tuple(_bulk(b"%d" % n) for n in range(16))
_SWEEP_WITH_EVENT_RESP: Final = _bulk(b"%d" % _SWEEP_WITH_EVENT)
_MODES: Final = ("fallback", "skip")
_TIMES: Final = ("server", "event")


#: Live stores, so a forked child drops their connections (see below).
_stores: weakref.WeakSet[RedisStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The parent's socket must not be shared: the child connects anew (the
    # connection object closes only its own copy when collected).
    for store in list(_stores):
        store._connection = None
        store._lock = threading.Lock()  # another thread may have held it


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Script:
    """The Lua code (``_redis_store.lua``) in both of the forms Redis runs.

    ``library``: a function library (Redis >= 7), loaded once per server
    with ``FUNCTION LOAD``, then called with ``FCALL``: each call runs only
    ``main``. ``source``: the same code as an ``EVAL`` script (older
    servers, or ``FUNCTION`` disabled), which Redis runs whole on every call.
    The library and function are named after the code's hash, so stores of
    different auditloop versions sharing a server never call each other's.
    """

    def __init__(self) -> None:
        from importlib import resources

        code = (
            resources.files("auditloop.rules")
            .joinpath("_redis_store.lua")
            .read_text(encoding="utf-8")
        )
        digest = hashlib.sha1(code.encode(), usedforsecurity=False).hexdigest()
        name = f"auditloop_{digest[:16]}"
        self.library = (
            f"#!lua name={name}\n{code}\n"
            f"redis.register_function('{name}',\n"
            "  function(_, args) return main(args) end)\n"
        ).encode()
        self.source = (
            code + "\nif redis.replicate_commands then\n"
            "  redis.replicate_commands() -- Redis < 7: replicate effects (TIME)\n"
            "end\nreturn main(ARGV)\n"
        ).encode()
        sha = hashlib.sha1(self.source, usedforsecurity=False).hexdigest()
        self.fcall = _bulk(b"FCALL") + _bulk(name.encode()) + _ZERO
        self.evalsha = _bulk(b"EVALSHA") + _bulk(sha.encode()) + _ZERO
        self.eval = _bulk(b"EVAL") + _bulk(self.source) + _ZERO
        self.load = b"*3\r\n%b%b%b" % (
            _bulk(b"FUNCTION"),
            _bulk(b"LOAD"),
            _bulk(self.library),
        )


@functools.cache
def _script() -> _Script:
    return _Script()


class _ReplyError(Exception):
    """An error reply (``-ERR ...``); ``code`` is its first word."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.code = text.split(" ", 1)[0]


#: Error replies after which the connection is closed, so the next call
#: connects anew (redis-py's Sentinel connections then find the new master).
_RECONNECT: Final = frozenset({"READONLY", "LOADING", "MASTERDOWN"})


#: Error replies that say "not now" rather than "not here": loading the
#: function library is tried again at the next call.
_TRANSIENT: Final = frozenset(
    {"BUSY", "CLUSTERDOWN", "LOADING", "MASTERDOWN", "MISCONF", "NOREPLICAS"}
    | {"OOM", "READONLY", "TRYAGAIN"}
)
#: redis-py's exceptions for error replies whose code it strips.
_CODES: Final = {
    "NoScriptError": "NOSCRIPT",
    "ReadOnlyError": "READONLY",
    "BusyLoadingError": "LOADING",
    "NoPermissionError": "NOPERM",
    "MasterDownError": "MASTERDOWN",
    "OutOfMemoryError": "OOM",
}


def _refused(error: _ReplyError) -> bool:
    """Tell whether *error* (to an ``FCALL``) says the server does not run
    function libraries (any more): an older server after a failover, an
    ACL."""
    return error.code == "NOPERM" or "unknown command" in str(error).lower()


def _reply_error(error: Exception) -> _ReplyError:
    """redis-py's exception for an error reply, with its code put back."""
    for cls in type(error).__mro__:
        code = _CODES.get(cls.__name__)
        if code is not None:
            return _ReplyError(f"{code} {error}")
    return _ReplyError(str(error))


class _IncompleteError(Exception):
    """The buffer ends before the reply does."""


_PUSH: Final = object()  # what _parse returns for a RESP3 push message


def _read_reply(sock: socket.socket) -> Any:
    """Read one RESP reply from *sock*: bytes, int, None or a list of them.

    Only what the store's commands return is understood (bulk and simple
    strings, integers, nulls, arrays, errors; RESP3 push messages are
    skipped); anything else is a protocol error. Blocks at most the
    socket's timeout per ``recv``.

    Raises:
        _ReplyError: for an error reply, once it has been read whole.
        ConnectionError: the server closed the connection, or sent more
            than one reply or something else.
    """
    data = b""
    start = 0
    while True:
        try:
            reply, end = _parse(data, start)
        except _IncompleteError:
            # Growing reads: a long reply is parsed again O(log n) times.
            more = sock.recv(max(65536, len(data)))
            if not more:
                raise ConnectionError("Redis closed the connection") from None
            data += more
            continue
        if reply is _PUSH:  # out of band (client tracking...): not the reply
            start = end
            continue
        if end != len(data):
            raise ConnectionError("unexpected data after the reply")
        if isinstance(reply, _ReplyError):
            raise reply
        return reply


def _parse(data: bytes, start: int) -> tuple[Any, int]:
    """The reply at *start* in *data* and where it ends."""
    eol = data.find(b"\r\n", start)
    if eol < 0:
        raise _IncompleteError
    kind, head = data[start], data[start + 1 : eol]
    if kind == 36:  # $ bulk string
        size = int(head)
        if size < 0:
            return None, eol + 2
        end = eol + 2 + size
        if len(data) < end + 2:
            raise _IncompleteError
        return data[eol + 2 : end], end + 2
    if kind in {42, 62}:  # * array, > push (RESP3)
        count = int(head)
        items = []
        position = eol + 2
        for _ in range(count):
            item, position = _parse(data, position)
            items.append(item)
        if kind == 62:
            return _PUSH, position
        return (items if count >= 0 else None), position
    if kind == 43:  # + simple string
        return head, eol + 2
    if kind == 58:  # : integer
        return int(head), eol + 2
    if kind == 45:  # - error
        return _ReplyError(head.decode("utf-8", "replace")), eol + 2
    if kind == 95:  # _ null (RESP3)
        return None, eol + 2
    raise ConnectionError(f"unexpected reply type {chr(kind)!r} from Redis")


class _Spec:
    """What the store knows about one rule: its config string and counters."""

    __slots__ = (
        "cfg",
        "fallback",
        "field_value",
        "fired",
        "groups",
        "keep",
        "keys",
        "late",
        "overflow",
        "packed_cfg",
        "resolved",
        "rule",
        "skipped",
        "stem",
        "suppressed",
        "within",
    )

    def __init__(self, rule: Rule, prefix: str, ttl: float) -> None:
        self.rule = rule
        self.within = rule.within
        keep = rule.evidence
        field = ""
        self.field_value = None
        if isinstance(rule, Threshold):
            kind, params = "t", [str(rule.at_least)]
            keep = min(keep, rule.at_least)
        elif isinstance(rule, Ratio):
            kind = "r"
            params = [repr(rule.above), str(rule.min_count), str(rule.max_events)]
        elif isinstance(rule, Distinct):
            kind, params = "d", [str(rule.at_least)]
            keep = min(keep, rule.at_least)
            field = rule.field
            self.field_value = rule.field_value
        elif isinstance(rule, Absence):
            kind, params = "a", []
        elif isinstance(rule, SequenceRule):
            kind, params = "s", [str(len(rule.steps))]
        else:
            raise ConfigurationError(
                f"configure: rule_store: RedisStore does not support rule "
                f"{rule.name!r} of kind {rule.kind!r}"
            )
        self.keep = keep
        times = [repr(rule.within), repr(rule.for_), repr(rule.cooldown)]
        ttl_ms = math.ceil((rule.within + rule.for_ + rule.cooldown + ttl) * 1000)
        self.cfg = ",".join([kind, *times, str(keep), str(max(ttl_ms, 1)), *params])
        # State is shared by rules of the same name *and* shape: changing a
        # rule's window or threshold starts fresh state instead of misreading.
        shape = "|".join([kind, *times, str(keep), *params, *rule.group_by, field])
        tag = hashlib.blake2b(shape.encode(), digest_size=4).hexdigest()
        self.stem = f"{prefix}{rule.name}:{tag}:"
        self.packed_cfg = _bulk(self.cfg.encode())
        self.groups: OrderedDict[Hashable, tuple[str, bytes, bytes]] = OrderedDict()
        self.keys: dict[str, Hashable] = {}
        self.fired = self.resolved = self.suppressed = 0
        self.late = self.overflow = self.fallback = self.skipped = 0

    def group(self, key: Hashable) -> tuple[str, bytes, bytes]:
        """The key name stem (base) and JSON of the group *key*, and the
        script arguments naming it (config, base, JSON) in RESP form."""
        found = self.groups.get(key)
        if found is not None:
            return found
        keyjson = to_json(key)  # never raises (an int beyond 64 bits...)
        base = self.stem + hashlib.blake2b(keyjson, digest_size=10).hexdigest()
        if len(self.groups) >= _MAX_CACHED:  # first in, first out: O(1)
            _, (forgotten, _, _) = self.groups.popitem(last=False)
            self.keys.pop(forgotten, None)
        packed = self.packed_cfg + _bulk(base.encode()) + _bulk(keyjson)
        self.groups[key] = found = (base, keyjson, packed)
        self.keys[base] = key
        return found

    def key_of(self, base: str, keyjson: bytes) -> Hashable:
        """The group key of a group another process may have created."""
        key = self.keys.get(base)
        if key is not None:
            return key
        # json, not orjson: exact for integers beyond 64 bits (rare path).
        value = json.loads(keyjson)
        if len(self.rule.group_by) > 1 and isinstance(value, list):
            return tuple(hashable(v) for v in value)
        return hashable(value)  # type: ignore[no-any-return]

    def counts(self) -> dict[str, int]:
        return {
            "fired": self.fired,
            "resolved": self.resolved,
            "suppressed": self.suppressed,
            "late_events": self.late,
            "overflow": self.overflow,
            "fallback_events": self.fallback,
            "skipped_events": self.skipped,
        }


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _emit_unavailable(
    auditor: Any, error: BaseException | None, attributes: dict[str, Any]
) -> None:
    """Emit ``auditloop.rule.store_unavailable`` (on its own thread)."""
    try:
        auditor.emit_from(
            None,
            "auditloop.rule.store_unavailable",
            actor=_SYSTEM_ACTOR,
            target={"id": "rule_store:redis", "type": "rule_store"},
            outcome="failure",
            category="system",
            severity="high",
            reason="Redis is unreachable: rules "
            + (
                "count in local state"
                if attributes["on_unavailable"] == "fallback"
                else "skip events"
            ),
            error=error,
            duration_ms=None,
            attributes=attributes,
        )
    except Exception:  # pragma: no cover - the Auditor never raises otherwise
        return


class RedisStore:
    """Rule state in Redis: thresholds count across every process and host.

    Pass it as ``auditloop.configure(rule_store=rules.RedisStore(url))``. Every
    rule kind and the alert lifecycle behave as with the in-memory store (the
    same events give the same alerts), except that all processes using the
    same Redis and *prefix* share each (rule, group): a crossing fires once
    for the whole fleet, in the process whose event completed it, and one
    process reports the resolution. Run the same rules in every process
    that shares a prefix.

    Cost: at most one round trip per event however many rules match it
    (none for an event no rule matches), plus one per second while a
    process is idle (to notice resolutions and Absence). Blocking: an event
    waits for Redis at most *timeout* seconds (plus *timeout* to connect);
    after a failure no event waits for Redis until *retry_after* has
    passed. Never raises into the application.

    Args:
        url_or_client: a ``redis://``, ``rediss://`` or ``unix://`` URL (the
            store builds a client with *timeout* and no retries), or a
            ``redis.Redis`` client whose connection pool the store takes one
            connection from (its ``socket_timeout`` and
            ``socket_connect_timeout`` then apply instead of *timeout*; a
            client without ``socket_timeout`` gets *timeout* for replies).
        prefix: prepended to every key; processes sharing a prefix share
            state.
        time: ``"server"`` (default): window time is the Redis server's
            ``TIME``, the same for every host whatever its clock.
            ``"event"``: the events' own times (replays, fake clocks).
        timeout: seconds to wait for Redis (connect, and each reply).
        on_unavailable: ``"fallback"`` (default): while Redis is
            unreachable, rules count in this process's memory (alerts then
            see only this process's events, as without a store);
            ``"skip"``: events are not counted. Both are counted in
            ``stats()`` and reported as ``auditloop.rule.store_unavailable``.
        ttl: seconds a group's keys outlive the last moment they can matter
            (window + ``for_`` + ``cooldown`` after its last update); keys
            are refreshed lazily, so they may live up to a quarter (at most
            10 s) longer.
        retry_after: seconds after a failure before Redis is tried again.
        report_interval: at most one ``auditloop.rule.store_unavailable``
            event per this many seconds.

    Raises:
        ConfigurationError: for an invalid argument (naming it), or when the
            ``redis`` package is missing (``pip install 'auditloop[redis]'``).
    """

    def __init__(
        self,
        url_or_client: object,
        *,
        prefix: str = "auditloop:",
        time: str = "server",
        timeout: float = 0.1,
        on_unavailable: str = "fallback",
        ttl: float = 60.0,
        retry_after: float = 1.0,
        report_interval: float = 60.0,
    ) -> None:
        try:
            import redis
            from redis.exceptions import ResponseError
        except ImportError:
            raise ConfigurationError(
                "configure: rule_store: RedisStore needs the redis client: "
                "pip install 'auditloop[redis]'"
            ) from None
        if not isinstance(prefix, str) or not prefix:
            raise ConfigurationError(
                f"RedisStore: prefix must be a non-empty string, got {prefix!r}"
            )
        if time not in _TIMES:
            raise ConfigurationError(
                f"RedisStore: time must be 'server' or 'event', got {time!r}"
            )
        if on_unavailable not in _MODES:
            raise ConfigurationError(
                "RedisStore: on_unavailable must be 'fallback' or 'skip', "
                f"got {on_unavailable!r}"
            )
        self.timeout = _seconds("timeout", timeout, positive=True)
        self.ttl = _seconds("ttl", ttl)
        self.retry_after = _seconds("retry_after", retry_after)
        self.report_interval = _seconds("report_interval", report_interval)
        self.prefix = prefix
        self.time = time
        self.on_unavailable = on_unavailable
        if isinstance(url_or_client, str):
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            client: Any
            try:
                client = redis.Redis.from_url(
                    url_or_client,
                    socket_timeout=self.timeout,
                    socket_connect_timeout=self.timeout,
                    retry=Retry(NoBackoff(), 0),
                    health_check_interval=0,
                )
            except ValueError as exc:
                raise ConfigurationError(f"RedisStore: url_or_client: {exc}") from None
        elif callable(
            getattr(
                getattr(url_or_client, "connection_pool", None), "get_connection", None
            )
        ):
            client = url_or_client
        else:
            raise ConfigurationError(
                "RedisStore: url_or_client must be a redis:// URL or a "
                f"redis.Redis client, got {url_or_client!r}"
            )
        self._client: Any = client
        self._connection: Any = None  # one, reused (calls are serialised)
        self._response_error: type[Exception] = ResponseError
        self._script = _script()
        # FCALL or EVALSHA, chosen at the first call (see _invocation).
        self._invoke: bytes | None = None
        self._head = _bulk(prefix.encode())
        self._event_time = time == "event"
        self._engine: RuleEngine | None = None
        # Store-wide counters (see info()).
        self._round_trips = 0
        self._failures = 0
        self._recoveries = 0
        self._reports = 0
        self._expired = 0
        self._foreign = 0
        self._up = True
        self._retry_at = -_INF
        self._next_report = -_INF
        self._unreported = 0
        self._last_error: BaseException | None = None
        self._dropped = 0
        # Queued updates, per thread: an engine observes and commits an event
        # on one thread (under its lock), so a commit sends exactly the
        # updates of its own event, even while a replaced engine that shares
        # this store still observes (see bind).
        self._queues = threading.local()
        self._lock = threading.Lock()  # commits of two engines never interleave
        self.bind(())
        _stores.add(self)

    # -- the Store protocol ------------------------------------------------------

    def attach(self, engine: RuleEngine) -> None:
        """Remember the engine, whose auditor receives outage reports."""
        self._engine = engine

    def bind(self, rules: Sequence[Rule]) -> list[Observer]:
        """Start with *rules*; return their observers (they only queue).

        Binding again (``configure()`` with the same store) replaces the
        rules; the previous engine keeps working until it is shut down: its
        events count in Redis for its own rules (the same keys as the new
        rules of the same name and shape) and its alerts go to it. During a
        Redis outage they cannot count locally (the local state is the new
        rules'): they are counted in ``info()["dropped_updates"]``.
        """
        with self._lock:
            return self._bind(rules)

    def _bind(self, rules: Sequence[Rule]) -> list[Observer]:
        self._specs = [_Spec(rule, self.prefix, self.ttl) for rule in rules]
        self._stems = {spec.stem: spec for spec in self._specs}
        self._by_rule = {spec.rule: spec for spec in self._specs}
        self._sweep = False
        self._watched = False
        self._now = -_INF
        self.next_due = -_INF
        self._local: MemoryStore | None = None
        self._local_observers: list[Observer] = []
        self._local_firing: dict[tuple[str, Hashable], Change] = {}
        return [self._observer(spec) for spec in self._specs]

    def _observer(self, spec: _Spec) -> Observer:
        queues = self._queues
        within = spec.within
        check_late = self._event_time
        field_value = spec.field_value

        def observe(
            key: Hashable, timestamp: float, event: Event, roles: int, now: float
        ) -> None:
            if check_late and timestamp <= now - within:
                spec.late += 1
                return
            value = None
            if field_value is not None:
                value = field_value(event)
                if value is None:
                    return  # nothing to count
            entry = (spec, key, timestamp, event, roles, now, value)
            try:
                queues.pending.append(entry)
            except AttributeError:  # this thread's first update
                queues.pending = [entry]

        return observe

    @property
    def _server(self) -> tuple[object, ...]:
        """Where the store's Redis is (host, port, path, db), as configured."""
        kwargs = getattr(self._client.connection_pool, "connection_kwargs", {})
        return tuple(kwargs.get(k) for k in ("host", "port", "path", "db"))

    def advance(self, now: float) -> list[Change]:
        """Note that groups are due; the next :meth:`commit` re-checks them.

        In fallback, also advances the local state (which needs no I/O).
        """
        with self._lock:
            return self._advance(now)

    def _advance(self, now: float) -> list[Change]:
        self._now = now
        self._sweep = True
        local = self._local
        if local is None or now < local.next_due:
            return []
        changes = self._track(local.advance(now))
        self.next_due = min(self.next_due, local.next_due)
        return changes

    def commit(self) -> list[Change]:
        """Apply the event's queued updates (and due re-checks) in one call.

        Blocks at most about *timeout* (none while Redis is known to be down
        and *retry_after* has not passed), plus the time another engine's
        commit on this store takes. Never raises: on failure the updates go
        to local state or are skipped, as configured.
        """
        with self._lock:
            return self._commit()

    def _commit(self) -> list[Change]:
        pending: list[Pending] = getattr(self._queues, "pending", None) or []
        if not pending and not self._sweep:
            return []
        if pending:
            self._now = pending[-1][5]
        if monotonic() < self._retry_at:
            return self._unavailable(None, pending)
        limit = _SWEEP_WITH_EVENT if pending else _SWEEP_ON_TICK
        try:
            changes = self._applied(
                self._call(self._arguments(pending, limit)), pending
            )
        except Exception as exc:
            return self._unavailable(exc, pending)
        sweeps = _MAX_SWEEPS if pending else 1  # an event: one round trip only
        pending.clear()
        self._sweep = False
        # A tick that found more due groups than one call takes goes on.
        while self.next_due <= self._now and sweeps < _MAX_SWEEPS:
            sweeps += 1
            try:
                reply = self._call(self._arguments([], _SWEEP_ON_TICK))
                changes += self._applied(reply, [])
            except Exception as exc:
                return changes + self._unavailable(exc, [])
        return changes

    def stats(self) -> dict[str, dict[str, int]]:
        """Counters per rule name: this process's share of the fleet's work.

        ``fired``/``resolved`` count the transitions this process reported;
        ``fallback_events``/``skipped_events`` the rule updates that did not
        reach Redis.
        """
        return {spec.rule.name: spec.counts() for spec in self._specs}

    def info(self) -> dict[str, Any]:
        """Store-wide state and counters (thread-safe, cheap).

        Returns:
            ``available`` (False from a failed call to the next successful
            one), ``round_trips`` (calls sent), ``failures``,
            ``recoveries``, ``reports`` (outage events emitted),
            ``expired_groups`` (idle groups deleted by re-checks),
            ``dropped_updates`` (updates of a replaced engine that could not
            count locally during an outage, see :meth:`bind`) and
            ``foreign_changes`` (transitions of rules this process does not
            have, dropped).
        """
        return {
            "available": self._up,
            "round_trips": self._round_trips,
            "failures": self._failures,
            "recoveries": self._recoveries,
            "reports": self._reports,
            "expired_groups": self._expired,
            "foreign_changes": self._foreign,
            "dropped_updates": self._dropped,
        }

    # -- talking to Redis ----------------------------------------------------------

    def _arguments(self, pending: list[Pending], limit: int) -> list[bytes]:
        """The whole EVALSHA command, in RESP pieces to join (see _bulk).

        The first piece is left empty for the element count, which
        :meth:`_call` fills in: some pieces hold several elements (a
        group's config, base and JSON are packed once, together).
        """
        args = [
            b"",
            b"",  # FCALL or EVALSHA: filled in by _call
            self._head,
            _bulk(repr(self._now).encode()) if self._event_time else _EMPTY,
            _SWEEP_WITH_EVENT_RESP
            if limit == _SWEEP_WITH_EVENT
            else _bulk(b"%d" % limit),
        ]
        count = 6  # FCALL name 0 (or EVALSHA sha 0) prefix now limit
        blob = _ZERO
        if pending and any(p[0].keep for p in pending):
            args += (_ONE, _bulk(encode(pending[0][3])))
            blob = _ONE
            count += 2
        else:
            args.append(_ZERO)
            count += 1
        if self._watched:
            args.append(_ZERO)
            count += 1
        else:
            watch: list[bytes] = []
            for spec in self._specs:
                rule = spec.rule
                if isinstance(rule, Absence):
                    watch += (spec.group(key)[2] for key in rule.expected)
            args += (_bulk(b"%d" % len(watch)), *watch)
            count += 1 + 3 * len(watch)
        event_time = self._event_time
        for spec, key, timestamp, _event, roles, _now, value in pending:
            args += (
                spec.group(key)[2],  # 3 elements
                _bulk(repr(timestamp).encode()) if event_time else _EMPTY,
                _SMALL[roles] if roles < 16 else _bulk(b"%d" % roles),
                blob if spec.keep else _ZERO,
                _EMPTY if value is None else _bulk(to_json(hashable(value))),
            )
        args[0] = b"*%d\r\n" % (count + 7 * len(pending))
        return args

    def _call(self, args: list[bytes]) -> Any:
        """Send the command *args*; one round trip (two or three after a
        restart, or on the first call)."""
        script = self._script
        if self._invoke is None:
            self._invoke = self._invocation()
        args[1] = self._invoke
        self._round_trips += 1
        try:
            return self._send(b"".join(args))
        except _ReplyError as exc:
            if args[1] is script.evalsha and exc.code == "NOSCRIPT":
                args[1] = script.eval  # a restarted server forgot it: send it whole
            elif args[1] is script.fcall and "function not found" in str(exc).lower():
                # A restarted (or flushed) server forgot the library: load it
                # again (or, if it no longer takes libraries, send the script).
                self._invoke = self._invocation()
                args[1] = script.fcall if self._invoke is script.fcall else script.eval
            else:
                if args[1] is script.fcall and _refused(exc):
                    self._invoke = None  # e.g. failed over to an older server
                raise
        self._round_trips += 1
        return self._send(b"".join(args))

    def _invocation(self) -> bytes:
        """Load the function library (one round trip); return how to call it.

        ``FCALL`` when the server has functions (Redis >= 7), ``EVALSHA``
        when it answers with any error but a passing one (an older server, a
        proxy, ``FUNCTION`` renamed or not permitted by an ACL).

        Raises:
            _ReplyError: a passing error (out of memory, loading, read-only
                replica...): the choice is made again at the next call.
        """
        script = self._script
        self._round_trips += 1
        try:
            self._send(script.load)
        except _ReplyError as exc:
            if "already exists" in str(exc):
                return script.fcall
            if exc.code in _TRANSIENT:
                raise
            return script.evalsha
        return script.fcall

    def _send(self, packed: bytes) -> Any:
        """Send one packed command on the store's connection; return the reply.

        redis-py connects (TLS, AUTH, SELECT, its timeouts); the command and
        its reply then go over the connection's socket directly, read by
        :func:`_read_reply` -- redis-py's generic path costs more per call
        than the rest of the client side together.

        Raises:
            _ReplyError: the server answered with an error (the connection
                stays usable).
            Exception: anything else (the connection is closed first).
        """
        connection = self._connection
        if connection is None:
            pool = self._client.connection_pool
            try:
                connection = pool.get_connection()
            except TypeError:  # pragma: no cover - redis < 5.3 wants a command name
                connection = pool.get_connection("EVALSHA")
            self._connection = connection
        try:
            if not hasattr(connection, "_sock"):  # e.g. a client-side cache proxy
                connection.send_packed_command([packed])
                try:
                    return connection.read_response()
                except self._response_error as exc:
                    raise _reply_error(exc) from exc
            sock = connection._sock
            if sock is None:
                connection.connect()
                sock = connection._sock
            if sock.gettimeout() is None:  # a client without socket_timeout
                sock.settimeout(self.timeout)  # must still never block forever
            sock.sendall(packed)
            return _read_reply(sock)
        except _ReplyError as exc:
            if exc.code in _RECONNECT:  # e.g. a Sentinel failover: find the master
                connection.disconnect()
            raise
        except BaseException:
            connection.disconnect()  # a late reply must not answer the next call
            raise

    def _applied(self, reply: Any, pending: list[Pending]) -> list[Change]:
        """Turn a script reply into changes; update counters and next_due."""
        if not self._up:
            self._up = True
            self._recoveries += 1
        changes = self._recover() if self._local is not None else []
        rows: list[Any] = []
        if not isinstance(reply, bytes | str):
            reply, *rows = reply
        now_text, flags_text, due_text, expired = _text(reply).split(" ")
        server_now = float(now_text)
        for i, digit in enumerate(flags_text.encode()):
            if digit != 48:  # b"0"
                spec = pending[i][0]
                flags = digit - 48
                spec.late += flags & 1
                spec.suppressed += flags >> 1 & 1
                spec.overflow += flags >> 2 & 1
        self._expired += int(expired)
        for row in rows:
            change = self._change(row, pending)
            if change is not None:
                changes.append(change)
        self._watched = True
        # Due times are server times: shift them onto the engine's clock.
        due = float(due_text) - (server_now - self._now) if due_text != "-" else _INF
        self.next_due = min(self._now + _POLL, due)
        return changes

    def _change(self, row: list[Any], pending: list[Pending]) -> Change | None:
        index = int(row[0])
        if index:
            spec, key = pending[index - 1][0], pending[index - 1][1]
        else:
            base = _text(row[1])
            found = self._stems.get(base[:-_DIGEST_HEX])
            if found is None:  # a rule of another configuration sharing prefix
                self._foreign += 1
                return None
            spec = found
            key = spec.key_of(base, row[2]) if row[2] else None
        status = _text(row[3])
        if status == "suppressed":
            spec.suppressed += 1
            return None
        if status == "firing":
            spec.fired += 1
        else:
            spec.resolved += 1
        return Change(
            spec.rule,
            key,
            status,
            float(row[4]),
            float(row[5]),
            tuple(orjson.loads(e) for e in row[8:]),
            float(row[6]),
            float(row[7]),
        )

    # -- when Redis is unreachable -------------------------------------------------

    def _unavailable(
        self, error: BaseException | None, pending: list[Pending]
    ) -> list[Change]:
        """Count, report, and count the event's *pending* updates locally or
        skip them."""
        if error is not None:
            self._failures += 1
            self._up = False
            self._last_error = error
            self._retry_at = monotonic() + self.retry_after
            self._watched = False  # a restarted server has lost the watches
        self._sweep = False
        self._report(1 if pending else 0)
        self.next_due = self._now + min(self.retry_after, _POLL)
        if not pending:
            return []
        changes: list[Change] = []
        if self.on_unavailable == "skip":
            for item in pending:
                item[0].skipped += 1
        else:
            local = self._local
            if local is None:
                local = self._local = MemoryStore()
                self._local_observers = list(local.bind([s.rule for s in self._specs]))
            if self._now >= local.next_due:
                changes = self._track(local.advance(self._now))
            observers = dict(zip(self._specs, self._local_observers, strict=True))
            for spec, key, timestamp, event, roles, now, _value in pending:
                observe = observers.get(spec)
                if observe is None:  # a replaced engine's rule (see bind)
                    self._dropped += 1
                    continue
                spec.fallback += 1
                change = observe(key, timestamp, event, roles, now)
                if change is not None:
                    changes += self._track([change])
            self.next_due = min(self.next_due, local.next_due)
        pending.clear()
        return changes

    def _track(self, changes: list[Change]) -> list[Change]:
        """Count local transitions and remember which groups fire locally."""
        firing = self._local_firing
        for change in changes:
            spec = self._by_rule[change.rule]
            key = (change.rule.name, change.key)
            if change.status == "firing":
                spec.fired += 1
                firing[key] = change
            else:
                spec.resolved += 1
                firing.pop(key, None)
        return changes

    def _recover(self) -> list[Change]:
        """Redis answers again: resolve what fired locally, drop local state.

        Counting continues in Redis; an alert that fired from local state
        gets its resolution now, so no notification stays open forever.
        """
        at = self._now
        changes = [
            Change(
                c.rule,
                c.key,
                "resolved",
                at,
                c.value,
                c.evidence,
                c.started_at,
                c.fired_at,
            )
            for c in self._local_firing.values()
        ]
        for change in changes:
            self._by_rule[change.rule].resolved += 1
        self._local = None
        self._local_observers = []
        self._local_firing = {}
        return changes

    def _report(self, events: int) -> None:
        """Emit ``auditloop.rule.store_unavailable``, at most once per interval."""
        self._unreported += events
        moment = monotonic()
        if moment < self._next_report:
            return
        self._next_report = moment + self.report_interval
        self._reports += 1
        attributes = {
            "store": "redis",
            "prefix": self.prefix,
            "on_unavailable": self.on_unavailable,
            "events": self._unreported,
            "failures": self._failures,
            "retry_after": self.retry_after,
        }
        self._unreported = 0
        engine = self._engine
        auditor = engine.auditor if engine is not None else None
        if auditor is None:
            return
        # Not from here: the engine's lock is held and the event would
        # re-enter the engine on this thread.
        threading.Thread(
            target=_emit_unavailable,
            args=(auditor, self._last_error, attributes),
            name="auditloop-rule-store-report",
            daemon=True,
        ).start()


def _seconds(name: str, value: object, *, positive: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (positive and value == 0)
    ):
        need = "> 0" if positive else ">= 0"
        raise ConfigurationError(
            f"RedisStore: {name} must be a number of seconds {need}, got {value!r}"
        )
    return float(value)
