"""The auditor's read-only view of the node's transparency log: checkpoints, records, proofs and
case bundles (docs/audit.md). Nothing here changes what the log says; signing a checkpoint only
commits to what is already there, and exporting a bundle is itself recorded as a user action."""

from __future__ import annotations

import base64
from typing import Any

from mla_node.errors import InvalidParameter, MlaError, NotFound
from mla_node.protocol.checkpoint import verify_checkpoint
from mla_node.protocol.evidence import Event
from mla_node.service import audit_log
from mla_node.service.bundles import WrittenBundle, build_bundle
from mla_node.service.context import NodeContext, Principal
from mla_node.service.views import evidence_view, iso, may_see_content
from mla_node.storage import repo
from mla_node.storage.db import Transaction

MAX_LOG_PAGE = 500


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def checkpoint_view(ctx: NodeContext, row: repo.CheckpointRow) -> dict[str, Any]:
    view: dict[str, Any] = {
        "size": row.size,
        "root": row.root.hex(),
        "at": iso(row.at),
        "checkpoint": _b64(row.checkpoint),
        "verified": False,
    }
    directory = ctx.trust.current
    if directory is not None:
        try:
            view["kid"] = verify_checkpoint(row.checkpoint, directory, node=ctx.state).kid
            view["verified"] = True
        except MlaError as exc:
            view["verification_error"] = exc.code
    return view


async def checkpoints(ctx: NodeContext) -> dict[str, Any]:
    rows = await repo.list_checkpoints(ctx.db)
    return {"node": ctx.state, "items": [checkpoint_view(ctx, r) for r in rows]}


async def sign_checkpoint_now(ctx: NodeContext) -> dict[str, Any]:
    """Sign the log's current head (or return the newest, when the log has not grown)."""
    await audit_log.checkpoint(ctx)
    row = await repo.latest_checkpoint(ctx.db)
    assert row is not None
    return checkpoint_view(ctx, row)


async def log_page(ctx: NodeContext, *, after: int, limit: int) -> dict[str, Any]:
    """Records of the log with seq > ``after``, each re-verified, oldest first."""
    rows = await repo.log_records(ctx.db, after=after, limit=limit + 1)
    directory = ctx.trust.current
    items = []
    for seq, record in rows[:limit]:
        view = evidence_view(record, directory, ctx.state)
        items.append({"seq": seq, "record": _b64(record), **view})
    more = len(rows) > limit
    return {
        "node": ctx.state,
        "items": items,
        "next_after": items[-1]["seq"] if more and items else None,
    }


async def inclusion(ctx: NodeContext, *, seq: int, size: int | None) -> dict[str, Any]:
    """The audit path of record ``seq`` in the tree of the first ``size`` records (by default
    the newest checkpoint's), with that tree's root."""
    log_size = await repo.log_size(ctx.db)
    if size is None:
        head = await repo.latest_checkpoint(ctx.db)
        size = head.size if head is not None else log_size
    if not 1 <= size <= log_size:
        raise InvalidParameter(f"size must be 1 to {log_size}, the log's size", field="size")
    if not 1 <= seq <= size:
        raise InvalidParameter(f"seq must be 1 to size ({size})", field="seq")
    leaf, root, proof = await audit_log.over_log(
        ctx.db, size, lambda t: (t.leaf(seq - 1), t.root(), t.inclusion_proof(seq - 1))
    )
    return {
        "seq": seq,
        "size": size,
        "leaf_hash": leaf.hex(),
        "root": root.hex(),
        "proof": [h.hex() for h in proof],
    }


async def consistency(ctx: NodeContext, *, old_size: int, size: int) -> dict[str, Any]:
    """Proof that the first ``old_size`` records are a prefix of the first ``size``."""
    log_size = await repo.log_size(ctx.db)
    if not 1 <= size <= log_size:
        raise InvalidParameter(f"to must be 1 to {log_size}, the log's size", field="to")
    if not 1 <= old_size <= size:
        raise InvalidParameter(f"from must be 1 to `to` ({size})", field="from")
    old_root, root, proof = await audit_log.over_log(
        ctx.db, size, lambda t: (t.root(old_size), t.root(), t.consistency_proof(old_size))
    )
    return {
        "from": old_size,
        "to": size,
        "from_root": old_root.hex(),
        "to_root": root.hex(),
        "proof": [h.hex() for h in proof],
    }


async def export_bundle(ctx: NodeContext, principal: Principal, message_id: str) -> WrittenBundle:
    """The case's evidence bundle. The export is recorded first and a checkpoint signed after
    it, so the bundle holds the whole case up to and including its own export. It discloses the
    messages' content when the caller may read it (not auditors, unless the node says so)."""
    message = await repo.get_message(ctx.db, message_id)
    if message is None:
        raise NotFound(f"no request or message {message_id!r}", field="id")
    now = ctx.clock()
    with_content = may_see_content(ctx, principal)
    what = "bundle with content" if with_content else "bundle"

    async def record(tx: Transaction) -> None:
        await ctx.record_about(
            tx, Event.EXPORTED, message, at=now, detail=what, actor=principal.actor
        )

    await ctx.db.write(record)
    await audit_log.checkpoint(ctx)
    return await build_bundle(ctx.db, message_id, with_content=with_content)
