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
from collections.abc import Callable, Iterable, Mapping
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

    __slots__ = ("_inner", "_kid", "_outer", "head", "key_id", "seq")

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
        self.seq = seq
        self.head = head

    def seal(self, batch: Iterable[bytes]) -> bytes:
        """Return the chained lines of *batch*, each ending with a newline.

        One loop with everything local: this runs once per event, and each
        attribute lookup, copy or call layer here eats into the chain's
        overhead budget (benchmarks/bench_trust.py).
        """
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
    except (OSError, EOFError, gzip.BadGzipFile):
        return None
    return None


def first_link(path: Path) -> tuple[int, bytes, bytes] | None:
    """Return ``(seq, prev, hash)`` of the first line of *path*, if chained."""
    try:
        with _open_any(path) as stream:
            line = stream.readline()
    except (OSError, EOFError, gzip.BadGzipFile):
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
