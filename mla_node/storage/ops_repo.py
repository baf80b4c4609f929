"""The queries of operations (issue 8): metrics, alerts, legal deadlines, the log's size.

Each is bounded for a scrape every few seconds: an index or a small table behind every one
(the outbox, peer_status, split_views, the evidence log's primary key, the form-type index of
migration 0008, the legal dates of migration 0010). Portable SQL, like ``repo``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mla_node.protocol.legal_dates import legal_due
from mla_node.storage.db import Database, Transaction
from mla_node.storage.repo import Reader


@dataclass(frozen=True)
class FormRow:
    id: str
    direction: str
    sender: str
    recipient: str
    case_id: str
    in_reply_to: str | None
    form_type: str
    form: dict[str, Any]
    created_at: int


def _marks(values: Sequence[object]) -> str:
    return ", ".join("?" for _ in values)


_FORM_COLUMNS = (
    "id, direction, sender, recipient, case_id, in_reply_to, form_type, form, created_at"
)


async def _forms(db: Reader, where: str, params: Sequence[object]) -> list[FormRow]:
    rows = await db.fetchall(
        f"SELECT {_FORM_COLUMNS} FROM messages WHERE {where} AND purged_at IS NULL "  # noqa: S608
        "ORDER BY id",
        params,
    )
    return [FormRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7]), r[8]) for r in rows]


async def open_passed_dates(
    db: Reader, now: int, *, settled_by: Sequence[str], answered_by: str
) -> list[FormRow]:
    """Forms whose legal date (``legal_due_at``, migration 0010) is ``now`` or earlier, those not
    worked out yet included (-1), leaving out the cases a form of ``settled_by`` closed and the
    forms an ``answered_by`` answers. The years of closed cases stay in the database: only the
    open ones become Python objects, once a minute."""
    where = (
        "legal_due_at IS NOT NULL AND legal_due_at <= ? AND NOT EXISTS (SELECT 1 FROM messages s"  # noqa: S608
        f" WHERE s.case_id = messages.case_id AND s.form_type IN ({_marks(settled_by)})"
        " AND s.purged_at IS NULL) AND NOT EXISTS (SELECT 1 FROM messages r"
        " WHERE r.in_reply_to = messages.id AND r.form_type = ? AND r.purged_at IS NULL)"
    )
    return await _forms(db, where, (now, *settled_by, answered_by))


async def forms_between(db: Reader, form_type: str, sender: str, recipient: str) -> list[FormRow]:
    where = "form_type = ? AND sender = ? AND recipient = ?"
    return await _forms(db, where, (form_type, sender, recipient))


async def fill_legal_due_dates(db: Database, batch: int = 500) -> int:
    """Work out ``legal_due_at`` for the rows stored before the column existed (-1); how many.
    Idempotent, so several workers of one node may run it at once."""
    filled = 0
    while rows := await db.fetchall(
        "SELECT id, form_type, form, created_at FROM messages WHERE legal_due_at = -1 LIMIT ?",
        (batch,),
    ):
        dates = [(_due(r[1], r[2], r[3]), r[0]) for r in rows]

        async def job(tx: Transaction, dates: list[tuple[int | None, str]] = dates) -> None:
            for due, message_id in dates:
                await tx.execute(
                    "UPDATE messages SET legal_due_at = ? WHERE id = ? AND legal_due_at = -1",
                    (due, message_id),
                )

        await db.write(job)
        filled += len(rows)
    return filled


def _due(form_type: str, form: str, created_at: int) -> int | None:
    decoded = json.loads(form)
    dated = legal_due(form_type, decoded, created_at) if isinstance(decoded, dict) else None
    return None if dated is None else dated[1]


async def split_view_counts(db: Reader) -> dict[str, int]:
    rows = await db.fetchall("SELECT peer, COUNT(*) FROM split_views GROUP BY peer")
    return {r[0]: int(r[1]) for r in rows}


async def message_count(db: Reader) -> int:
    row = await db.fetchone("SELECT COUNT(*) FROM messages")
    return int(row[0]) if row else 0
