"""Backups of a node's database, their restore, and the database check (``mla-node backup``,
``restore``, ``db check``; docs/deployment.md, Backups).

**Online and consistent.** :func:`backup` opens its own read-only connection and copies the
database with SQLite's online backup API in a single step: one read transaction, so the copy is
the committed state at one instant (the backup point), WAL frames included, while the node goes
on writing beside it (in WAL mode a reader never blocks the writer). The copy is a single
self-contained file (journal mode DELETE, no ``-wal`` to carry along), written 0600 under a
temporary name, checked (``PRAGMA integrity_check``), synced, then renamed into place.

**The keys are not in it, on purpose.** A database backup is taken often and kept in many
places; the private keys change only at a rotation and belong in a more guarded store. Back up
``keys/`` (with ``keys/retired/``) separately at each rotation, and the ``blobs/`` folder (the
encrypted evidence files, immutable and named by digest) after the database: every file the
backup names exists by then.

**Restore** refuses while a node runs on the database (``<database>.lock``), keeps the file it
replaces (with its ``-wal``) as ``<database>.before-restore-<time>``, and ends by verifying the
restored node's evidence log with the directory and trust root of its config, as ``mla-node
audit verify --db`` does.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from mla_node import auditor
from mla_node.config import NodeConfig
from mla_node.errors import (
    BackupInvalid,
    ClientError,
    DatabaseNewerThanProgram,
    MlaError,
    StorageError,
)
from mla_node.protocol.auditlog import LogReport
from mla_node.protocol.directory import Directory, TrustRoot, verify_directory
from mla_node.storage.db import load_migrations
from mla_node.storage.node_lock import NodeLock

MIGRATIONS = "mla_node.storage.migrations"  # as runtime.MIGRATIONS (runtime imports the API)
_SIDE_FILES = ("-wal", "-shm")


@dataclass(frozen=True)
class DatabaseFacts:
    """What a database holds at its snapshot: enough to tell a backup point."""

    schema_version: int
    messages: int
    evidence: int  # records in the evidence log
    integrity: str  # "ok", or what PRAGMA integrity_check found


@dataclass(frozen=True)
class BackupReport:
    path: Path
    size: int
    seconds: float
    facts: DatabaseFacts


def _connect_ro(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise ClientError(f"no database at {path}")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open {path}: {exc}") from exc
    return conn


def _facts(conn: sqlite3.Connection) -> DatabaseFacts:
    integrity = "\n".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check"))
    version = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] or 0
    messages = conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    evidence = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM evidence").fetchone()[0]
    return DatabaseFacts(int(version), int(messages), int(evidence), integrity)


def _fsync(path: Path) -> None:
    """A file's bytes, or a folder's entries (a rename), to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy(source: sqlite3.Connection, target: Path, journal_mode: str) -> DatabaseFacts:
    """Copy ``source`` (one consistent snapshot) into the new file ``target`` (0600), synced."""
    # 0600 before SQLite creates it: the database holds the forms in clear.
    os.close(os.open(target, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    dest = sqlite3.connect(target)
    try:
        # pages=-1: the whole database in one step, under one read transaction of the source;
        # copied in several steps, a write by the node in between would restart the copy.
        source.backup(dest, pages=-1)
        dest.execute(f"PRAGMA journal_mode={journal_mode}")
        facts = _facts(dest)
    finally:
        dest.close()
    _fsync(target)
    return facts


def backup(database: Path, output: Path) -> BackupReport:
    """Write an online, consistent copy of ``database`` to the new file ``output``."""
    if output.exists():
        raise ClientError(f"{output} exists; give the name of a new file")
    started = time.perf_counter()
    partial = output.with_name(f".{output.name}.partial")
    partial.unlink(missing_ok=True)  # left by an interrupted backup
    source = _connect_ro(database)
    try:
        facts = _copy(source, partial, "DELETE")
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise StorageError(f"the backup of {database} failed: {exc}") from exc
    finally:
        source.close()
    if facts.integrity != "ok":
        partial.unlink(missing_ok=True)
        raise StorageError(f"the copy of {database} fails its integrity check: {facts.integrity}")
    partial.replace(output)
    _fsync(output.parent)
    return BackupReport(output, output.stat().st_size, time.perf_counter() - started, facts)


# --- restore ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreReport:
    facts: DatabaseFacts
    kept: Path | None  # where the replaced database went
    log: LogReport


def inspect_backup(path: Path) -> DatabaseFacts:
    """A backup's facts; BackupInvalid unless it is a sound node database this program reads."""
    conn = _connect_ro(path)
    try:
        facts = _facts(conn)
    except sqlite3.Error as exc:
        raise BackupInvalid(f"{path} is not a node database: {exc}") from exc
    finally:
        conn.close()
    if facts.integrity != "ok":
        raise BackupInvalid(f"{path} fails its integrity check: {facts.integrity}")
    known = len(load_migrations(MIGRATIONS))
    if facts.schema_version > known:
        raise BackupInvalid(
            f"{path} has schema version {facts.schema_version}; this program knows up to {known}"
        )
    return facts


def restore(backup_file: Path, config: NodeConfig, *, now: dt.datetime) -> RestoreReport:
    """Replace the node's database with ``backup_file``; the node must be stopped."""
    target = config.database_path
    lock = NodeLock.acquire(target)  # held throughout: no node may start meanwhile
    try:
        facts = inspect_backup(backup_file)
        kept = _set_aside(target, now) if target.exists() else None
        partial = target.with_name(f".{target.name}.restoring")
        partial.unlink(missing_ok=True)
        source = _connect_ro(backup_file)
        try:
            _copy(source, partial, "WAL")
        except sqlite3.Error as exc:
            partial.unlink(missing_ok=True)
            raise StorageError(f"the restore from {backup_file} failed: {exc}") from exc
        finally:
            source.close()
        partial.replace(target)
        _fsync(target.parent)
    finally:
        lock.release()
    return RestoreReport(facts, kept, verify_node_log(config))


def _set_aside(target: Path, now: dt.datetime) -> Path:
    """Move the database and its -wal and -shm aside together: a -wal left beside the restored
    file would be replayed into it."""
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    kept = target.with_name(f"{target.name}.before-restore-{stamp}")
    for suffix in ("", *_SIDE_FILES):
        old = target.with_name(target.name + suffix)
        if old.exists():
            old.replace(kept.with_name(kept.name + suffix))
    return kept


# --- the node's own log and the database check --------------------------------------------------


def node_directory(config: NodeConfig, database: Path) -> Directory:
    """The directory to verify the node's records against: its keys.directory file, else the
    one its database accepted last. Expiry is not checked (now=0): old records stay checkable."""
    trust = TrustRoot.from_json(_read(config.trust_root_path))
    if config.directory_path.is_file():
        return verify_directory(_read(config.directory_path), trust, now=0)
    conn = _connect_ro(database)
    try:
        row = conn.execute("SELECT directory FROM directory_state WHERE id = 1").fetchone()
    finally:
        conn.close()
    if row is None:
        raise ClientError(f"no directory: neither {config.directory_path} nor one in {database}")
    return verify_directory(bytes(row[0]), trust, now=0)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ClientError(f"cannot read {path}: {exc.strerror}") from exc


def verify_node_log(config: NodeConfig, database: Path | None = None) -> LogReport:
    """Verify the node's whole evidence log, as ``mla-node audit verify --db`` does."""
    path = database or config.database_path
    directory = node_directory(config, path)
    return auditor.verify(auditor.read_database(path), directory, node=config.node.state)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def check_database(config: NodeConfig) -> list[Check]:
    """``mla-node db check``: integrity, migrations, the evidence log. A database newer than this
    program raises DatabaseNewerThanProgram (exit 2), as the node itself would at start."""
    path = config.database_path
    conn = _connect_ro(path)
    try:
        facts = _facts(conn)
        applied = {int(r[0]) for r in conn.execute("SELECT version FROM schema_migrations")}
    except sqlite3.Error as exc:
        raise StorageError(f"{path} is not a node database: {exc}") from exc
    finally:
        conn.close()
    known = len(load_migrations(MIGRATIONS))
    if max(applied, default=0) > known:
        raise DatabaseNewerThanProgram(
            f"the database has schema version {max(applied)}; this program knows versions up "
            f"to {known}",
            extra={"database_version": max(applied), "program_version": known},
        )
    pending = sorted(set(range(1, known + 1)) - applied)
    checks = [
        Check("integrity", facts.integrity == "ok", facts.integrity.splitlines()[0]),
        Check(
            "migrations",
            True,
            f"version {facts.schema_version} of {known}"
            + (f"; {len(pending)} to apply at the next start" if pending else ", all applied"),
        ),
    ]
    try:
        report = verify_node_log(config)
    except MlaError as exc:
        checks.append(Check("evidence log", False, f"{exc.code}: {exc.detail}"))
    else:
        bad = report.first_bad
        detail = (
            f"{report.entries} records, {len(report.checkpoints)} checkpoints verified"
            if bad is None
            else str(bad)
        )
        checks.append(Check("evidence log", bad is None, detail))
    return checks
