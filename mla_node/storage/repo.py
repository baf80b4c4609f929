"""The use cases' queries, the narrow interface the service layer sees of the database.

Portable SQL only (``ON CONFLICT``, ``RETURNING``, no SQLite-only functions) so that a second
engine can sit behind the same functions. Writes take the ``Transaction`` of a write job; reads
take the ``Database`` (the reader connection) or a ``Transaction`` when they must see the job's
own uncommitted rows.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from mla_node.errors import StorageError
from mla_node.logs import REQUEST_ID
from mla_node.protocol.legal_dates import legal_due
from mla_node.protocol.merkle import leaf_hash
from mla_node.storage.db import Database, Transaction


class Reader(Protocol):
    async def fetchone(
        self, sql: str, params: Sequence[object] = ...
    ) -> sqlite3.Row | None: ...  # pragma: no cover

    async def fetchall(
        self, sql: str, params: Sequence[object] = ...
    ) -> list[sqlite3.Row]: ...  # pragma: no cover


# out: queued -> delivered | rejected (a signed refusal) | undeliverable (its delivery deadline
# passed; an admin's resend queues it again); in: received -> retrieved (a clerk opened it)
MESSAGE_STATUSES = ("queued", "delivered", "rejected", "undeliverable", "received", "retrieved")


@dataclass(frozen=True)
class MessageRow:
    id: str
    direction: str
    sender: str
    recipient: str
    case_id: str
    in_reply_to: str | None
    form_type: str
    form_version: int
    form: dict[str, Any]
    status: str
    envelope: bytes
    envelope_sha256: bytes
    created_at: int
    updated_at: int
    created_by: str | None
    replaces: str | None = None  # the undeliverable message this one re-seals (admin resend)
    purged_at: int | None = None  # when a purge removed form and envelope (digests stay)
    # The exact body bytes sealed or opened, on a row being stored (kept in message_bodies;
    # read back with ``message_body``), None on rows read from the database.
    body: bytes | None = None
    handling: str = "confidential"  # protocol/forms.py HANDLING_CODES

    @property
    def peer(self) -> str:
        """The other party of the message."""
        return self.recipient if self.direction == "out" else self.sender

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> MessageRow:
        return cls(
            id=row["id"],
            direction=row["direction"],
            sender=row["sender"],
            recipient=row["recipient"],
            case_id=row["case_id"],
            in_reply_to=row["in_reply_to"],
            form_type=row["form_type"],
            form_version=row["form_version"],
            form=json.loads(row["form"]),
            status=row["status"],
            envelope=row["envelope"],
            envelope_sha256=row["envelope_sha256"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            created_by=row["created_by"],
            replaces=row["replaces"],
            purged_at=row["purged_at"],
            handling=row["handling"],
        )


_MESSAGE_COLUMNS = (
    "id, direction, sender, recipient, case_id, in_reply_to, form_type, form_version, form, "
    "status, envelope, envelope_sha256, created_at, updated_at, created_by, replaces, purged_at, "
    "handling"
)


async def insert_message(tx: Transaction, m: MessageRow) -> bool:
    """Insert; False when a message with this id already exists (the caller decides why)."""
    dated = legal_due(m.form_type, m.form, m.created_at)
    count = await tx.execute(
        f"INSERT INTO messages ({_MESSAGE_COLUMNS}, legal_due_at) VALUES "  # noqa: S608
        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        (
            m.id,
            m.direction,
            m.sender,
            m.recipient,
            m.case_id,
            m.in_reply_to,
            m.form_type,
            m.form_version,
            json.dumps(m.form, ensure_ascii=False),
            m.status,
            m.envelope,
            m.envelope_sha256,
            m.created_at,
            m.updated_at,
            m.created_by,
            m.replaces,
            m.purged_at,
            m.handling,
            None if dated is None else dated[1],
        ),
    )
    if count == 1 and m.body is not None:
        await tx.execute(
            "INSERT INTO message_bodies (message_id, body) VALUES (?, ?)", (m.id, m.body)
        )
    return count == 1


async def message_body(db: Reader, message_id: str) -> bytes | None:
    row = await db.fetchone("SELECT body FROM message_bodies WHERE message_id = ?", (message_id,))
    return row[0] if row else None


async def get_message(db: Reader, message_id: str) -> MessageRow | None:
    row = await db.fetchone(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?",  # noqa: S608
        (message_id,),
    )
    return MessageRow.from_row(row) if row else None


async def case_of(db: Reader, message_id: str) -> str | None:
    """The case a message belongs to, None when there is no such message (without reading its
    envelope and form, as ``get_message`` does)."""
    row = await db.fetchone("SELECT case_id FROM messages WHERE id = ?", (message_id,))
    return str(row["case_id"]) if row else None


async def set_status(tx: Transaction, message_id: str, status: str, now: int) -> None:
    await tx.execute(
        "UPDATE messages SET status = ?, updated_at = ? WHERE id = ?", (status, now, message_id)
    )


@dataclass(frozen=True)
class ListFilter:
    direction: str
    status: str | None = None
    form_type: str | None = None
    case_id: str | None = None
    peer: str | None = None
    after_id: str | None = None  # the cursor: ids are ULIDs, so id order is creation order
    limit: int = 50


async def list_messages(db: Reader, f: ListFilter) -> list[MessageRow]:
    clauses = ["direction = ?"]
    params: list[object] = [f.direction]
    for column, value in (("status", f.status), ("form_type", f.form_type), ("case_id", f.case_id)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if f.peer is not None:
        clauses.append("(CASE direction WHEN 'out' THEN recipient ELSE sender END) = ?")
        params.append(f.peer)
    if f.after_id is not None:
        clauses.append("id < ?")  # newest first
        params.append(f.after_id)
    params.append(f.limit)
    rows = await db.fetchall(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE {' AND '.join(clauses)} "  # noqa: S608
        "ORDER BY id DESC LIMIT ?",
        params,
    )
    return [MessageRow.from_row(r) for r in rows]


async def case_messages(db: Reader, case_id: str) -> list[MessageRow]:
    rows = await db.fetchall(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE case_id = ? ORDER BY id",  # noqa: S608
        (case_id,),
    )
    return [MessageRow.from_row(r) for r in rows]


# --- outbox -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutboxItem:
    message_id: str
    peer: str
    attempts: int
    next_attempt_at: int
    envelope: bytes
    envelope_sha256: bytes
    # Evidence files the message names: pushed to the peer before the envelope (issue 6).
    has_attachments: bool = False
    request_id: str | None = None  # of the API call that queued it (mla_node/logs.py)


async def enqueue(
    tx: Transaction, message_id: str, peer: str, now: int, *, deadline_at: int, warn_at: int | None
) -> None:
    await tx.execute(
        "INSERT INTO outbox (message_id, peer, attempts, next_attempt_at, created_at, "
        "deadline_at, warn_at, request_id) VALUES (?, ?, 0, ?, ?, ?, ?, ?)",
        # The request id of the call queueing it, from its context (observability only, so the
        # use cases need not pass it through): every delivery attempt sends it to the peer.
        (message_id, peer, now, now, deadline_at, warn_at, REQUEST_ID.get()),
    )


async def assign_missing_deadlines(tx: Transaction, deadline_ms: int, warn_ms: int) -> int:
    """Rows queued before deadlines existed get them from their queueing time."""
    return await tx.execute(
        "UPDATE outbox SET deadline_at = created_at + ?, warn_at = created_at + ? "
        "WHERE deadline_at IS NULL",
        (deadline_ms, warn_ms),
    )


@dataclass(frozen=True)
class OverdueItem:
    message_id: str
    case_id: str
    envelope_sha256: bytes
    attempts: int
    last_error: str | None


async def overdue(db: Reader, peer: str, now: int) -> list[OverdueItem]:
    """Envelopes to ``peer`` whose delivery deadline has passed."""
    rows = await db.fetchall(
        "SELECT o.message_id, m.case_id, m.envelope_sha256, o.attempts, o.last_error "
        "FROM outbox o JOIN messages m ON m.id = o.message_id "
        "WHERE o.peer = ? AND o.deadline_at <= ? ORDER BY o.message_id",
        (peer, now),
    )
    return [OverdueItem(*tuple(r)) for r in rows]


async def take_due_warnings(tx: Transaction, peer: str, now: int) -> list[tuple[str, int]]:
    """(message id, deadline) of envelopes to ``peer`` past their warning time, not warned yet;
    marks them warned, so each warning is given once."""
    rows = await tx.fetchall(
        "UPDATE outbox SET warn_at = NULL WHERE peer = ? AND warn_at IS NOT NULL AND warn_at <= ? "
        "RETURNING message_id, deadline_at",
        (peer, now),
    )
    return sorted((r[0], r[1]) for r in rows)


async def has_due_warnings(db: Reader, peer: str, now: int) -> bool:
    row = await db.fetchone(
        "SELECT 1 FROM outbox WHERE peer = ? AND warn_at IS NOT NULL AND warn_at <= ? LIMIT 1",
        (peer, now),
    )
    return row is not None


@dataclass(frozen=True)
class OutboxState:
    attempts: int
    next_attempt_at: int
    deadline_at: int | None
    last_error: str | None


async def outbox_state(db: Reader, message_id: str) -> OutboxState | None:
    row = await db.fetchone(
        "SELECT attempts, next_attempt_at, deadline_at, last_error FROM outbox "
        "WHERE message_id = ?",
        (message_id,),
    )
    return OutboxState(*tuple(row)) if row else None


# Due to a peer, and not claimed by another worker (or that worker's claim lapsed).
_DUE = (
    "SELECT o.message_id, o.peer, o.attempts, o.next_attempt_at, m.envelope, "
    "m.envelope_sha256, "
    "EXISTS (SELECT 1 FROM attachments a WHERE a.message_id = o.message_id), o.request_id "
    "FROM outbox o JOIN messages m ON m.id = o.message_id "
    "WHERE o.peer = ? AND o.next_attempt_at <= ? "
    "AND (o.leased_by IS NULL OR o.leased_by = ? OR o.lease_until <= ?) "
    "ORDER BY o.next_attempt_at, o.message_id LIMIT ?"
)


def _outbox_item(r: Any) -> OutboxItem:
    return OutboxItem(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7])


async def due_for_peer(
    db: Reader, peer: str, now: int, limit: int, worker: str = ""
) -> list[OutboxItem]:
    rows = await db.fetchall(_DUE, (peer, now, worker, now, limit))
    return [_outbox_item(r) for r in rows]


async def claim_due(
    tx: Transaction, peer: str, now: int, limit: int, worker: str, lease_until: int
) -> list[OutboxItem]:
    """What is due to ``peer``, claimed for ``worker`` until ``lease_until`` (shared databases:
    writes are serialised, so two workers never claim the same row)."""
    items = [_outbox_item(r) for r in await tx.fetchall(_DUE, (peer, now, worker, now, limit))]
    if items:
        marks = ", ".join("?" for _ in items)
        await tx.execute(
            f"UPDATE outbox SET leased_by = ?, lease_until = ? WHERE message_id IN ({marks})",  # noqa: S608
            (worker, lease_until, *(item.message_id for item in items)),
        )
    return items


async def renew_leases(tx: Transaction, worker: str, lease_until: int) -> int:
    return await tx.execute(
        "UPDATE outbox SET lease_until = ? WHERE leased_by = ?", (lease_until, worker)
    )


async def release_leases(tx: Transaction, worker: str) -> int:
    """Give up ``worker``'s claims (it is stopping: the others need not wait for them to lapse)."""
    return await tx.execute(
        "UPDATE outbox SET leased_by = NULL, lease_until = NULL WHERE leased_by = ?", (worker,)
    )


async def outbox_summary(db: Reader) -> dict[str, tuple[int, int | None, int | None]]:
    """peer -> (queued, oldest created_at, soonest time a row can be sent: its next attempt, or
    when another worker's claim on it lapses)."""
    rows = await db.fetchall(
        "SELECT peer, COUNT(*), MIN(created_at), MIN(CASE WHEN lease_until > next_attempt_at "
        "THEN lease_until ELSE next_attempt_at END) FROM outbox GROUP BY peer"
    )
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


async def reschedule(
    tx: Transaction, message_id: str, attempts: int, next_attempt_at: int, error: str
) -> None:
    await tx.execute(
        "UPDATE outbox SET attempts = ?, next_attempt_at = ?, last_error = ?, leased_by = NULL, "
        "lease_until = NULL WHERE message_id = ?",
        (attempts, next_attempt_at, error[:500], message_id),
    )


async def wake_peer(tx: Transaction, peer: str, now: int) -> None:
    """A peer answered again: everything waiting for it is due now, not at its backoff time."""
    await tx.execute(
        "UPDATE outbox SET next_attempt_at = ? WHERE peer = ? AND next_attempt_at > ?",
        (now, peer, now),
    )


async def dequeue(tx: Transaction, message_id: str) -> bool:
    return await tx.execute("DELETE FROM outbox WHERE message_id = ?", (message_id,)) == 1


async def replaced_by(db: Reader, message_id: str) -> str | None:
    """The id of the message that re-sealed ``message_id``, if any."""
    row = await db.fetchone(
        "SELECT id FROM messages WHERE replaces = ? ORDER BY id LIMIT 1", (message_id,)
    )
    return str(row[0]) if row else None


async def undeliverable_by_peer(db: Reader) -> dict[str, int]:
    """peer -> outbound messages now undeliverable and not replaced (waiting for an admin)."""
    rows = await db.fetchall(
        "SELECT recipient, COUNT(*) FROM messages m WHERE direction = 'out' "
        "AND status = 'undeliverable' "
        "AND NOT EXISTS (SELECT 1 FROM messages r WHERE r.replaces = m.id) GROUP BY recipient"
    )
    return {r[0]: r[1] for r in rows}


# --- receipts and evidence --------------------------------------------------------------------


@dataclass(frozen=True)
class ReceiptRow:
    message_id: str
    role: str
    status: str
    code: str | None
    receipt: bytes
    receipt_sha256: bytes
    at: int


async def insert_receipt(tx: Transaction, r: ReceiptRow) -> bool:
    count = await tx.execute(
        "INSERT INTO receipts (message_id, role, status, code, receipt, receipt_sha256, at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (message_id) DO NOTHING",
        (r.message_id, r.role, r.status, r.code, r.receipt, r.receipt_sha256, r.at),
    )
    return count == 1


async def get_receipt(db: Reader, message_id: str) -> ReceiptRow | None:
    row = await db.fetchone(
        "SELECT message_id, role, status, code, receipt, receipt_sha256, at FROM receipts "
        "WHERE message_id = ?",
        (message_id,),
    )
    return ReceiptRow(*tuple(row)) if row else None


async def insert_evidence(
    tx: Transaction,
    *,
    message_id: str,
    case_id: str,
    event: str,
    record: bytes,
    sha256: bytes,
    at: int,
    leaf_hash: bytes,
) -> int:
    """Append a record to the evidence log; its seq is its place in the log (leaf seq - 1).

    The seq is counted, not drawn from a sequence: a sequence leaves a hole for every rolled-back
    insert, and the log must have none. Counting is safe because writes are serialised (one
    writer; on PostgreSQL one write lock for all workers, storage/pg_engine.py)."""
    row = await tx.fetchone(
        "INSERT INTO evidence (seq, message_id, case_id, event, record, sha256, at, leaf_hash) "
        "VALUES ((SELECT COALESCE(MAX(seq), 0) + 1 FROM evidence), ?, ?, ?, ?, ?, ?, ?) "
        "RETURNING seq",
        (message_id, case_id, event, record, sha256, at, leaf_hash),
    )
    if row is None:
        raise StorageError("the evidence record was not appended")
    return int(row[0])


async def evidence_for(
    db: Reader, message_id: str, *, leave_out: frozenset[str] = frozenset()
) -> list[bytes]:
    """The message's evidence records in log order, without the events in ``leave_out``."""
    rows = await db.fetchall(
        "SELECT event, record FROM evidence WHERE message_id = ? ORDER BY seq", (message_id,)
    )
    return [r[1] for r in rows if r[0] not in leave_out]


async def case_evidence(db: Reader, case_id: str) -> list[tuple[int, str, bytes]]:
    """(seq, message id, record) of every evidence record about the case, in log order."""
    rows = await db.fetchall(
        "SELECT seq, message_id, record FROM evidence WHERE case_id = ? ORDER BY seq", (case_id,)
    )
    return [(r[0], r[1], r[2]) for r in rows]


async def has_evidence(db: Reader, message_id: str, event: str) -> bool:
    row = await db.fetchone(
        "SELECT 1 FROM evidence WHERE message_id = ? AND event = ? LIMIT 1", (message_id, event)
    )
    return row is not None


# --- the transparency log (issue 4) ----------------------------------------------------------


LOG_PAGE = 20_000  # leaf hashes per read when the whole log is gone through (~1 MB)


async def log_size(db: Reader) -> int:
    """Records in the evidence log: its largest seq (seqs run without gaps from 1)."""
    row = await db.fetchone("SELECT MAX(seq) FROM evidence")
    return int(row[0]) if row and row[0] is not None else 0


async def log_leaf_hash_pages(
    db: Reader, size: int, page: int = LOG_PAGE
) -> AsyncIterator[list[bytes]]:
    """The leaf hashes of the first ``size`` records of the log, in order, a page at a time.
    A record never changes once written, so the pages need not come from one read; a seq
    missing below ``size`` (a row removed under the node) raises StorageError."""
    done = 0
    while done < size:
        rows = await db.fetchall(
            "SELECT seq, leaf_hash, CASE WHEN leaf_hash IS NULL THEN record END FROM evidence "
            "WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
            (done, size, page),
        )
        hashes: list[bytes] = []
        for seq, stored_hash, record in rows:
            if seq != done + 1:
                break
            done = seq
            # rows older than migration 0003 have no stored hash: hashed here
            hashes.append(stored_hash if stored_hash is not None else leaf_hash(record))
        if len(hashes) < len(rows) or not rows:  # append-only: a gap means a row was removed
            raise StorageError(f"the evidence log has no record with seq {done + 1}")
        yield hashes


async def log_records(db: Reader, *, after: int, limit: int) -> list[tuple[int, bytes]]:
    """(seq, record) of up to ``limit`` records with seq > ``after``, in log order."""
    rows = await db.fetchall(
        "SELECT seq, record FROM evidence WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
    )
    return [(r[0], r[1]) for r in rows]


async def list_checkpoints(db: Reader) -> list[CheckpointRow]:
    rows = await db.fetchall("SELECT size, root, checkpoint, at FROM checkpoints ORDER BY size")
    return [CheckpointRow(*tuple(r)) for r in rows]


async def log_leaf_hashes(db: Reader) -> list[bytes]:
    """The leaf hash of every record of the log, in order (all in memory: for the tools that
    hold the whole log anyway; the node goes through it a page at a time)."""
    return [h async for hashes in log_leaf_hash_pages(db, await log_size(db)) for h in hashes]


@dataclass(frozen=True)
class CheckpointRow:
    size: int
    root: bytes
    checkpoint: bytes
    at: int


async def insert_checkpoint(tx: Transaction, c: CheckpointRow) -> bool:
    """Store a checkpoint; False when one of this size is already stored (the log did not grow)."""
    count = await tx.execute(
        "INSERT INTO checkpoints (size, root, checkpoint, at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (size) DO NOTHING",
        (c.size, c.root, c.checkpoint, c.at),
    )
    return count == 1


async def checkpoint_at(db: Reader, size: int) -> CheckpointRow | None:
    row = await db.fetchone(
        "SELECT size, root, checkpoint, at FROM checkpoints WHERE size = ?", (size,)
    )
    return CheckpointRow(*tuple(row)) if row else None


async def latest_checkpoint(db: Reader) -> CheckpointRow | None:
    row = await db.fetchone(
        "SELECT size, root, checkpoint, at FROM checkpoints ORDER BY size DESC LIMIT 1"
    )
    return CheckpointRow(*tuple(row)) if row else None


# --- idempotency and tokens -------------------------------------------------------------------


async def idempotent_result(db: Reader, principal: str, key: str) -> tuple[bytes, str] | None:
    row = await db.fetchone(
        "SELECT body_sha256, message_id FROM idempotency WHERE principal = ? AND key = ?",
        (principal, key),
    )
    return (row[0], row[1]) if row else None


async def remember_idempotency(
    tx: Transaction, principal: str, key: str, body_sha256: bytes, message_id: str, now: int
) -> None:
    await tx.execute(
        "INSERT INTO idempotency (principal, key, body_sha256, message_id, created_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (principal, key, body_sha256, message_id, now),
    )


@dataclass(frozen=True)
class TokenRow:
    id: str
    role: str
    name: str


async def insert_token(
    tx: Transaction, token_id: str, token_sha256: bytes, role: str, name: str, now: int
) -> None:
    await tx.execute(
        "INSERT INTO tokens (id, token_sha256, role, name, created_at) VALUES (?, ?, ?, ?, ?)",
        (token_id, token_sha256, role, name, now),
    )


async def token_by_hash(db: Reader, token_sha256: bytes) -> TokenRow | None:
    row = await db.fetchone(
        "SELECT id, role, name FROM tokens WHERE token_sha256 = ? AND revoked_at IS NULL",
        (token_sha256,),
    )
    return TokenRow(row[0], row[1], row[2]) if row else None


# --- directory and peers ----------------------------------------------------------------------


async def accepted_directory(db: Reader) -> tuple[int, bytes, bytes] | None:
    """(version, sha256, signed bytes) of the newest accepted directory."""
    row = await db.fetchone("SELECT version, sha256, directory FROM directory_state WHERE id = 1")
    return (row[0], row[1], row[2]) if row else None


async def accept_directory(
    tx: Transaction, version: int, sha256: bytes, data: bytes, now: int
) -> None:
    await tx.execute(
        "INSERT INTO directory_state (id, version, sha256, directory, accepted_at) "
        "VALUES (1, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET version = excluded.version, "
        "sha256 = excluded.sha256, directory = excluded.directory, "
        "accepted_at = excluded.accepted_at",
        (version, sha256, data, now),
    )
    await tx.execute(
        "INSERT INTO directory_history (version, sha256, directory, accepted_at) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (version) DO NOTHING",
        (version, sha256, data, now),
    )


@dataclass(frozen=True)
class PeerStatus:
    peer: str
    last_success_at: int | None
    last_failure_at: int | None
    last_error: str | None
    consecutive_failures: int
    deadlines_passed: int = 0


async def record_peer_result(tx: Transaction, peer: str, now: int, error: str | None) -> None:
    if error is None:
        await tx.execute(
            "INSERT INTO peer_status (peer, last_success_at, consecutive_failures) "
            "VALUES (?, ?, 0) ON CONFLICT (peer) DO UPDATE SET "
            "last_success_at = excluded.last_success_at, consecutive_failures = 0",
            (peer, now),
        )
    else:
        await tx.execute(
            "INSERT INTO peer_status (peer, last_failure_at, last_error, consecutive_failures) "
            "VALUES (?, ?, ?, 1) ON CONFLICT (peer) DO UPDATE SET "
            "last_failure_at = excluded.last_failure_at, last_error = excluded.last_error, "
            "consecutive_failures = peer_status.consecutive_failures + 1",
            (peer, now, error[:500]),
        )


async def peer_statuses(db: Reader) -> dict[str, PeerStatus]:
    rows = await db.fetchall(
        "SELECT peer, last_success_at, last_failure_at, last_error, consecutive_failures, "
        "deadlines_passed FROM peer_status"
    )
    return {r[0]: PeerStatus(*tuple(r)) for r in rows}


async def count_deadlines_passed(tx: Transaction, peer: str, n: int) -> None:
    await tx.execute(
        "INSERT INTO peer_status (peer, consecutive_failures, deadlines_passed) VALUES (?, 0, ?) "
        "ON CONFLICT (peer) DO UPDATE SET "
        "deadlines_passed = peer_status.deadlines_passed + excluded.deadlines_passed",
        (peer, n),
    )


async def count_pending(db: Database) -> int:
    row = await db.fetchone("SELECT COUNT(*) FROM outbox")
    return int(row[0]) if row else 0
