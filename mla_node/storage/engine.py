"""What the storage engine needs of a database server: the contract SQLite and PostgreSQL meet.

``Database`` (storage/db.py) owns the single writer, group commit and savepoints; an ``Engine``
only runs statements on its two sides, the writer's transaction and the reads beside it. The
SQL the repositories write is portable (``?`` placeholders, ``ON CONFLICT``, ``RETURNING``); an
engine translates what its server spells differently.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

from mla_node.errors import DatabaseNewerThanProgram, StorageError

Params = Sequence[object] | Mapping[str, object]

_MIGRATION_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class Row(Protocol):
    """A result row: by position or by column name (sqlite3.Row and asyncpg.Record both are)."""

    def __getitem__(self, key: Any, /) -> Any: ...  # pragma: no cover

    def __iter__(self) -> Iterator[Any]: ...  # pragma: no cover

    def __len__(self) -> int: ...  # pragma: no cover


class Engine(Protocol):
    # True when other processes may write the same database (PostgreSQL workers): outbox work is
    # then leased, and nothing may assume that this process alone changes the rows.
    shared: bool
    # The server's own errors: ``Database`` turns those that escape a job into StorageError.
    errors: tuple[type[BaseException], ...]

    async def begin(self) -> None:
        """Open the writer's transaction, holding the database's single write lock."""

    async def control(self, sql: str) -> None:
        """COMMIT, ROLLBACK and the savepoint statements, on the writer."""

    async def execute(self, sql: str, params: Params) -> int:
        """One statement in the writer's transaction; the number of rows it changed."""

    async def fetch(self, sql: str, params: Params) -> list[Row]:
        """Rows of one statement in the writer's transaction (``RETURNING`` too)."""

    async def read(self, sql: str, params: Params) -> list[Row]:
        """Rows of one read beside the writer, from a snapshot that includes every commit."""

    async def integrity_check(self) -> str:
        """ "ok", or what the server found wrong."""

    async def close(self) -> None: ...


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
    check_versions(found)
    return found


def check_versions(migrations: Sequence[Migration]) -> None:
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise StorageError(f"migration versions must be 1..N in order, without gaps: {versions}")


def storage_error(detail: str, cause: BaseException) -> StorageError:
    error = StorageError(f"{detail}: {cause}" if str(cause) else detail)
    error.__cause__ = cause
    return error


def pending_migrations(applied: set[int], migrations: Sequence[Migration]) -> list[Migration]:
    """The migrations still to apply; DatabaseNewerThanProgram when the database is ahead."""
    known, newest = len(migrations), max(applied, default=0)
    if newest > known:
        raise DatabaseNewerThanProgram(
            f"the database has schema version {newest}; this program knows versions up to {known}",
            extra={"database_version": newest, "program_version": known},
        )
    return [m for m in migrations if m.version not in applied]
