"""FileSink: append-only JSON lines with fsync policy, rotation, retention, chain."""

from __future__ import annotations

import contextlib
import errno
import gzip
import os
import shutil
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from auditloop._chain import (
    ChainWriter,
    check_key,
    check_key_id,
    first_link,
    last_link,
    parse_link,
    system_record,
)
from auditloop._delivery import Delivery, PartialWrite
from auditloop._options import checked_options
from auditloop.exceptions import ConfigurationError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locking between writers
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from auditloop.sinks._writer_process import WriterProcess

__all__ = ["FileSink"]

Fsync = Literal["never", "batch", "always"]
Writer = Literal["thread", "process"]
Notify = Callable[..., None]
_FILE_MODE: Final = 0o600
_DEFAULT_BACKUPS: Final = 5
_DEFAULT_CHECKPOINT_EVERY: Final = 10_000
_DEFAULT_CHECKPOINT_INTERVAL: Final = 300.0
_AGE_CHECK_INTERVAL: Final = 60.0  # seconds between retain_days sweeps
# Checkpoint and sweep intervals run on this clock (tests replace it).
_monotonic = time.monotonic


def _count(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(
            f"FileSink: {name} must be an integer >= {minimum}, got {value!r}"
        )


def _open_directory(path: Path) -> int:
    """A descriptor of directory *path*, to ``flock`` (see FileSink._turn),
    or -1 where it cannot be opened (then writers do not take turns)."""
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return -1


def _holds_a_line(path: Path) -> bool:
    """True when *path* has at least one complete (newline-ended) line."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as f:
            return f.readline().endswith(b"\n")
    except (OSError, EOFError, zlib.error):
        return True  # unreadable: do not guess that it is empty


def _seconds(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigurationError(f"FileSink: {name} must be > 0, got {value!r}")


class FileSink:
    """Appends events to a JSON-lines file.

    Guarantees: every event is written as one whole line (a batch is one
    ``write`` of complete lines, so a crash can tear at most the last line,
    which :func:`auditloop.read_events` reports and skips; on reopening, a
    torn last line is terminated first, so it never swallows the next
    record). New files are created with mode ``0600``. When the file is
    moved or deleted (log rotation by another tool), the next batch reopens
    the path, like ``logging.handlers.WatchedFileHandler``.

    **Integrity chain** (``chain=True``): each record gets ``seq``, ``prev``
    and ``hash`` (HMAC-SHA256 with *key*, plain SHA-256 without); the chain
    continues across rotation and across restarts (on opening, the sink
    reads the last chained record of the file, or of ``path.1`` when the
    file is new). Every *checkpoint_every* records or *checkpoint_interval*
    seconds (checked when a batch is written) an ``auditloop.checkpoint``
    event records the head (``file``, ``count``, ``head``). Several writers
    of one chained file (a sink being replaced and its successor, several
    processes) take turns under a ``flock`` on the directory and continue
    each other's chain. See ``docs/integrity.md``.

    **Writer process** (``writer="process"``): a helper Python process
    writes the file, running this same sink with the same options, so the
    chain's hashing does not take the application's GIL; the sink's writer
    thread hands it each batch and waits for the answer, so counts and
    errors are as without it. For CPU-bound services (POSIX only); see
    ``docs/integrity.md``.

    **Retention**: rotated files beyond *retain_files* (or *backups*, its
    older name) and rotated files last modified more than *retain_days* ago
    are deleted (oldest first, at start, after each rotation and at most
    once a minute while writing; the active file never is). Each deletion
    is recorded as an ``auditloop.retention`` event listing the files and,
    for a chain, ``first_seq``: where the kept trail now starts.

    Events about the sink itself (checkpoints, retention) go through the
    Auditor the sink is attached to (see :meth:`attach_auditor`), so rules
    and every sink see them; a sink used without an Auditor writes them to
    its own file.

    Args:
        path: the file to append to (made absolute here, so a later
            ``os.chdir()`` does not move it).
        fsync: ``"never"`` (default; the OS decides), ``"batch"`` (fsync after
            each batch) or ``"always"`` (each event is written and fsynced
            on its own — pair with ``Delivery(mode="sync")`` for fail-closed).
        max_bytes: rotate before a write would grow the file past this size.
        backups: rotated files kept (``path.1`` newest … ``path.N``);
            default 5, or unlimited when only *retain_days* is given.
        compress: gzip rotated files (``path.1.gz`` …).
        create_dirs: create missing parent directories instead of failing.
        delivery: the delivery policy (default: async).
        chain: add the integrity chain to every record.
        key: HMAC key (bytes or str) for the chain; without it the chain uses
            plain SHA-256 (detects accidents, not forgers).
        key_id: identifies *key* in each record (for key rotation).
        checkpoint_every: records between checkpoints (default 10,000; at
            least 2).
        checkpoint_interval: seconds between checkpoints (default 300).
        retain_days: delete rotated files older than this many days.
        retain_files: rotated files kept (the same as *backups*; give one).
        writer: ``"thread"`` (default: the sink's writer thread writes) or
            ``"process"`` (a helper process writes; see above).

    Raises:
        ConfigurationError: bad option, or the directory does not exist (and
            ``create_dirs`` is false), or the file cannot be opened, or the
            writer process cannot start.
    """

    @checked_options
    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync: Fsync = "never",
        max_bytes: int | None = None,
        backups: int | None = None,
        compress: bool = False,
        create_dirs: bool = False,
        delivery: Delivery | None = None,
        chain: bool = False,
        key: bytes | str | None = None,
        key_id: str | None = None,
        checkpoint_every: int | None = None,
        checkpoint_interval: float | None = None,
        retain_days: float | None = None,
        retain_files: int | None = None,
        writer: Writer = "thread",
    ) -> None:
        # Absolute, as logging.FileHandler does: a later os.chdir() must not
        # move the trail (a new file would start a new chain).
        try:
            self.path = Path(path).absolute()
        except OSError as exc:  # a relative path, and no working directory
            raise ConfigurationError(
                f"FileSink: cannot resolve {str(path)!r}: {exc}"
            ) from exc
        self._check_writer(writer)
        if fsync not in ("never", "batch", "always"):
            raise ConfigurationError(
                f'FileSink: fsync must be "never", "batch" or "always", got {fsync!r}'
            )
        if max_bytes is not None and (
            isinstance(max_bytes, bool)
            or not isinstance(max_bytes, int)
            or max_bytes <= 0
        ):
            raise ConfigurationError(
                f"FileSink: max_bytes must be > 0, got {max_bytes!r}"
            )
        self.backups = self._check_retention(backups, retain_files, retain_days)
        self.retain_days = retain_days
        key_bytes = self._check_chain(
            chain, key, key_id, checkpoint_every, checkpoint_interval
        )
        parent = self.path.parent
        if not parent.is_dir():
            if not create_dirs:
                raise ConfigurationError(
                    f"FileSink: directory {str(parent)!r} does not exist "
                    "(pass create_dirs=True to create it)"
                )
            parent.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.max_bytes = max_bytes
        self.compress = compress
        self.delivery = delivery
        self.chain = chain
        self.key_id = key_id
        self.checkpoint_every = checkpoint_every or _DEFAULT_CHECKPOINT_EVERY
        self.checkpoint_interval = checkpoint_interval or _DEFAULT_CHECKPOINT_INTERVAL
        self._lock = threading.Lock()
        self._closed = False
        self._fd = -1
        self._notify: Notify | None = None
        self._notices: list[tuple[str, dict[str, Any]]] = []
        self._since_checkpoint = 0
        self._next_checkpoint = _monotonic() + self.checkpoint_interval
        self._next_age_check = 0.0
        self._chain: ChainWriter | None = None
        self._process: WriterProcess | None = None
        # Chained sinks of this or other processes on files in one directory
        # write in turn (see _turn): -1 without a chain, or with a helper.
        self._directory_fd = -1
        self.writer = writer
        if writer == "process":
            from auditloop.sinks._writer_process import WriterProcess

            options = {
                "path": os.fsencode(self.path).hex(),  # any file name
                "fsync": fsync,
                "max_bytes": max_bytes,
                "backups": backups,
                "retain_files": retain_files,
                "retain_days": retain_days,
                "compress": compress,
                "chain": chain,
                "key": key_bytes.hex() if key_bytes is not None else None,
                "key_id": key_id,
                "checkpoint_every": checkpoint_every,
                "checkpoint_interval": checkpoint_interval,
            }
            try:
                self._process = WriterProcess(options)
            except OSError as exc:
                raise ConfigurationError(
                    f"FileSink: cannot start the writer process: {exc}"
                ) from exc
            return
        try:
            if chain:
                self._directory_fd = _open_directory(parent)
            with self._turn():
                if chain:
                    self._chain = self._resume(key_bytes, key_id)
                self._open()
                self._retain_by_age()
        except OSError as exc:
            if self._directory_fd >= 0:
                os.close(self._directory_fd)
            raise ConfigurationError(
                f"FileSink: cannot open {str(path)!r}: {exc}"
            ) from exc

    # -- configuration checks ------------------------------------------------

    @staticmethod
    def _check_writer(writer: object) -> None:
        if writer not in ("thread", "process"):
            raise ConfigurationError(
                f'FileSink: writer must be "thread" or "process", got {writer!r}'
            )
        if writer == "process" and (
            os.name != "posix" or not sys.executable or getattr(sys, "frozen", False)
        ):
            raise ConfigurationError(
                'FileSink: writer="process" needs POSIX and sys.executable to be '
                "a Python interpreter (not a frozen application)"
            )

    @staticmethod
    def _check_retention(
        backups: int | None, retain_files: int | None, retain_days: float | None
    ) -> int | None:
        if backups is not None and retain_files is not None:
            raise ConfigurationError(
                "FileSink: give retain_files or backups (the same setting), not both"
            )
        if backups is not None:
            _count("backups", backups, 0)
        if retain_files is not None:
            _count("retain_files", retain_files, 0)
        if retain_days is not None:
            _seconds("retain_days", retain_days)
        kept = retain_files if retain_files is not None else backups
        if kept is None and retain_days is None:
            return _DEFAULT_BACKUPS
        return kept  # None: as many as retain_days allows

    @staticmethod
    def _check_chain(
        chain: bool,
        key: object,
        key_id: object,
        checkpoint_every: object,
        checkpoint_interval: object,
    ) -> bytes | None:
        if not isinstance(chain, bool):
            raise ConfigurationError(
                f"FileSink: chain must be True or False, got {chain!r}"
            )
        key_bytes = check_key(key, "FileSink")
        check_key_id(key_id, "FileSink")
        if key_id is not None and key_bytes is None:
            raise ConfigurationError("FileSink: key_id needs a key")
        if checkpoint_every is not None:
            # At least 2: a checkpoint is a record too, so with 1 each
            # checkpoint would be due again at once, forever.
            _count("checkpoint_every", checkpoint_every, 2)
        if checkpoint_interval is not None:
            _seconds("checkpoint_interval", checkpoint_interval)
        if not chain:
            given = [
                name
                for name, value in (
                    ("key", key),
                    ("checkpoint_every", checkpoint_every),
                    ("checkpoint_interval", checkpoint_interval),
                )
                if value is not None
            ]
            if given:
                raise ConfigurationError(f"FileSink: {given[0]} needs chain=True")
        return key_bytes

    # -- files ---------------------------------------------------------------

    def _resume(self, key: bytes | None, key_id: str | None) -> ChainWriter:
        """Continue the chain from the newest chained record on disk."""
        link = self._newest_link()
        if link is None:
            return ChainWriter(key, key_id)
        return ChainWriter(key, key_id, *link)

    def _newest_link(self) -> tuple[int, bytes] | None:
        """``(seq, hash)`` of the newest chained record on disk, in the file
        or else in ``path.1``; None where a new chain starts."""
        for candidate in (self.path, *self._rotated_candidates(1)):
            if candidate.exists():
                link = last_link(candidate)
                if link is not None:
                    seq, _prev, head, _line = link
                    return seq, head
                if _holds_a_line(candidate):
                    break  # records, but none chained: a new chain starts here
                # Empty, or only a line torn by a crash: look further back.
        return None

    def _rotated_candidates(self, n: int) -> tuple[Path, Path]:
        """Rotated file *n*: this sink's name for it first, then the other."""
        plain = self._numbered(n, gz=False)
        gz = self._numbered(n, gz=True)
        return (gz, plain) if self.compress else (plain, gz)

    def _numbered(self, n: int, *, gz: bool) -> Path:
        return self.path.with_name(f"{self.path.name}.{n}{'.gz' if gz else ''}")

    def _open(self) -> None:
        self._fd = os.open(
            self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, _FILE_MODE
        )
        stat = os.fstat(self._fd)
        self._identity = (stat.st_dev, stat.st_ino)
        self._size = stat.st_size
        if self._size and self._last_byte() != b"\n":
            # A crash tore the last line: end it, or it swallows our first one.
            self._write_all(b"\n")

    def _last_byte(self) -> bytes:
        with self.path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1)

    def _check_open(self) -> None:
        if self._closed:
            raise OSError(errno.EBADF, f"FileSink({str(self.path)!r}) is closed")

    def _reopen_if_moved(self) -> None:
        self._check_open()
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            stat = None
        moved = (
            self._fd < 0  # a reopen or rotation failed: try again
            or stat is None
            or (stat.st_dev, stat.st_ino) != self._identity
        )
        if not moved and stat is not None and stat.st_size != self._size:
            if self._chain is None:  # other processes may append: count them
                self._size = stat.st_size
                return
            moved = True  # appended behind us: reread it, as below
        if moved:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1  # never write to a stale descriptor number
            self._open()
            if self._chain is not None:
                self._catch_up(self._chain)

    def _catch_up(self, chain: ChainWriter) -> None:
        """Continue from records another writer chained behind ours.

        That writer is an earlier sink on this path, replaced by one
        ``configure()`` while it still recorded its own last events (or a
        process that wrote in turn): its records carry the chain on, and
        ours must follow them, not fork from where we last wrote.
        """
        link = self._newest_link()
        if link is not None and link[0] > chain.seq:
            chain.seq, chain.head = link

    def _write_all(self, data: bytes) -> None:
        """Append *data* whole or not at all (a failed write is undone)."""
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:
            self._undo_partial(len(data) - len(view))
            raise
        self._size += len(data)

    def _undo_partial(self, written: int) -> None:
        """Remove the first *written* bytes of a failed write from the file.

        Otherwise the next line would be glued to a torn one. Only bytes at
        the very end of the file are cut (one writer per file: no one
        appended behind them); else the descriptor is dropped, and reopening
        ends the torn line before the next write (see :meth:`_open`).
        """
        if not written:
            return
        try:
            end = os.lseek(self._fd, 0, os.SEEK_CUR)  # O_APPEND: the end of ours
            if os.fstat(self._fd).st_size == end:
                os.ftruncate(self._fd, end - written)
                return
        except OSError:
            pass
        os.close(self._fd)
        self._fd = -1

    def _encode(self, batch: Sequence[bytes]) -> bytes:
        chain = self._chain
        if chain is None:
            return b"\n".join([*batch, b""])  # one copy, trailing newline included
        return chain.seal(batch)

    def write(self, batch: Sequence[bytes]) -> None:
        """Append *batch* as whole lines (rotating first if needed).

        With a chain, lines are sealed first; retention and checkpoint events
        this write causes are handed to the attached Auditor after the lock
        is released (or, without one, written right behind the batch).
        """
        if self._process is not None:
            with self._lock:
                self._check_open()
                notices = self._process.write(batch)
            self._deliver(notices)
            return
        with self._lock, self._turn():
            self._reopen_if_moved()
            chain = self._chain
            link = (chain.seq, chain.head) if chain is not None else None
            data = self._encode(batch)
            try:
                limit = self.max_bytes
                if (
                    limit is not None
                    and self._size > 0
                    and self._size + len(data) > limit
                ):
                    self._rotate(link[0] + 1 if link is not None else 0)
                self._write_data(data)
            except BaseException as exc:
                if chain is not None and link is not None:
                    self._rewind(chain, link, data, exc)
                raise
            self._after_write(len(batch))
            notices = self._take_notices()
        self._deliver(notices)

    @contextlib.contextmanager
    def _turn(self) -> Iterator[None]:
        """For a chained sink: hold an exclusive ``flock`` on the directory.

        Two writers of one chained file -- the sink a ``configure()`` is
        replacing, still draining, and its successor; two processes -- must
        not seal and write at the same time, or each links to a head the
        other has moved on from. Taking turns, each first catches up with
        what the other wrote (``_reopen_if_moved``). The directory, not the
        file, because rotation renames the file. Best effort: where locks are
        not supported, writing goes on without.
        """
        fd = self._directory_fd
        if fd < 0 or fcntl is None:
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    @staticmethod
    def _rewind(
        chain: ChainWriter, link: tuple[int, bytes], data: bytes, exc: BaseException
    ) -> None:
        """After a failed write, continue the chain behind what is on disk.

        Records sealed but not written would otherwise leave a gap that
        :func:`auditloop.verify` reports as deleted records.
        """
        stored = exc.stored if isinstance(exc, PartialWrite) else 0
        chain.seq, chain.head = link
        if stored:
            last = data.split(b"\n", stored)[stored - 1]
            parsed = parse_link(last)
            if parsed is not None:
                chain.seq, _prev, chain.head = parsed

    def _write_data(self, data: bytes) -> None:
        """Write *data* (whole lines) as ``fsync`` says.

        Raises:
            OSError: nothing was written (a failed write is undone).
            PartialWrite: the first ``stored`` lines are in the file, the
                rest not; an fsync that fails after its write leaves the
                lines written (the OS has them, only not for sure on disk).
        """
        if self.fsync == "always":
            for stored, line in enumerate(data.split(b"\n")[:-1]):
                try:
                    self._write_all(line + b"\n")
                except OSError as exc:
                    if not stored:
                        raise
                    raise PartialWrite(stored) from exc  # the lines before are kept
                try:
                    os.fsync(self._fd)
                except OSError as exc:
                    raise PartialWrite(stored + 1) from exc
            return
        self._write_all(data)
        if self.fsync == "batch":
            try:
                os.fsync(self._fd)
            except OSError as exc:
                raise PartialWrite(data.count(b"\n")) from exc

    def _after_write(self, count: int) -> None:
        now = _monotonic()
        if self.retain_days is not None and now >= self._next_age_check:
            self._retain_by_age()
        chain = self._chain
        if chain is None:
            return
        self._since_checkpoint += count
        if self._since_checkpoint >= self.checkpoint_every or (
            now >= self._next_checkpoint
        ):
            self._since_checkpoint = 0
            self._next_checkpoint = now + self.checkpoint_interval
            checkpoint: dict[str, Any] = {
                "file": str(self.path),
                "count": chain.seq,
                "head": chain.head.decode(),
            }
            if chain.key_id:
                checkpoint["key_id"] = chain.key_id
            self._notices.append(("auditloop.checkpoint", checkpoint))

    def _take_notices(self) -> list[tuple[str, dict[str, Any]]]:
        """Under the lock: hand pending notices over, or write them here."""
        if not self._notices:
            return []
        if self._notify is not None:
            notices, self._notices = self._notices, []
            return notices
        self._write_notices()
        return []

    def _write_notices(self) -> None:
        """Under the lock: write pending notices to this file directly."""
        notices, self._notices = self._notices, []
        self._write_data(self._encode([system_record(a, n) for a, n in notices]))

    def _deliver(self, notices: list[tuple[str, dict[str, Any]]]) -> None:
        notify = self._notify
        if notify is None:
            return
        for action, attributes in notices:
            try:
                notify(action, attributes)
            except Exception:  # noqa: S112 - a notice must never break a write
                continue

    def attach_auditor(self, notify: Notify) -> None:
        """Route this sink's own events through an Auditor (the sink hook).

        Called by every :class:`~auditloop.Auditor` that delivers to this
        sink, with ``notify(action, attributes)``, which records an
        ``auditloop.*`` event through that Auditor and never raises. The
        last Auditor to attach wins. Pending notices are handed over now.
        """
        with self._lock:
            self._notify = notify
            notices, self._notices = self._notices, []
            if self._process is not None and not self._closed:
                notices += self._process.attach()
        self._deliver(notices)

    def _backup(self, n: int) -> Path:
        """Rotated file *n* as it is on disk, plain or gzipped (``compress``
        may have changed between runs), else the name this sink gives it."""
        own, other = self._rotated_candidates(n)
        return other if other.exists() and not own.exists() else own

    def _highest_backup(self) -> int:
        n = 0
        while self._backup(n + 1).exists():
            n += 1
        return n

    def _rotate(self, next_seq: int) -> None:
        os.close(self._fd)
        self._fd = -1  # if rotating fails, the next write reopens the path
        deleted: list[str] = []
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
            deleted.append(self.path.name)
        else:
            top = self.backups if self.backups is not None else self._highest_backup()
            if self.backups is not None:
                for oldest in self._rotated_candidates(top):
                    if oldest.exists():
                        oldest.unlink()
                        deleted.append(oldest.name)
            for n in range(top if self.backups is None else top - 1, 0, -1):
                for older in self._rotated_candidates(n):  # both: see _backup
                    if older.exists():
                        older.replace(self._numbered(n + 1, gz=older.suffix == ".gz"))
            newest = self._rotated_candidates(1)[0]
            if self.compress:
                with self.path.open("rb") as src, gzip.open(newest, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                newest.chmod(_FILE_MODE)
                self.path.unlink()
            else:
                self.path.replace(newest)
        self._open()
        if deleted:
            self._record_deletion(deleted, "retain_files", next_seq)
        self._retain_by_age(next_seq)

    def _retain_by_age(self, next_seq: int | None = None) -> None:
        """Delete the oldest rotated files older than ``retain_days``."""
        days = self.retain_days
        if days is None:
            return
        self._next_age_check = _monotonic() + _AGE_CHECK_INTERVAL
        cutoff = time.time() - days * 86400
        deleted: list[str] = []
        for n in range(self._highest_backup(), 0, -1):
            backup = self._backup(n)
            try:
                if backup.stat().st_mtime >= cutoff:
                    break  # newer files follow: keep the numbering contiguous
                backup.unlink()
            except FileNotFoundError:
                continue
            deleted.append(backup.name)
        if deleted:
            if next_seq is None:
                next_seq = self._chain.seq + 1 if self._chain is not None else 0
            self._record_deletion(deleted, "retain_days", next_seq)

    def _record_deletion(self, deleted: list[str], reason: str, next_seq: int) -> None:
        notice: dict[str, Any] = {"deleted": deleted, "reason": reason}
        if self._chain is not None:
            notice["first_seq"] = self._first_kept_seq(next_seq)
        self._notices.append(("auditloop.retention", notice))

    def _first_kept_seq(self, next_seq: int) -> int:
        """Sequence number the kept trail starts at, after a deletion."""
        top = self._highest_backup()
        oldest = self._backup(top) if top else self.path
        link = first_link(oldest)
        return link[0] if link is not None else next_seq

    def after_fork_in_child(self) -> None:
        """Replace the lock, which the parent's writer may have held at fork;
        with ``writer="process"``, start a helper of our own on next write."""
        self._lock = threading.Lock()
        if self._process is not None:
            self._process.after_fork_in_child()
        if self._directory_fd >= 0:  # a lock of our own, not the parent's
            fd, self._directory_fd = self._directory_fd, -1
            with contextlib.suppress(OSError):
                os.close(fd)
            self._directory_fd = _open_directory(self.path.parent)

    def flush(self, timeout: float | None = None) -> None:
        """fsync the file unless ``fsync="never"`` (lines are already in the OS)."""
        if self._process is not None:
            # Each write was fsynced (if asked) before it returned, so this
            # only retries an fsync that failed: with fsync="never" there is
            # nothing to ask, and a helper that does not answer in time goes
            # on with it (its late answer is skipped) rather than fail here.
            if self.fsync == "never":
                return
            with self._lock:
                try:
                    notices = [] if self._closed else self._process.flush(timeout)
                except TimeoutError:
                    return
            self._deliver(notices)
            return
        with self._lock:
            if self.fsync != "never" and self._fd >= 0:
                os.fsync(self._fd)

    def close(self, timeout: float | None = None) -> None:
        """Write pending notices here (too late for an Auditor), flush, close."""
        if self._process is not None:
            with self._lock:
                if self._closed:
                    return
                self._closed = True
                notices = self._process.close(timeout)
            self._deliver(notices)
            return
        with self._lock:
            self._closed = True
            if self._fd >= 0:
                if self._notices:  # too late for an Auditor: write them here
                    with self._turn():
                        self._write_notices()
                if self.fsync != "never":
                    os.fsync(self._fd)
                os.close(self._fd)
                self._fd = -1
            if self._directory_fd >= 0:
                os.close(self._directory_fd)
                self._directory_fd = -1
