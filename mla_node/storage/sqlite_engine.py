"""SQLite, the embedded default: one file, a writer connection and a read-only one beside it.

A write is acknowledged only after the COMMIT that holds it has returned, in WAL mode with
``synchronous=FULL`` (read back at open), so it survives a crash or a power cut. Reads use the
second connection and, thanks to WAL, run beside the write. One process owns the file
(storage/node_lock.py), so ``shared`` is False.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import aiosqlite

from mla_node.errors import StorageError
from mla_node.storage.engine import Migration, Params, Row, pending_migrations

# aiosqlite logs every call with its parameters at DEBUG: forms in clear, envelopes, token hashes.
# Whatever level an operator chooses, those must not reach a log (tests/security/test_secrets.py).
logging.getLogger("aiosqlite").setLevel(logging.INFO)

# fullfsync: on macOS a plain fsync leaves the commit in the drive's cache.
_PRAGMAS = ("foreign_keys=ON", "busy_timeout=5000", "synchronous=FULL", "fullfsync=ON")
_Conn = aiosqlite.Connection


class SqliteEngine:
    shared = False
    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)

    def __init__(self, writer: _Conn, reader: _Conn) -> None:
        self._writer = writer
        self._reader = reader

    @classmethod
    async def open(cls, path: Path, migrations: Sequence[Migration]) -> tuple[SqliteEngine, int]:
        """Open (creating it 0600) and migrate; the engine and the schema version."""
        opened: list[_Conn] = []
        try:
            # The database holds the forms in clear: create it 0600 before SQLite does (0644);
            # SQLite gives its -wal and -shm files the database file's mode.
            if str(path) != ":memory:":  # SQLite's name for no file at all
                os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
            writer = await _connect(path, opened)
            await writer.execute_fetchall("PRAGMA journal_mode=WAL")
            # A node must not acknowledge what a power cut could undo: refuse to run otherwise.
            for pragma, expected in (("journal_mode", "wal"), ("synchronous", 2)):
                rows = list(await writer.execute_fetchall(f"PRAGMA {pragma}"))
                if not rows or rows[0][0] != expected:
                    found = rows[0][0] if rows else None
                    raise StorageError(f"{path}: PRAGMA {pragma} is {found!r}, need {expected!r}")
            version = await _migrate(writer, migrations)
            reader = await _connect(path, opened)
            await reader.execute_fetchall("PRAGMA query_only=ON")
        except BaseException as exc:
            for conn in opened:
                with contextlib.suppress(sqlite3.Error, ValueError):
                    await conn.close()
            if isinstance(exc, sqlite3.Error):
                raise StorageError(f"cannot open the database {path}: {exc}") from exc
            raise
        return cls(writer, reader), version

    async def begin(self) -> None:
        await self._writer.execute_fetchall("BEGIN IMMEDIATE")

    async def control(self, sql: str) -> None:
        await self._writer.execute_fetchall(sql)

    async def execute(self, sql: str, params: Params) -> int:
        async with self._writer.execute(sql, params) as cursor:
            return cursor.rowcount

    async def fetch(self, sql: str, params: Params) -> list[Row]:
        return list(await self._writer.execute_fetchall(sql, params))

    async def read(self, sql: str, params: Params) -> list[Row]:
        # One step to the reader's thread: a statement left open between steps would hold its
        # read snapshot, and a caller could then miss its own acknowledged write.
        return list(await self._reader.execute_fetchall(sql, params))

    async def integrity_check(self) -> str:
        rows = await self.read("PRAGMA integrity_check", ())
        return "\n".join(str(row[0]) for row in rows)

    async def close(self) -> None:
        for conn in (self._writer, self._reader):
            with contextlib.suppress(sqlite3.Error, ValueError):
                await conn.close()


async def _connect(path: Path, opened: list[_Conn]) -> _Conn:
    conn = await aiosqlite.connect(path, isolation_level=None)  # transactions are explicit
    opened.append(conn)
    conn.row_factory = sqlite3.Row
    for pragma in _PRAGMAS:
        await conn.execute_fetchall(f"PRAGMA {pragma}")
    return conn


async def _migrate(conn: _Conn, migrations: Sequence[Migration]) -> int:
    await conn.execute_fetchall(
        "CREATE TABLE IF NOT EXISTS schema_migrations"
        " (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    rows = await conn.execute_fetchall("SELECT version FROM schema_migrations")
    for migration in pending_migrations({row[0] for row in rows}, migrations):
        # executescript() first commits any open transaction, so the script carries its own.
        script = (
            f"BEGIN IMMEDIATE;\n{migration.sql}\n;\n"
            "INSERT INTO schema_migrations (version, applied_at)"
            f" VALUES ({migration.version:d}, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));\nCOMMIT;"
        )
        try:
            await conn.executescript(script)
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                await conn.execute_fetchall("ROLLBACK")
            raise StorageError(f"migration {migration.version} failed: {exc}") from exc
    return len(migrations)
