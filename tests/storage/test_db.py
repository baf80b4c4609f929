"""The storage engine on real databases: durability settings, migrations, group commit.

The engine's contract runs on both backends: SQLite files, and fresh databases on a real
PostgreSQL server (tests/pgkit.py). What only one of them has is tested on that one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import stat
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from mla_node.errors import DatabaseNewerThanProgram, InvalidStateForAction, StorageError
from mla_node.storage.db import Database, Migration, Transaction, load_migrations
from mla_node.storage.pg_engine import postgres_migration
from tests import pgkit

ITEMS = "CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);"
# A deferred foreign key is checked only at COMMIT: the one way to make a COMMIT fail for real.
FAMILY = """
CREATE TABLE parent (id INTEGER PRIMARY KEY);
CREATE TABLE child (
    id INTEGER PRIMARY KEY,
    parent_id INTEGER NOT NULL REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED
);
"""
MIGRATIONS = [Migration(1, ITEMS), Migration(2, FAMILY)]
PG_MIGRATIONS = [postgres_migration(m) for m in MIGRATIONS]
REPO = Path(__file__).resolve().parents[2]

Job = Callable[[Transaction], Awaitable[int]]


@dataclass
class Backend:
    """One database of one backend, opened as often as a test likes (a reopen is a restart)."""

    name: str
    location: str
    migrations: list[Migration]
    unique_violation: type[BaseException]
    commit_violation: type[BaseException]  # the deferred foreign key, at COMMIT

    async def open(
        self, migrations: Sequence[Migration] | None = None, *, max_batch: int = 256
    ) -> Database:
        chosen = self.migrations if migrations is None else list(migrations)
        if self.name == "sqlite":
            return await Database.open(Path(self.location), chosen, max_batch=max_batch)
        from mla_node.storage.pg_engine import PostgresEngine

        engine, version = await PostgresEngine.open(self.location, chosen)
        return Database(engine, version, max_batch)


@pytest.fixture(params=["sqlite", "postgresql"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        yield Backend(
            "sqlite",
            str(tmp_path / "node.db"),
            MIGRATIONS,
            sqlite3.IntegrityError,
            sqlite3.IntegrityError,
        )
        return
    import asyncpg

    async with pgkit.fresh_database() as url:
        yield Backend(
            "postgresql",
            url,
            PG_MIGRATIONS,
            asyncpg.UniqueViolationError,
            asyncpg.ForeignKeyViolationError,
        )


@pytest.fixture
async def db(backend: Backend) -> AsyncIterator[Database]:
    database = await backend.open()
    yield database
    await database.close()


def insert_item(name: str) -> Job:
    async def job(tx: Transaction) -> int:
        row = await tx.fetchone("INSERT INTO item (name) VALUES (?) RETURNING id", (name,))
        return int(row[0])

    return job


async def names(db: Database) -> list[str]:
    return [row["name"] for row in await db.fetchall("SELECT name FROM item ORDER BY id")]


# --- durability settings and opening -----------------------------------------------------------


async def test_durability_pragmas_are_in_force_on_both_connections(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "node.db", MIGRATIONS)

    async def writer_pragmas(tx: Transaction) -> list[object]:
        pragmas = ("journal_mode", "synchronous", "foreign_keys")
        return [(await tx.fetchall(f"PRAGMA {p}"))[0][0] for p in pragmas]

    assert await db.write(writer_pragmas) == ["wal", 2, 1]
    for pragma, expected in (("journal_mode", "wal"), ("synchronous", 2), ("foreign_keys", 1)):
        row = await db.fetchone(f"PRAGMA {pragma}")
        assert row is not None
        assert row[0] == expected
    await db.close()


async def test_refuses_a_database_that_cannot_use_wal() -> None:
    with pytest.raises(StorageError, match="journal_mode"):
        await Database.open(Path(":memory:"), MIGRATIONS)


async def test_a_file_that_is_not_a_database_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StorageError, match="cannot open") as excinfo:
        await Database.open(path, MIGRATIONS)
    assert isinstance(excinfo.value.__cause__, sqlite3.DatabaseError)


async def test_integrity_check_is_ok(db: Database) -> None:
    await db.write(insert_item("a"))
    assert await db.integrity_check() == "ok"


# --- migrations ---------------------------------------------------------------------------------


async def test_migrations_are_applied_once_and_reopening_is_idempotent(backend: Backend) -> None:
    first = await backend.open()
    assert first.schema_version == 2
    before = [tuple(r) for r in await first.fetchall("SELECT * FROM schema_migrations")]
    await first.write(insert_item("kept"))
    await first.close()
    assert [v for v, _ in before] == [1, 2]

    again = await backend.open()
    after = [tuple(r) for r in await again.fetchall("SELECT * FROM schema_migrations")]
    assert after == before  # nothing re-applied: same rows, same applied_at
    assert await names(again) == ["kept"]
    await again.close()

    extra = Migration(3, "ALTER TABLE item ADD COLUMN note TEXT;")
    newer = await backend.open([*backend.migrations, extra])
    assert newer.schema_version == 3
    assert [r[0] for r in await newer.fetchall("SELECT version FROM schema_migrations")] == [
        1,
        2,
        3,
    ]
    await newer.close()


async def test_a_database_newer_than_the_program_is_refused(backend: Backend) -> None:
    await (await backend.open()).close()
    with pytest.raises(DatabaseNewerThanProgram, match=r"version 2.*up to 1") as excinfo:
        await backend.open(backend.migrations[:1])
    assert excinfo.value.extra == {"database_version": 2, "program_version": 1}


async def test_a_failing_migration_is_rolled_back_whole(backend: Backend) -> None:
    broken = Migration(3, "CREATE TABLE half (id INTEGER);\nINSERT INTO no_such_table VALUES (1);")
    with pytest.raises(StorageError, match="migration 3 failed"):
        await backend.open([*backend.migrations, broken])
    db = await backend.open()
    assert db.schema_version == 2
    with pytest.raises(StorageError):  # the table the failed script made is not there
        await db.fetchall("SELECT * FROM half")
    await db.close()


async def test_migration_versions_must_run_from_one_without_gaps(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="without gaps"):
        await Database.open(tmp_path / "node.db", [Migration(1, ITEMS), Migration(3, FAMILY)])


def make_package(root: Path, name: str, files: dict[str, str]) -> None:
    package = root / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    for file, text in files.items():
        (package / file).write_text(text)


def test_load_migrations_reads_sql_files_in_version_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_package(tmp_path, "good_migrations", {"0002_more.sql": FAMILY, "0001_init.sql": ITEMS})
    make_package(tmp_path, "gap_migrations", {"0001_init.sql": ITEMS, "0003_x.sql": FAMILY})
    make_package(tmp_path, "badname_migrations", {"1_init.sql": ITEMS})
    monkeypatch.syspath_prepend(str(tmp_path))

    assert load_migrations("good_migrations") == MIGRATIONS
    with pytest.raises(StorageError, match="without gaps"):
        load_migrations("gap_migrations")
    with pytest.raises(StorageError, match="NNNN_name"):
        load_migrations("badname_migrations")


# --- group commit -------------------------------------------------------------------------------


async def test_concurrent_writes_all_commit_in_few_batches(db: Database) -> None:
    ids = await asyncio.gather(*(db.write(insert_item(f"n{i}")) for i in range(500)))
    assert len(set(ids)) == 500
    row = await db.fetchone("SELECT count(*) FROM item")
    assert row is not None
    assert row[0] == 500
    assert db.commits <= 10  # measured: 2 (batches of 256 and 244)


async def test_max_batch_bounds_a_batch(backend: Backend) -> None:
    db = await backend.open(max_batch=4)
    await asyncio.gather(*(db.write(insert_item(f"n{i}")) for i in range(20)))
    assert db.commits >= 5
    await db.close()


async def test_a_failing_job_loses_only_its_own_work(db: Database) -> None:
    async def fails(tx: Transaction) -> int:
        await tx.execute("INSERT INTO item (name) VALUES ('doomed')")
        raise InvalidStateForAction("not now")

    results = await asyncio.gather(
        db.write(insert_item("before")),
        db.write(fails),
        db.write(insert_item("after")),
        return_exceptions=True,
    )
    assert isinstance(results[1], InvalidStateForAction)
    assert db.commits == 1  # the three jobs shared one batch
    assert await names(db) == ["before", "after"]


async def test_a_failed_commit_fails_every_job_of_the_batch(db: Database, backend: Backend) -> None:
    async def orphan(tx: Transaction) -> int:
        return await tx.execute("INSERT INTO child (parent_id) VALUES (42)")

    results = await asyncio.gather(
        db.write(insert_item("neighbour")), db.write(orphan), return_exceptions=True
    )
    for result in results:
        assert isinstance(result, StorageError)
        assert isinstance(result.__cause__, backend.commit_violation)
    assert db.commits == 0
    assert await names(db) == []
    await db.write(insert_item("later"))  # no transaction was left open
    assert await names(db) == ["later"]


async def test_results_resolve_in_submission_order(db: Database) -> None:
    finished: list[int] = []
    tasks = [asyncio.create_task(db.write(insert_item(f"n{i}"))) for i in range(50)]
    for task in tasks:
        task.add_done_callback(lambda done: finished.append(tasks.index(done)))
    await asyncio.gather(*tasks)
    assert finished == list(range(50))


# --- errors at the boundary ---------------------------------------------------------------------


async def test_a_jobs_own_exception_reaches_its_caller_unchanged(db: Database) -> None:
    for error in (InvalidStateForAction("closed request"), ValueError("a bug")):

        async def job(tx: Transaction, error: Exception = error) -> int:
            raise error

        with pytest.raises(type(error)) as excinfo:
            await db.write(job)
        assert excinfo.value is error


async def test_server_errors_escaping_a_job_become_storage_errors(
    db: Database, backend: Backend
) -> None:
    await db.write(insert_item("taken"))
    with pytest.raises(StorageError, match=r"(?i)unique") as excinfo:
        await db.write(insert_item("taken"))
    assert isinstance(excinfo.value.__cause__, backend.unique_violation)

    async def tolerant(tx: Transaction) -> int:
        try:
            return await insert_item("taken")(tx)
        except backend.unique_violation:
            await tx.execute("INSERT INTO item (name) VALUES ('other')")
            return -1

    # A job the server refused fails, even when it caught the error (one rule for both
    # servers: PostgreSQL refuses the rest of such a transaction); its neighbours are unharmed.
    results = await asyncio.gather(
        db.write(insert_item("before")),
        db.write(tolerant),
        db.write(insert_item("after")),
        return_exceptions=True,
    )
    assert isinstance(results[1], StorageError)
    assert isinstance(results[1].__cause__, backend.unique_violation)
    assert await names(db) == ["taken", "before", "after"]


async def test_on_conflict_do_nothing_changes_no_row(db: Database) -> None:
    await db.write(insert_item("x"))

    async def job(tx: Transaction) -> int:
        return await tx.execute("INSERT INTO item (name) VALUES ('x') ON CONFLICT DO NOTHING")

    assert await db.write(job) == 0


async def test_a_job_may_not_end_the_batch_transaction(db: Database) -> None:
    async def commits(tx: Transaction) -> int:
        return await tx.execute("  commit")

    results = await asyncio.gather(
        db.write(insert_item("a")), db.write(commits), return_exceptions=True
    )
    assert isinstance(results[1], StorageError)
    assert await names(db) == ["a"]


async def test_a_transaction_is_only_valid_inside_its_job(db: Database) -> None:
    leaked: list[Transaction] = []

    async def job(tx: Transaction) -> int:
        leaked.append(tx)
        return 0

    await db.write(job)
    with pytest.raises(StorageError, match="only valid inside"):
        await leaked[0].execute("DELETE FROM item")


async def test_write_inside_a_job_is_refused_not_deadlocked(db: Database) -> None:
    async def nested(tx: Transaction) -> int:
        return await db.write(insert_item("inner"))

    with pytest.raises(StorageError, match="wait on itself"):
        await db.write(nested)


async def test_a_job_raising_cancelled_error_does_not_stop_the_writer(db: Database) -> None:
    async def job(tx: Transaction) -> int:
        raise asyncio.CancelledError

    with pytest.raises(StorageError, match="cancelled"):
        await db.write(job)
    await db.write(insert_item("still working"))


# --- reads --------------------------------------------------------------------------------------


async def test_reads_see_committed_data_only_and_run_beside_a_write(db: Database) -> None:
    async def job(tx: Transaction) -> int:
        await tx.execute("INSERT INTO item (name) VALUES ('pending')")
        assert await tx.fetchone("SELECT name FROM item") is not None  # its own write
        return len(await names(db))  # the reader, during the open write transaction

    assert await db.write(job) == 0
    assert await names(db) == ["pending"]


async def test_a_bad_read_is_a_storage_error(db: Database) -> None:
    with pytest.raises(StorageError, match=r"no such table|does not exist"):
        await db.fetchall("SELECT * FROM missing_table")
    with pytest.raises(StorageError, match=r"readonly|read-only"):
        await db.fetchall("DELETE FROM item")  # the reader cannot write


# --- cancellation and closing -------------------------------------------------------------------


async def test_cancelled_callers_do_not_corrupt_the_batch(db: Database) -> None:
    tasks = [asyncio.create_task(db.write(insert_item(f"n{i}"))) for i in range(20)]
    await asyncio.sleep(0)  # every job is queued
    for task in tasks[::2]:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert await names(db) == [f"n{i}" for i in range(1, 20, 2)]  # cancelled before: skipped

    started, release = asyncio.Event(), asyncio.Event()

    async def slow(tx: Transaction) -> int:
        started.set()
        await release.wait()
        return await insert_item("slow")(tx)

    caller = asyncio.create_task(db.write(slow))
    await started.wait()
    caller.cancel()  # cancelled while its job runs: the job still runs and commits
    release.set()
    await db.write(insert_item("next"))
    assert (await names(db))[-2:] == ["slow", "next"]
    assert await db.integrity_check() == "ok"


async def test_close_finishes_pending_writes_then_refuses(backend: Backend) -> None:
    db = await backend.open()
    tasks = [asyncio.create_task(db.write(insert_item(f"n{i}"))) for i in range(50)]
    await asyncio.sleep(0)
    await db.close()
    assert all(isinstance(result, int) for result in await asyncio.gather(*tasks))
    with pytest.raises(StorageError, match="closed"):
        await db.write(insert_item("late"))
    with pytest.raises(StorageError, match="closed"):
        await db.fetchall("SELECT 1")
    await db.close()  # closing twice is harmless

    reopened = await backend.open()
    assert len(await names(reopened)) == 50
    await reopened.close()


async def test_a_cancelled_close_rolls_the_running_batch_back(backend: Backend) -> None:
    db = await backend.open()
    started = asyncio.Event()

    async def stuck(tx: Transaction) -> int:
        await tx.execute("INSERT INTO item (name) VALUES ('never')")
        started.set()
        await asyncio.Event().wait()
        return 0

    caller = asyncio.create_task(db.write(stuck))
    await started.wait()
    closing = asyncio.create_task(db.close())
    await asyncio.sleep(0)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    with pytest.raises(StorageError, match="outcome unknown"):
        await caller

    reopened = await backend.open()
    assert await names(reopened) == []
    assert await reopened.integrity_check() == "ok"
    await reopened.close()


# --- durability ---------------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from pathlib import Path
    from mla_node.storage.db import Database, Migration

    async def main() -> None:
        location, script = sys.argv[1], sys.argv[2]
        migrations = [Migration(1, script)]
        if location.startswith("postgresql://"):
            from mla_node.storage.pg_engine import PostgresEngine
            engine, version = await PostgresEngine.open(location, migrations)
            db = Database(engine, version)
        else:
            db = await Database.open(Path(location), migrations)
        await db.write(lambda tx: tx.execute("INSERT INTO item (name) VALUES ('durable')"))
        print("acked", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    asyncio.run(main())
    """
)


@pytest.mark.slow
async def test_an_acknowledged_write_survives_the_process_being_killed(backend: Backend) -> None:
    script = backend.migrations[0].sql
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        backend.location,
        script,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await asyncio.wait_for(child.communicate(), timeout=60)
    assert stdout == b"acked\n"
    assert child.returncode == -signal.SIGKILL

    db = await backend.open(backend.migrations[:1])
    assert await names(db) == ["durable"]
    assert await db.integrity_check() == "ok"
    await db.close()


async def test_database_files_are_private(tmp_path: Path) -> None:
    """The database holds forms in clear: the file and its WAL are 0600 whatever the umask."""
    old = os.umask(0o022)
    try:
        db = await Database.open(tmp_path / "node.db", [Migration(1, "CREATE TABLE t (x)")])
        await db.write(lambda tx: tx.execute("INSERT INTO t VALUES (1)"))
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir() if p.is_file()}
        await db.close()
    finally:
        os.umask(old)
    assert modes["node.db"] == 0o600
    assert all(mode == 0o600 for mode in modes.values()), modes
