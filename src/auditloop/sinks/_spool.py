"""The disk spool behind ``HTTPSink(spool_dir=...)``.

Layout: ``spool_dir/<time>-<pid>-<random>-<tag>/`` per process that spooled
(the tag names the destination, so sinks for different collectors can share
one ``spool_dir``), holding ``lock``
(``flock``-ed for the owner's lifetime, so the kernel releases it when the
owner dies, even by SIGKILL), ``cursor`` (``"<segment> <offset>"``: what is
acknowledged) and append-only segments ``000000000001.seg`` … Each record in
a segment is one batch::

    b"ALS1" | events (u32) | payload length (u32) | crc32 (u32) | payload

where the payload is the batch's events joined by newlines. A record is
written with one ``write`` under ``O_APPEND``, so a killed process leaves
whole records (the page cache outlives it); a torn tail from a power loss is
detected by its length or checksum, cut off and counted (``spool_corrupt``).

A process replays its own directory and adopts directories whose lock it
can take (their owner is gone), oldest first. A record is acknowledged only
after the receiver answered 2xx (or refused it for good, counted); fully
acknowledged segments are deleted. When ``max_bytes`` would be exceeded the
oldest segments are deleted and their events counted as ``spool_full``.

Every spooled event is counted exactly once: delivered (acknowledged) or
dropped with a reason. The record the replayer holds (from :meth:`Spool.peek`
until :meth:`Spool.ack` or :meth:`Spool.release`) may be in a request right
now, so evicting its segment does not count its events: they are counted
(``spool_full``) only if the replayer then releases it undelivered.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import struct
import threading
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from auditloop._counters import Counters

__all__ = ["Record", "Spool"]

_MAGIC: Final = b"ALS1"
_HEADER: Final = struct.Struct(">4sIII")
_SUFFIX: Final = ".seg"
_LOCK: Final = "lock"
_CURSOR: Final = "cursor"
_FILE_MODE: Final = 0o600
_DIR_MODE: Final = 0o700


def _flock(fd: int) -> bool:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _close(fd: int) -> None:
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)


class _Dir:
    __slots__ = ("lock_fd", "own", "path")

    def __init__(self, path: Path, lock_fd: int, own: bool) -> None:
        self.path = path
        self.lock_fd = lock_fd
        self.own = own


class _Segment:
    __slots__ = ("directory", "offset", "path", "pending", "read_fd", "seq", "size")

    def __init__(self, directory: _Dir, seq: int, size: int, offset: int) -> None:
        self.directory = directory
        self.seq = seq
        self.path = directory.path / f"{seq:012d}{_SUFFIX}"
        self.size = size  # bytes of whole records on disk
        self.offset = offset  # bytes acknowledged
        self.pending = 0  # events not yet acknowledged
        self.read_fd = -1


class Record:
    """One spooled batch, as handed to the replayer.

    End it with :meth:`Spool.ack` (delivered, or dropped and counted) or
    :meth:`Spool.release` (not delivered).
    """

    __slots__ = ("end", "events", "evicted", "offset", "segment")

    def __init__(
        self, segment: _Segment, offset: int, end: int, events: list[bytes]
    ) -> None:
        self.segment = segment
        self.offset = offset
        self.end = end
        self.events = events
        #: Its segment was deleted (spool full) while the replayer held it;
        #: its events are not counted yet (see :meth:`Spool.release`).
        self.evicted = False


class Spool:
    """Append-only, size-bounded, crash-safe storage for undelivered batches.

    Thread-safe: one lock guards the index; appends and reads are short
    ``write``/``pread`` calls made under it. Never raises at run time: I/O
    errors drop the batch and count it (``spool_error``).

    Args:
        root: the spool directory (created, mode 0700, if missing).
        max_bytes: most bytes kept on disk across all segments.
        drops: where ``spool_full``/``spool_corrupt``/``spool_error`` go.
        tag: names the destination; only directories with the same tag are
            adopted, so sinks for different collectors can share *root*.

    Raises:
        OSError: *root* cannot be created or is not writable.
    """

    def __init__(
        self, root: Path, max_bytes: int, drops: Counters, tag: str = "spool"
    ) -> None:
        root.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        if not os.access(root, os.W_OK | os.X_OK):
            raise PermissionError(f"{str(root)!r} is not writable")
        self.root = root
        self.tag = tag
        self.max_bytes = max_bytes
        self.drops = drops
        # Small segments let "drop the oldest" free space in small steps.
        self.segment_bytes = min(max(max_bytes // 16, 64 * 1024), 16 * 1024 * 1024)
        self._init_state()

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []
        self._own: _Dir | None = None
        self._adopted: list[_Dir] = []
        self._active: _Segment | None = None
        self._active_fd = -1
        self._next_seq = 1
        self._bytes = 0
        self._pending = 0
        self._closed = False
        # The record handed out by peek() and not yet acked or released.
        self._held: Record | None = None
        #: Events appended since construction (or fork).
        self.spooled = 0

    # -- recovery --------------------------------------------------------------

    def adopt(self) -> int:
        """Take over spool directories whose owner is gone; return their events.

        Safe to call at any time; a directory still locked by a live process
        is left alone.
        """
        with self._lock:
            if self._closed:
                return 0
            try:
                names = sorted(p.name for p in self.root.iterdir())
            except OSError:
                return 0
            known = {d.path.name for d in self._adopted}
            if self._own is not None:
                known.add(self._own.path.name)
            found = 0
            for name in names:
                if name in known:
                    continue
                path = self.root / name
                if name.startswith(".tmp-"):
                    self._remove_stale_tmp(path)
                elif name.endswith(f"-{self.tag}") and path.is_dir():
                    found += self._adopt_dir(path)
            return found

    def _remove_stale_tmp(self, path: Path) -> None:
        # A directory being set up is locked by its creator; an unlocked one
        # was abandoned before it could hold any segment.
        try:
            fd = os.open(path / _LOCK, os.O_RDWR)
        except OSError:
            return
        try:
            if _flock(fd):
                self._remove_dir(path)
        finally:
            _close(fd)

    def _adopt_dir(self, path: Path) -> int:
        try:
            fd = os.open(path / _LOCK, os.O_RDWR)
        except OSError:
            return 0
        if not _flock(fd):
            _close(fd)
            return 0
        directory = _Dir(path, fd, own=False)
        cursor_seq, cursor_offset = self._read_cursor(path)
        segments: list[_Segment] = []
        try:
            seqs = sorted(
                int(p.stem)
                for p in path.iterdir()
                if p.suffix == _SUFFIX and p.stem.isdigit()
            )
        except OSError:
            seqs = []
        for seq in seqs:
            segment = _Segment(directory, seq, 0, 0)
            if seq < cursor_seq:
                segment.path.unlink(missing_ok=True)
                continue
            start = cursor_offset if seq == cursor_seq else 0
            self._scan(segment, start)
            if segment.pending == 0:
                segment.path.unlink(missing_ok=True)
                continue
            segments.append(segment)
        if not segments:
            self._remove_dir(path)
            _close(fd)
            return 0
        # Adopted data is older than anything this process spooled itself.
        own_at = next(
            (i for i, s in enumerate(self._segments) if s.directory.own),
            len(self._segments),
        )
        self._segments[own_at:own_at] = segments
        self._adopted.append(directory)
        found = 0
        for segment in segments:
            self._bytes += segment.size
            self._pending += segment.pending
            found += segment.pending
        return found

    @staticmethod
    def _read_cursor(path: Path) -> tuple[int, int]:
        try:
            seq, offset = (path / _CURSOR).read_text().split()
            return int(seq), int(offset)
        except (OSError, ValueError):
            return 0, 0

    def _scan(self, segment: _Segment, start: int) -> None:
        """Index a recovered segment's whole records; cut a torn tail."""
        try:
            fd = os.open(segment.path, os.O_RDWR)
        except OSError:
            return
        try:
            size = os.fstat(fd).st_size
            offset = start = min(start, size)
            pending = 0
            while offset < size:
                header = os.pread(fd, _HEADER.size, offset)
                if len(header) < _HEADER.size:
                    self.drops.incr("spool_corrupt")
                    break
                magic, count, length, _crc = _HEADER.unpack(header)
                end = offset + _HEADER.size + length
                if magic != _MAGIC or end > size:
                    self.drops.incr("spool_corrupt", count if magic == _MAGIC else 1)
                    break
                pending += count
                offset = end
            if offset < size:
                os.ftruncate(fd, offset)
            segment.size = offset
            segment.offset = min(start, offset)
            segment.pending = pending
        except OSError:
            self.drops.incr("spool_error")
        finally:
            _close(fd)

    # -- writing ---------------------------------------------------------------

    def append(self, events: Sequence[bytes], lost: list[str] | None = None) -> bool:
        """Write *events* as one record; return False if it was refused.

        Makes room by deleting the oldest segments (their events counted as
        ``spool_full``, except those of the record the replayer holds: see
        :meth:`release`). Thread-safe; never raises.

        Args:
            events: the batch, one encoded event each.
            lost: when a list (fail-closed callers, which raise instead), a
                refused batch is described there (``"3 spool_full"``) and
                not counted; otherwise it is counted in ``drops``
                (``closed``, ``spool_full`` or ``spool_error``).

        Returns:
            True once the record is written (not yet fsynced: see :meth:`sync`).
        """
        payload = b"\n".join(events)
        header = _HEADER.pack(_MAGIC, len(events), len(payload), zlib.crc32(payload))
        need = len(header) + len(payload)
        with self._lock:
            if self._closed:
                return self._refuse("closed", len(events), lost)
            if need > self.max_bytes:
                return self._refuse("spool_full", len(events), lost)
            while self._segments and self._bytes + need > self.max_bytes:
                self._evict(self._segments[0])
            try:
                segment, fd = self._writable()
                before = segment.size
                data = memoryview(header + payload)
                try:
                    while data:
                        data = data[os.write(fd, data) :]
                except OSError:
                    # Disk full or I/O error: leave no torn record behind.
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, before)
                    raise
            except OSError:
                return self._refuse("spool_error", len(events), lost)
            segment.size += need
            segment.pending += len(events)
            self._bytes += need
            self._pending += len(events)
            self.spooled += len(events)
            return True

    def _refuse(self, reason: str, n: int, lost: list[str] | None) -> bool:
        # Counted here or described for the caller to raise, never both: a
        # fail-closed engine counts the raised write itself (sink_error).
        if lost is None:
            self.drops.incr(reason, n)
        else:
            lost.append(f"{n} not spooled ({reason})")
        return False

    def _evict(self, segment: _Segment) -> None:
        """Delete *segment* to make room, counting its events ``spool_full``.

        The held record's events are left out of the count: its request may
        succeed. It is marked evicted, and counted only if released.
        """
        held = self._held
        dropped = segment.pending
        if (
            held is not None
            and held.segment is segment
            and held.offset == segment.offset
            and not held.evicted
        ):
            held.evicted = True
            dropped -= len(held.events)
        self.drops.incr("spool_full", dropped)
        self._retire(segment)

    def _writable(self) -> tuple[_Segment, int]:
        active = self._active
        if active is not None and active.size < self.segment_bytes:
            return active, self._active_fd
        if active is not None:
            _close(self._active_fd)
            self._active, self._active_fd = None, -1
        own = self._own or self._make_own_dir()
        segment = _Segment(own, self._next_seq, 0, 0)
        fd = os.open(
            segment.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, _FILE_MODE
        )
        self._next_seq += 1
        self._segments.append(segment)
        self._active, self._active_fd = segment, fd
        return segment, fd

    def _make_own_dir(self) -> _Dir:
        name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}-{self.tag}"
        # Built under a hidden name and renamed once locked, so no other
        # process can adopt it half-made.
        tmp = self.root / f".tmp-{name}"
        tmp.mkdir(mode=_DIR_MODE)
        fd = os.open(tmp / _LOCK, os.O_RDWR | os.O_CREAT, _FILE_MODE)
        _flock(fd)
        final = self.root / name
        tmp.rename(final)
        self._own = _Dir(final, fd, own=True)
        return self._own

    # -- reading ---------------------------------------------------------------

    def peek(self) -> Record | None:
        """Return the oldest unacknowledged record, or None when all are.

        The record is *held* until :meth:`ack` or :meth:`release`; there is
        one replayer, so peeking again releases a record still held.
        """
        with self._lock:
            if self._held is not None:
                self._release_locked(self._held, len(self._held.events))
            # Fully acknowledged segments are retired at once, so the first
            # segment always starts with an unacknowledged record.
            while self._segments:
                record = self._read(self._segments[0])
                if record is not None:
                    self._held = record
                    return record
            return None

    def _read(self, segment: _Segment) -> Record | None:
        """Read the record at *segment*'s offset; skip (and count) a bad one."""
        try:
            if segment.read_fd < 0:
                segment.read_fd = os.open(segment.path, os.O_RDONLY)
            offset = segment.offset
            header = os.pread(segment.read_fd, _HEADER.size, offset)
            magic, count, length, crc = _HEADER.unpack(header)
            end = offset + _HEADER.size + length
            if magic != _MAGIC or end > segment.size:
                raise ValueError("bad record header")
            payload = os.pread(segment.read_fd, length, offset + _HEADER.size)
        except (OSError, ValueError, struct.error):
            # Changed under us, or an empty segment left by a failed first
            # write: nothing after this point can be trusted.
            self.drops.incr("spool_corrupt", segment.pending)
            self._retire(segment)
            return None
        record = Record(segment, offset, end, payload.split(b"\n"))
        if zlib.crc32(payload) != crc or len(record.events) != count:
            self.drops.incr("spool_corrupt", count)
            self._ack_locked(record, count)
            return None
        return record

    def ack(self, record: Record) -> None:
        """Forget *record* for good (it was delivered, or dropped and counted).

        An evicted record counts nothing more: its events were delivered.
        Thread-safe; never raises.
        """
        with self._lock:
            if self._held is record:
                self._held = None
            record.evicted = False  # delivered: never counted as dropped
            self._ack_locked(record, len(record.events))

    def release(self, record: Record, undelivered: int | None = None) -> None:
        """Give back a held *record* that was not (fully) delivered.

        It stays on disk to be replayed again, unless the spool evicted it
        meanwhile: then its *undelivered* events (default: all) are lost and
        counted as ``spool_full`` now. Thread-safe; never raises.
        """
        with self._lock:
            n = len(record.events) if undelivered is None else undelivered
            self._release_locked(record, n)

    def _release_locked(self, record: Record, undelivered: int) -> None:
        if self._held is record:
            self._held = None
        if record.evicted:
            record.evicted = False  # count once, however often released
            self.drops.incr("spool_full", undelivered)

    def _ack_locked(self, record: Record, count: int) -> None:
        segment = record.segment
        if self._closed:
            return  # the directory may belong to another process by now
        if segment.offset != record.offset or segment not in self._segments:
            # Already acknowledged, or evicted meanwhile: its events were
            # then left uncounted (see _evict), and are now delivered.
            return
        segment.offset = record.end
        segment.pending -= count
        self._pending -= count
        if segment.offset >= segment.size:
            self._retire(segment)
            return
        cursor = segment.directory.path / _CURSOR
        tmp = cursor.with_suffix(".tmp")
        try:
            tmp.write_text(f"{segment.seq} {segment.offset}\n")
            tmp.replace(cursor)
        except OSError:
            pass  # a stale cursor only means duplicates after a crash

    def _retire(self, segment: _Segment) -> None:
        """Delete *segment* (fully acknowledged or dropped) from disk and index."""
        self._segments.remove(segment)
        self._bytes -= segment.size
        self._pending -= segment.pending
        segment.pending = 0
        _close(segment.read_fd)
        segment.read_fd = -1
        if segment is self._active:
            _close(self._active_fd)
            self._active, self._active_fd = None, -1
        with contextlib.suppress(OSError):
            segment.path.unlink()
        directory = segment.directory
        if not directory.own and not any(
            s.directory is directory for s in self._segments
        ):
            self._remove_dir(directory.path)
            _close(directory.lock_fd)
            self._adopted.remove(directory)

    @staticmethod
    def _remove_dir(path: Path) -> None:
        try:
            for child in path.iterdir():
                child.unlink(missing_ok=True)
            path.rmdir()
        except OSError:
            pass

    # -- state -----------------------------------------------------------------

    @property
    def pending_events(self) -> int:
        """Events on disk not yet acknowledged."""
        return self._pending

    def stats(self) -> dict[str, Any]:
        """Spool figures for ``HTTPSink.stats()``."""
        with self._lock:
            return {
                "dir": str(self.root),
                "pending_events": self._pending,
                "bytes": self._bytes,
                "segments": len(self._segments),
            }

    def sync(self) -> None:
        """fsync the segment being written (records survive a power loss)."""
        with self._lock:
            if self._active_fd >= 0:
                with contextlib.suppress(OSError):
                    os.fsync(self._active_fd)

    def close(self) -> None:
        """fsync, close every file and release the directory locks.

        What is still pending stays on disk for the next process.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._active_fd >= 0:
                with contextlib.suppress(OSError):
                    os.fsync(self._active_fd)
            for segment in self._segments:
                _close(segment.read_fd)
            _close(self._active_fd)
            own = self._own
            if own is not None:
                if not any(s.directory is own for s in self._segments):
                    self._remove_dir(own.path)
                _close(own.lock_fd)
            for directory in self._adopted:
                _close(directory.lock_fd)

    def after_fork_in_child(self) -> None:
        """Forget the parent's files without touching them.

        Closing our copies of the descriptors keeps the parent's ``flock``
        (it belongs to the parent's open file), so the parent keeps owning
        its directories; the child makes its own on first append.
        """
        for segment in self._segments:
            _close(segment.read_fd)
        _close(self._active_fd)
        for directory in (self._own, *self._adopted):
            if directory is not None:
                _close(directory.lock_fd)
        self._init_state()
