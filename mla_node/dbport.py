"""``mla-node db port``: move a stopped node from its SQLite file to an empty PostgreSQL database.

The copy is one transaction on PostgreSQL: the target is migrated to the program's schema first
(storage/db.py ``open_database``), then every table of the node's schema is copied in a single
write job, parents before children (foreign keys, from ``PRAGMA foreign_key_list``), in
multi-row INSERTs of up to ``BATCH_ROWS`` rows read from the SQLite file as they go. A failure
anywhere rolls the whole copy back, so the target is left as it was: migrated and empty, ready
for another try. A node's database is at most a few GB of rows; PostgreSQL takes a transaction of
that size without trouble, and the source is read as it is written, so memory stays one batch.

Identity columns (``INTEGER PRIMARY KEY`` in the SQLite migrations) are copied with their values,
so their sequences are moved past the largest copied value afterwards; otherwise the next insert
would collide with a copied row. Then the copy is checked: row counts table by table, and the
evidence log read back from PostgreSQL verified as ``mla-node audit verify`` does (every
signature, the tree, every checkpoint), with the newest checkpoint equal to the SQLite one.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mla_node import auditor, backup
from mla_node.config import NodeConfig
from mla_node.errors import (
    ClientError,
    ConfigError,
    DatabaseInUse,
    DatabaseNewerThanProgram,
    StorageError,
)
from mla_node.protocol.auditlog import Entry, LogReport
from mla_node.storage import pg_engine
from mla_node.storage.db import SQLITE_MIGRATIONS, Database, Transaction, open_database
from mla_node.storage.engine import load_migrations
from mla_node.storage.node_lock import NodeLock

_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
BATCH_ROWS = 500
MAX_PARAMS = 30_000
MAX_STATEMENT_BYTES = (
    8 << 20
)  # big bodies: fewer rows a statement  # PostgreSQL takes at most 32,767 parameters a statement
NOT_COPIED = ("schema_migrations",)  # each side keeps its own record of its migrations


@dataclass(frozen=True)
class TableCopy:
    table: str
    source_rows: int
    target_rows: int

    @property
    def ok(self) -> bool:
        return self.source_rows == self.target_rows


@dataclass(frozen=True)
class PortReport:
    source: Path
    target: str  # redacted
    tables: list[TableCopy]
    sequences: list[str]  # "table.column" whose identity sequence was advanced
    log: LogReport
    source_checkpoint: tuple[int, bytes] | None  # (size, root) of the newest checkpoint
    target_checkpoint: tuple[int, bytes] | None
    copy_seconds: float
    verify_seconds: float

    @property
    def counts_ok(self) -> bool:
        return all(t.ok for t in self.tables)

    @property
    def ok(self) -> bool:
        return (
            self.counts_ok
            and self.log.first_bad is None
            and self.source_checkpoint == self.target_checkpoint
        )


async def port(config: NodeConfig, url: str, *, batch_rows: int = BATCH_ROWS) -> PortReport:
    """Copy the node's SQLite database into the empty PostgreSQL database ``url``, then verify."""
    if not pg_engine.is_postgres_url(url):
        raise ClientError(
            f"--to must be a PostgreSQL URL (postgresql://USER@HOST:PORT/DBNAME), not {url!r}",
            field="--to",
        )
    if config.database_url is not None:
        raise ConfigError(
            "node.database is already a PostgreSQL URL; db port copies a node's SQLite file",
            field="node.database",
        )
    path = config.database_path
    if not path.is_file():
        raise ClientError(f"node.database: no database at {path}", field="node.database")
    try:
        # Held for the whole port: a node started meanwhile would write what is not copied.
        lock = NodeLock.acquire(path)
    except DatabaseInUse:
        raise DatabaseInUse(
            f"node.database: a node is running on {path}; stop it (every process of it) first",
            field="node.database",
        ) from None
    try:
        return await _port(config, path, url, batch_rows)
    finally:
        lock.release()


async def _port(config: NodeConfig, path: Path, url: str, batch_rows: int) -> PortReport:
    source = _open_source(path)
    try:
        _check_source_version(source, path)
        directory = backup.node_directory(config, path)  # before the copy: fail early
        started = time.perf_counter()
        target = await open_database(url)
        try:
            tables = await _plan(source, target, url)
            sequences = await target.write(lambda tx: _copy(tx, source, tables, url, batch_rows))
            copy_seconds = time.perf_counter() - started
            started = time.perf_counter()
            counts = [
                TableCopy(t.name, _count_source(source, t.name), await _count_target(target, t))
                for t in tables
            ]
            log = await _target_log(target)
            target_head = await _newest_checkpoint_target(target)
        finally:
            await target.close()
        report = auditor.verify(log, directory, node=config.node.state)
        source_head = _newest_checkpoint_source(source)
        return PortReport(
            source=path,
            target=pg_engine.redacted(url),
            tables=counts,
            sequences=sequences,
            log=report,
            source_checkpoint=source_head,
            target_checkpoint=target_head,
            copy_seconds=copy_seconds,
            verify_seconds=time.perf_counter() - started,
        )
    finally:
        source.close()


# --- the source --------------------------------------------------------------------------------


def _open_source(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        conn.isolation_level = None
        conn.execute("BEGIN")  # one snapshot for the copy and the counts after it
    except sqlite3.Error as exc:
        raise StorageError(f"node.database: cannot open {path}: {exc}") from exc
    return conn


def _source(conn: sqlite3.Connection, sql: str, params: Sequence[object] = ()) -> list[Any]:
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.Error as exc:
        raise StorageError(f"node.database is not a node database: {exc}") from exc


def _check_source_version(conn: sqlite3.Connection, path: Path) -> None:
    applied = {int(r[0]) for r in _source(conn, "SELECT version FROM schema_migrations")}
    known = len(load_migrations(SQLITE_MIGRATIONS))
    newest = max(applied, default=0)
    if newest > known:
        raise DatabaseNewerThanProgram(
            f"node.database ({path}) has schema version {newest}; this program knows versions up "
            f"to {known}: port it with the mla_node that wrote it",
            extra={"database_version": newest, "program_version": known},
        )
    if applied != set(range(1, known + 1)):
        raise StorageError(
            f"node.database ({path}) has schema version {newest} of {known}: start the node on "
            "it once with this program (it migrates the file at start), stop it, then port it"
        )


def _count_source(conn: sqlite3.Connection, table: str) -> int:
    return int(_source(conn, f"SELECT COUNT(*) FROM {_name(table)}")[0][0])  # noqa: S608


def _newest_checkpoint_source(conn: sqlite3.Connection) -> tuple[int, bytes] | None:
    rows = _source(conn, "SELECT size, root FROM checkpoints ORDER BY size DESC LIMIT 1")
    return (int(rows[0][0]), bytes(rows[0][1])) if rows else None


# --- what to copy ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Table:
    name: str
    columns: list[str]
    identity: list[str]  # the target's identity columns


async def _plan(source: sqlite3.Connection, target: Database, url: str) -> list[_Table]:
    """The node's tables, parents first, with the columns both sides have; any difference
    between the two schemas is an error (the program migrated both to the same version)."""
    names = sorted(
        r[0]
        for r in _source(
            source,
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        )
        if r[0] not in NOT_COPIED
    )
    rows = await target.fetchall(
        "SELECT table_name, column_name, is_identity FROM information_schema.columns "
        "WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
    )
    target_columns: dict[str, list[str]] = {}
    identity: dict[str, list[str]] = {}
    for table, column, is_identity in rows:
        target_columns.setdefault(table, []).append(column)
        if is_identity == "YES":
            identity.setdefault(table, []).append(column)
    missing = [n for n in names if n not in target_columns]
    extra = sorted(set(target_columns) - set(names) - set(NOT_COPIED))
    if missing or extra:
        raise StorageError(
            f"the schemas differ: only in node.database: {missing or 'none'}; only in "
            f"{pg_engine.redacted(url)}: {extra or 'none'}"
        )
    parents: dict[str, set[str]] = {}
    tables: dict[str, _Table] = {}
    for name in names:
        columns = [r[1] for r in _source(source, f"PRAGMA table_info({_name(name)})")]
        if set(columns) != set(target_columns[name]):
            only_source = sorted(set(columns) - set(target_columns[name]))
            only_target = sorted(set(target_columns[name]) - set(columns))
            raise StorageError(
                f"table {name} differs: columns only in node.database: {only_source or 'none'}; "
                f"only in {pg_engine.redacted(url)}: {only_target or 'none'}"
            )
        tables[name] = _Table(name, columns, identity.get(name, []))
        refs = {r[2] for r in _source(source, f"PRAGMA foreign_key_list({_name(name)})")}
        parents[name] = {r for r in refs if r != name}
    return [tables[n] for n in _parents_first(parents)]


def _name(name: str) -> str:
    """A table or column name of the node's schema, quoted. The names come from the two
    databases' own catalogues; anything but the schema's plain names is refused, so they are safe
    to put in the SQL text (which the queries below do, marked S608)."""
    if not _NAME.match(name):
        raise StorageError(f"node.database has a table or column named {name!r}: not a node's")
    return f'"{name}"'


def _parents_first(parents: dict[str, set[str]]) -> list[str]:
    """Topological order (ties by name, for a stable report); a cycle is an error."""
    order: list[str] = []
    left = {name: (refs & set(parents)) - {name} for name, refs in parents.items()}
    while left:
        ready = sorted(name for name, refs in left.items() if refs <= set(order))
        if not ready:
            raise StorageError(f"the foreign keys of {sorted(left)} form a cycle")
        order += ready
        for name in ready:
            del left[name]
    return order


# --- the copy ------------------------------------------------------------------------------------


async def _copy(
    tx: Transaction,
    source: sqlite3.Connection,
    tables: list[_Table],
    url: str,
    batch_rows: int,
) -> list[str]:
    """Every table into the target, in this one transaction; the identity sequences advanced."""
    # Checked here, under the target's write lock: no worker can write between check and copy.
    held = []
    for table in tables:
        if await tx.fetchone(f"SELECT 1 FROM {_name(table.name)} LIMIT 1") is not None:  # noqa: S608
            held.append(table.name)
    if held:
        raise ClientError(
            f"--to: {pg_engine.redacted(url)} already holds node data (in {', '.join(held)}); "
            "port into an empty database (drop and create it again, or give another)",
            field="--to",
        )
    for table in tables:
        await _copy_table(tx, source, table, batch_rows)
    advanced = []
    for table in tables:
        for column in table.identity:
            top = f"MAX({_name(column)})"
            await tx.fetchone(
                f"SELECT setval(pg_get_serial_sequence(?, ?), {top}) "  # noqa: S608
                f"FROM {_name(table.name)} HAVING {top} IS NOT NULL",
                (table.name, column),
            )
            advanced.append(f"{table.name}.{column}")
    return advanced


async def _copy_table(
    tx: Transaction, source: sqlite3.Connection, table: _Table, batch_rows: int
) -> None:
    columns = ", ".join(_name(c) for c in table.columns)
    into = _name(table.name)
    per_statement = max(1, min(batch_rows, MAX_PARAMS // len(table.columns)))
    try:
        cursor = source.execute(f"SELECT {columns} FROM {into}")  # noqa: S608
        rows: list[Sequence[object]] = []
        size = 0
        for row in cursor:
            rows.append(row)
            size += sum(len(v) for v in row if isinstance(v, (bytes, str)))
            if len(rows) >= per_statement or size >= MAX_STATEMENT_BYTES:
                await _insert(tx, into, columns, rows)
                rows, size = [], 0
        if rows:
            await _insert(tx, into, columns, rows)
    except sqlite3.Error as exc:
        raise StorageError(f"reading table {table.name} of node.database failed: {exc}") from exc


async def _insert(tx: Transaction, into: str, columns: str, rows: list[Sequence[object]]) -> None:
    row_sql = "(" + ", ".join("?" * len(rows[0])) + ")"
    values = ", ".join([row_sql] * len(rows))
    params = [value for row in rows for value in row]
    await tx.execute(f"INSERT INTO {into} ({columns}) VALUES {values}", params)  # noqa: S608


# --- the check -----------------------------------------------------------------------------------


async def _count_target(target: Database, table: _Table) -> int:
    row = await target.fetchone(f"SELECT COUNT(*) FROM {_name(table.name)}")  # noqa: S608
    return int(row[0])


async def _target_log(target: Database) -> auditor.NodeLog:
    """The evidence log as PostgreSQL holds it, as ``auditor.read_database`` reads a file."""
    rows = await target.fetchall("SELECT seq, record FROM evidence ORDER BY seq")
    heads = [
        bytes(r[0])
        for r in await target.fetchall("SELECT checkpoint FROM checkpoints ORDER BY size")
    ]
    return auditor.NodeLog(
        auditor.log_owner(heads), [Entry(int(r[0]), bytes(r[1])) for r in rows], heads
    )


async def _newest_checkpoint_target(target: Database) -> tuple[int, bytes] | None:
    row = await target.fetchone("SELECT size, root FROM checkpoints ORDER BY size DESC LIMIT 1")
    return (int(row[0]), bytes(row[1])) if row else None


def files_line(config: NodeConfig) -> str | None:
    """The ``files`` line the config needs after the move, when its default would change: with
    a SQLite file the evidence files sit beside it, with PostgreSQL beside the config."""
    if config.node.files:
        return None
    here = config.database_path.parent
    if here.resolve() == config.base_dir.resolve():
        return None
    return f'files = "{here.resolve()}"'
