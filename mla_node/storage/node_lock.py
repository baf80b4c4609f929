"""``<database>.lock``: held (``flock``, exclusive) by the node running on the database.

SQLite's own locks are taken per transaction, so between two transactions nothing says a node
has the file open. This lock does, for as long as the process lives (the kernel drops it when the
process dies, even by SIGKILL): ``mla-node restore`` refuses to replace a database a node runs
on, and a second node refuses to start on it (one writer per database).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from mla_node.errors import DatabaseInUse, StorageError


def lock_path(database: Path) -> Path:
    return database.with_name(database.name + ".lock")


class NodeLock:
    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    @classmethod
    def acquire(cls, database: Path) -> NodeLock:
        """Take the lock, or raise DatabaseInUse when another process (or node) holds it."""
        path = lock_path(database)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StorageError(f"cannot open {path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DatabaseInUse(
                f"a node is running on {database} (it holds {path.name}); stop it first",
                field=str(database),
            ) from None
        return cls(fd, path)

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def in_use(database: Path) -> bool:
    """Whether a running node holds the database now."""
    if not lock_path(database).exists():
        return False
    try:
        NodeLock.acquire(database).release()
    except DatabaseInUse:
        return True
    return False
