"""Queries of the peers' witnessed log heads and the split views caught (migration 0004).

Stored heads were verified before they were stored (``verify_receipt`` checks a receipt's head),
so they are read back as :class:`Checkpoint` objects without checking their signatures again.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from mla_node.protocol.checkpoint import Checkpoint
from mla_node.storage.db import Transaction
from mla_node.storage.repo import Reader

_SELECT_HEADS = "SELECT peer, size, root, at, kid, checkpoint FROM witnessed_heads WHERE peer = ?"


def _head(row: sqlite3.Row | None) -> Checkpoint | None:
    if row is None:
        return None
    return Checkpoint(
        node=row[0], size=row[1], root=bytes(row[2]), at=row[3], kid=row[4], raw=bytes(row[5])
    )


async def newest_head(db: Reader, peer: str) -> Checkpoint | None:
    """The largest head of ``peer`` stored."""
    return _head(
        await db.fetchone(
            _SELECT_HEADS + " ORDER BY size DESC LIMIT 1",
            (peer,),
        )
    )


async def head_at(db: Reader, peer: str, size: int) -> Checkpoint | None:
    return _head(
        await db.fetchone(
            _SELECT_HEADS + " AND size = ?",
            (peer, size),
        )
    )


async def heads_of(db: Reader, peer: str) -> list[Checkpoint]:
    """Every stored head of ``peer``, smallest first."""
    rows = await db.fetchall(_SELECT_HEADS + " ORDER BY size", (peer,))
    return [c for c in map(_head, rows) if c is not None]


async def insert_head(tx: Transaction, head: Checkpoint, seen_at: int) -> bool:
    """Store a head; False when one of that peer and size is stored already."""
    count = await tx.execute(
        "INSERT INTO witnessed_heads (peer, size, root, checkpoint, kid, at, seen_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (peer, size) DO NOTHING",
        (head.node, head.size, head.root, head.raw, head.kid, head.at, seen_at),
    )
    return count == 1


@dataclass(frozen=True)
class SplitViewRow:
    id: int
    peer: str
    reason: str
    stored_head: bytes
    shown_head: bytes
    proof: str | None  # JSON
    detected_at: int
    evidence_file: str | None


async def insert_split_view(
    tx: Transaction,
    *,
    peer: str,
    reason: str,
    stored_head: bytes,
    stored_sha256: bytes,
    shown_head: bytes,
    proof: str | None,
    detected_at: int,
) -> int | None:
    """Record a split view; None when this stored head of the peer was contradicted before."""
    row = await tx.fetchone(
        "INSERT INTO split_views (peer, reason, stored_head, stored_sha256, shown_head, proof, "
        "detected_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (peer, stored_sha256) DO NOTHING RETURNING id",
        (peer, reason, stored_head, stored_sha256, shown_head, proof, detected_at),
    )
    return None if row is None else int(row[0])


async def set_evidence_file(tx: Transaction, split_id: int, path: str) -> None:
    await tx.execute("UPDATE split_views SET evidence_file = ? WHERE id = ?", (path, split_id))


async def split_views(db: Reader, peer: str | None = None) -> list[SplitViewRow]:
    """The split views caught (of ``peer``, or of all peers), oldest first."""
    sql = (
        "SELECT id, peer, reason, stored_head, shown_head, proof, detected_at, evidence_file "
        "FROM split_views"
    )
    rows = await (
        db.fetchall(sql + " WHERE peer = ? ORDER BY id", (peer,))
        if peer is not None
        else db.fetchall(sql + " ORDER BY id")
    )
    return [SplitViewRow(r[0], r[1], r[2], bytes(r[3]), bytes(r[4]), *r[5:8]) for r in rows]
