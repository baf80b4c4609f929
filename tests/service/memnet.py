"""Nodes wired in memory: the real use cases, database and crypto, without sockets.

Shared by the delivery, deadline, retention and model tests. ``memory_network`` yields the nodes
by state and the ``down`` set (states in it are unreachable). ``clock`` replaces the wall clock of
every node (a :class:`ManualClock` passes a deadline without waiting) and ``delivery`` their
delivery settings; any other keyword goes to :class:`LossyTransport`.

With ``MLA_TEST_BACKEND=postgresql`` every node runs on a fresh PostgreSQL database instead of its
SQLite file (tests/pgkit.py), so the same use-case tests prove both backends (scripts/test.sh
runs tests/service both ways).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mla_node.config import DeliverySection
from mla_node.errors import DeliveryError
from mla_node.identity import load_identity
from mla_node.localnet import LOCAL_DELIVERY, create_network
from mla_node.protocol import forms
from mla_node.protocol.directory import NodeEntry, TrustRoot
from mla_node.protocol.witness import ConsistencyProof
from mla_node.runtime import wall_clock_ms
from mla_node.service import cases, inbound
from mla_node.service.context import NodeContext, Principal, Role
from mla_node.service.delivery import Deliverer
from mla_node.service.trust import TrustKeeper
from mla_node.storage import repo
from mla_node.storage.db import open_database
from mla_node.transport.base import LogProofSource, MemoryTransport, PeerAnswer, Receiver
from tests import pgkit

CLERK = Principal("tok_test", Role.CLERK, "clerk")
ADMIN = Principal("tok_admin", Role.ADMIN, "admin")


@dataclass
class Node:
    ctx: NodeContext
    deliverer: Deliverer


class ManualClock:
    """A clock in ms since the epoch that starts at the wall clock and moves only when told."""

    def __init__(self, start_ms: int | None = None) -> None:
        self.now = wall_clock_ms() if start_ms is None else start_ms

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1000)


class LossyTransport(MemoryTransport):
    """Delivers, then loses the first ``lose`` answers on the way back (the receiver stored the
    envelope; the sender never hears of it), or hands back a forged receipt. With ``slow_s`` the
    answer takes that long to come back once the receiver has stored the envelope (``in_flight``
    counts the attempts waiting for it)."""

    def __init__(self, *args: Any, lose: int = 0, forge: int = 0, slow_s: float = 0.0) -> None:
        super().__init__(*args)
        self.lose = lose
        self.forge = forge
        self.slow_s = slow_s
        self.sent = 0
        self.in_flight = 0

    async def send(self, peer: NodeEntry, envelope: bytes) -> PeerAnswer:
        answer = await super().send(peer, envelope)
        if self.slow_s > 0:
            self.in_flight += 1
            try:
                await asyncio.sleep(self.slow_s)
            finally:
                self.in_flight -= 1
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
    folder: Path,
    states: tuple[str, ...] = ("AR", "BR"),
    *,
    clock: Callable[[], int] = wall_clock_ms,
    delivery: DeliverySection = LOCAL_DELIVERY,
    backend: str | None = None,
    **transport_kw: Any,
) -> AsyncIterator[tuple[dict[str, Node], set[str]]]:
    """``backend``: "sqlite" or "postgresql"; default $MLA_TEST_BACKEND, else SQLite."""
    backend = backend or os.environ.get("MLA_TEST_BACKEND", "sqlite")
    ports = {s: 20000 + i for i, s in enumerate(states)}
    locals_ = create_network(
        folder,
        list(states),
        peer_ports=ports,
        clerk_ports=ports,
        now=dt.datetime.fromtimestamp(clock() / 1000, dt.UTC),
        delivery=delivery,
    )
    receivers: dict[str, Receiver] = {}
    log_proofs: dict[str, LogProofSource] = {}
    down: set[str] = set()
    nodes: dict[str, Node] = {}
    databases = AsyncExitStack()
    try:
        for state, local in locals_.items():
            config = local.config
            if backend == "postgresql":
                url = await databases.enter_async_context(pgkit.fresh_database())
                node_section = config.node.model_copy(update={"database": url})
                config = config.model_copy(update={"node": node_section})
            db = await open_database(config.database_location)
            identity = load_identity(config.keys_dir)
            trust = TrustKeeper(
                TrustRoot.from_json(config.trust_root_path.read_bytes()),
                config.directory_path,
                db,
                clock,
            )
            await trust.start()
            ctx = NodeContext(config=config, db=db, identity=identity, trust=trust, clock=clock)
            cert_der = x509.load_pem_x509_certificate(
                identity.tls_cert_path.read_bytes()
            ).public_bytes(Encoding.DER)
            transport = LossyTransport(cert_der, receivers, down, log_proofs, **transport_kw)

            async def receive(data: bytes, cert: bytes | None, ctx: NodeContext = ctx) -> bytes:
                return (await inbound.receive(ctx, data, cert)).receipt

            async def log_proof(witnessed: int, ctx: NodeContext = ctx) -> ConsistencyProof | None:
                return await inbound.log_proof(ctx, witnessed)

            receivers[state] = receive
            log_proofs[state] = log_proof
            nodes[state] = Node(ctx, Deliverer(ctx, transport))
        for node in nodes.values():
            await node.deliverer.start()
        yield nodes, down
    finally:
        for node in nodes.values():
            await node.deliverer.stop()
            await node.ctx.db.close()
        await databases.aclose()


async def submit(node: Node, to: str, n: int = 1) -> list[str]:
    """Submit ``n`` example MLA requests from ``node`` to ``to``; their message ids."""
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


async def settle(nodes: dict[str, Node], within_s: float = 30) -> None:
    """Wait until every node's outbox is empty: all traffic delivered."""
    deadline = time.monotonic() + within_s
    while not all([await outbox_empty(n) for n in nodes.values()]):
        assert time.monotonic() < deadline, "traffic did not settle"
        await asyncio.sleep(0.02)


def transport(node: Node) -> LossyTransport:
    """The node's in-memory transport, to change its faults during a test."""
    t = node.deliverer.transport
    assert isinstance(t, LossyTransport)
    return t


async def inbox(node: Node) -> list[str]:
    rows = await repo.list_messages(node.ctx.db, repo.ListFilter("in", limit=1000))
    return sorted(r.id for r in rows)
