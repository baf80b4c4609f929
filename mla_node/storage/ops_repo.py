"""The queries of operations (issue 8): metrics, alerts, legal deadlines, the log's size.

Each is bounded for a scrape every few seconds: an index or a small table behind every one
(the outbox, peer_status, split_views, the evidence log's primary key, the form-type index of
migration 0008). Portable SQL, like ``repo``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mla_node.storage.repo import Reader

# Forms that carry a date the other side is bound to, and those that settle it.
DEADLINE_FORMS = ("mla_request", "provisional_arrest", "additional_info_request")
SETTLING_FORMS = (
    "execution_result",
    "return_with_reasons",
    "withdrawal",
    "supplement",
    "extradition_request",
)


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


def _marks(values: tuple[str, ...]) -> str:
    return ", ".join("?" for _ in values)


async def forms_of_types(db: Reader, types: tuple[str, ...]) -> list[FormRow]:
    """Messages of these form types whose content was not purged (through the form-type index)."""
    sql = (
        "SELECT id, direction, sender, recipient, case_id, in_reply_to, form_type, form, "  # noqa: S608
        f"created_at FROM messages WHERE form_type IN ({_marks(types)}) "  # only "?" marks
        "AND purged_at IS NULL ORDER BY id"
    )
    rows = await db.fetchall(sql, types)
    return [FormRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7]), r[8]) for r in rows]


async def split_view_counts(db: Reader) -> dict[str, int]:
    rows = await db.fetchall("SELECT peer, COUNT(*) FROM split_views GROUP BY peer")
    return {r[0]: int(r[1]) for r in rows}


async def log_size(db: Reader) -> int:
    """Records in the evidence log: its largest seq (seqs run without gaps from 1)."""
    row = await db.fetchone("SELECT MAX(seq) FROM evidence")
    return int(row[0]) if row and row[0] is not None else 0


async def message_count(db: Reader) -> int:
    row = await db.fetchone("SELECT COUNT(*) FROM messages")
    return int(row[0]) if row else 0
