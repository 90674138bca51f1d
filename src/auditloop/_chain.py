"""Writer side of the integrity chain: ``seq``, ``prev`` and ``hash`` per line.

The canonical encoding of a record is the exact bytes of its line with the
trailing ``,"hash":"<64 hex>"`` member removed (see ``docs/integrity.md``).
The writer never re-encodes an event: it appends
``,"key_id":"<id>","seq":<n>,"prev":"<64 hex>"`` before the closing brace,
hashes those bytes, and appends the hash member. So the hash costs one HMAC
over bytes that exist anyway, and a verifier needs no JSON canonicalisation.
"""

from __future__ import annotations

import gzip
import os
import re
import time
import zlib
from binascii import hexlify
from collections.abc import Callable, Iterable, Mapping
from itertools import chain, islice, repeat
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson

from auditloop._clock import format_rfc3339, uuid7
from auditloop.exceptions import ConfigurationError

if TYPE_CHECKING:
    from hashlib import _Hash

__all__ = [
    "GENESIS",
    "HASH_SUFFIX_LEN",
    "ChainWriter",
    "check_key",
    "check_key_id",
    "first_link",
    "last_link",
    "make_hasher",
    "parse_link",
    "system_record",
]

#: ``prev`` of the first record of a chain.
GENESIS: Final = b"0" * 64
#: Length of the trailing ``,"hash":"<64 hex>"}`` of a chained line.
HASH_SUFFIX_LEN: Final = 75
_PREV_LEN: Final = 74  # ,"prev":"<64 hex>"
_HASH_MEMBER: Final = b',"hash":"'
_PREV_MEMBER: Final = b',"prev":"'
_SEQ_MEMBER: Final = b',"seq":'
_CLOSE: Final = b'"}'  # closes prev and the canonical object
_HASH_SEP: Final = b'","hash":"'  # closes prev, opens hash
_EOL: Final = b'"}\n'
_BODY: Final = itemgetter(slice(None, -1))  # an event's bytes without its }
_LAST: Final = itemgetter(-1)
_KEY_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_IPAD: Final = bytes(x ^ 0x36 for x in range(256))
_OPAD: Final = bytes(x ^ 0x5C for x in range(256))
_TAIL_SCAN_LIMIT: Final = 16 << 20  # how far back a restart looks for the head

Hasher = Callable[[bytes | memoryview, bytes], bytes]


def check_key(key: object, owner: str) -> bytes | None:
    """Validate a chain key (bytes or str, non-empty); return it as bytes."""
    if key is None:
        return None
    if isinstance(key, str):
        key = key.encode()
    if not isinstance(key, bytes | bytearray) or not key:
        raise ConfigurationError(
            f"{owner}: key must be non-empty bytes or str, got {type(key).__name__}"
        )
    return bytes(key)


def check_key_id(key_id: object, owner: str) -> str | None:
    """Validate a key id: 1-64 characters from ``A-Z a-z 0-9 . _ : -``."""
    if key_id is None:
        return None
    if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
        raise ConfigurationError(
            f"{owner}: key_id must be 1-64 characters from A-Z a-z 0-9 . _ : -, "
            f"got {key_id!r}"
        )
    return key_id


def make_hasher(key: bytes | None) -> Hasher:
    """Return ``hasher(body, tail) -> 64 hex bytes`` over ``body + tail``.

    HMAC-SHA256 with *key*, or plain SHA-256 without one. The HMAC pads are
    hashed once here, so each record costs two ``copy()``/``update()`` pairs
    instead of a full ``hmac.new`` (about 2x faster).
    """
    inner_base, outer_base = _pads(key)

    def hasher(body: bytes | memoryview, tail: bytes) -> bytes:
        inner = inner_base.copy()
        inner.update(body)
        inner.update(tail)
        if outer_base is None:
            return inner.hexdigest().encode()
        outer = outer_base.copy()
        outer.update(inner.digest())
        return outer.hexdigest().encode()

    return hasher


def parse_link(line: bytes) -> tuple[int, bytes, bytes] | None:
    """Return ``(seq, prev, hash)`` of a chained line (no newline), or None.

    Only the fixed layout of the chain members at the end of the line is
    checked, not the hash.
    """
    n = len(line)
    if (
        n < 160
        or line[n - 2 :] != b'"}'
        or line[n - 75 : n - 66] != _HASH_MEMBER
        or line[n - 149 : n - 140] != _PREV_MEMBER
        or line[n - 76] != 0x22
    ):
        return None
    start = line.rfind(_SEQ_MEMBER, 0, n - 149)
    digits = line[start + 7 : n - 149]
    if start < 0 or not digits.isdigit() or len(digits) > 19:
        return None
    return int(digits), line[n - 140 : n - 76], line[n - 66 : n - 2]


class ChainWriter:
    """Seals encoded events into chained lines; not thread-safe (the sink locks).

    Args:
        key: HMAC key, or None for plain SHA-256.
        key_id: written in each record so verifiers can pick the key.
        seq: sequence number of the last record already written (0: none).
        head: hash (64 hex bytes) of that record, or :data:`GENESIS`.
    """

    __slots__ = ("_inner", "_kid", "_outer", "_pre", "head", "key_id", "seq")

    def __init__(
        self,
        key: bytes | None,
        key_id: str | None,
        seq: int = 0,
        head: bytes = GENESIS,
    ) -> None:
        self._inner, self._outer = _pads(key)
        self.key_id = key_id
        self._kid = b',"key_id":"' + key_id.encode() + b'"' if key_id else b""
        # key_id has no "%" (check_key_id), so the format has only ours.
        self._pre = b"%s" + self._kid + b',"seq":%d,"prev":"'
        self.seq = seq
        self.head = head

    def seal(self, batch: Iterable[bytes]) -> bytes:
        """Return the chained lines of *batch*, each ending with a newline.

        Runs once per batch in the sink's writer thread, under the GIL, so
        its cost per event is the chain's overhead (budget: 30% of a plain
        ``FileSink`` write, ``benchmarks/bench_trust.py``). Everything that
        does not depend on the previous hash -- the event bytes without
        their ``}``, ``key_id``, ``seq`` -- is formatted for the whole batch
        by C-level ``map`` before the loop, the loop only hashes, and the
        lines are assembled by one ``join``; the bytes are those of
        :meth:`_seal_each`, which handles batches with odd lines.
        """
        if not isinstance(batch, list | tuple):
            batch = list(batch)
        n = len(batch)
        try:
            # Every line a JSON object with members: the encoder's output.
            regular = bytes(map(_LAST, batch)).count(b"}") == n and b"{}" not in batch
        except (IndexError, TypeError, ValueError):  # an empty or odd item
            regular = False
        if not regular:
            return self._seal_each(batch)
        seq, head = self.seq, self.head
        # The canonical bytes are ``pre + prev + '"}'``: hashed in three
        # updates rather than formatted, so no per-event bytes are built
        # here besides the hex digest.
        pres = list(
            map(
                self._pre.__mod__,
                zip(map(_BODY, batch), range(seq + 1, seq + n + 1), strict=True),
            )
        )
        heads = [head]
        add = heads.append
        new_inner = self._inner.copy
        if self._outer is None:
            for pre in pres:
                h = new_inner()
                h.update(pre)
                h.update(head)
                h.update(_CLOSE)
                add(head := hexlify(h.digest()))
        else:
            new_outer = self._outer.copy
            for pre in pres:
                h = new_inner()
                h.update(pre)
                h.update(head)
                h.update(_CLOSE)
                outer = new_outer()
                outer.update(h.digest())
                add(head := hexlify(outer.digest()))  # one store, two uses
        self.seq, self.head = seq + n, head
        # line = pre + prev + '","hash":"' + hash + '"}\n'
        return b"".join(
            chain.from_iterable(
                zip(
                    pres, heads, repeat(_HASH_SEP), islice(heads, 1, None), repeat(_EOL)
                )
            )
        )

    def _seal_each(self, batch: Iterable[bytes]) -> bytes:
        """:meth:`seal`, one line at a time: for batches with odd lines."""
        parts: list[bytes] = []
        add = parts.append
        fmt = b"%s" + self._kid + b',"seq":%d,"prev":"%s"'
        new_inner = self._inner.copy
        new_outer = self._outer.copy if self._outer is not None else None
        seq, head = self.seq, self.head
        for raw in batch:
            seq += 1
            if raw[-1:] == b"}" and len(raw) > 2:
                canonical = fmt % (raw[:-1], seq, head)  # without the final }
            else:
                canonical = _odd_canonical(raw, self._kid, seq, head)
            h = new_inner()
            h.update(canonical)
            h.update(b"}")
            if new_outer is not None:
                outer = new_outer()
                outer.update(h.digest())
                h = outer
            head = h.hexdigest().encode()
            add(canonical)
            add(b',"hash":"%s"}\n' % head)
        self.seq, self.head = seq, head
        return b"".join(parts)


def _odd_canonical(raw: bytes, kid: bytes, seq: int, head: bytes) -> bytes:
    """Chain members for a line that is not a JSON object with members."""
    if raw[-1:] != b"}":  # not a JSON object: keep it, as one
        raw = orjson.dumps({"unparsed": raw.decode("utf-8", "replace")})
    members = b'%s,"seq":%d,"prev":"%s"' % (kid, seq, head)
    if raw == b"{}":  # no member for ours to follow
        return b"{" + members[1:]
    return raw[:-1] + members


def _pads(key: bytes | None) -> tuple[_Hash, _Hash | None]:
    """HMAC's inner and outer hash states after the key block (or SHA-256)."""
    import hashlib  # deferred: ``import auditloop`` should not pay for OpenSSL

    if key is None:
        return hashlib.sha256(), None
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    padded = key.ljust(64, b"\0")
    return hashlib.sha256(padded.translate(_IPAD)), hashlib.sha256(
        padded.translate(_OPAD)
    )


def _open_any(path: Path) -> Any:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return path.open("rb")


def last_link(path: Path) -> tuple[int, bytes, bytes, bytes] | None:
    """Return ``(seq, prev, hash, line)`` of the last chained line of *path*.

    Skips an unterminated or unchained tail; looks back at most 16 MiB in a
    plain file (a gzipped one is read whole). None when there is none or
    the file cannot be read.
    """
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as stream:
                data = stream.read()
            for line in reversed(data.split(b"\n")):
                link = parse_link(line)
                if link is not None:
                    return (*link, line)
            return None
        with path.open("rb") as f:
            pos = f.seek(0, os.SEEK_END)
            carry = b""
            scanned = 0
            while pos > 0 and scanned < _TAIL_SCAN_LIMIT:
                step = min(1 << 16, pos)
                pos -= step
                scanned += step
                f.seek(pos)
                lines = (f.read(step) + carry).split(b"\n")
                carry = lines[0] if pos > 0 else b""
                for line in reversed(lines[1:] if pos > 0 else lines):
                    link = parse_link(line)
                    if link is not None:
                        return (*link, line)
    except (OSError, EOFError, zlib.error):  # gzip.BadGzipFile is an OSError
        return None
    return None


def first_link(path: Path) -> tuple[int, bytes, bytes] | None:
    """Return ``(seq, prev, hash)`` of the first line of *path*, if chained."""
    try:
        with _open_any(path) as stream:
            line = stream.readline()
    except (OSError, EOFError, zlib.error):  # gzip.BadGzipFile is an OSError
        return None
    return parse_link(line.rstrip(b"\n"))


def system_record(
    action: str, attributes: Mapping[str, Any], severity: str = "info"
) -> bytes:
    """Encode an ``auditloop.*`` event a sink writes itself (no Auditor)."""
    import socket

    ns = time.time_ns()
    return orjson.dumps(
        {
            "id": uuid7(ns),
            "time": format_rfc3339(ns),
            "action": action,
            "category": "system",
            "outcome": "success",
            "severity": severity,
            "actor": {"id": "auditloop", "type": "system"},
            "attributes": dict(attributes),
            "source": {"host": socket.gethostname(), "pid": os.getpid()},
            "schema": "auditloop/1",
        }
    )
