"""Stopping the sender: attempts in flight get their grace, and what is cut off is sent again.

The answers are slowed down after the receiver stored each envelope, so that the stop lands while
every attempt is in flight at the worst moment: stored there, not yet recorded here.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from mla_node.storage import repo
from tests.netkit import wait_for
from tests.service.memnet import Node, inbox, memory_network, outbox_empty, submit, transport


async def receipts_match(sender: Node, receiver: Node, ids: list[str]) -> None:
    for message_id in ids:
        recorded = await repo.get_receipt(sender.ctx.db, message_id)
        issued = await repo.get_receipt(receiver.ctx.db, message_id)
        assert recorded is not None and issued is not None, message_id
        assert recorded.receipt == issued.receipt
        message = await repo.get_message(sender.ctx.db, message_id)
        assert message is not None and message.status == "delivered"


async def queued_while_stopped(node: Node, n: int) -> list[str]:
    """``n`` messages that the sender's first round sends all at once."""
    await node.deliverer.stop()
    ids = await submit(node, "BR", n)
    await node.deliverer.start()
    return ids


async def test_attempts_in_flight_finish_within_the_grace(tmp_path: Path) -> None:
    async with memory_network(tmp_path, slow_s=0.5) as (nodes, _):
        ar, br = nodes["AR"], nodes["BR"]
        ids = await queued_while_stopped(ar, 8)

        async def all_in_flight() -> bool:
            return transport(ar).in_flight == 8

        await wait_for(all_in_flight, within_s=10, interval=0.01)
        started = time.monotonic()
        await ar.deliverer.stop(grace_s=10)
        assert time.monotonic() - started < 5, "it waits for the attempts, not for the grace"
        assert await outbox_empty(ar)
        await receipts_match(ar, br, ids)
        assert await inbox(br) == sorted(ids)


async def test_what_the_grace_cuts_off_stays_queued_and_is_delivered_once_after_restart(
    tmp_path: Path,
) -> None:
    async with memory_network(tmp_path, slow_s=30) as (nodes, _):
        ar, br = nodes["AR"], nodes["BR"]
        ids = await queued_while_stopped(ar, 8)

        async def all_in_flight() -> bool:
            return transport(ar).in_flight == 8

        await wait_for(all_in_flight, within_s=10, interval=0.01)
        started = time.monotonic()
        await ar.deliverer.stop(grace_s=0.2)
        assert time.monotonic() - started < 2
        assert transport(ar).in_flight == 0, "cancelled"
        # Stored at the receiver, not recorded at the sender: still queued, nothing lost.
        assert await inbox(br) == sorted(ids)
        assert await repo.count_pending(ar.ctx.db) == 8
        for message_id in ids:
            assert await repo.get_receipt(ar.ctx.db, message_id) is None

        transport(ar).slow_s = 0
        await ar.deliverer.start()
        await wait_for(lambda: outbox_empty(ar), within_s=15)
        assert await inbox(br) == sorted(ids), "each once"
        await receipts_match(ar, br, ids)


async def test_a_stopping_sender_starts_nothing_new(tmp_path: Path) -> None:
    async with memory_network(tmp_path, slow_s=0.3) as (nodes, down):
        ar = nodes["AR"]
        await submit(ar, "BR", 1)
        await wait_for(lambda: _in_flight(ar), within_s=10, interval=0.01)
        stopping = asyncio.create_task(ar.deliverer.stop(grace_s=5))
        await asyncio.sleep(0)
        ids = await submit(ar, "BR", 5)  # queued while it stops: left for the next start
        await stopping
        assert transport(ar).sent == 1
        for message_id in ids:
            message = await repo.get_message(ar.ctx.db, message_id)
            assert message is not None and message.status == "queued"
        assert down == set()


async def _in_flight(node: Node) -> bool:
    return transport(node).in_flight > 0
