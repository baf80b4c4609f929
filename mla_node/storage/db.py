"""The generic SQLite engine: one writer task with group commit, one reader, migrations.

Delivery guarantees rest here: a write is acknowledged only after the COMMIT that holds it has
returned, in WAL mode with ``synchronous=FULL`` (read back at open), so it survives a crash or a
power cut. SQLite writes one transaction at a time anyway; one writer task turns lock contention
into a queue, and the jobs waiting in it share one transaction and one COMMIT, so one fsync (group
commit), each in its own savepoint so a failing job loses only its own work. Reads use a second
connection and, thanks to WAL, run beside the write. The engine knows nothing of the tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from mla_node.crashpoints import crash_point
from mla_node.errors import DatabaseNewerThanProgram, StorageError
from mla_node.logs import REQUEST_ID

T = TypeVar("T")
Params = Sequence[object] | Mapping[str, object]
_Conn = aiosqlite.Connection

# aiosqlite logs every call with its parameters at DEBUG: forms in clear, envelopes, token hashes.
# Whatever level an operator chooses, those must not reach a log (tests/security/test_secrets.py).
logging.getLogger("aiosqlite").setLevel(logging.INFO)

# fullfsync: on macOS a plain fsync leaves the commit in the drive's cache.
_PRAGMAS = ("foreign_keys=ON", "busy_timeout=5000", "synchronous=FULL", "fullfsync=ON")
_MIGRATION_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# The batch's transaction belongs to the writer: a job that committed it would make its
# neighbours durable before they are acknowledged, and break their savepoints.
_TX_CONTROL = re.compile(r"^\s*(BEGIN|COMMIT|END|ROLLBACK|SAVEPOINT|RELEASE)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Migration:
    version: int
    sql: str  # a script of statements, without transaction control: the engine wraps it


def load_migrations(package: str) -> list[Migration]:
    """Read the ``NNNN_name.sql`` files of ``package``; their versions must be exactly 1..N."""
    found: list[Migration] = []
    for entry in resources.files(package).iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _MIGRATION_FILE.match(entry.name)
        if match is None:
            raise StorageError(f"migration file {entry.name!r} is not named NNNN_name.sql")
        found.append(Migration(int(match.group(1)), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    _check_versions(found)
    return found


def _check_versions(migrations: Sequence[Migration]) -> None:
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise StorageError(f"migration versions must be 1..N in order, without gaps: {versions}")


def _storage_error(detail: str, cause: BaseException) -> StorageError:
    error = StorageError(f"{detail}: {cause}" if str(cause) else detail)
    error.__cause__ = cause
    return error


class Transaction:
    """The writer connection, lent to one write job while it runs, inside the job's savepoint.

    sqlite3 errors reach the job as they are, so it may catch ``sqlite3.IntegrityError``; one that
    escapes the job reaches its caller as a StorageError. The job's own errors reach it unchanged.
    """

    def __init__(self, conn: _Conn) -> None:
        self._conn: _Conn | None = conn

    def _end(self) -> None:
        self._conn = None

    def _use(self, sql: str) -> _Conn:
        if self._conn is None:
            raise StorageError("a Transaction is only valid inside its write job")
        if _TX_CONTROL.match(sql):
            raise StorageError("a write job may not control the transaction; the writer does")
        return self._conn

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; return the number of rows it changed."""
        async with self._use(sql).execute(sql, params) as cursor:
            return cursor.rowcount

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        """First row of one statement (``RETURNING`` too); the statement runs to its end."""
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        return list(await self._use(sql).execute_fetchall(sql, params))

    async def insert(self, sql: str, params: Params = ()) -> int:
        """Run an INSERT; return the new rowid, or raise StorageError if it inserted nothing.

        When nothing is inserted (``ON CONFLICT DO NOTHING``) sqlite3 reports the previous insert's
        rowid, perhaps another job's row: use ``fetchone("... RETURNING id")`` for such inserts.
        """
        async with self._use(sql).execute(sql, params) as cursor:
            if cursor.rowcount < 1 or cursor.lastrowid is None:
                raise StorageError("the INSERT inserted no row")
            return cursor.lastrowid


@dataclass(eq=False)
class _Job:
    run: Callable[[Transaction], Awaitable[Any]]
    future: asyncio.Future[Any]
    # The caller's request id (mla_node/logs.py): the job runs in the writer's task, where the
    # caller's context variables are not, so it is carried over by hand.
    request_id: str | None = None


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():  # its caller was cancelled; the database keeps whatever was committed
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class Database:
    """One SQLite file: ``write()`` jobs go through the single writer task, reads beside it."""

    def __init__(self, writer: _Conn, reader: _Conn, schema_version: int, max_batch: int) -> None:
        """Use :meth:`open`, which sets the connections up and migrates."""
        self._writer = writer
        self._reader = reader
        self._schema_version = schema_version
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Job | None] = asyncio.Queue()  # None: stop after the rest
        self._closed = False
        self.commits = 0  # batches committed: group commit's effect, for tests and metrics
        self._task = asyncio.get_running_loop().create_task(self._write_loop(), name="db-writer")

    @classmethod
    async def open(
        cls, path: Path, migrations: Sequence[Migration], *, max_batch: int = 256
    ) -> Database:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        ordered = sorted(migrations, key=lambda m: m.version)
        _check_versions(ordered)
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
            version = await _migrate(writer, ordered)
            reader = await _connect(path, opened)
            await reader.execute_fetchall("PRAGMA query_only=ON")
        except BaseException as exc:
            for conn in opened:
                with contextlib.suppress(sqlite3.Error, ValueError):
                    await conn.close()
            if isinstance(exc, sqlite3.Error):
                raise StorageError(f"cannot open the database {path}: {exc}") from exc
            raise
        return cls(writer, reader, version, max_batch)

    @property
    def schema_version(self) -> int:
        return self._schema_version

    async def close(self) -> None:
        """Finish the jobs already submitted, then close both connections."""
        if asyncio.current_task() is self._task:
            raise StorageError("close() in a write job would wait on itself")
        if self._closed:
            return
        self._closed = True
        self._queue.put_nowait(None)
        try:
            await asyncio.wait([self._task])  # wait(), not await: a cancelled close() keeps going
        finally:
            if not self._task.done():  # close() itself was cancelled: stop the writer cleanly
                self._task.cancel()
                await asyncio.wait([self._task])
            for conn in (self._writer, self._reader):
                with contextlib.suppress(sqlite3.Error, ValueError):
                    await conn.close()

    async def write(self, job: Callable[[Transaction], Awaitable[T]]) -> T:
        """Run ``job`` in the writer's transaction; return its result once it is committed.

        Jobs should do database work only: the writer, and every write of its batch, waits for them.
        """
        if self._closed or self._task.done():
            raise StorageError("the database is closed")
        if asyncio.current_task() is self._task:
            raise StorageError("write() in a write job would wait on itself; use its Transaction")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Job(job, future, REQUEST_ID.get()))
        return await future

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        """First row of a read. The query runs to its end, so bound it (``LIMIT 1``)."""
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        # One step to the reader's thread: a statement left open between steps would hold its
        # read snapshot, and a caller could then miss its own acknowledged write.
        if self._closed:
            raise StorageError("the database is closed")
        try:
            return list(await self._reader.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise StorageError(f"the database read failed: {exc}") from exc

    async def integrity_check(self) -> str:
        rows = await self.fetchall("PRAGMA integrity_check")
        return "\n".join(str(row[0]) for row in rows)

    async def _write_loop(self) -> None:
        try:
            stop = False
            while not stop:
                batch: list[_Job] = []
                job = await self._queue.get()
                while job is not None:
                    batch.append(job)
                    if len(batch) >= self._max_batch or self._queue.empty():
                        break
                    job = self._queue.get_nowait()
                stop = job is None
                if batch:
                    await self._run_batch(batch)
        finally:  # cancelled too (loop shutdown): no caller may wait forever
            while not self._queue.empty():
                if (job := self._queue.get_nowait()) is not None:
                    _settle(job.future, False, StorageError("the database writer has stopped"))

    async def _run_batch(self, batch: list[_Job]) -> None:
        jobs = [job for job in batch if not job.future.done()]  # cancelled before it began: skip
        if not jobs:
            return
        outcomes: list[tuple[bool, Any]] = []
        try:
            await self._control("BEGIN IMMEDIATE")
            for job in jobs:
                outcomes.append(await self._run_job(job))
                crash_point("db.mid_batch")
            await self._control("COMMIT")
        except BaseException as exc:
            # ROLLBACK goes to the connection's thread behind any statement still running there,
            # so no transaction is left open, whatever was interrupted.
            with contextlib.suppress(sqlite3.Error, ValueError):
                await self._control("ROLLBACK")
            stopped = not isinstance(exc, Exception)  # cancelled: a COMMIT may have been running
            detail = "writer stopped, outcome unknown" if stopped else "the batch was not committed"
            for job in jobs:
                _settle(job.future, False, _storage_error(detail, exc))
            if stopped:
                raise
            return
        self.commits += 1
        for job, (ok, value) in zip(jobs, outcomes, strict=True):
            _settle(job.future, ok, value)

    async def _run_job(self, job: _Job) -> tuple[bool, Any]:
        await self._control("SAVEPOINT mla_job")
        tx = Transaction(self._writer)
        request_id = REQUEST_ID.set(job.request_id)
        outcome: tuple[bool, Any]
        try:
            outcome = (True, await job.run(tx))
        except (Exception, asyncio.CancelledError) as exc:
            task = asyncio.current_task()
            if isinstance(exc, asyncio.CancelledError) and task is not None and task.cancelling():
                raise  # the writer itself is being stopped, not just this job
            outcome = (False, _job_error(exc))
            await self._control("ROLLBACK TO mla_job")
        finally:
            tx._end()
            REQUEST_ID.reset(request_id)
        await self._control("RELEASE mla_job")
        return outcome

    async def _control(self, sql: str) -> None:
        await self._writer.execute_fetchall(sql)


def _job_error(exc: BaseException) -> BaseException:
    """What the caller of a failed job receives: its own errors unchanged, SQLite's translated."""
    if isinstance(exc, sqlite3.Error):
        return _storage_error("the write failed", exc)
    if isinstance(exc, asyncio.CancelledError):
        return _storage_error("the write job was cancelled", exc)
    return exc


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
    applied = {row[0] for row in rows}
    known, newest = len(migrations), max(applied, default=0)
    if newest > known:
        raise DatabaseNewerThanProgram(
            f"the database has schema version {newest}; this program knows versions up to {known}",
            extra={"database_version": newest, "program_version": known},
        )
    for migration in migrations:
        if migration.version in applied:
            continue
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
    return known
