"""State-aware retention: legal holds, and purging the contents of old, closed case threads.

A purge works on whole case threads. It never touches a thread that is under a legal hold, nor
one with an open message: queued or in retry (the outbox still needs the envelope), undeliverable
and not replaced (an admin may still resend it), or received and not yet opened by a clerk. Of a
purged thread it removes the plaintext forms and the envelope bytes, and keeps everything an
auditor or a court needs to prove what happened: ids, parties, types, statuses, times, envelope
digests, receipts and signed evidence records (docs/retention.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from mla_node.errors import FieldProblem, FormInvalid, MalformedBody, NotFound
from mla_node.service.context import NodeContext, Principal
from mla_node.service.views import iso
from mla_node.storage import repo
from mla_node.storage import retention as store
from mla_node.storage.db import Database, Transaction

log = logging.getLogger(__name__)

DAY_MS = 24 * 3600 * 1000
MAX_REASON = 500
PURGE_BATCH = 100  # threads per transaction, so a running node's writer is never held long


# --- legal holds --------------------------------------------------------------------------------


def hold_view(case_id: str, hold: store.Hold | None) -> dict[str, Any]:
    return {
        "case_id": case_id,
        "held": hold is not None,
        "since": iso(hold.set_at) if hold else None,
        "by": hold.set_by if hold else None,
        "reason": hold.reason if hold else None,
    }


def _reason(payload: object) -> str | None:
    if not isinstance(payload, dict):
        raise MalformedBody("the body must be a JSON object, or empty")
    problems = [
        FieldProblem(k, "extra_field", "This field is not part of a legal hold.")
        for k in payload
        if k != "reason"
    ]
    reason = payload.get("reason")
    if reason is not None and not (isinstance(reason, str) and 1 <= len(reason) <= MAX_REASON):
        problems.append(
            FieldProblem("reason", "invalid_value", f"Text of 1 to {MAX_REASON} characters.")
        )
    if problems:
        raise FormInvalid(f"{len(problems)} field(s) are invalid", problems=problems)
    return reason


async def _case_of(ctx: NodeContext, message_id: str) -> str:
    message = await repo.get_message(ctx.db, message_id)
    if message is None:
        raise NotFound(f"no request or message {message_id!r}", field="id")
    return message.case_id


async def set_hold(
    ctx: NodeContext, principal: Principal, message_id: str, payload: object
) -> dict[str, Any]:
    """Place the case thread of ``message_id`` under a legal hold (kept if it already is)."""
    reason = _reason(payload)
    case_id = await _case_of(ctx, message_id)
    wanted = store.Hold(case_id, reason, principal.name, ctx.clock())
    hold = await ctx.db.write(lambda tx: store.set_hold(tx, wanted))
    if hold == wanted:
        log.warning("legal hold placed on case %s by %s: %s", case_id, principal.name, reason)
    return hold_view(case_id, hold)


async def release_hold(ctx: NodeContext, principal: Principal, message_id: str) -> dict[str, Any]:
    """Lift the legal hold of the case thread of ``message_id`` (nothing to do if none)."""
    case_id = await _case_of(ctx, message_id)
    lifted = await ctx.db.write(lambda tx: store.release_hold(tx, case_id))
    if lifted is not None:
        log.warning(
            "legal hold on case %s (placed by %s) lifted by %s",
            case_id,
            lifted.set_by,
            principal.name,
        )
    return hold_view(case_id, None)


async def get_hold(ctx: NodeContext, case_id: str) -> store.Hold | None:
    return await store.get_hold(ctx.db, case_id)


# --- purge --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PurgeReport:
    cutoff: int  # threads last active before this (ms) were considered
    dry_run: bool
    cases: int  # threads purged (or that would be)
    messages: int
    freed_bytes: int  # forms and envelopes removed (the file shrinks after VACUUM)
    kept_open: int  # old threads kept because a message is still open
    kept_held: int  # old threads kept because of a legal hold


async def purge(db: Database, *, older_than_days: float, now: int, dry_run: bool) -> PurgeReport:
    """Remove the contents of every closed, unheld case thread last active before the cutoff."""
    cutoff = now - int(older_than_days * DAY_MS)
    old = await store.old_cases(db, cutoff)
    kept_open = sum(1 for c in old if c.open)
    kept_held = sum(1 for c in old if c.held and not c.open)
    if dry_run:
        eligible = [c for c in old if not (c.open or c.held)]
        return PurgeReport(
            cutoff,
            True,
            len(eligible),
            sum(c.messages for c in eligible),
            sum(c.content_bytes for c in eligible),
            kept_open,
            kept_held,
        )
    cases = messages = freed = 0
    while True:

        async def batch(tx: Transaction) -> list[tuple[store.CaseAge, int]]:
            # Selected and purged in one transaction: a message queued meanwhile in a thread
            # keeps the thread open, whichever process queued it.
            found = await store.purgeable_cases(tx, cutoff, PURGE_BATCH)
            return [(c, await store.purge_case(tx, c.case_id, now)) for c in found]

        done = await db.write(batch)
        cases += len(done)
        messages += sum(n for _, n in done)
        freed += sum(c.content_bytes for c, _ in done)
        if len(done) < PURGE_BATCH:
            break
    if cases:
        log.warning("purged the contents of %d case thread(s), %d message(s)", cases, messages)
    return PurgeReport(cutoff, False, cases, messages, freed, kept_open, kept_held)
