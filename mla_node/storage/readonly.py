"""A node database opened read-only, for the auditor's commands.

``mode=ro`` through plain sqlite3: it works while the node runs (WAL lets readers in beside the
writer), on a copy or on a backup, and it cannot change the file. It offers the ``Reader``
interface of storage/repo.py, so the auditor's commands run the node's own queries.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from mla_node.errors import ClientError


class ReadOnlyDatabase:
    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise ClientError(f"no database at {path}")
        try:
            self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise ClientError(f"cannot open {path}: {exc}") from exc
        self._conn.row_factory = sqlite3.Row
        self._conn.isolation_level = None
        self._path = path
        # One read transaction for the whole command: every query sees the same snapshot.
        self.fetchall_now("BEGIN")

    async def fetchone(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def fetchall(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        # Synchronous inside: a command line has nothing else to do meanwhile.
        return self.fetchall_now(sql, params)

    def fetchall_now(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        try:
            return list(self._conn.execute(sql, params).fetchall())
        except sqlite3.Error as exc:
            raise ClientError(f"{self._path} is not a node database: {exc}") from exc

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ReadOnlyDatabase:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
