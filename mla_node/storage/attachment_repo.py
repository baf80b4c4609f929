"""Queries of the ``attachments`` table (migration 0007): uploads, a message's files, blobs."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from mla_node.protocol.attachments import AttachmentRef
from mla_node.storage.db import Transaction
from mla_node.storage.repo import Reader

_COLUMNS = (
    "id, message_id, position, name, size, sha256, blob_sha256, blob_size, chunk_size, file_key, "
    "created_by, created_at"
)


@dataclass(frozen=True)
class AttachmentRow:
    id: str
    message_id: str | None
    position: int | None
    name: str
    size: int
    sha256: bytes
    blob_sha256: bytes
    blob_size: int
    chunk_size: int
    file_key: bytes | None  # None once purged
    created_by: str | None
    created_at: int

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> AttachmentRow:
        return cls(*tuple(row))

    def ref(self) -> AttachmentRef:
        """What the envelope body says of this file (the key must still be there)."""
        assert self.file_key is not None
        return AttachmentRef(
            name=self.name,
            size=self.size,
            sha256=self.sha256,
            blob=self.blob_sha256,
            blob_size=self.blob_size,
            chunk=self.chunk_size,
            key=self.file_key,
        )


async def insert(tx: Transaction, a: AttachmentRow) -> None:
    await tx.execute(
        f"INSERT INTO attachments ({_COLUMNS}) VALUES "  # noqa: S608 (constant columns)
        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            a.id,
            a.message_id,
            a.position,
            a.name,
            a.size,
            a.sha256,
            a.blob_sha256,
            a.blob_size,
            a.chunk_size,
            a.file_key,
            a.created_by,
            a.created_at,
        ),
    )


async def get(db: Reader, attachment_id: str) -> AttachmentRow | None:
    row = await db.fetchone(
        f"SELECT {_COLUMNS} FROM attachments WHERE id = ?",  # noqa: S608
        (attachment_id,),
    )
    return AttachmentRow.from_row(row) if row else None


async def for_message(db: Reader, message_id: str) -> list[AttachmentRow]:
    rows = await db.fetchall(
        f"SELECT {_COLUMNS} FROM attachments WHERE message_id = ? "  # noqa: S608
        "ORDER BY position",
        (message_id,),
    )
    return [AttachmentRow.from_row(r) for r in rows]


async def claim(tx: Transaction, ids: Sequence[str], message_id: str) -> list[str]:
    """Give unused uploads to a message, in order; returns the ids that were not free (used
    meanwhile by another submission), in which case the caller's job must fail."""
    taken = []
    for position, attachment_id in enumerate(ids):
        changed = await tx.execute(
            "UPDATE attachments SET message_id = ?, position = ? "
            "WHERE id = ? AND message_id IS NULL",
            (message_id, position, attachment_id),
        )
        if changed != 1:
            taken.append(attachment_id)
    return taken


async def copy_to(tx: Transaction, source: str, target: str, ids: Sequence[str], now: int) -> None:
    """Give ``target`` (a re-sealed message) the files of ``source``, under the new ``ids``."""
    for new_id, row in zip(ids, await for_message(tx, source), strict=True):
        await tx.execute(
            f"INSERT INTO attachments ({_COLUMNS}) SELECT "  # noqa: S608
            "?, ?, position, name, size, sha256, blob_sha256, blob_size, chunk_size, file_key, "
            "created_by, ? FROM attachments WHERE id = ?",
            (new_id, target, now, row.id),
        )


async def expire_unsubmitted(tx: Transaction, before: int) -> tuple[int, list[bytes]]:
    """Delete the uploads no submission named that were made before ``before``; (how many,
    the digests of the encrypted files no remaining row names, to delete after the commit)."""
    rows = await tx.fetchall(
        "DELETE FROM attachments WHERE message_id IS NULL AND created_at < ? RETURNING blob_sha256",
        (before,),
    )
    freed = []
    for blob in {bytes(r[0]) for r in rows}:
        if await tx.fetchone("SELECT 1 FROM attachments WHERE blob_sha256 = ? LIMIT 1", (blob,)):
            continue
        freed.append(blob)
    return len(rows), sorted(freed)
