"""What a node keeps in memory about log heads: its own newest, the proofs it serves from it, and
the size of each peer's newest head it has witnessed.

Every receipt carries the receiver's newest checkpoint, so it is kept here (set by
``audit_log.checkpoint``) rather than read for each receipt. A peer that sends ``witnessed size
N`` gets the consistency proof from N to this head; the proof changes only when a new checkpoint
is signed, so proofs are cached by (N, size), and concurrent requests for the same proof share
one computation (building it reads the whole log). The peers' newest heads are kept so that the
common case, a receipt showing the head already stored, is settled without the database.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from mla_node.protocol.checkpoint import Checkpoint

MAX_CACHED_PROOFS = 64


class LogHeads:
    def __init__(self, max_proofs: int = MAX_CACHED_PROOFS) -> None:
        self.checkpoint: bytes | None = None  # this node's newest signed checkpoint
        self.size: int | None = None  # its size
        # peer -> the newest head of it this node stored (None: none yet). A peer missing from
        # the map is not known yet: service/witness.py reads it from the database once.
        self.witnessed: dict[str, Checkpoint | None] = {}
        self._proofs: OrderedDict[tuple[int, int], asyncio.Future[list[bytes]]] = OrderedDict()
        self._max_proofs = max_proofs

    def adopt(self, checkpoint: bytes, size: int) -> None:
        """Make ``checkpoint`` the head put in receipts, unless a larger one is already."""
        if self.size is None or size >= self.size:
            self.checkpoint, self.size = checkpoint, size

    def note_witnessed(self, head: Checkpoint) -> None:
        """``head`` (of ``head.node``) was stored; the map never goes back to a smaller one (two
        observations of one peer may finish out of order)."""
        known = self.witnessed.get(head.node)
        if known is None or head.size > known.size:
            self.witnessed[head.node] = head

    async def proof(
        self, old_size: int, new_size: int, compute: Callable[[], Awaitable[list[bytes]]]
    ) -> list[bytes]:
        """The proof (old_size, new_size), computed once by ``compute`` and then cached."""
        key = (old_size, new_size)
        future = self._proofs.get(key)
        if future is None:
            future = asyncio.ensure_future(compute())
            # Retrieve a failure even when every waiter was cancelled, so none goes unreported.
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._proofs[key] = future
            while len(self._proofs) > self._max_proofs:
                self._proofs.popitem(last=False)
        else:
            self._proofs.move_to_end(key)
        try:
            # shield: a request that goes away does not cancel the computation others wait on.
            return await asyncio.shield(future)
        except Exception:
            if self._proofs.get(key) is future:
                del self._proofs[key]  # a failure is not cached: the next request tries again
            raise
