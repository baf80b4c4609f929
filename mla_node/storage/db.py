"""The generic storage engine: one writer task with group commit, reads beside it.

Delivery guarantees rest here: a write is acknowledged only after the COMMIT that holds it has
returned. The server writes one transaction at a time anyway (SQLite by design; PostgreSQL because
each batch takes the database's write lock, storage/pg_engine.py); one writer task turns lock
contention into a queue, and the jobs waiting in it share one transaction and one COMMIT, so one
fsync (group commit), each in its own savepoint so a failing job loses only its own work. Reads
run beside the write. The engine knows nothing of the tables; the server's dialect is behind an
``Engine`` (storage/engine.py): SQLite, the embedded default, or PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from mla_node.crashpoints import crash_point
from mla_node.errors import StorageError
from mla_node.logs import REQUEST_ID
from mla_node.storage import pg_engine  # imports asyncpg (an optional extra) only if there
from mla_node.storage.engine import (
    Engine,
    Migration,
    Params,
    Row,
    check_versions,
    load_migrations,
    storage_error,
)
from mla_node.storage.sqlite_engine import SqliteEngine

__all__ = ["Database", "Migration", "Row", "Transaction", "load_migrations", "open_database"]

T = TypeVar("T")

SQLITE_MIGRATIONS = "mla_node.storage.migrations"  # PostgreSQL takes them translated
# The batch's transaction belongs to the writer: a job that committed it would make its
# neighbours durable before they are acknowledged, and break their savepoints.
_TX_CONTROL = re.compile(r"^\s*(BEGIN|COMMIT|END|ROLLBACK|SAVEPOINT|RELEASE)\b", re.IGNORECASE)


async def open_database(
    location: str | Path, *, name: str = "mla-node", migrate: bool = True
) -> Database:
    """The node's database with the node's migrations: a ``postgresql://`` URL or a SQLite file.

    ``migrate=False`` (PostgreSQL): only check the schema, for commands that must not change a
    database other workers run on; pending migrations then raise a StorageError."""
    text = str(location)
    if pg_engine.is_postgres_url(text):
        migrations = [pg_engine.postgres_migration(m) for m in load_migrations(SQLITE_MIGRATIONS)]
        engine, version = await pg_engine.PostgresEngine.open(
            text, migrations, name=name, migrate=migrate
        )
        return Database(engine, version)
    return await Database.open(Path(location), load_migrations(SQLITE_MIGRATIONS))


class Transaction:
    """The writer's transaction, lent to one write job while it runs, inside the job's savepoint.

    The server's errors reach the job as they are, and fail it: a job during which the server
    refused a statement is rolled back and its caller gets a StorageError, even if the job caught
    the error (PostgreSQL refuses every later statement of the transaction; SQLite would go on,
    and one rule for both keeps the jobs portable). The job's own errors reach it unchanged.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine: Engine | None = engine
        self.refused: BaseException | None = None  # the server's first refusal in this job

    def _end(self) -> None:
        self._engine = None

    def _use(self, sql: str) -> Engine:
        if self._engine is None:
            raise StorageError("a Transaction is only valid inside its write job")
        if _TX_CONTROL.match(sql):
            raise StorageError("a write job may not control the transaction; the writer does")
        if self.refused is not None:
            raise storage_error("the server refused an earlier statement of this job", self.refused)
        return self._engine

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; return the number of rows it changed."""
        engine = self._use(sql)
        try:
            return await engine.execute(sql, params)
        except engine.errors as exc:
            self.refused = self.refused or exc
            raise

    async def fetchone(self, sql: str, params: Params = ()) -> Any:
        """First row of one statement (``RETURNING`` too); the statement runs to its end."""
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def fetchall(self, sql: str, params: Params = ()) -> list[Any]:
        engine = self._use(sql)
        try:
            return await engine.fetch(sql, params)
        except engine.errors as exc:
            self.refused = self.refused or exc
            raise


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
    """One database: ``write()`` jobs go through the single writer task, reads beside it."""

    def __init__(self, engine: Engine, schema_version: int, max_batch: int = 256) -> None:
        """Use :func:`open_database` or :meth:`open`, which connect and migrate."""
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._engine = engine
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
        """A SQLite file with these migrations (the node's own: :func:`open_database`)."""
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        ordered = sorted(migrations, key=lambda m: m.version)
        check_versions(ordered)
        engine, version = await SqliteEngine.open(path, ordered)
        return cls(engine, version, max_batch)

    @property
    def shared(self) -> bool:
        """Other processes write this database too (PostgreSQL workers of the same node)."""
        return self._engine.shared

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
            await self._engine.close()

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

    async def fetchone(self, sql: str, params: Params = ()) -> Any:
        """First row of a read. The query runs to its end, so bound it (``LIMIT 1``)."""
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def fetchall(self, sql: str, params: Params = ()) -> list[Any]:
        if self._closed:
            raise StorageError("the database is closed")
        try:
            return await self._engine.read(sql, params)
        except self._engine.errors as exc:
            raise StorageError(f"the database read failed: {exc}") from exc

    async def integrity_check(self) -> str:
        try:
            return await self._engine.integrity_check()
        except self._engine.errors as exc:
            raise StorageError(f"the integrity check failed: {exc}") from exc

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
            await self._engine.begin()
            for job in jobs:
                outcomes.append(await self._run_job(job))
                crash_point("db.mid_batch")
            await self._control("COMMIT")
        except BaseException as exc:
            # ROLLBACK goes to the connection's thread behind any statement still running there,
            # so no transaction is left open, whatever was interrupted.
            with contextlib.suppress(*self._engine.errors, ValueError):
                await self._control("ROLLBACK")
            stopped = not isinstance(exc, Exception)  # cancelled: a COMMIT may have been running
            detail = "writer stopped, outcome unknown" if stopped else "the batch was not committed"
            for job in jobs:
                _settle(job.future, False, storage_error(detail, exc))
            if stopped:
                raise
            return
        self.commits += 1
        for job, (ok, value) in zip(jobs, outcomes, strict=True):
            _settle(job.future, ok, value)

    async def _run_job(self, job: _Job) -> tuple[bool, Any]:
        await self._control("SAVEPOINT mla_job")
        tx = Transaction(self._engine)
        request_id = REQUEST_ID.set(job.request_id)
        outcome: tuple[bool, Any]
        try:
            outcome = (True, await job.run(tx))
            if tx.refused is not None:  # caught by the job: it fails all the same
                raise tx.refused
        except (Exception, asyncio.CancelledError) as exc:
            task = asyncio.current_task()
            if isinstance(exc, asyncio.CancelledError) and task is not None and task.cancelling():
                raise  # the writer itself is being stopped, not just this job
            outcome = (False, self._job_error(tx.refused or exc))
            await self._control("ROLLBACK TO mla_job")
        finally:
            tx._end()
            REQUEST_ID.reset(request_id)
        await self._control("RELEASE mla_job")
        return outcome

    async def _control(self, sql: str) -> None:
        await self._engine.control(sql)

    def _job_error(self, exc: BaseException) -> BaseException:
        """What the caller of a failed job receives: its own errors unchanged, the server's
        translated."""
        if isinstance(exc, self._engine.errors):
            return storage_error("the write failed", exc)
        if isinstance(exc, asyncio.CancelledError):
            return storage_error("the write job was cancelled", exc)
        return exc
