"""Several workers on one PostgreSQL database (issue 9), against a real server.

Each ``Database`` here stands for one worker process: its own writer connection and reads. The
node's schema comes from the same numbered migrations as SQLite's, and these tests hold the
promises the workers rely on: one gap-free log whoever appends, outbox claims that never overlap,
and a dead writer's lock handed over at once.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mla_node.errors import StorageError
from mla_node.storage import repo
from mla_node.storage.db import SQLITE_MIGRATIONS, Database, Transaction, open_database
from mla_node.storage.engine import load_migrations
from tests import pgkit

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with pgkit.fresh_database() as database:
        yield database


@pytest.fixture
async def workers(url: str) -> AsyncIterator[tuple[Database, Database]]:
    first, second = await asyncio.gather(open_database(url), open_database(url))
    yield first, second
    await first.close()
    await second.close()


async def append(db: Database, n: int, tag: str) -> list[int]:
    async def one(i: int) -> int:
        async def job(tx: Transaction) -> int:
            return await repo.insert_evidence(
                tx,
                message_id=f"{tag}{i}",
                case_id="case",
                event="submitted",
                record=f"{tag}{i}".encode(),
                sha256=b"\0" * 32,
                at=i,
                leaf_hash=b"\1" * 32,
            )

        return await db.write(job)

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def test_two_workers_appending_at_once_make_one_log_without_holes(
    workers: tuple[Database, Database],
) -> None:
    a, b = workers
    seqs_a, seqs_b = await asyncio.gather(append(a, 300, "a"), append(b, 300, "b"))
    assert sorted(seqs_a + seqs_b) == list(range(1, 601))
    assert len(await repo.log_leaf_hashes(a)) == 600  # raises on a hole
    rows = await b.fetchall("SELECT seq, message_id FROM evidence ORDER BY seq")
    assert {r[1][0] for r in rows} == {"a", "b"}  # both really wrote, interleaved
    assert a.commits + b.commits < 600  # group commit still groups, worker by worker


async def queue(db: Database, peer: str, n: int, now: int) -> list[str]:
    ids = [f"01J{peer}{i:05d}" for i in range(n)]

    async def job(tx: Transaction) -> None:
        for message_id in ids:
            await tx.execute(
                "INSERT INTO messages (id, direction, sender, recipient, case_id, form_type, "
                "form_version, form, status, envelope, envelope_sha256, created_at, updated_at) "
                "VALUES (?, 'out', 'AR', ?, 'case', 'mla_request', 1, '{}', 'queued', ?, ?, ?, ?)",
                (message_id, peer, b"env", b"\0" * 32, now, now),
            )
            await repo.enqueue(tx, message_id, peer, now, deadline_at=now + 10**9, warn_at=None)

    await db.write(job)
    return ids


async def test_outbox_claims_never_overlap_and_a_dead_workers_claims_lapse(
    workers: tuple[Database, Database],
) -> None:
    a, b = workers
    now = 1_000_000
    ids = await queue(a, "BR", 40, now)

    async def claim(db: Database, worker: str, at: int) -> list[str]:
        items = await db.write(lambda tx: repo.claim_due(tx, "BR", at, 16, worker, at + 15_000))
        return [item.message_id for item in items]

    workers_ = [(a, "w1"), (b, "w2"), (a, "w3"), (b, "w4"), (a, "w5"), (b, "w6")]
    rounds = await asyncio.gather(*(claim(db, w, now) for db, w in workers_))
    claimed = [m for r in rounds for m in r]
    assert len(claimed) == len(set(claimed)) == 40  # each envelope claimed once, all claimed
    # A worker may take its own claims again (which workers got some depends on the order
    # their writes ran in).
    (db, holder), held = next((w, r) for w, r in zip(workers_, rounds, strict=True) if r)
    assert sorted(await claim(db, holder, now)) == sorted(held)
    assert await claim(b, "w7", now + 14_999) == []  # the claims hold until they lapse
    taken_over = await claim(b, "w7", now + 15_000)  # the others died: after the lease, w7's
    assert len(taken_over) == 16
    assert await repo.due_for_peer(a, "BR", now + 15_000, 100, "w7") != []
    # The sender's view of when to look again counts the lease, so it does not spin on it.
    summary = await repo.outbox_summary(a)
    assert summary["BR"][0] == len(ids)
    assert summary["BR"][2] == now + 15_000


HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from mla_node.storage.db import open_database

    async def main() -> None:
        db = await open_database(sys.argv[1])

        async def job(tx) -> None:
            await tx.execute("INSERT INTO legal_holds (case_id, set_by, set_at) "
                             "VALUES ('never-committed', 'w1', 1)")
            print("holding", flush=True)
            await asyncio.Event().wait()

        await db.write(job)

    asyncio.run(main())
    """
)


@pytest.mark.slow
async def test_a_writer_killed_mid_transaction_hands_the_lock_over_at_once(url: str) -> None:
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, url, cwd=REPO, stdout=asyncio.subprocess.PIPE
    )
    assert holder.stdout is not None
    line = await asyncio.wait_for(holder.stdout.readline(), timeout=60)
    assert line == b"holding\n"
    db = await open_database(url)
    try:
        blocked = asyncio.create_task(append(db, 1, "next"))
        await asyncio.sleep(0.5)
        assert not blocked.done()  # the dead-to-be writer holds the write lock
        holder.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        await holder.wait()
        assert await asyncio.wait_for(blocked, timeout=5) == [1]
        handover = time.monotonic() - killed
        assert handover < 5, handover
        assert await db.fetchall("SELECT * FROM legal_holds") == []  # its batch was rolled back
    finally:
        await db.close()


async def test_both_servers_get_the_same_schema(url: str, tmp_path: Path) -> None:
    """The migrations are written once, for SQLite; PostgreSQL takes them translated."""
    db = await open_database(url)
    try:
        rows = await db.fetchall(
            "SELECT table_name, column_name, is_nullable FROM information_schema.columns "
            "WHERE table_schema = 'public'"
        )
        assert db.schema_version == len(load_migrations(SQLITE_MIGRATIONS))
    finally:
        await db.close()
    postgres = {(r[0], r[1], r[2] == "NO") for r in rows}

    sqlite_db = await open_database(tmp_path / "node.db")
    await sqlite_db.close()
    conn = sqlite3.connect(tmp_path / "node.db")
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        sqlite_columns = {
            (table, c[1], bool(c[3]) or bool(c[5]))  # a primary key is NOT NULL
            for table in tables
            if table != "sqlite_sequence"
            for c in conn.execute(f"PRAGMA table_info({table})")
        }
    finally:
        conn.close()
    assert postgres == sqlite_columns


@pytest.mark.slow
async def test_after_a_server_restart_the_writer_connects_again(url: str) -> None:
    """A fail-over seen from a worker: the write in flight fails whole, the next one succeeds."""
    db = await open_database(url)
    try:
        await append(db, 1, "before")
        restart = ["bash", str(REPO / "scripts" / "postgres.sh")]
        await asyncio.to_thread(subprocess.run, [*restart, "stop"], check=True)
        await asyncio.to_thread(subprocess.run, [*restart, "start"], check=True, stdout=-1)
        outcomes = []
        for attempt in range(3):
            try:
                outcomes.append(await append(db, 1, f"after{attempt}"))
            except StorageError:
                outcomes.append([])
        assert outcomes[0] == [] or outcomes[0] == [2]  # the first may find the link dead
        assert outcomes[-1] != []  # by then the writer has connected again
        assert len(await repo.log_leaf_hashes(db)) == 1 + sum(len(o) for o in outcomes)
    finally:
        await db.close()
