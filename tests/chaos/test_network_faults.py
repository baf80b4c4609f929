"""Three real nodes in-process, a fault proxy in front of each one's peer endpoint: every network
fault, isolated nodes and split networks, with traffic in all six directions while it lasts.

After the fault is healed every message is in its recipient's inbox exactly once, its sender holds
a verified receipt byte-identical to the one the recipient issued, exactly one "delivered" record
exists on each side, and no outbox holds anything. Partitions are checked to have held (nothing
crossed a cut link while it was cut) and the backlog to drain within 60 s of healing.

Sizes (``MLA_FULL=1`` selects the full ones; each variable overrides)::

    MLA_FAULT_MESSAGES   messages per fault and per partition   100 (full size: 500)
    MLA_PARTITION_S      partition lengths, comma-separated     10  (full size: 10,30)

    .venv/bin/pytest tests/chaos -q                # CI size
    MLA_FULL=1 .venv/bin/pytest tests/chaos -q -s  # full size; prints a FIGURE line per case
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path
from typing import Any

import pytest

from chaos.proxy import (
    Bandwidth,
    BlackHole,
    CutMidBody,
    Fault,
    Latency,
    Link,
    Loss,
    Refuse,
    Reset,
    heal,
    partition,
)
from mla_node.errors import DeliveryError
from mla_node.localnet import LOCAL_DELIVERY
from mla_node.protocol.directory import NodeEntry
from mla_node.protocol.receipts import DELIVERED, verify_receipt
from mla_node.transport.base import PeerAnswer, Transport
from tests.netkit import Network, running_network

FULL = os.environ.get("MLA_FULL") == "1"
MESSAGES = int(os.environ.get("MLA_FAULT_MESSAGES", "500" if FULL else "100"))
PARTITIONS_S = [
    float(s) for s in os.environ.get("MLA_PARTITION_S", "10,30" if FULL else "10").split(",")
]
DRAIN_LIMIT_S = 60.0
HOLD_S = 6.0  # how long a breaking fault holds after the last submission (> the timeout)
# Short backoff (capped at 2 s) so that healing is noticed quickly; attempts time out after 5 s.
DELIVERY = LOCAL_DELIVERY.model_copy(update={"request_timeout_s": 5.0})

STATES = ("AR", "BR", "US")
PAIRS = [(s, r) for s in STATES for r in STATES if s != r]
FORM_TYPES = ("mla_request", "extradition_request", "provisional_arrest")

Sent = dict[str, tuple[str, str]]  # message id → (sender, recipient)


async def submit(net: Network, count: int, sent: Sent) -> None:
    """``count`` clerk submissions spread over the six directions, 20 at a time."""
    start = len(sent)
    jobs = [PAIRS[(start + i) % len(PAIRS)] for i in range(count)]
    for first in range(0, count, 20):
        chunk = jobs[first : first + 20]
        bodies = await asyncio.gather(
            *(
                net[s].submit(r, FORM_TYPES[(start + first + i) % len(FORM_TYPES)])
                for i, (s, r) in enumerate(chunk)
            )
        )
        for pair, body in zip(chunk, bodies, strict=True):
            sent[str(body["id"])] = pair


async def backlog(net: Network) -> dict[tuple[str, str], int]:
    """Envelopes still in an outbox, by (sender, recipient)."""
    queued: dict[tuple[str, str], int] = {}
    for state, node in net.nodes.items():
        sql = "SELECT peer, count(*) FROM outbox GROUP BY peer"
        for peer, count in await node.runtime.ctx.db.fetchall(sql):
            queued[(state, peer)] = count
    return queued


async def received(net: Network) -> dict[tuple[str, str], int]:
    """Envelopes stored in an inbox, by (sender, recipient)."""
    counts: dict[tuple[str, str], int] = {}
    for state, node in net.nodes.items():
        sql = "SELECT sender, count(*) FROM messages WHERE direction = 'in' GROUP BY sender"
        for sender, count in await node.runtime.ctx.db.fetchall(sql):
            counts[(sender, state)] = count
    return counts


async def drain(net: Network, within_s: float = DRAIN_LIMIT_S) -> float:
    """Wait until every outbox is empty; the seconds it took."""
    started = time.monotonic()
    while queued := await backlog(net):
        if time.monotonic() - started > within_s:
            raise AssertionError(f"backlog not drained within {within_s:g} s: {queued}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def audit(net: Network, sent: Sent) -> None:
    """The checker: nothing lost, duplicated, unexpected or pending; every receipt verified."""
    assert await backlog(net) == {}
    for state, node in net.nodes.items():
        db = node.runtime.ctx.db
        boxes: dict[str, list[str]] = {"in": [], "out": []}
        for message_id, direction in await db.fetchall("SELECT id, direction FROM messages"):
            boxes[direction].append(message_id)
        assert sorted(boxes["in"]) == sorted(m for m, (_, r) in sent.items() if r == state)
        assert sorted(boxes["out"]) == sorted(m for m, (s, _) in sent.items() if s == state)
        sql = "SELECT message_id, count(*) FROM evidence WHERE event = 'delivered' GROUP BY 1"
        delivered = {str(m): int(n) for m, n in await db.fetchall(sql)}
        assert delivered == dict.fromkeys([*boxes["in"], *boxes["out"]], 1), state

        directory = node.runtime.ctx.directory()
        sql = (
            "SELECT m.id, m.recipient, m.status, m.envelope_sha256, r.role, r.receipt "
            "FROM messages m LEFT JOIN receipts r ON r.message_id = m.id "
            "WHERE m.direction = 'out'"
        )
        for message_id, recipient, status, digest, role, raw in await db.fetchall(sql):
            assert (status, role) == ("delivered", "received"), message_id
            receipt = verify_receipt(
                raw,
                directory,
                expect_message_id=message_id,
                expect_envelope_digest=digest,
                expect_signer=recipient,
            )
            assert receipt.status == DELIVERED
            issued = await net[recipient].runtime.ctx.db.fetchone(
                "SELECT receipt FROM receipts WHERE message_id = ? AND role = 'issued'",
                (message_id,),
            )
            assert issued is not None
            assert bytes(issued[0]) == bytes(raw), f"{message_id}: not the original receipt"


class Watched:
    """A node's transport, counting attempts, failures, timeouts and *lost receipts*: attempts
    that failed although the recipient had stored the envelope, so the retry must be answered
    with the original receipt and must not store it twice."""

    def __init__(self, inner: Transport, net: Network) -> None:
        self.inner = inner
        self.net = net
        self.attempts = 0
        self.failures = 0
        self.timeouts = 0
        self.lost_receipts = 0

    async def send(self, peer: NodeEntry, envelope: bytes) -> PeerAnswer:
        self.attempts += 1
        try:
            return await self.inner.send(peer, envelope)
        except DeliveryError:
            self.failures += 1
            stored = await self.net[peer.state].runtime.ctx.db.fetchone(
                "SELECT 1 FROM messages WHERE envelope_sha256 = ?",
                (hashlib.sha256(envelope).digest(),),
            )
            self.lost_receipts += stored is not None
            raise
        except asyncio.CancelledError:  # the attempt timed out
            self.timeouts += 1
            raise

    async def close(self) -> None:
        await self.inner.close()

    @classmethod
    def install(cls, net: Network) -> list[Watched]:
        watched = []
        for node in net.nodes.values():
            watched.append(cls(node.runtime.deliverer.transport, net))
            node.runtime.deliverer.transport = watched[-1]
        return watched


def figure(**values: Any) -> None:
    print("\nFIGURE " + " ".join(f"{k}={v}" for k, v in values.items()))


# (fault, the Stats counter that shows it fired, whether traffic must get through while it holds)
FAULTS: dict[str, tuple[Fault, str, bool]] = {
    "latency": (Latency(0.05, 0.04), "bytes_up", True),
    "loss": (Loss(0.5), "dropped", False),
    "reset": (Reset(0.5), "reset", False),
    "black_hole": (BlackHole(), "black_holed", False),
    "bandwidth": (Bandwidth(64_000), "bytes_up", True),
    # A connection's first ~1 KB up is its TLS handshake, then ~3.7 KB per envelope.
    "cut_mid_body": (CutMidBody(1200, spread=4000), "cut", False),
}


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", list(FAULTS))
async def test_every_message_is_delivered_once_through_a_fault(tmp_path: Path, name: str) -> None:
    fault, counter, passes = FAULTS[name]
    async with running_network(tmp_path, STATES, fault_proxies=True, delivery=DELIVERY) as net:
        sent: Sent = {}
        watched = Watched.install(net)
        for proxy in net.proxies.values():
            proxy.set_fault(fault)
        started = time.monotonic()
        await submit(net, MESSAGES, sent)
        if passes:  # slow, not broken: everything gets through while the fault holds
            await drain(net)
        else:
            await asyncio.sleep(HOLD_S)
        under_fault = MESSAGES - sum((await backlog(net)).values())
        faulty_s = time.monotonic() - started
        for proxy in net.proxies.values():
            proxy.heal()
        drained_s = await drain(net)
        await audit(net, sent)
        fired = sum(getattr(proxy.stats, counter) for proxy in net.proxies.values())
        assert fired > 0, f"the {name} fault never fired"
        assert under_fault > 0 or not passes
        connections = sum(proxy.stats.connections for proxy in net.proxies.values())
        figure(
            fault=name,
            messages=MESSAGES,
            fault_on_s=f"{faulty_s:.1f}",
            delivered_under_fault=under_fault,
            drain_after_heal_s=f"{drained_s:.2f}",
            connections=connections,
            **{counter: fired},
            attempts=sum(w.attempts for w in watched),
            failed=sum(w.failures for w in watched),
            timed_out=sum(w.timeouts for w in watched),
            lost_receipts=sum(w.lost_receipts for w in watched),
        )


def partition_links(net: Network, shape: str) -> tuple[list[Link], set[tuple[str, str]]]:
    """The links to cut and the (sender, recipient) pairs that are then cut off."""
    if shape == "isolated":  # BR cut off from every peer, both ways
        pairs = {(s, r) for s, r in PAIRS if "BR" in (s, r)}
    else:  # a split: AR and BR cannot reach each other, US still reaches both
        pairs = {("AR", "BR"), ("BR", "AR")}
    return [net.link(s, r) for s, r in sorted(pairs)], pairs


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("seconds", PARTITIONS_S, ids=lambda s: f"{s:g}s")
@pytest.mark.parametrize("how", [BlackHole(), Refuse()], ids=["black_hole", "refuse"])
@pytest.mark.parametrize("shape", ["isolated", "split"])
async def test_a_partition_heals_and_its_backlog_drains(
    tmp_path: Path, shape: str, how: BlackHole | Refuse, seconds: float
) -> None:
    async with running_network(tmp_path, STATES, fault_proxies=True, delivery=DELIVERY) as net:
        sent: Sent = {}
        await submit(net, 30, sent)  # open connections that the partition will catch
        await drain(net)
        links, cut = partition_links(net, shape)
        before = await received(net)
        partition(links, how)
        started = time.monotonic()
        waves = max(1, int(seconds) - 2)  # traffic goes on, one wave a second
        for wave in range(waves):
            count = MESSAGES * (wave + 1) // waves - MESSAGES * wave // waves
            await submit(net, count, sent)
            await asyncio.sleep(max(0.0, started + wave + 1 - time.monotonic()))
        await asyncio.sleep(max(0.0, started + seconds - time.monotonic()))
        queued = await backlog(net)
        crossed = await received(net)
        assert set(queued) == cut, f"backlog outside the cut links: {queued}"
        assert all(crossed.get(p, 0) == before.get(p, 0) for p in cut), "a cut link let through"
        heal(links)
        cut_s = time.monotonic() - started
        drained_s = await drain(net)
        await audit(net, sent)
        figure(
            partition=shape,
            how=type(how).__name__,
            partition_s=f"{cut_s:.1f}",
            messages=len(sent),
            backlog_at_heal=sum(queued.values()),
            drain_after_heal_s=f"{drained_s:.2f}",
        )
