"""Delivery deadlines and dead letters: no outbound message is left in an unknown state.

Every outbound message is queued with a deadline (``delivery.deadline_s`` after it is queued, and
never past the moment its envelope would go stale at the receiver). The sender's loop for each
peer calls :func:`warn_approaching` and :func:`expire_overdue` before every round, so an envelope
ends in exactly one of four states: ``queued`` (still trying, deadline ahead), ``delivered`` or
``rejected`` (a verified receipt or signed refusal came back), or ``undeliverable``: the deadline
passed, the sender stopped trying and recorded signed ``not_delivered`` evidence
(``deadline_passed``), logged an alert and counted it for the peer.

An admin can :func:`resend` an undeliverable message. The receiver de-duplicates by message id
and envelope digest, answering a repeat of the same bytes with its original receipt, and refuses
an envelope older than ``delivery.max_age_s`` as stale. So:

- while the original envelope stays acceptable for at least half a deadline more, the very same
  bytes go back into the outbox (new deadline, capped at the moment they go stale). If the
  receiver had stored them after all (only the receipt was lost), it answers with its original
  receipt: exactly once, whatever happened before;
- otherwise the form is re-sealed as a new message (new id, same case) whose signed body names the
  message it ``replaces``. Should the receiver hold the original as well, both carry the link,
  on both nodes, so nobody takes them for two requests. The original stays ``undeliverable``,
  with ``replaced_by`` in its view.
"""

from __future__ import annotations

import dataclasses
import logging

from mla_node.errors import InvalidStateForAction, NotFound
from mla_node.protocol.evidence import Event
from mla_node.service.cases import queue_deadline, seal_message, stale_at
from mla_node.service.context import NodeContext, Principal
from mla_node.service.views import iso
from mla_node.storage import attachment_repo, repo
from mla_node.storage.db import Transaction

log = logging.getLogger(__name__)

DEADLINE_PASSED = "deadline_passed"  # the detail of the sender's not_delivered evidence


async def warn_approaching(ctx: NodeContext, peer: str, now: int) -> list[str]:
    """Log, once per message, that envelopes to ``peer`` are getting close to their deadline."""
    if not await repo.has_due_warnings(ctx.db, peer, now):
        return []
    warned = await ctx.db.write(lambda tx: repo.take_due_warnings(tx, peer, now))
    for message_id, deadline_at in warned:
        log.warning(
            "delivery deadline approaching: message %s to %s is still not delivered; the node "
            "gives up at %s",
            message_id,
            peer,
            iso(deadline_at),
        )
    return [message_id for message_id, _ in warned]


async def expire_overdue(ctx: NodeContext, peer: str, now: int) -> list[str]:
    """Give up on every envelope to ``peer`` whose deadline has passed; their ids."""
    if not await repo.overdue(ctx.db, peer, now):
        return []

    async def job(tx: Transaction) -> list[repo.OverdueItem]:
        expired = []
        for item in await repo.overdue(tx, peer, now):  # again, inside the single writer
            if not await repo.dequeue(tx, item.message_id):
                continue
            await ctx.record_evidence(
                tx,
                event=Event.NOT_DELIVERED,
                message_id=item.message_id,
                case_id=item.case_id,
                at=now,
                envelope_digest=item.envelope_sha256,
                peer=peer,
                detail=DEADLINE_PASSED,
            )
            await repo.set_status(tx, item.message_id, "undeliverable", now)
            expired.append(item)
        if expired:
            await repo.count_deadlines_passed(tx, peer, len(expired))
        return expired

    expired = await ctx.db.write(job)
    for item in expired:
        log.warning(
            "ALERT undeliverable: message %s to %s passed its delivery deadline after %d "
            "attempt(s) (last error: %s); an admin can resend it "
            "(POST /api/v1/requests/%s/resend)",
            item.message_id,
            peer,
            item.attempts,
            item.last_error or "none",
            item.message_id,
        )
    return [item.message_id for item in expired]


async def resend(ctx: NodeContext, principal: Principal, message_id: str) -> repo.MessageRow:
    """Queue an undeliverable message again; the message now carrying it (itself, or the new
    message that re-seals it)."""
    message = await repo.get_message(ctx.db, message_id)
    if message is None:
        raise NotFound(f"no request or message {message_id!r}", field="id")
    _check_resendable(message, await repo.replaced_by(ctx.db, message_id))
    now = ctx.clock()
    half_deadline_ms = ctx.config.delivery.deadline_s * 1000 // 2
    reseal = stale_at(ctx, message.created_at) - now < half_deadline_ms
    # A re-sealed message carries the same evidence files (same encrypted bytes and keys).
    files = await attachment_repo.for_message(ctx.db, message.id) if reseal else []
    replacement = (
        seal_message(
            ctx,
            to=message.recipient,
            form_type=message.form_type,
            version=message.form_version,
            form=message.form,
            case_id=message.case_id,
            reply_to=message.in_reply_to,
            replaces=message.id,
            created_by=principal.name,
            now=now,
            handling=message.handling,
            attachments=[f.ref() for f in files],
        )
        if reseal
        else None
    )

    async def job(tx: Transaction) -> repo.MessageRow:
        # Checked again in the single writer: of two admins resending at once, one wins.
        current = await repo.get_message(tx, message_id)
        assert current is not None
        _check_resendable(current, await repo.replaced_by(tx, message_id))
        carrier: repo.MessageRow
        if replacement is None:
            deadline = queue_deadline(ctx, now, created_at=current.created_at)
            await repo.enqueue(tx, current.id, current.recipient, now, **deadline)
            await repo.set_status(tx, current.id, "queued", now)
            carrier = dataclasses.replace(current, status="queued", updated_at=now)
        else:
            await repo.insert_message(tx, replacement)
            new_ids = [ctx.new_id(now) for _ in files]
            await attachment_repo.copy_to(tx, current.id, replacement.id, new_ids, now)
            deadline = queue_deadline(ctx, now, created_at=now)
            await repo.enqueue(tx, replacement.id, replacement.recipient, now, **deadline)
            await ctx.record_about(tx, Event.SUBMITTED, replacement, at=now, actor=principal.actor)
            carrier = replacement
        await ctx.record_about(
            tx, Event.RESENT, current, at=now, detail=carrier.id, actor=principal.actor
        )
        return carrier

    carrier = await ctx.db.write(job)
    ctx.wake_sender(carrier.recipient)
    log.warning(
        "%s resent undeliverable message %s to %s %s",
        principal.name,
        message_id,
        message.recipient,
        f"re-sealed as {carrier.id}" if reseal else "with its original envelope",
    )
    return carrier


def _check_resendable(message: repo.MessageRow, replaced_by: str | None) -> None:
    if message.direction != "out":
        raise InvalidStateForAction("only a message this node sent can be resent")
    if replaced_by is not None:
        raise InvalidStateForAction(
            f"this message was already resent as {replaced_by}; resend that one if needed"
        )
    if message.status != "undeliverable":
        raise InvalidStateForAction(
            f"only an undeliverable message can be resent; this one is {message.status}"
        )
    if message.purged_at is not None:  # pragma: no cover - an open message is never purged
        raise InvalidStateForAction("the contents of this message were purged")
