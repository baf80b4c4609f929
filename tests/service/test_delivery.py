"""Delivery through the in-memory transport: fast, but the same use cases, database and crypto.

The network is cut, receipts are lost on the way back, forged or refused; each time the outbox
must end empty with every envelope delivered exactly once and every receipt verified.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from mla_node.protocol.directory import NodeEntry
from mla_node.storage import repo
from mla_node.transport.base import PeerAnswer
from tests.netkit import wait_for
from tests.service.memnet import Node, inbox, memory_network, outbox_empty, submit, transport


async def test_store_until_online(tmp_path: Path) -> None:
    async with memory_network(tmp_path) as (nodes, down):
        down.add("BR")
        ids = await submit(nodes["AR"], "BR", 20)
        await wait_for(lambda: _attempted(nodes["AR"]), within_s=10)
        assert await inbox(nodes["BR"]) == []
        down.clear()
        await wait_for(lambda: outbox_empty(nodes["AR"]), within_s=15)
        assert await inbox(nodes["BR"]) == sorted(ids)
        for message_id in ids:
            message = await repo.get_message(nodes["AR"].ctx.db, message_id)
            assert message is not None and message.status == "delivered"


async def _attempted(node: Node) -> bool:
    row = await node.ctx.db.fetchone("SELECT MAX(attempts) FROM outbox")
    return bool(row and row[0] and row[0] >= 2)


async def test_lost_receipts_are_recovered_without_duplicates(tmp_path: Path) -> None:
    async with memory_network(tmp_path, lose=15) as (nodes, _):
        ids = await submit(nodes["AR"], "BR", 10)
        await wait_for(lambda: outbox_empty(nodes["AR"]), within_s=15)
        assert await inbox(nodes["BR"]) == sorted(ids)
        receipts = await nodes["AR"].ctx.db.fetchall(
            "SELECT COUNT(*) FROM receipts WHERE role = 'received' AND status = 'delivered'"
        )
        assert receipts[0][0] == 10


async def test_forged_receipts_are_never_recorded(tmp_path: Path) -> None:
    async with memory_network(tmp_path, forge=5) as (nodes, _):
        ids = await submit(nodes["AR"], "BR", 5)
        await wait_for(lambda: outbox_empty(nodes["AR"]), within_s=15)
        for message_id in ids:
            recorded = await repo.get_receipt(nodes["AR"].ctx.db, message_id)
            issued = await repo.get_receipt(nodes["BR"].ctx.db, message_id)
            assert recorded is not None and issued is not None
            assert recorded.receipt == issued.receipt


async def test_delivery_resumes_after_the_sender_restarts(tmp_path: Path) -> None:
    async with memory_network(tmp_path) as (nodes, down):
        down.add("BR")
        ids = await submit(nodes["AR"], "BR", 5)
        await nodes["AR"].deliverer.stop()
        down.clear()
        assert await inbox(nodes["BR"]) == []
        await nodes["AR"].deliverer.start()
        await wait_for(lambda: outbox_empty(nodes["AR"]), within_s=15)
        assert await inbox(nodes["BR"]) == sorted(ids)


async def test_an_envelope_queued_behind_a_slow_attempt_does_not_wait_for_it(
    tmp_path: Path,
) -> None:
    """The sender tops up its attempts as work arrives: a request submitted while another
    attempt to the same peer hangs is delivered before that attempt ends, not a round later."""
    async with memory_network(tmp_path) as (nodes, _):
        sender = transport(nodes["AR"])
        send, release = sender.send, asyncio.Event()
        held: list[bytes] = []

        async def hold_the_first(peer: NodeEntry, envelope: bytes) -> PeerAnswer:
            if not held or held[0] == envelope:
                held.append(envelope)
                await release.wait()
            return await send(peer, envelope)

        sender.send = hold_the_first  # type: ignore[method-assign]
        (first,) = await submit(nodes["AR"], "BR")
        await wait_for(lambda: _true(bool(held)), within_s=5)
        (second,) = await submit(nodes["AR"], "BR")
        await wait_for(lambda: _delivered(nodes["AR"], second), within_s=5)
        assert not await _delivered(nodes["AR"], first)
        release.set()
        await wait_for(lambda: outbox_empty(nodes["AR"]), within_s=5)
        assert await inbox(nodes["BR"]) == sorted([first, second])


async def _true(value: bool) -> bool:
    return value


async def _delivered(node: Node, message_id: str) -> bool:
    message = await repo.get_message(node.ctx.db, message_id)
    return message is not None and message.status == "delivered"
