"""Reading: a request with its verified evidence timeline, the boxes, the peers."""

from __future__ import annotations

import datetime as dt
from typing import Any

from mla_node.errors import MlaError, NotFound
from mla_node.protocol.directory import Directory
from mla_node.protocol.evidence import USER_ACTIONS, Event, verify_evidence
from mla_node.protocol.receipts import verify_receipt
from mla_node.service.context import NodeContext, Principal, Role
from mla_node.storage import attachment_repo, repo, retention
from mla_node.storage.db import Transaction

MAX_PAGE = 200
VIEW_RECORD_WINDOW_MS = 10 * 60 * 1000
MAX_RECENT_VIEWS = 10_000


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds")


def summary(m: repo.MessageRow) -> dict[str, Any]:
    return {
        "id": m.id,
        "box": "outbox" if m.direction == "out" else "inbox",
        "type": m.form_type,
        "version": m.form_version,
        "from": m.sender,
        "to": m.recipient,
        "case_id": m.case_id,
        "in_reply_to": m.in_reply_to,
        "status": m.status,
        "created_at": iso(m.created_at),
        "replaces": m.replaces,
        "handling": m.handling,
    }


async def get_request(ctx: NodeContext, principal: Principal, message_id: str) -> dict[str, Any]:
    message = await repo.get_message(ctx.db, message_id)
    if message is None:
        raise NotFound(f"no request or message {message_id!r}", field="id")
    purged = message.purged_at is not None
    shows_content = not purged and may_see_content(ctx, principal)
    if (
        message.direction == "in"
        and principal.role is Role.CLERK
        and not await repo.has_evidence(ctx.db, message.id, Event.RETRIEVED)
    ):
        await _record_retrieved(ctx, message, principal)
        message = await repo.get_message(ctx.db, message_id) or message
    else:
        await _record_viewed(ctx, message, principal, "content" if shows_content else "metadata")
    directory = ctx.trust.current
    view = summary(message)
    view["form"] = message.form if shows_content else None
    view["envelope_sha256"] = message.envelope_sha256.hex()
    restriction = message.form.get("stated_purpose") or message.form.get("use_restriction")
    view["use_restriction"] = None if purged else restriction
    view["purged_at"] = iso(message.purged_at)
    view["replaced_by"] = await repo.replaced_by(ctx.db, message.id)
    view["delivery"] = await _delivery_view(ctx, message)
    view["legal_hold"] = _hold_view(await retention.get_hold(ctx.db, message.case_id))
    view["receipt"] = await _receipt_view(ctx, message, directory)
    view["evidence"] = [
        evidence_view(record, directory, ctx.state)
        for record in await repo.evidence_for(ctx.db, message.id, leave_out=USER_ACTIONS)
    ]
    view["thread"] = [summary(m) for m in await repo.case_messages(ctx.db, message.case_id)]
    view["attachments"] = [
        # A file's name can say as much as the form (it is null where the form is); its size
        # and digest, like the envelope's, are what an auditor checks.
        {
            "n": a.position,
            "name": a.name if shows_content else None,
            "size": a.size,
            "sha256": a.sha256.hex(),
        }
        for a in await attachment_repo.for_message(ctx.db, message.id)
    ]
    return view


async def _delivery_view(ctx: NodeContext, message: repo.MessageRow) -> dict[str, Any] | None:
    state = await repo.outbox_state(ctx.db, message.id) if message.direction == "out" else None
    if state is None:
        return None
    return {
        "attempts": state.attempts,
        "next_attempt_at": iso(state.next_attempt_at),
        "deadline_at": iso(state.deadline_at),
        "last_error": state.last_error,
    }


def _hold_view(hold: retention.Hold | None) -> dict[str, Any] | None:
    if hold is None:
        return None
    return {"since": iso(hold.set_at), "by": hold.set_by, "reason": hold.reason}


def may_see_content(ctx: NodeContext, principal: Principal) -> bool:
    """Whether this user may read what a request says (its form), not only that it was sent."""
    return principal.role is not Role.AUDITOR or ctx.config.audit.auditors_see_content


async def _record_viewed(
    ctx: NodeContext, message: repo.MessageRow, principal: Principal, what: str
) -> None:
    """Every look at a request is a user action in the log (issue 4): who, when, and whether
    the content was shown ("content") or only its metadata and evidence ("metadata").

    Looks by the same user at the same message within ``VIEW_RECORD_WINDOW_MS`` make one record:
    a client polling a request's status would otherwise fill the log with identical entries."""
    now = ctx.clock()
    key = (principal.actor, message.id, what)
    if now - ctx.recent_views.get(key, -VIEW_RECORD_WINDOW_MS) < VIEW_RECORD_WINDOW_MS:
        return
    if len(ctx.recent_views) >= MAX_RECENT_VIEWS:
        ctx.recent_views.clear()  # at worst one more record per user and message
    ctx.recent_views[key] = now

    async def job(tx: Transaction) -> None:
        await ctx.record_about(
            tx, Event.VIEWED, message, at=now, detail=what, actor=principal.actor
        )

    await ctx.db.write(job)


async def _record_retrieved(
    ctx: NodeContext, message: repo.MessageRow, principal: Principal
) -> None:
    now = ctx.clock()

    async def job(tx: Transaction) -> None:
        # Checked again in the writer: two clerks opening it at once leave one record.
        if await repo.has_evidence(tx, message.id, Event.RETRIEVED):
            return
        await ctx.record_about(tx, Event.RETRIEVED, message, at=now, actor=principal.actor)
        await repo.set_status(tx, message.id, "retrieved", now)

    await ctx.db.write(job)


async def _receipt_view(
    ctx: NodeContext, message: repo.MessageRow, directory: Directory | None
) -> dict[str, Any] | None:
    row = await repo.get_receipt(ctx.db, message.id)
    if row is None:
        return None
    view: dict[str, Any] = {
        "status": row.status,
        "code": row.code,
        "signed_by": message.recipient,
        "at": iso(row.at),
        "sha256": row.receipt_sha256.hex(),
        "verified": False,
    }
    if directory is not None:
        try:
            verify_receipt(
                row.receipt,
                directory,
                expect_message_id=message.id,
                expect_envelope_digest=message.envelope_sha256,
                expect_signer=message.recipient,
            )
            view["verified"] = True
        except MlaError as exc:
            view["verification_error"] = exc.code
    return view


def evidence_view(record: bytes, directory: Directory | None, me: str) -> dict[str, Any]:
    if directory is None:
        return {"verified": False, "verification_error": "no_directory"}
    try:
        evidence = verify_evidence(record, directory, node=me)
    except MlaError as exc:
        return {"verified": False, "verification_error": exc.code}
    view = evidence.as_json()
    view["at"] = iso(evidence.at)
    view["verified"] = True
    return view


async def list_requests(
    ctx: NodeContext,
    *,
    box: str,
    status: str | None,
    form_type: str | None,
    case_id: str | None,
    peer: str | None,
    cursor: str | None,
    limit: int,
) -> dict[str, Any]:
    direction = {"outbox": "out", "inbox": "in"}[box]
    rows = await repo.list_messages(
        ctx.db,
        repo.ListFilter(
            direction=direction,
            status=status,
            form_type=form_type,
            case_id=case_id,
            peer=peer,
            after_id=cursor,
            limit=min(limit, MAX_PAGE) + 1,
        ),
    )
    page = rows[: min(limit, MAX_PAGE)]
    return {
        "items": [summary(m) for m in page],
        "next_cursor": page[-1].id if len(rows) > len(page) else None,
    }


async def peers(ctx: NodeContext) -> dict[str, Any]:
    directory = ctx.trust.current
    statuses = await repo.peer_statuses(ctx.db)
    queues = await repo.outbox_summary(ctx.db)
    undeliverable = await repo.undeliverable_by_peer(ctx.db)
    now = ctx.clock()
    items = []
    for state, node in sorted((directory.nodes if directory else {}).items()):
        if state == ctx.state:
            continue
        st = statuses.get(state)
        queued, oldest, _ = queues.get(state, (0, None, None))
        reachable: bool | None = None
        if st is not None:
            reachable = st.consecutive_failures == 0 and st.last_success_at is not None
        items.append(
            {
                "state": state,
                "authority": node.authority,
                "endpoint": node.endpoint,
                "suites": list(node.suites),
                "tls_cert_sha256": node.tls_cert_sha256,
                "keys": [
                    {
                        "kid": k.kid,
                        "use": k.use,
                        "alg": k.alg,
                        "not_before": iso(k.not_before),
                        "not_after": iso(k.not_after),
                        "revoked": k.kid in (directory.revoked if directory else {}),
                    }
                    for k in node.keys
                ],
                "reachable": reachable,
                "last_success_at": iso(st.last_success_at) if st else None,
                "last_error": st.last_error if st else None,
                "queued": queued,
                "oldest_queued_at": iso(oldest),
                "undeliverable": undeliverable.get(state, 0),
                "deadlines_passed": st.deadlines_passed if st else 0,
            }
        )
    return {
        "state": ctx.state,
        "directory": {
            "version": directory.version if directory else None,
            "expires_at": iso(directory.expires_at) if directory else None,
            "expired": bool(directory and now >= directory.expires_at),
        },
        "peers": items,
    }
