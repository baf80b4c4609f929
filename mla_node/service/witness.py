"""Witnessing the peers' log heads: judge the head each receipt carries, keep the proven ones,
and report a peer caught showing two histories (a split view).

The delivery loop asks :func:`witnessed_size` before each send (the size of the peer's newest
head stored here, sent as a hint so the peer can prove its new head extends it) and calls
:func:`observe` once a receipt is verified and recorded. The rules are in protocol/witness.py;
this module reads and writes what they need in one write job, so two receipts of one peer are
judged one after the other, each against what the other stored.

A split view is written to ``<data dir>/evidence/split-view-<PEER>-<UTC time>.json`` (0600, the
data dir being the database's folder), stored in ``split_views`` and raised as a log line at
ERROR starting ``ALERT split_view``. Delivery to the peer goes on: the alert is for humans, and
refusing the peer's receipts would only stop the requests, not the fork. Each stored head a peer
contradicts is reported once, however often it goes on contradicting it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import secrets
from pathlib import Path

from mla_node.protocol.checkpoint import Checkpoint
from mla_node.protocol.witness import (
    ConsistencyProof,
    Decision,
    SplitView,
    Verdict,
    decide,
    split_view_document,
)
from mla_node.service.context import NodeContext
from mla_node.storage import witness_repo
from mla_node.storage.db import Transaction

log = logging.getLogger(__name__)

EVIDENCE_DIR = "evidence"


def evidence_dir(ctx: NodeContext) -> Path:
    """Where evidence files go: ``evidence/`` beside the node's database."""
    return ctx.config.files_dir / EVIDENCE_DIR


async def newest_witnessed(ctx: NodeContext, peer: str) -> Checkpoint | None:
    """The newest head of ``peer`` stored here (from memory after the first call)."""
    if peer not in ctx.heads.witnessed:
        newest = await witness_repo.newest_head(ctx.db, peer)
        ctx.heads.witnessed.setdefault(peer, None)
        if newest is not None:
            ctx.heads.note_witnessed(newest)
    return ctx.heads.witnessed[peer]


async def witnessed_size(ctx: NodeContext, peer: str) -> int | None:
    """The size of the newest head of ``peer`` stored here, None when there is none yet."""
    newest = await newest_witnessed(ctx, peer)
    return None if newest is None else newest.size


async def observe(
    ctx: NodeContext, peer: str, head: Checkpoint | None, proof: ConsistencyProof | None
) -> Decision | None:
    """Judge ``head``, a checkpoint of ``peer`` verified as its own (a verified receipt's head),
    with the consistency proof ``peer`` offered beside it; store it or report a split view."""
    if head is None:
        return None
    if head.node != peer:
        raise ValueError(f"a head of {head.node} observed as {peer}'s")
    known = await newest_witnessed(ctx, peer)
    if known is not None and (known.size, known.root) == (head.size, head.root):
        # Most receipts show the head already stored (checkpoints are minutes apart): settled
        # here, without a write. Anything else is judged against the database, in the writer.
        return Decision(Verdict.SAME)
    now = ctx.clock()

    async def job(tx: Transaction) -> tuple[Decision, int | None]:
        newest = await witness_repo.newest_head(tx, peer)
        same_size = None
        if newest is not None and head.size != newest.size:
            same_size = await witness_repo.head_at(tx, peer, head.size)
        decision = decide(head, newest=newest, same_size=same_size, proof=proof)
        if decision.store:
            await witness_repo.insert_head(tx, head, now)
        view = decision.split_view
        if view is None:
            return decision, None
        split_id = await witness_repo.insert_split_view(
            tx,
            peer=peer,
            reason=view.reason.value,
            stored_head=view.first.raw,
            stored_sha256=hashlib.sha256(view.first.raw).digest(),
            shown_head=view.second.raw,
            proof=json.dumps(view.proof.as_json()) if view.proof is not None else None,
            detected_at=now,
        )
        return decision, split_id

    decision, split_id = await ctx.db.write(job)
    if decision.store:
        ctx.heads.note_witnessed(head)
    view = decision.split_view
    if view is not None:
        if split_id is None:
            log.warning(
                "%s still contradicts its head of size %d (the split view was reported before)",
                peer,
                view.first.size,
            )
        else:
            await _report(ctx, view, split_id, now)
    elif decision.verdict in (Verdict.OLDER, Verdict.UNPROVEN):
        log.debug("head of %s of size %d not stored: %s", peer, head.size, decision.verdict)
    return decision


async def _report(ctx: NodeContext, view: SplitView, split_id: int, now: int) -> None:
    """Write the evidence file, note where, and raise the alert."""
    stamp = dt.datetime.fromtimestamp(now / 1000, dt.UTC).strftime("%Y%m%dT%H%M%S")
    name = f"split-view-{view.node}-{stamp}.{now % 1000:03d}Z"
    document = split_view_document(view, witness=ctx.state, detected_at=now)
    where: str
    try:
        path = await asyncio.to_thread(_write_new_file, evidence_dir(ctx), name, document)
        await ctx.db.write(lambda tx: witness_repo.set_evidence_file(tx, split_id, str(path)))
        where = str(path)
    except Exception:
        # The split_views row holds the same evidence: the file can be made again from it.
        log.exception("the evidence file of split view %d could not be written", split_id)
        where = f"split_views row {split_id}"
    log.error(
        "ALERT split_view peer=%s sizes=%d,%d reason=%s evidence=%s: %s signed two histories "
        "of its evidence log (%s)",
        view.node,
        view.first.size,
        view.second.size,
        view.reason.value,
        where,
        view.node,
        view.detail,
    )


def _write_new_file(folder: Path, name: str, data: bytes) -> Path:
    """Write ``data`` as ``<name>.json`` in ``folder`` (0600, the folder 0700), never replacing a
    file: another split view in the same millisecond, or one left by a database later restored
    from a backup, keeps its evidence; the new file gets ``<name>-2.json`` and so on.

    Written to a temporary file, synced, then hard-linked under its name, so the name appears
    only with the whole content and ``link`` refuses an existing name atomically."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = folder / f".{name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        for n in range(1, 1000):
            path = folder / (f"{name}.json" if n == 1 else f"{name}-{n}.json")
            try:
                os.link(tmp, path)
            except FileExistsError:
                continue
            dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dir_fd)  # the new name survives a power cut
            finally:
                os.close(dir_fd)
            return path
        raise FileExistsError(f"no free name for {name} in {folder}")
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
