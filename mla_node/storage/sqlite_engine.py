"""SQLite, the embedded default: one file, a writer connection and a read-only one beside it.

A write is acknowledged only after the COMMIT that holds it has returned, in WAL mode with
``synchronous=FULL`` (read back at open), so it survives a crash or a power cut. Reads use the
second connection and, thanks to WAL, run beside the write. One process owns the file
(storage/node_lock.py), so ``shared`` is False.

The writer's statements run on the event loop's own thread, BEGIN IMMEDIATE included, and only what
waits on the disk (COMMIT with its fsync, ROLLBACK) goes to the writer's one thread. A statement
inside the open transaction touches pages already in SQLite's cache and takes microseconds; sending
each one to a thread and back cost more than the statement itself (two thread switches and a
wake-up of the loop per statement, several per request), and the batch holds the write lock for all
of that time. The one thread keeps the blocking calls in order, so a ROLLBACK after a cancelled
COMMIT runs behind it, never beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import aiosqlite

from mla_node.errors import StorageError
from mla_node.storage.engine import Migration, Params, Row, pending_migrations

# aiosqlite logs every call with its parameters at DEBUG: forms in clear, envelopes, token hashes.
# Whatever level an operator chooses, those must not reach a log (tests/security/test_secrets.py).
logging.getLogger("aiosqlite").setLevel(logging.INFO)

# fullfsync: on macOS a plain fsync leaves the commit in the drive's cache.
_PRAGMAS = ("foreign_keys=ON", "busy_timeout=5000", "synchronous=FULL", "fullfsync=ON")
_Conn = aiosqlite.Connection
T = TypeVar("T")
# COMMIT (its fsync) and ROLLBACK of the whole transaction; "ROLLBACK TO" a savepoint is not one.
_ENDS_TRANSACTION = re.compile(r"^\s*(COMMIT|END|ROLLBACK)\s*;?\s*$", re.IGNORECASE)


class SqliteEngine:
    shared = False
    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)

    def __init__(
        self, writer: sqlite3.Connection, writer_thread: ThreadPoolExecutor, reader: _Conn
    ) -> None:
        self._writer = writer
        self._writer_thread = writer_thread
        self._reader = reader

    @classmethod
    async def open(cls, path: Path, migrations: Sequence[Migration]) -> tuple[SqliteEngine, int]:
        """Open (creating it 0600) and migrate; the engine and the schema version."""
        opened: list[_Conn] = []
        writer_thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        writer: sqlite3.Connection | None = None
        loop = asyncio.get_running_loop()
        try:
            # The database holds the forms in clear: create it 0600 before SQLite does (0644);
            # SQLite gives its -wal and -shm files the database file's mode.
            if str(path) != ":memory:":  # SQLite's name for no file at all
                os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
            writer = await loop.run_in_executor(writer_thread, _open_writer, path)
            version = await loop.run_in_executor(writer_thread, _migrate, writer, migrations)
            reader = await _connect(path, opened)
            await reader.execute_fetchall("PRAGMA query_only=ON")
        except BaseException as exc:
            for conn in opened:
                with contextlib.suppress(sqlite3.Error, ValueError):
                    await conn.close()
            if writer is not None:
                writer.close()
            writer_thread.shutdown(wait=False)
            if isinstance(exc, sqlite3.Error):
                raise StorageError(f"cannot open the database {path}: {exc}") from exc
            raise
        return cls(writer, writer_thread, reader), version

    async def _blocking(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writer_thread, call)

    async def begin(self) -> None:
        # On the loop: the node lock keeps other nodes off the file, and what else may write it
        # (a `mla-node token create` beside the node) holds the lock for a millisecond.
        self._writer.execute("BEGIN IMMEDIATE")

    async def control(self, sql: str) -> None:
        if _ENDS_TRANSACTION.match(sql):
            await self._blocking(functools.partial(self._writer.execute, sql))
        else:  # SAVEPOINT, RELEASE, ROLLBACK TO: nothing reaches the disk
            self._writer.execute(sql)

    async def execute(self, sql: str, params: Params) -> int:
        cursor = self._writer.execute(sql, params)
        try:
            return cursor.rowcount
        finally:
            cursor.close()

    async def fetch(self, sql: str, params: Params) -> list[Row]:
        rows: list[Row] = self._writer.execute(sql, params).fetchall()
        return rows

    async def read(self, sql: str, params: Params) -> list[Row]:
        # One step to the reader's thread: a statement left open between steps would hold its
        # read snapshot, and a caller could then miss its own acknowledged write.
        return list(await self._reader.execute_fetchall(sql, params))

    async def integrity_check(self) -> str:
        rows = await self.read("PRAGMA integrity_check", ())
        return "\n".join(str(row[0]) for row in rows)

    async def close(self) -> None:
        with contextlib.suppress(sqlite3.Error, ValueError):
            await self._reader.close()
        with contextlib.suppress(sqlite3.Error):
            await self._blocking(self._writer.close)
        self._writer_thread.shutdown(wait=False)


async def _connect(path: Path, opened: list[_Conn]) -> _Conn:
    conn = await aiosqlite.connect(path, isolation_level=None)  # transactions are explicit
    opened.append(conn)
    conn.row_factory = sqlite3.Row
    for pragma in _PRAGMAS:
        await conn.execute_fetchall(f"PRAGMA {pragma}")
    return conn


def _open_writer(path: Path) -> sqlite3.Connection:
    # check_same_thread=False: statements run on the loop's thread, COMMIT on the writer's; they
    # take turns (the writer task awaits each COMMIT), never overlap.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.row_factory = sqlite3.Row
        for pragma in _PRAGMAS:
            conn.execute(f"PRAGMA {pragma}")
        conn.execute("PRAGMA journal_mode=WAL")
        # A node must not acknowledge what a power cut could undo: refuse to run otherwise.
        for pragma, expected in (("journal_mode", "wal"), ("synchronous", 2)):
            row = conn.execute(f"PRAGMA {pragma}").fetchone()
            if row is None or row[0] != expected:
                found = row[0] if row is not None else None
                raise StorageError(f"{path}: PRAGMA {pragma} is {found!r}, need {expected!r}")
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection, migrations: Sequence[Migration]) -> int:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations"
        " (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    rows = conn.execute("SELECT version FROM schema_migrations").fetchall()
    for migration in pending_migrations({row[0] for row in rows}, migrations):
        # executescript() first commits any open transaction, so the script carries its own.
        script = (
            f"BEGIN IMMEDIATE;\n{migration.sql}\n;\n"
            "INSERT INTO schema_migrations (version, applied_at)"
            f" VALUES ({migration.version:d}, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));\nCOMMIT;"
        )
        try:
            conn.executescript(script)
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise StorageError(f"migration {migration.version} failed: {exc}") from exc
    return len(migrations)
