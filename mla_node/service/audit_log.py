"""The node's transparency log: checkpoints (signed tree heads) and proofs over its evidence.

Every evidence record enters the log when ``NodeContext.record_evidence`` appends it; the record
with seq s is leaf s - 1 of an RFC 9162 tree (protocol/merkle.py). A checkpoint is made at start,
every ``audit.checkpoint_interval_s`` and on demand. Each new checkpoint is first checked against
the newest stored one (the old root must be the root of the same first leaves), so a database
whose history was rewritten under the node is refused, not signed over.

The newest checkpoint is also kept in memory (``ctx.heads``): every receipt carries it, and peers
that witnessed an older head get the consistency proof from it (``consistency_from``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

from mla_node.errors import LogProofInvalid
from mla_node.protocol.checkpoint import sign_checkpoint
from mla_node.protocol.merkle import Proofs, SubtreeCollector, plan
from mla_node.protocol.witness import ConsistencyProof
from mla_node.service.context import NodeContext
from mla_node.storage import repo
from mla_node.storage.db import Transaction
from mla_node.storage.repo import Reader

log = logging.getLogger(__name__)
T = TypeVar("T")


async def over_log(db: Reader, size: int, ask: Callable[[Proofs], T]) -> T:
    """``ask`` (roots, audit paths, consistency proofs) answered over the tree of the first
    ``size`` records of the log. One pass over their leaf hashes, a page at a time, hashing on a
    thread and keeping only the subtrees ``ask`` needs: memory stays flat however long the log
    grows (a whole tree in memory took ~400 bytes a record, at every checkpoint)."""
    collector = SubtreeCollector(size, plan(size, ask))
    async for hashes in repo.log_leaf_hash_pages(db, size):
        await asyncio.to_thread(collector.add, hashes)
    return ask(collector.tree())


async def checkpoint(ctx: NodeContext) -> bytes:
    """Sign the log's current head, store it and return its bytes.

    When the log has not grown since the newest checkpoint, that one is returned unchanged.
    """
    # The newest checkpoint is read before the log's size: another worker of the node (issue 9)
    # may sign a bigger one meanwhile, and the size read after it is then at least as big.
    latest = await repo.latest_checkpoint(ctx.db)
    size = await repo.log_size(ctx.db)
    if latest is not None and latest.size > size:
        raise LogProofInvalid(
            f"the evidence log is not an extension of its checkpoint of size {latest.size}"
        )
    root, latest_root = await over_log(
        ctx.db, size, lambda t: (t.root(), t.root(latest.size) if latest else None)
    )
    stored = await repo.checkpoint_at(ctx.db, size)
    if stored is not None:
        if stored.root != root:
            raise LogProofInvalid(f"the stored checkpoint of size {size} has another root")
        ctx.heads.adopt(stored.checkpoint, size)
        return stored.checkpoint
    if latest is not None and latest_root != latest.root:
        raise LogProofInvalid(
            f"the evidence log is not an extension of its checkpoint of size {latest.size}"
        )
    at = ctx.clock()
    data = sign_checkpoint(ctx.identity.signing_key, node=ctx.state, size=size, root=root, at=at)
    row = repo.CheckpointRow(size=size, root=root, checkpoint=data, at=at)

    async def store(tx: Transaction) -> bool:
        return await repo.insert_checkpoint(tx, row)

    if not await ctx.db.write(store):  # another caller signed this size first: keep theirs
        again = await repo.checkpoint_at(ctx.db, size)
        assert again is not None
        ctx.heads.adopt(again.checkpoint, size)
        return again.checkpoint
    ctx.heads.adopt(data, size)
    log.info("checkpoint: %d evidence records, root %s", size, root.hex()[:16])
    return data


async def inclusion_proof(ctx: NodeContext, seq: int, size: int) -> list[bytes]:
    """The audit path of the record with ``seq`` in the tree of the first ``size`` records."""
    return await over_log(ctx.db, size, lambda t: t.inclusion_proof(seq - 1))


async def consistency_proof(ctx: NodeContext, old_size: int, size: int) -> list[bytes]:
    """Proof that the log of ``old_size`` records is a prefix of the log of ``size``."""
    return await over_log(ctx.db, size, lambda t: t.consistency_proof(old_size))


async def consistency_from(ctx: NodeContext, old_size: int) -> ConsistencyProof | None:
    """The proof that the log of ``old_size`` records (a head a peer witnessed) is a prefix of
    this node's newest checkpoint; None when there is nothing to prove (no head yet, or
    ``old_size`` is 0 or not smaller than it). Cached per (old_size, head size) in ``ctx.heads``:
    a miss reads the whole log, and the answer only changes with the next checkpoint."""
    size = ctx.heads.size
    if size is None or not 0 < old_size < size:
        return None
    path = await ctx.heads.proof(old_size, size, lambda: consistency_proof(ctx, old_size, size))
    return ConsistencyProof(old_size, size, tuple(path))


async def checkpoint_every(ctx: NodeContext, interval_s: float) -> None:
    """The periodic task the runtime starts next to the directory poll."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await checkpoint(ctx)
        except Exception:  # keep going whatever one attempt did; the log says why
            log.exception("checkpoint failed")
