"""The queries of retention: legal holds and purging old case threads' contents.

A purge works on whole case threads and only on closed ones (see ``service.retention``). What it
removes is the plaintext form and the envelope bytes; every digest, receipt and evidence record
stays, so what happened can still be proved. Portable SQL, like ``repo``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mla_node.storage.db import Transaction
from mla_node.storage.repo import Reader


@dataclass(frozen=True)
class Hold:
    case_id: str
    reason: str | None
    set_by: str
    set_at: int


async def get_hold(db: Reader, case_id: str) -> Hold | None:
    row = await db.fetchone(
        "SELECT case_id, reason, set_by, set_at FROM legal_holds WHERE case_id = ?", (case_id,)
    )
    return Hold(*tuple(row)) if row else None


async def set_hold(tx: Transaction, hold: Hold) -> Hold:
    """Place a hold; a case already held keeps its first hold (who, when, why)."""
    await tx.execute(
        "INSERT INTO legal_holds (case_id, reason, set_by, set_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (case_id) DO NOTHING",
        (hold.case_id, hold.reason, hold.set_by, hold.set_at),
    )
    current = await get_hold(tx, hold.case_id)
    assert current is not None
    return current


async def release_hold(tx: Transaction, case_id: str) -> Hold | None:
    """Lift the hold; the hold that was lifted, or None when the case was not held."""
    row = await tx.fetchone(
        "DELETE FROM legal_holds WHERE case_id = ? RETURNING case_id, reason, set_by, set_at",
        (case_id,),
    )
    return Hold(*tuple(row)) if row else None


@dataclass(frozen=True)
class CaseAge:
    """One case thread not purged yet whose last activity is older than the cutoff."""

    case_id: str
    messages: int  # messages of the thread whose contents are still kept
    content_bytes: int  # what a purge of the thread frees: forms and envelopes
    open: bool  # queued, in retry, undeliverable (not replaced) or received and never opened
    held: bool


# A message keeps its thread open while it may still be sent or resent (its envelope and form
# are needed for that) or while no clerk has opened it yet.
_OPEN_MESSAGE = (
    "(EXISTS (SELECT 1 FROM outbox o WHERE o.message_id = m.id) "
    "OR m.status = 'queued' "
    "OR (m.direction = 'in' AND m.status = 'received') "
    "OR (m.status = 'undeliverable' "
    "AND NOT EXISTS (SELECT 1 FROM messages r WHERE r.replaces = m.id)))"
)


_OLD_CASES = (
    "SELECT m.case_id, "  # noqa: S608 (constant fragments)
    "SUM(CASE WHEN m.purged_at IS NULL THEN 1 ELSE 0 END), "
    "SUM(CASE WHEN m.purged_at IS NULL THEN LENGTH(m.form) + LENGTH(m.envelope) ELSE 0 END), "
    f"SUM(CASE WHEN {_OPEN_MESSAGE} THEN 1 ELSE 0 END), "
    "EXISTS (SELECT 1 FROM legal_holds h WHERE h.case_id = m.case_id) "
    "FROM messages m GROUP BY m.case_id "
    "HAVING MAX(m.updated_at) < ? AND SUM(CASE WHEN m.purged_at IS NULL THEN 1 ELSE 0 END) > 0"
)
_PURGEABLE = (
    f"{_OLD_CASES} AND SUM(CASE WHEN {_OPEN_MESSAGE} THEN 1 ELSE 0 END) = 0 "  # noqa: S608
    "AND NOT EXISTS (SELECT 1 FROM legal_holds h WHERE h.case_id = m.case_id) "
    "ORDER BY m.case_id LIMIT ?"
)


async def old_cases(db: Reader, cutoff: int) -> list[CaseAge]:
    """Threads with contents still kept whose every message was last updated before ``cutoff``,
    purgeable or not (a dry run reports why some are kept)."""
    rows = await db.fetchall(_OLD_CASES + " ORDER BY m.case_id", (cutoff,))
    return [_case_age(r) for r in rows]


async def purgeable_cases(db: Reader, cutoff: int, limit: int) -> list[CaseAge]:
    """Up to ``limit`` old threads that are closed and not held."""
    rows = await db.fetchall(_PURGEABLE, (cutoff, limit))
    return [_case_age(r) for r in rows]


def _case_age(r: Sequence[Any]) -> CaseAge:
    return CaseAge(r[0], int(r[1]), int(r[2] or 0), bool(r[3]), bool(r[4]))


async def purge_case(tx: Transaction, case_id: str, now: int) -> int:
    """Remove the form and envelope bytes of every message of the thread; digests, receipts and
    evidence stay. Returns the number of messages purged."""
    await tx.execute(
        "DELETE FROM message_bodies WHERE message_id IN "
        "(SELECT id FROM messages WHERE case_id = ?)",
        (case_id,),
    )
    # Evidence files: without its key an encrypted file is unreadable wherever copies of it
    # remain (crypto-shredding); names go too. Sizes and digests stay, like the envelope's.
    await tx.execute(
        "UPDATE attachments SET file_key = NULL, name = '' WHERE message_id IN "
        "(SELECT id FROM messages WHERE case_id = ?)",
        (case_id,),
    )
    return await tx.execute(
        "UPDATE messages SET form = '{}', envelope = ?, purged_at = ? "
        "WHERE case_id = ? AND purged_at IS NULL",
        (b"", now, case_id),
    )
