"""The clerk's use cases: submit a request, follow up in its case thread, acknowledge, read."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mla_node.crashpoints import crash_point
from mla_node.errors import (
    FieldProblem,
    FormInvalid,
    IdempotencyKeyReused,
    InvalidStateForAction,
    MalformedBody,
    NotFound,
    PayloadTooLarge,
    UnknownState,
)
from mla_node.ids import is_ulid
from mla_node.protocol import forms
from mla_node.protocol.attachments import MAX_ATTACHMENTS, AttachmentRef
from mla_node.protocol.envelope import MAX_ENVELOPE, envelope_digest, pack_body, seal_envelope
from mla_node.protocol.evidence import Event
from mla_node.protocol.keys import choose_suite
from mla_node.service.attachments import claim_uploads, uploads_for_submission
from mla_node.service.context import NodeContext, Principal
from mla_node.storage import repo
from mla_node.storage.db import Transaction

# Follow-ups that carry material produced in answer to a request inherit its use restriction
# (A-55 Art. 25): the receiving side must see and honour it.
_INHERITS_USE_RESTRICTION = frozenset({"execution_result", "supplement"})


@dataclass(frozen=True)
class Submission:
    form_type: str
    version: int
    form: dict[str, Any]
    to: str | None
    handling: str | None  # None: the default, or for a follow-up its case's
    attachments: tuple[str, ...] = ()  # ids of files uploaded to this node, not used yet


def parse_submission(payload: object, *, follow_up: bool) -> Submission:
    """Check the outer shape of a submission and the form inside it, naming every bad field."""
    if not isinstance(payload, dict):
        raise MalformedBody("the body must be a JSON object")
    problems: list[FieldProblem] = []
    allowed = {"type", "version", "form", "handling", "attachments"} | (
        set() if follow_up else {"to"}
    )
    problems += [
        FieldProblem(k, "extra_field", "This field is not part of a submission.")
        for k in payload
        if k not in allowed
    ]
    form_type = payload.get("type")
    kinds = forms.FOLLOW_UP_TYPES if follow_up else forms.REQUEST_TYPES
    if not isinstance(form_type, str) or form_type not in kinds:
        problems.append(
            FieldProblem("type", "invalid_value", f"Must be one of: {', '.join(sorted(kinds))}.")
        )
    to = payload.get("to")
    if not follow_up and not (isinstance(to, str) and len(to) == 2 and to.isupper()):
        problems.append(
            FieldProblem("to", "invalid_value", "The requested state's two-letter code.")
        )
    version = payload.get("version", forms.LATEST_VERSION.get(str(form_type), 1))
    if not isinstance(version, int) or isinstance(version, bool):
        problems.append(FieldProblem("version", "invalid_type", "Must be an integer."))
    handling = payload.get("handling")
    if "handling" in payload and handling not in forms.HANDLING_CODES:
        problems.append(
            FieldProblem(
                "handling", "invalid_value", f"Must be one of: {', '.join(forms.HANDLING_CODES)}."
            )
        )
    form = payload.get("form")
    if not isinstance(form, dict):
        problems.append(FieldProblem("form", "invalid_type", "Must be a JSON object."))
    attachments = _attachment_ids(payload.get("attachments", []), problems)
    if not problems:
        assert isinstance(form_type, str) and isinstance(version, int)
        try:
            form = forms.validate_form(form_type, version, form)
        except FormInvalid as exc:
            problems += exc.problems
    if problems:
        raise FormInvalid(f"{len(problems)} field(s) are invalid", problems=problems)
    assert isinstance(form_type, str) and isinstance(version, int) and isinstance(form, dict)
    return Submission(
        form_type,
        version,
        form,
        to if isinstance(to, str) else None,
        handling if isinstance(handling, str) else None,
        attachments,
    )


def _attachment_ids(value: object, problems: list[FieldProblem]) -> tuple[str, ...]:
    """The ``attachments`` of a submission: ids of uploads (POST /api/v1/attachments), at most
    MAX_ATTACHMENTS, each once. Whether they exist is checked later, after idempotency."""
    if not isinstance(value, list) or len(value) > MAX_ATTACHMENTS:
        problems.append(
            FieldProblem(
                "attachments", "invalid_type", f"Must be a list of at most {MAX_ATTACHMENTS} ids."
            )
        )
        return ()
    for i, item in enumerate(value):
        if not isinstance(item, str) or not is_ulid(item):
            problems.append(FieldProblem(f"attachments.{i}", "invalid_format", "Must be an id."))
        elif value.index(item) != i:
            problems.append(FieldProblem(f"attachments.{i}", "invalid_value", "Named twice."))
    return tuple(str(item) for item in value)


def body_hash(payload: object) -> bytes:
    return hashlib.sha256(
        json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    ).digest()


async def submit(
    ctx: NodeContext, principal: Principal, payload: object, idempotency_key: str | None
) -> tuple[repo.MessageRow, bool]:
    """A new request, opening a case thread. Returns the message and whether it was created now
    (False when an earlier call with the same Idempotency-Key already created it)."""
    submission = parse_submission(payload, follow_up=False)
    assert submission.to is not None
    return await _send(
        ctx,
        principal,
        submission,
        to=submission.to,
        case_id=None,
        reply_to=None,
        idempotency=(idempotency_key, body_hash(payload)) if idempotency_key else None,
    )


async def reply(
    ctx: NodeContext,
    principal: Principal,
    message_id: str,
    payload: object,
    idempotency_key: str | None,
) -> tuple[repo.MessageRow, bool]:
    """A follow-up in the case thread of ``message_id``, addressed to the other party."""
    original = await _message(ctx, message_id)
    submission = parse_submission(payload, follow_up=True)
    if original.purged_at is not None:
        # Its use restriction (A-55 Art. 25) went with the contents: nothing to answer under.
        raise InvalidStateForAction("the contents of this case were purged")
    if submission.form_type == "acknowledgement":
        await _check_acknowledgeable(ctx, original)
    return await _send(
        ctx,
        principal,
        submission,
        to=original.peer,
        case_id=original.case_id,
        reply_to=original,
        # The key names one reply to one message: the same key and body on another message is
        # a different reply, so the message replied to is part of what the digest covers.
        idempotency=(
            (idempotency_key, body_hash({"reply_to": message_id, "body": payload}))
            if idempotency_key
            else None
        ),
    )


async def acknowledge(
    ctx: NodeContext, principal: Principal, message_id: str, payload: object
) -> tuple[repo.MessageRow, bool]:
    """The central authority's acknowledgement of a request it received, sent back as signed
    evidence. The form may be omitted: today's date is then the date of receipt, and the request's
    own id the central authority's reference."""
    original = await _message(ctx, message_id)
    await _check_acknowledgeable(ctx, original)
    if not isinstance(payload, dict):
        raise MalformedBody("the body must be a JSON object, or empty")
    extra = [k for k in payload if k != "form"]
    if extra:
        raise FormInvalid(
            "an acknowledgement takes only a form",
            problems=[
                FieldProblem(k, "extra_field", "This field is not part of an acknowledgement.")
                for k in extra
            ],
        )
    form = payload.get("form")
    if form is None:
        today = dt.datetime.fromtimestamp(ctx.clock() / 1000, dt.UTC).date().isoformat()
        form = {"received_on": today, "central_authority_reference": original.id}
    submission = parse_submission({"type": "acknowledgement", "form": form}, follow_up=True)
    return await _send(
        ctx,
        principal,
        submission,
        to=original.peer,
        case_id=original.case_id,
        reply_to=original,
        idempotency=None,
    )


async def _check_acknowledgeable(ctx: NodeContext, original: repo.MessageRow) -> None:
    if original.direction != "in" or original.form_type not in forms.REQUEST_TYPES:
        raise InvalidStateForAction("only a request this node received can be acknowledged")
    if await repo.has_evidence(ctx.db, original.id, Event.ACKNOWLEDGED):
        raise InvalidStateForAction("this request has already been acknowledged")


async def _message(ctx: NodeContext, message_id: str) -> repo.MessageRow:
    message = await repo.get_message(ctx.db, message_id)
    if message is None:
        raise NotFound(f"no request or message {message_id!r}", field="id")
    return message


async def _send(
    ctx: NodeContext,
    principal: Principal,
    submission: Submission,
    *,
    to: str,
    case_id: str | None,
    reply_to: repo.MessageRow | None,
    idempotency: tuple[str, bytes] | None,
) -> tuple[repo.MessageRow, bool]:
    if idempotency is not None:
        earlier = await _idempotent_replay(ctx, principal, *idempotency)
        if earlier is not None:
            return earlier, False
    files = await uploads_for_submission(ctx, submission.attachments)
    now = ctx.clock()
    form = dict(submission.form)
    if reply_to is not None and submission.form_type in _INHERITS_USE_RESTRICTION:
        restriction = await _use_restriction(ctx, reply_to.case_id)
        if restriction and "use_restriction" in form:
            form["use_restriction"] = restriction
    handling = submission.handling or forms.DEFAULT_HANDLING
    if reply_to is not None:  # never less strict than the message it answers
        handling = (
            forms.stricter_handling(reply_to.handling, submission.handling)
            if submission.handling
            else reply_to.handling
        )
    row = seal_message(
        ctx,
        to=to,
        form_type=submission.form_type,
        version=submission.version,
        form=form,
        case_id=case_id,
        reply_to=reply_to.id if reply_to else None,
        replaces=None,
        handling=handling,
        created_by=principal.name,
        now=now,
        attachments=[f.ref() for f in files],
    )
    message_id = row.id

    async def store(tx: Transaction) -> tuple[repo.MessageRow, bool]:
        # Checked again inside the single writer: of two clerks acknowledging at once, the
        # second finds the first's evidence and nothing is sent twice.
        if (
            submission.form_type == "acknowledgement"
            and reply_to is not None
            and await repo.has_evidence(tx, reply_to.id, Event.ACKNOWLEDGED)
        ):
            raise InvalidStateForAction("this request has already been acknowledged")
        if idempotency is not None:
            # Checked again inside the single writer: of concurrent calls with one key, exactly
            # one gets here first; the others find its row.
            earlier = await repo.idempotent_result(tx, principal.token_id, idempotency[0])
            if earlier is not None:
                return await _replayed(tx, earlier, idempotency[1]), False
            await repo.insert_message(tx, row)
            await repo.remember_idempotency(
                tx, principal.token_id, idempotency[0], idempotency[1], message_id, now
            )
        else:
            await repo.insert_message(tx, row)
        await claim_uploads(tx, submission.attachments, message_id)
        await repo.enqueue(tx, message_id, to, now, **queue_deadline(ctx, now, created_at=now))
        await ctx.record_about(tx, Event.SUBMITTED, row, at=now, actor=principal.actor)
        if reply_to is not None and reply_to.direction == "in":
            event = (
                Event.ACKNOWLEDGED if submission.form_type == "acknowledgement" else Event.ANSWERED
            )
            await ctx.record_about(
                tx, event, reply_to, at=now, detail=message_id, actor=principal.actor
            )
        return row, True

    stored, created = await ctx.db.write(store)
    crash_point("submit.after_commit")
    if created:
        ctx.wake_sender(to)
    return stored, created


def seal_message(
    ctx: NodeContext,
    *,
    to: str,
    form_type: str,
    version: int,
    form: dict[str, Any],
    case_id: str | None,
    reply_to: str | None,
    replaces: str | None,
    created_by: str | None,
    now: int,
    handling: str = forms.DEFAULT_HANDLING,
    attachments: Sequence[AttachmentRef] = (),
) -> repo.MessageRow:
    """Sign and encrypt a form for ``to`` as a new outbound message (not stored yet).

    ``case_id`` None opens a new case (the message's own id). ``replaces`` names the
    undeliverable message an admin's resend re-seals: it travels inside the signed body, so the
    receiver sees the link too. ``attachments``: the files it carries, each named in the signed
    body with its digests, size and key (protocol/attachments.py); left out when there is none.
    """
    directory = ctx.directory()
    recipient = directory.node(to)
    if recipient is None or to == ctx.state:
        raise UnknownState(f"{to!r} has no node in the directory", field="to")
    me = directory.node(ctx.state)
    suite = choose_suite(list(me.suites) if me else [], list(recipient.suites))
    key = directory.encryption_key(to, suite, now) if suite else None
    if suite is None or key is None:
        raise UnknownState(f"{to} has no encryption key this node can use", field="to")
    message_id = ctx.new_id(now)
    case = case_id or message_id
    body: dict[str, Any] = {
        "type": form_type,
        "version": version,
        "form": form,
        "case": case,
        "reply_to": reply_to,
        "handling": handling,
    }
    if replaces is not None:
        body["replaces"] = replaces
    if attachments:
        body["attachments"] = [a.as_map() for a in attachments]
    # Random salt: the content digest in the evidence must not confirm a guessed form.
    body["salt"] = secrets.token_bytes(16)
    envelope = seal_envelope(
        signing_key=ctx.identity.signing_key,
        sender=ctx.state,
        recipient=recipient,
        recipient_kid=key.kid,
        recipient_public=key.public,
        suite=suite,
        message_id=message_id,
        message_type="case",
        created_at=now,
        body=body,
    )
    if len(envelope) > MAX_ENVELOPE:
        # Padding doubles up to the next power of two, so a form of ~512 KiB cannot go inline.
        raise PayloadTooLarge(
            f"the sealed request would be {len(envelope)} bytes, more than {MAX_ENVELOPE}",
            field="form",
        )
    return repo.MessageRow(
        id=message_id,
        direction="out",
        sender=ctx.state,
        recipient=to,
        case_id=case,
        in_reply_to=reply_to,
        form_type=form_type,
        form_version=version,
        form=form,
        status="queued",
        envelope=envelope,
        envelope_sha256=envelope_digest(envelope),
        created_at=now,
        updated_at=now,
        created_by=created_by,
        replaces=replaces,
        body=pack_body(body),
        handling=handling,
    )


def stale_at(ctx: NodeContext, created_at: int) -> int:
    """When an envelope sealed at ``created_at`` stops being accepted (``delivery.max_age_s``),
    less a margin for the receiver's clock running behind ours."""
    d = ctx.config.delivery
    margin_s = min(d.max_future_skew_s, d.max_age_s // 2)
    return created_at + (d.max_age_s - margin_s) * 1000


def queue_deadline(ctx: NodeContext, now: int, *, created_at: int) -> dict[str, int]:
    """The outbox row's ``deadline_at`` and ``warn_at`` for an envelope queued ``now``: a full
    ``delivery.deadline_s``, but never past the moment the envelope goes stale."""
    d = ctx.config.delivery
    deadline = min(now + d.deadline_s * 1000, stale_at(ctx, created_at))
    warn = now + int((deadline - now) * d.deadline_warning_fraction)
    return {"deadline_at": deadline, "warn_at": warn}


async def _idempotent_replay(
    ctx: NodeContext, principal: Principal, key: str, digest: bytes
) -> repo.MessageRow | None:
    earlier = await repo.idempotent_result(ctx.db, principal.token_id, key)
    return None if earlier is None else await _replayed(ctx.db, earlier, digest)


async def _replayed(db: repo.Reader, earlier: tuple[bytes, str], digest: bytes) -> repo.MessageRow:
    earlier_digest, message_id = earlier
    if earlier_digest != digest:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used for a different request", field="Idempotency-Key"
        )
    message = await repo.get_message(db, message_id)
    assert message is not None  # the idempotency row references it
    return message


async def _use_restriction(ctx: NodeContext, case_id: str) -> str | None:
    # The request that opened the case: its id is the case's, unless it was re-sealed by a
    # resend (the replacement keeps the case id), and then the receiver may hold only that one.
    opening = await repo.get_message(ctx.db, case_id)
    if opening is None or opening.purged_at is not None:
        thread = await repo.case_messages(ctx.db, case_id)
        requests = [m for m in thread if m.form_type in forms.REQUEST_TYPES and not m.purged_at]
        opening = requests[0] if requests else None
    if opening is None:
        return None
    purpose = opening.form.get("stated_purpose")
    return purpose if isinstance(purpose, str) else None
