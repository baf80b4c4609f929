"""``mla-node db port``: a node's SQLite database with real traffic, moved to a real PostgreSQL
database, verified, and usable there; and every refusal (issue 9, Moving over)."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from mla_node import auditor, backup, dbport
from mla_node.cli import cli
from mla_node.config import load_config
from mla_node.protocol import forms
from mla_node.protocol.auditlog import Entry
from mla_node.protocol.evidence import peek_evidence
from mla_node.service import audit_log, cases
from mla_node.storage import repo, witness_repo
from mla_node.storage.db import Transaction, open_database
from mla_node.storage.node_lock import NodeLock
from tests import pgkit
from tests.service.memnet import CLERK, memory_network, settle, submit


@dataclass(frozen=True)
class Traffic:
    config: Path
    messages: list[str]  # every message id the node holds


async def _traffic(folder: Path) -> Traffic:
    """AR after real traffic both ways, a signed checkpoint and a split view on record."""
    async with memory_network(folder, backend="sqlite") as (nodes, _down):
        ar, br = nodes["AR"], nodes["BR"]
        await submit(ar, "BR", 4)
        await submit(br, "AR", 2)
        await cases.submit(  # an idempotency row too
            ar.ctx,
            CLERK,
            {"type": "mla_request", "to": "BR", "form": forms.example("mla_request")},
            "port-1",
        )
        await settle(nodes)
        await audit_log.checkpoint(ar.ctx)
        head = await repo.latest_checkpoint(ar.ctx.db)
        assert head is not None

        async def split(tx: Transaction) -> int | None:
            return await witness_repo.insert_split_view(
                tx,
                peer="BR",
                reason="test",
                stored_head=head.checkpoint,
                stored_sha256=hashlib.sha256(head.checkpoint).digest(),
                shown_head=head.checkpoint,
                proof=None,
                detected_at=head.at,
            )

        assert await ar.ctx.db.write(split) == 1
        rows = await ar.ctx.db.fetchall("SELECT id FROM messages ORDER BY id")
        return Traffic(ar.ctx.config.base_dir / "config.toml", [r[0] for r in rows])


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Traffic:
    return asyncio.run(_traffic(tmp_path_factory.mktemp("net")))


@contextmanager
def fresh_url() -> Iterator[str]:
    """A fresh PostgreSQL database, for a test that runs the command (which runs its own loop):
    pgkit.fresh_database, held open across loops in a thread of its own."""
    url: list[str] = []
    done = threading.Event()
    entered = threading.Event()

    async def hold() -> None:
        async with pgkit.fresh_database("mla_port") as created:
            url.append(created)
            entered.set()
            await asyncio.to_thread(done.wait)

    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(hold())
        except BaseException as exc:  # handed to the test (a skip too)
            errors.append(exc)
            entered.set()

    thread = threading.Thread(target=run)
    thread.start()
    entered.wait()
    try:
        if errors:
            raise errors[0]
        yield url[0]
    finally:
        done.set()
        thread.join()


def _port(config: Path, url: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["db", "port", "--config", str(config), "--to", url])
    return result.exit_code, result.output


def _sqlite_counts(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' AND name != 'schema_migrations'"
            )
        ]
        return {n: conn.execute(f'SELECT COUNT(*) FROM "{n}"').fetchone()[0] for n in names}  # noqa: S608
    finally:
        conn.close()


async def _check_on_postgres(url: str, traffic: Traffic, counts: dict[str, int]) -> None:
    config = load_config(traffic.config)
    db = await open_database(url)
    try:
        for table, n in counts.items():
            row = await db.fetchone(f'SELECT COUNT(*) FROM "{table}"')  # noqa: S608
            assert row[0] == n, table
        rows = await db.fetchall("SELECT id FROM messages ORDER BY id")
        assert [r[0] for r in rows] == traffic.messages
        for message_id in traffic.messages:
            message = await repo.get_message(db, message_id)
            assert message is not None and message.status in ("delivered", "received")
        # The log as PostgreSQL holds it passes the auditor's verification.
        records = await db.fetchall("SELECT seq, record FROM evidence ORDER BY seq")
        heads = [
            r[0] for r in await db.fetchall("SELECT checkpoint FROM checkpoints ORDER BY size")
        ]
        log = auditor.NodeLog("AR", [Entry(r[0], r[1]) for r in records], heads)
        directory = backup.node_directory(config, config.database_path)
        report = auditor.verify(log, directory, node="AR")
        assert report.first_bad is None
        assert report.entries == len(records) > 0
        assert report.checkpoints

        # The sequences were advanced: new rows through the node's own functions go in.
        head = await repo.latest_checkpoint(db)
        assert head is not None

        async def split(tx: Transaction) -> int | None:
            return await witness_repo.insert_split_view(
                tx,
                peer="US",
                reason="after the port",
                stored_head=head.checkpoint,
                stored_sha256=hashlib.sha256(b"another" + head.checkpoint).digest(),
                shown_head=head.checkpoint,
                proof=None,
                detected_at=head.at,
            )

        assert await db.write(split) == 2
        last = records[-1][1]
        fields = peek_evidence(last)

        async def evidence(tx: Transaction) -> int:
            return await repo.insert_evidence(
                tx,
                message_id=fields.message_id,
                case_id=fields.case_id,
                event=fields.event,
                record=last,
                sha256=hashlib.sha256(last).digest(),
                at=fields.at,
                leaf_hash=b"\x00" * 32,
            )

        assert await db.write(evidence) == len(records) + 1
    finally:
        await db.close()


def test_port_copies_verifies_and_the_node_runs_on_it(traffic: Traffic) -> None:
    config = load_config(traffic.config)
    counts = _sqlite_counts(config.database_path)
    assert counts["messages"] == len(traffic.messages) == 7
    assert counts["idempotency"] == 1
    assert counts["split_views"] == 1 and counts["checkpoints"] >= 1
    with fresh_url() as url:
        code, output = _port(traffic.config, url)
        assert code == 0, output
        for table, n in counts.items():
            assert any(line.split() == [table, str(n), str(n)] for line in output.splitlines()), (
                table,
                output,
            )
        assert "Log verified on PostgreSQL" in output
        assert "the same as in SQLite" in output
        assert "split_views.id" in output and "evidence.seq" in output
        assert f'  database = "{url}"' in output.splitlines()
        # The config file is left alone.
        assert 'database = "postgresql' not in traffic.config.read_text()

        asyncio.run(_check_on_postgres(url, traffic, counts))

        # A second port into the same, now non-empty database is refused, and changes nothing.
        code, again = _port(traffic.config, url)
        assert code == 2, again
        assert "--to" in again and "already holds node data" in again
        after = _sqlite_counts(config.database_path)
        assert after == counts


def test_a_failed_copy_leaves_the_target_empty(traffic: Traffic, tmp_path: Path) -> None:
    copy = tmp_path / "AR"
    shutil.copytree(traffic.config.parent, copy)
    config = load_config(copy / "config.toml")
    conn = sqlite3.connect(config.database_path)  # foreign keys off: an orphan row gets in
    with conn:
        conn.execute(
            "INSERT INTO receipts SELECT 'no-such-message', role, status, code, receipt, "
            "receipt_sha256, at FROM receipts LIMIT 1"
        )
    conn.close()
    with fresh_url() as url:
        code, output = _port(copy / "config.toml", url)
        assert code == 2, output
        assert "storage_error" in output and "foreign key" in output

        async def rows() -> int:
            db = await open_database(url)
            try:
                found = 0
                for table in _sqlite_counts(config.database_path):
                    row = await db.fetchone(f'SELECT COUNT(*) FROM "{table}"')  # noqa: S608
                    found += row[0]
                return found
            finally:
                await db.close()

        assert asyncio.run(rows()) == 0
        # Once the file is put right, the same target takes the port.
        conn = sqlite3.connect(config.database_path)
        with conn:
            conn.execute("DELETE FROM receipts WHERE message_id = 'no-such-message'")
        conn.close()
        code, output = _port(copy / "config.toml", url)
        assert code == 0, output


def test_a_target_that_is_not_postgresql_is_refused_naming_to(traffic: Traffic) -> None:
    code, output = _port(traffic.config, "sqlite:///tmp/other.db")
    assert code == 2
    assert "--to must be a PostgreSQL URL" in output


def test_a_running_node_is_refused(traffic: Traffic) -> None:
    config = load_config(traffic.config)
    lock = NodeLock.acquire(config.database_path)
    try:
        # Refused before any connection: no server needed.
        code, output = _port(traffic.config, "postgresql://nobody@127.0.0.1:1/none")
    finally:
        lock.release()
    assert code == 2
    assert "database_in_use" in output and "node.database" in output and "stop it" in output


def test_a_database_newer_than_the_program_is_refused(traffic: Traffic, tmp_path: Path) -> None:
    copy = tmp_path / "AR"
    shutil.copytree(traffic.config.parent, copy)
    config = load_config(copy / "config.toml")
    conn = sqlite3.connect(config.database_path)
    with conn:
        conn.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (999, 'x')")
    conn.close()
    code, output = _port(copy / "config.toml", "postgresql://nobody@127.0.0.1:1/none")
    assert code == 2
    assert "database_too_new" in output and "999" in output


def test_tables_are_copied_parents_first() -> None:
    order = dbport._parents_first(
        {"outbox": {"messages"}, "messages": set(), "attachments": {"messages", "attachments"}}
    )
    assert order == ["messages", "attachments", "outbox"]


def test_the_files_line_keeps_the_evidence_files_where_they_are(traffic: Traffic) -> None:
    config = load_config(traffic.config)
    assert dbport.files_line(config) is None  # node.db beside config.toml: the same folder
    elsewhere = config.node.model_copy(update={"database": "/var/lib/mla/node.db"})
    moved = config.model_copy(update={"node": elsewhere})
    assert dbport.files_line(moved) == 'files = "/var/lib/mla"'
    kept = moved.model_copy(update={"node": elsewhere.model_copy(update={"files": "/srv/f"})})
    assert dbport.files_line(kept) is None


async def test_many_small_batches_in_one_transaction(traffic: Traffic) -> None:
    config = load_config(traffic.config)
    async with pgkit.fresh_database("mla_port") as url:
        report = await dbport.port(config, url, batch_rows=2)
    assert report.ok, report
    assert {t.table: t.target_rows for t in report.tables} == _sqlite_counts(config.database_path)
    assert report.target_checkpoint is not None
