"""Receiving an envelope: verify, decrypt, store in one transaction, then sign the receipt.

Fetch, verify, then persist: nothing is stored before ``open_envelope`` approved it, and the
``delivered`` receipt leaves the node only after the commit that stores the envelope. The same
envelope again (same sender, same bytes) is answered with the byte-identical original receipt.

Every receipt signed here (delivered or rejected) carries this node's newest checkpoint as its
``head``, from memory (``ctx.heads``), so a receipt costs no extra read. A sender that says which
of our heads it holds gets the consistency proof to the newest from :func:`log_proof`.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from mla_node.crashpoints import crash_point
from mla_node.errors import (
    EnvelopeError,
    EnvelopeMalformed,
    EnvelopeSenderMismatch,
    FormInvalid,
    MessageIdConflict,
    UnknownFormType,
)
from mla_node.ids import is_ulid
from mla_node.protocol import codec, forms
from mla_node.protocol.attachments import parse_refs
from mla_node.protocol.directory import Directory
from mla_node.protocol.envelope import (
    Header,
    OpenedEnvelope,
    content_digest,
    open_envelope,
    read_header,
)
from mla_node.protocol.evidence import Event
from mla_node.protocol.receipts import DELIVERED, REJECTED, sign_receipt
from mla_node.protocol.witness import ConsistencyProof
from mla_node.service import audit_log, blob_transfer
from mla_node.service.context import NodeContext
from mla_node.storage import repo
from mla_node.storage.db import Transaction

log = logging.getLogger(__name__)

_FOLLOW_UP_EVENTS = {"acknowledgement": Event.ACKNOWLEDGED}


@dataclass(frozen=True)
class Received:
    """The signed receipt for an envelope, and whether it was a repeat: the very same envelope
    stored before, answered with its original receipt (a sender whose answer was lost sends
    again; one that repeats often has a problem its operator should see)."""

    receipt: bytes
    repeat: bool = False


async def receive(ctx: NodeContext, data: bytes, client_cert_der: bytes | None) -> Received:
    """Returns the signed receipt. Raises an ``EnvelopeError`` (with a signed rejection receipt
    in ``extra["receipt"]`` when the header could be read) for anything refused."""
    directory = ctx.directory()
    digest = hashlib.sha256(data).digest()
    try:
        header = read_header(data)[0]
        _check_client_certificate(directory, header.sender, client_cert_der)
        # The fast path for replays: the very same bytes were verified and stored before, so the
        # original receipt is the answer, even once the envelope is older than the maximum age.
        stored = await _stored_receipt(ctx, header, digest)
        if stored is not None:
            return Received(stored, repeat=True)
        now = ctx.clock()
        opened = open_envelope(
            data,
            directory=directory,
            me=ctx.state,
            my_keys=ctx.identity.encryption_keys,
            now=now,
            max_age_ms=ctx.config.delivery.max_age_s * 1000,
            max_future_ms=ctx.config.delivery.max_future_skew_s * 1000,
        )
        body = _parse_body(opened)
        # Its files must be here whole and be what the signed body says, before any receipt.
        await blob_transfer.check_received(ctx, body["attachments"])
    except EnvelopeError as exc:
        _attach_rejection(ctx, exc, data, digest)
        raise
    crash_point("inbound.before_commit")
    received = await ctx.db.write(lambda tx: _store(ctx, tx, opened, body, now))
    crash_point("inbound.after_commit")
    return received


async def log_proof(ctx: NodeContext, witnessed_size: int) -> ConsistencyProof | None:
    """The consistency proof from the head of ``witnessed_size`` a sender holds to our newest
    head; None when there is none to give. Never raises: a proof that cannot be made must not
    cost the sender its receipt (it asks again with its next envelope)."""
    try:
        return await audit_log.consistency_from(ctx, witnessed_size)
    except Exception:
        log.exception("no consistency proof from size %d", witnessed_size)
        return None


def _check_client_certificate(directory: Directory, sender: str, cert_der: bytes | None) -> None:
    node = directory.node(sender)
    if node is None:
        return  # open_envelope refuses unknown senders with their own code
    if cert_der is None or "sha256:" + hashlib.sha256(cert_der).hexdigest() != node.tls_cert_sha256:
        raise EnvelopeSenderMismatch(
            f"the TLS client certificate is not the one the directory lists for {sender}"
        )


async def _stored_receipt(ctx: NodeContext, header: Header, digest: bytes) -> bytes | None:
    existing = await repo.get_message(ctx.db, header.message_id)
    if existing is None:
        return None
    if (
        existing.direction != "in"
        or existing.sender != header.sender
        or (existing.envelope_sha256 != digest)
    ):
        raise MessageIdConflict(f"message id {header.message_id} was used for another envelope")
    receipt = await repo.get_receipt(ctx.db, header.message_id)
    return receipt.receipt if receipt else None


def _parse_body(opened: OpenedEnvelope) -> dict[str, Any]:
    """The decrypted body must be a valid treaty form in a well-formed case thread."""
    b = codec.Fields(opened.body, EnvelopeMalformed, "body")
    form_type = b.one_of("type", forms.ALL_TYPES)
    version = b.integer("version")
    case_id = b.text("case", 26)
    reply_to = b.opt_text("reply_to", 26)
    # An admin's resend may re-seal an undeliverable message as a new one naming it. The
    # replacement keeps the case: a re-sealed request goes on with the case its original opened.
    replaces = b.opt_text("replaces", 26)
    if not all(is_ulid(i) for i in (case_id, reply_to, replaces) if i is not None):
        raise EnvelopeMalformed(
            "case, reply_to and replaces must be message ids", field="body.case"
        )
    mid = opened.header.message_id
    if form_type in forms.REQUEST_TYPES:
        well_formed = reply_to is None and (case_id == mid or replaces is not None)
    else:
        well_formed = reply_to is not None and case_id != mid
    if not well_formed:
        raise EnvelopeMalformed(
            "a request opens its own case; a follow-up answers a message", field="body.case"
        )
    if replaces == mid:
        raise EnvelopeMalformed("a message cannot replace itself", field="body.replaces")
    # Senders from before handling codes sent none: their messages were confidential.
    handling = b.opt_text("handling", 32) or forms.DEFAULT_HANDLING
    if handling not in forms.HANDLING_CODES:
        raise EnvelopeMalformed(f"unknown handling code {handling!r}", field="body.handling")
    try:
        form = forms.validate_form(form_type, version, b.child("form").raw())
    except (FormInvalid, UnknownFormType) as exc:
        fields = ", ".join(p.field for p in exc.problems) or exc.field or ""
        raise EnvelopeMalformed(f"the form is invalid: {fields}", field="body.form") from exc
    return {
        "type": form_type,
        "version": version,
        "form": form,
        "case": case_id,
        "reply_to": reply_to,
        "replaces": replaces,
        "handling": handling,
        "attachments": parse_refs(opened.body.get("attachments")),
    }


async def _store(
    ctx: NodeContext, tx: Transaction, opened: OpenedEnvelope, body: dict[str, Any], now: int
) -> Received:
    h = opened.header
    # Again inside the single writer, in case the same envelope arrived twice at once.
    existing = await repo.get_message(tx, h.message_id)
    if existing is not None:
        if existing.direction == "in" and existing.envelope_sha256 == opened.digest:
            original_receipt = await repo.get_receipt(tx, h.message_id)
            assert original_receipt is not None  # stored in the same transaction as the message
            return Received(original_receipt.receipt, repeat=True)
        raise MessageIdConflict(f"message id {h.message_id} was used for another envelope")
    await repo.insert_message(
        tx,
        repo.MessageRow(
            id=h.message_id,
            direction="in",
            sender=h.sender,
            recipient=h.recipient,
            case_id=body["case"],
            in_reply_to=body["reply_to"],
            form_type=body["type"],
            form_version=body["version"],
            form=body["form"],
            status="received",
            envelope=opened.raw,
            envelope_sha256=opened.digest,
            created_at=h.created_at,
            updated_at=now,
            created_by=None,
            replaces=body["replaces"],
            body=opened.body_bytes,
            handling=body["handling"],
        ),
    )
    await blob_transfer.record_received(tx, ctx, h.message_id, body["attachments"], now)
    receipt = sign_receipt(
        ctx.identity.signing_key,
        message_id=h.message_id,
        sender=h.sender,
        recipient=ctx.state,
        envelope_digest=opened.digest,
        status=DELIVERED,
        code=None,
        at=now,
        head=ctx.heads.checkpoint,
    )
    receipt_digest = hashlib.sha256(receipt).digest()
    await repo.insert_receipt(
        tx,
        repo.ReceiptRow(h.message_id, "issued", DELIVERED, None, receipt, receipt_digest, now),
    )
    await ctx.record_evidence(
        tx,
        event=Event.DELIVERED,
        message_id=h.message_id,
        case_id=body["case"],
        at=now,
        envelope_digest=opened.digest,
        peer=h.sender,
        receipt_digest=receipt_digest,
        content_digest=content_digest(opened.body_bytes),
    )
    original = await repo.get_message(tx, body["reply_to"]) if body["reply_to"] else None
    if original is not None and original.direction == "out" and original.peer == h.sender:
        # The peer acknowledged or answered one of ours: that is evidence on our message too.
        await ctx.record_evidence(
            tx,
            event=_FOLLOW_UP_EVENTS.get(body["type"], Event.ANSWERED),
            message_id=original.id,
            case_id=original.case_id,
            at=now,
            envelope_digest=original.envelope_sha256,
            peer=h.sender,
            detail=h.message_id,
        )
    return Received(receipt)


def _attach_rejection(ctx: NodeContext, exc: EnvelopeError, data: bytes, digest: bytes) -> None:
    """Sign a rejection so the sender can stop retrying on proof, not on an unsigned 4xx."""
    try:
        header = read_header(data)[0]
    except EnvelopeError:
        return  # nothing addressable to sign about
    exc.extra["receipt"] = sign_receipt(
        ctx.identity.signing_key,
        message_id=header.message_id,
        sender=header.sender,
        recipient=ctx.state,
        envelope_digest=digest,
        status=REJECTED,
        code=exc.code,
        at=ctx.clock(),
        head=ctx.heads.checkpoint,
    )
    log.info("envelope %s from %s refused: %s", header.message_id, header.sender, exc.code)
