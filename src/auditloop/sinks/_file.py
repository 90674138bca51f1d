"""FileSink: append-only JSON lines with fsync policy, rotation and reopen."""

from __future__ import annotations

import gzip
import os
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from auditloop._delivery import Delivery
from auditloop.exceptions import ConfigurationError

__all__ = ["FileSink"]

Fsync = Literal["never", "batch", "always"]
_FILE_MODE = 0o600


class FileSink:
    """Appends events to a JSON-lines file.

    Guarantees: every event is written as one whole line (a batch is one
    ``write`` of complete lines, so a crash can tear at most the last line,
    which :func:`auditloop.read_events` reports and skips). New files are
    created with mode ``0600``. When the file is moved or deleted (log
    rotation by another tool), the next batch reopens the path, like
    ``logging.handlers.WatchedFileHandler``.

    Args:
        path: the file to append to.
        fsync: ``"never"`` (default; the OS decides), ``"batch"`` (fsync after
            each batch) or ``"always"`` (each event is written and fsynced
            on its own — pair with ``Delivery(mode="sync")`` for fail-closed).
        max_bytes: rotate before a write would grow the file past this size.
        backups: rotated files kept (``path.1`` newest … ``path.N``).
        compress: gzip rotated files (``path.1.gz`` …).
        create_dirs: create missing parent directories instead of failing.
        delivery: the delivery policy (default: async).

    Raises:
        ConfigurationError: bad option, or the directory does not exist (and
            ``create_dirs`` is false), or the file cannot be opened.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync: Fsync = "never",
        max_bytes: int | None = None,
        backups: int = 5,
        compress: bool = False,
        create_dirs: bool = False,
        delivery: Delivery | None = None,
    ) -> None:
        self.path = Path(path)
        if fsync not in ("never", "batch", "always"):
            raise ConfigurationError(
                f'FileSink: fsync must be "never", "batch" or "always", got {fsync!r}'
            )
        if max_bytes is not None and (isinstance(max_bytes, bool) or max_bytes <= 0):
            raise ConfigurationError(
                f"FileSink: max_bytes must be > 0, got {max_bytes!r}"
            )
        if isinstance(backups, bool) or not isinstance(backups, int) or backups < 0:
            raise ConfigurationError(f"FileSink: backups must be >= 0, got {backups!r}")
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
        self.backups = backups
        self.compress = compress
        self.delivery = delivery
        self._lock = threading.Lock()
        try:
            self._open()
        except OSError as exc:
            raise ConfigurationError(
                f"FileSink: cannot open {str(path)!r}: {exc}"
            ) from exc

    def _open(self) -> None:
        self._fd = os.open(
            self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, _FILE_MODE
        )
        stat = os.fstat(self._fd)
        self._identity = (stat.st_dev, stat.st_ino)
        self._size = stat.st_size

    def _reopen_if_moved(self) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            stat = None
        if stat is None or (stat.st_dev, stat.st_ino) != self._identity:
            os.close(self._fd)
            self._open()

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._size += len(data)

    def write(self, batch: Sequence[bytes]) -> None:
        """Append *batch* as whole lines (rotating first if needed)."""
        data = b"\n".join(batch) + b"\n"
        with self._lock:
            self._reopen_if_moved()
            limit = self.max_bytes
            if limit is not None and self._size > 0 and self._size + len(data) > limit:
                self._rotate()
            if self.fsync == "always":
                for line in batch:
                    self._write_all(line + b"\n")
                    os.fsync(self._fd)
                return
            self._write_all(data)
            if self.fsync == "batch":
                os.fsync(self._fd)

    def _backup(self, n: int) -> Path:
        suffix = f".{n}.gz" if self.compress else f".{n}"
        return self.path.with_name(self.path.name + suffix)

    def _rotate(self) -> None:
        os.close(self._fd)
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            self._backup(self.backups).unlink(missing_ok=True)
            for n in range(self.backups - 1, 0, -1):
                if self._backup(n).exists():
                    self._backup(n).replace(self._backup(n + 1))
            if self.compress:
                with (
                    self.path.open("rb") as src,
                    gzip.open(self._backup(1), "wb") as dst,
                ):
                    shutil.copyfileobj(src, dst)
                self._backup(1).chmod(_FILE_MODE)
                self.path.unlink()
            else:
                self.path.replace(self._backup(1))
        self._open()

    def flush(self, timeout: float | None = None) -> None:
        """fsync the file unless ``fsync="never"`` (lines are already in the OS)."""
        with self._lock:
            if self.fsync != "never":
                os.fsync(self._fd)

    def close(self, timeout: float | None = None) -> None:
        """Flush and close the file descriptor."""
        with self._lock:
            if self._fd >= 0:
                if self.fsync != "never":
                    os.fsync(self._fd)
                os.close(self._fd)
                self._fd = -1
