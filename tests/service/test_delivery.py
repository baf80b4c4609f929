"""Delivery through the in-memory transport: fast, but the same use cases, database and crypto.

The network is cut, receipts are lost on the way back, forged or refused; each time the outbox
must end empty with every envelope delivered exactly once and every receipt verified.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mla_node.errors import DeliveryError
from mla_node.identity import load_identity
from mla_node.localnet import create_network
from mla_node.protocol import forms
from mla_node.protocol.directory import NodeEntry, TrustRoot
from mla_node.runtime import MIGRATIONS, wall_clock_ms
from mla_node.service import cases, inbound
from mla_node.service.context import NodeContext, Principal, Role
from mla_node.service.delivery import Deliverer
from mla_node.service.trust import TrustKeeper
from mla_node.storage import repo
from mla_node.storage.db import Database, load_migrations
from mla_node.transport.base import MemoryTransport, PeerAnswer, Receiver
from tests.netkit import wait_for

CLERK = Principal("tok_test", Role.CLERK, "clerk")


@dataclass
class Node:
    ctx: NodeContext
    deliverer: Deliverer


class LossyTransport(MemoryTransport):
    """Delivers, then loses the first ``lose`` answers on the way back (the receiver stored the
    envelope; the sender never hears of it), or hands back a forged receipt."""

    def __init__(self, *args: Any, lose: int = 0, forge: int = 0) -> None:
        super().__init__(*args)
        self.lose = lose
        self.forge = forge
        self.sent = 0

    async def send(self, peer: NodeEntry, envelope: bytes) -> PeerAnswer:
        answer = await super().send(peer, envelope)
        self.sent += 1
        if self.lose > 0:
            self.lose -= 1
            raise DeliveryError("connection reset after the body was sent")
        if self.forge > 0 and answer.receipt is not None:
            self.forge -= 1
            return PeerAnswer(answer.receipt[:-1] + bytes([answer.receipt[-1] ^ 1]))
        return answer


@asynccontextmanager
async def memory_network(
    folder: Path, states: tuple[str, ...] = ("AR", "BR"), **transport_kw: Any
) -> AsyncIterator[tuple[dict[str, Node], set[str]]]:
    ports = {s: 20000 + i for i, s in enumerate(states)}
    locals_ = create_network(
        folder, list(states), peer_ports=ports, clerk_ports=ports, now=dt.datetime.now(dt.UTC)
    )
    receivers: dict[str, Receiver] = {}
    down: set[str] = set()
    nodes: dict[str, Node] = {}
    for state, local in locals_.items():
        config = local.config
        db = await Database.open(config.database_path, load_migrations(MIGRATIONS))
        identity = load_identity(config.keys_dir)
        trust = TrustKeeper(
            TrustRoot.from_json(config.trust_root_path.read_bytes()),
            config.directory_path,
            db,
            wall_clock_ms,
        )
        await trust.start()
        ctx = NodeContext(config=config, db=db, identity=identity, trust=trust, clock=wall_clock_ms)
        cert_der = x509.load_pem_x509_certificate(identity.tls_cert_path.read_bytes()).public_bytes(
            Encoding.DER
        )
        transport = LossyTransport(cert_der, receivers, down, **transport_kw)

        async def receive(data: bytes, cert: bytes | None, ctx: NodeContext = ctx) -> bytes:
            return await inbound.receive(ctx, data, cert)

        receivers[state] = receive
        nodes[state] = Node(ctx, Deliverer(ctx, transport))
    for node in nodes.values():
        await node.deliverer.start()
    try:
        yield nodes, down
    finally:
        for node in nodes.values():
            await node.deliverer.stop()
            await node.ctx.db.close()


async def submit(node: Node, to: str, n: int = 1) -> list[str]:
    ids = []
    for _ in range(n):
        row, _ = await cases.submit(
            node.ctx,
            CLERK,
            {"type": "mla_request", "to": to, "form": forms.example("mla_request")},
            None,
        )
        ids.append(row.id)
    return ids


async def outbox_empty(node: Node) -> bool:
    return await repo.count_pending(node.ctx.db) == 0


async def inbox(node: Node) -> list[str]:
    rows = await repo.list_messages(node.ctx.db, repo.ListFilter("in", limit=1000))
    return sorted(r.id for r in rows)


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
