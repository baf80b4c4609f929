"""Delivery through the in-memory transport: fast, but the same use cases, database and crypto.

The network is cut, receipts are lost on the way back, forged or refused; each time the outbox
must end empty with every envelope delivered exactly once and every receipt verified.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import pytest

from mla_node.errors import DeliveryError
from mla_node.protocol.directory import NodeEntry
from mla_node.protocol.envelope import read_header
from mla_node.service.delivery import Deliverer
from mla_node.storage import repo
from mla_node.transport.base import BatchAnswer, Outgoing, PeerAnswer
from tests.netkit import wait_for
from tests.service.memnet import (
    LossyTransport,
    Node,
    inbox,
    memory_network,
    outbox_empty,
    submit,
    transport,
)

_IN_A_BATCH: ContextVar[bool] = ContextVar("in_a_batch", default=False)


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


async def test_an_envelope_recorded_while_the_outbox_is_read_is_not_sent_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop reads the outbox while attempts run, and the read's snapshot can predate an
    attempt that records its receipt meanwhile: that envelope is in the answer, still queued,
    yet no longer running. It must not go out again, nor be counted as a second receipt."""
    async with memory_network(tmp_path) as (nodes, _):
        sender, deliverer = transport(nodes["AR"]), nodes["AR"].deliverer
        send, release = sender.send, asyncio.Event()
        sent: list[str] = []

        async def hold_the_first(peer: NodeEntry, envelope: bytes) -> PeerAnswer:
            sent.append(read_header(envelope)[0].message_id)
            if len(sent) == 1:
                await release.wait()
            return await send(peer, envelope)

        read_due = repo.due_for_peer

        async def read_then_let_the_first_end(*args: Any, **kwargs: Any) -> list[repo.OutboxItem]:
            due = await read_due(*args, **kwargs)
            if sent and not release.is_set() and sent[0] in {item.message_id for item in due}:
                release.set()  # the held attempt now records its receipt and ends ...
                await wait_for(lambda: _ended(deliverer, sent[0]), within_s=5)
            return due  # ... after this answer was read

        sender.send = hold_the_first  # type: ignore[method-assign]
        monkeypatch.setattr(repo, "due_for_peer", read_then_let_the_first_end)
        (first,) = await submit(nodes["AR"], "BR")
        await wait_for(lambda: _true(bool(sent)), within_s=5)
        (second,) = await submit(nodes["AR"], "BR")  # wakes the loop: it reads the outbox
        await wait_for(lambda: outbox_empty(nodes["AR"]), within_s=5)
        assert release.is_set()  # the race was staged
        assert sorted(sent) == sorted([first, second])
        assert deliverer.metrics.receipts[(("peer", "BR"), ("status", "delivered"))] == 2


async def _ended(deliverer: Deliverer, message_id: str) -> bool:
    # The loop's own record of its running attempts: the attempt's task has ended when its
    # done callback has taken it out.
    return message_id not in deliverer._attempts.get("BR", {})


async def _true(value: bool) -> bool:
    return value


async def _delivered(node: Node, message_id: str) -> bool:
    message = await repo.get_message(node.ctx.db, message_id)
    return message is not None and message.status == "delivered"


async def test_a_backlog_leaves_in_batches_once_the_peer_is_back(tmp_path: Path) -> None:
    """Twenty envelopes queued while the peer was down: one probe goes alone, then the rest
    leave in batches of at most ``delivery.batch_max``, far fewer exchanges than envelopes,
    each envelope delivered once with its own verified receipt."""
    async with memory_network(tmp_path) as (nodes, down):
        sender = transport(nodes["AR"])
        exchanges = _count_exchanges(sender)
        down.add("BR")
        ids = await submit(nodes["AR"], "BR", 20)
        await wait_for(lambda: _attempted(nodes["AR"]), within_s=10)
        exchanges.clear()
        down.clear()
        await wait_for(lambda: outbox_empty(nodes["AR"]), within_s=15)
        assert await inbox(nodes["BR"]) == sorted(ids)
        batch_max = nodes["AR"].ctx.config.delivery.batch_max
        assert sum(exchanges) == 20
        assert 1 < max(exchanges) <= batch_max
        assert len(exchanges) <= 1 + -(-19 // batch_max) + 2  # the probe, then full batches
        await _each_receipt_is_the_one_issued(nodes, ids)


async def test_each_envelope_of_a_batch_is_settled_on_its_own_answer(tmp_path: Path) -> None:
    """In one batch a forged receipt and a lost answer cost only those two envelopes a retry;
    the others are recorded from that same exchange, and all end delivered exactly once."""
    async with memory_network(tmp_path) as (nodes, down):
        sender = transport(nodes["AR"])
        send_batch, spoiled = sender.send_batch, list[str]()

        async def spoil_two(peer: NodeEntry, batch: Sequence[Outgoing]) -> list[BatchAnswer]:
            answers = await send_batch(peer, batch)
            if not spoiled and len(batch) >= 3:
                spoiled.extend(read_header(o.envelope)[0].message_id for o in batch[:2])
                forged = answers[0]
                assert isinstance(forged, PeerAnswer) and forged.receipt is not None
                answers[0] = PeerAnswer(forged.receipt[:-1] + bytes([forged.receipt[-1] ^ 1]))
                answers[1] = DeliveryError("this answer was lost on the way back")
            return answers

        sender.send_batch = spoil_two  # type: ignore[method-assign]
        down.add("BR")
        ids = await submit(nodes["AR"], "BR", 8)
        await wait_for(lambda: _attempted(nodes["AR"]), within_s=10)
        down.clear()
        await wait_for(lambda: outbox_empty(nodes["AR"]), within_s=15)
        assert len(spoiled) == 2
        assert await inbox(nodes["BR"]) == sorted(ids)
        failures = nodes["AR"].deliverer.metrics.failures
        assert failures[(("peer", "BR"), ("code", "receipt_invalid"))] == 1
        assert failures[(("peer", "BR"), ("code", "delivery_failed"))] >= 1
        await _each_receipt_is_the_one_issued(nodes, ids)


def _count_exchanges(sender: LossyTransport) -> list[int]:
    """The size of each exchange from now on: a batch's envelopes, or 1 for a single send."""
    sizes: list[int] = []
    send, send_batch = sender.send, sender.send_batch

    async def one(peer: NodeEntry, envelope: bytes) -> PeerAnswer:
        if not _IN_A_BATCH.get():  # the memory transport answers a batch with single sends
            sizes.append(1)
        return await send(peer, envelope)

    async def several(peer: NodeEntry, batch: Sequence[Outgoing]) -> list[BatchAnswer]:
        sizes.append(len(batch))
        in_a_batch = _IN_A_BATCH.set(True)  # seen by its sends: their tasks copy the context
        try:
            return await send_batch(peer, batch)
        finally:
            _IN_A_BATCH.reset(in_a_batch)

    sender.send_batch = several  # type: ignore[method-assign]
    sender.send = one  # type: ignore[method-assign]
    return sizes


async def _each_receipt_is_the_one_issued(nodes: dict[str, Node], ids: list[str]) -> None:
    for message_id in ids:
        recorded = await repo.get_receipt(nodes["AR"].ctx.db, message_id)
        issued = await repo.get_receipt(nodes["BR"].ctx.db, message_id)
        assert recorded is not None and issued is not None
        assert recorded.receipt == issued.receipt
        evidence = await nodes["AR"].ctx.db.fetchall(
            "SELECT COUNT(*) FROM evidence WHERE message_id = ? AND event = 'delivered'",
            (message_id,),
        )
        assert evidence[0][0] == 1
