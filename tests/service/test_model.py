"""A model-based test of delivery: Hypothesis drives three nodes, a plain dict says what is true.

The nodes are real (files, SQLite, crypto, the use cases); only the wire is in memory, and no
background task runs: each ``deliver`` rule is one delivery round of one sender to one peer, on a
manual clock, so every example replays exactly. The rules submit (also retried with an
Idempotency-Key), deliver, lose the answers on the way back, forge them, crash a node (its
database files are put back as they were on disk at that instant, without a checkpoint or a clean
close), crash a sender in the middle of a round or a recipient right after its first answer, cut
and heal links, let hours pass (deadlines expire, envelopes go stale), resend as an admin, replay
an envelope to its recipient and misdirect it to a third node.

The reference model is every message created (id -> sender, recipient, envelope, deadline). After
every step: each message is in its recipient's inbox at most once, with one issued receipt and one
"delivered" evidence record; every inbox message was created by its sender for that recipient;
every receipt a sender recorded verifies against the directory, matches its envelope and is the
recipient's byte for byte; each outbox holds exactly the messages neither receipted nor given up;
a message is given up only past its deadline, with signed not_delivered evidence; what a node once
committed is still there after a crash. At the end every link heals, delivery runs until the
outboxes are empty, what was given up is resent and delivered: every message is delivered exactly
once with one verified receipt, or was given up and is carried by a delivered resend.

``MLA_MODEL_EXAMPLES`` sets the number of examples (200 by default, 500 in the full size).
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Coroutine
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from mla_node.config import NodeConfig, load_config
from mla_node.errors import (
    DeliveryError,
    EnvelopeError,
    IdempotencyKeyReused,
    InvalidStateForAction,
)
from mla_node.identity import load_identity
from mla_node.localnet import LOCAL_DELIVERY
from mla_node.protocol import forms
from mla_node.protocol.directory import NodeEntry, TrustRoot
from mla_node.protocol.evidence import Event
from mla_node.protocol.receipts import DELIVERED, verify_receipt
from mla_node.runtime import MIGRATIONS
from mla_node.service import cases, dead_letters, inbound
from mla_node.service.context import NodeContext
from mla_node.service.delivery import Deliverer
from mla_node.service.trust import TrustKeeper
from mla_node.storage.db import Database, Migration, load_migrations
from mla_node.transport.base import PeerAnswer, Receiver
from tests.service.memnet import ADMIN, CLERK, LossyTransport, ManualClock, memory_network

T = TypeVar("T")

EXAMPLES = int(os.environ.get("MLA_MODEL_EXAMPLES", "200"))
STATES = ("AR", "BR", "US")
PAIRS = [(a, b) for a in STATES for b in STATES if a != b]
LINKS = sorted({frozenset(p) for p in PAIRS}, key=sorted)
# One delivery round moves the clock past the longest backoff, so whatever waits is due.
ROUND_S = LOCAL_DELIVERY.max_backoff_s + 0.001
DRAIN_ROUNDS = 10
DELIVERY = LOCAL_DELIVERY  # the nodes' settings (create_network's default)
# Time may jump by hours, up to this much in all: deadlines pass, envelopes go stale, and the
# directory (valid 30 days from the template) stays valid.
MAX_ELAPSED_MS = 10 * 24 * 3600 * 1000


@cache
def _migrations() -> list[Migration]:
    return load_migrations(MIGRATIONS)


@dataclass(frozen=True)
class Template:
    folder: Path
    made_at: int  # ms; every example's clock starts a minute later, so examples replay exactly


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    """Keys, certificates, directory and migrated databases, made once and copied per example."""
    folder = tmp_path_factory.mktemp("model-template")
    clock = ManualClock()

    async def build() -> None:
        async with memory_network(folder, STATES, clock=clock):
            pass

    asyncio.run(build())
    return Template(folder, clock.now)


# --- the harness: nodes that can die and come back -------------------------------------------


class LinkTransport(LossyTransport):
    """The in-memory wire between two states: each link can be cut on its own."""

    def __init__(
        self, state: str, cut: set[frozenset[str]], cert_der: bytes, receivers: dict[str, Receiver]
    ) -> None:
        super().__init__(cert_der, receivers, set())
        self.state = state
        self.cut = cut

    async def send(self, peer: NodeEntry, envelope: bytes) -> PeerAnswer:
        if frozenset((self.state, peer.state)) in self.cut:
            raise DeliveryError(f"the link {self.state}-{peer.state} is cut")
        return await super().send(peer, envelope)


@dataclass
class ModelNode:
    config: NodeConfig
    cert_der: bytes
    ctx: NodeContext
    deliverer: Deliverer
    transport: LinkTransport


DiskImage = dict[str, bytes]


def _db_files(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def disk_image(path: Path) -> DiskImage:
    """The database as a SIGKILL would leave it: the WAL and the main file, no shared memory.

    The WAL is read first: a checkpoint running meanwhile only copies into the main file pages
    that the WAL read already holds, so the pair still recovers to a committed state.
    """
    main, wal, _ = _db_files(path)
    return {p.name: p.read_bytes() for p in (wal, main) if p.exists()}


def restore_image(path: Path, image: DiskImage) -> None:
    for p in _db_files(path):
        p.unlink(missing_ok=True)
    for name, data in image.items():
        (path.parent / name).write_bytes(data)


class Network:
    """Three nodes of one example, in their own copy of the template folder."""

    def __init__(self, folder: Path, clock: ManualClock) -> None:
        self.folder = folder
        self.clock = clock
        self.cut: set[frozenset[str]] = set()
        self.receivers: dict[str, Receiver] = {}
        self.nodes: dict[str, ModelNode] = {}

    async def start(self) -> None:
        for state in STATES:
            self.receivers[state] = self._receiver(state)
            self.nodes[state] = await self._open(state)

    def _receiver(self, state: str) -> Receiver:
        async def receive(data: bytes, cert: bytes | None) -> bytes:
            return (await inbound.receive(self.nodes[state].ctx, data, cert)).receipt

        return receive

    async def _open(self, state: str) -> ModelNode:
        """Everything a restarting node rebuilds from its files."""
        config = load_config(self.folder / "nodes" / state / "config.toml")
        db = await Database.open(config.database_path, _migrations())
        try:
            identity = load_identity(config.keys_dir)
            trust = TrustKeeper(
                TrustRoot.from_json(config.trust_root_path.read_bytes()),
                config.directory_path,
                db,
                self.clock,
            )
            await trust.start()
        except BaseException:
            await db.close()
            raise
        # A seeded rng: the backoff jitter, hence the whole example, replays exactly.
        ctx = NodeContext(
            config=config,
            db=db,
            identity=identity,
            trust=trust,
            clock=self.clock,
            rng=random.Random(0),
        )
        cert_der = x509.load_pem_x509_certificate(identity.tls_cert_path.read_bytes()).public_bytes(
            Encoding.DER
        )
        transport = LinkTransport(state, self.cut, cert_der, self.receivers)
        # Never started: no background loop, the rules run the rounds.
        return ModelNode(config, cert_der, ctx, Deliverer(ctx, transport), transport)

    def image(self, state: str) -> DiskImage:
        return disk_image(self.nodes[state].config.database_path)

    async def crash(self, state: str, image: DiskImage | None = None) -> None:
        """Kill the node: its memory is gone and its disk is ``image`` (default: as it is now).

        Between rules no write is pending, so the files read now are what a SIGKILL would leave.
        The old connections are closed only to free them; their checkpoint is then undone.
        """
        node = self.nodes[state]
        image = self.image(state) if image is None else image
        await node.ctx.db.close()
        restore_image(node.config.database_path, image)
        self.nodes[state] = await self._open(state)

    async def deliver_round(self, sender: str, peer: str) -> None:
        self.clock.advance(ROUND_S)
        # The loop's own round (Deliverer._run runs it until stopped), called once.
        await self.nodes[sender].deliverer.deliver_round(peer)

    async def close(self) -> None:
        for node in self.nodes.values():
            await node.ctx.db.close()


# --- what the databases say --------------------------------------------------------------------


@dataclass
class Sent:
    """One message a clerk (or an admin's resend) created, as the model knows it."""

    sender: str
    recipient: str
    digest: bytes
    envelope: bytes
    created_at: int
    deadline_at: int  # when its sender gives up on it, if no receipt came back by then
    replaces: str | None = None


@dataclass
class Seen:
    """One node's messages, outbox, receipts and evidence as read from its database."""

    # id -> (recipient, status, envelope digest, replaces)
    out: dict[str, tuple[str, str, bytes, str | None]] = field(default_factory=dict)
    # id -> (sender, recipient, envelope digest)
    inbox: dict[str, tuple[str, str, bytes]] = field(default_factory=dict)
    duplicate_envelopes: int = 0  # inbox rows holding an envelope another row holds too
    outbox: dict[str, str] = field(default_factory=dict)  # id -> peer
    # id -> (status, receipt bytes): receipts this node got back, and those it signed
    received: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    issued: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    delivered_events: dict[str, int] = field(default_factory=dict)  # inbox id -> count
    not_delivered_events: dict[str, int] = field(default_factory=dict)  # out id -> count

    def with_status(self, status: str) -> set[str]:
        return {m for m, row in self.out.items() if row[1] == status}


async def read_node(db: Database) -> Seen:
    seen = Seen()
    rows = await db.fetchall(
        "SELECT id, direction, sender, recipient, status, envelope_sha256, replaces FROM messages"
    )
    for r in rows:
        if r["direction"] == "out":
            seen.out[r["id"]] = (r["recipient"], r["status"], r["envelope_sha256"], r["replaces"])
        else:
            seen.inbox[r["id"]] = (r["sender"], r["recipient"], r["envelope_sha256"])
    dup = await db.fetchone(
        "SELECT COUNT(*) - COUNT(DISTINCT envelope_sha256) FROM messages WHERE direction = 'in'"
    )
    seen.duplicate_envelopes = int(dup[0]) if dup else 0
    seen.outbox = {r[0]: r[1] for r in await db.fetchall("SELECT message_id, peer FROM outbox")}
    for r in await db.fetchall("SELECT message_id, role, status, receipt FROM receipts"):
        target = seen.received if r["role"] == "received" else seen.issued
        target[r["message_id"]] = (r["status"], r["receipt"])
    rows = await db.fetchall(
        "SELECT e.message_id, m.direction, e.event, COUNT(*) FROM evidence e "
        "JOIN messages m ON m.id = e.message_id WHERE e.event IN (?, ?) "
        "GROUP BY e.message_id, m.direction, e.event",
        (Event.DELIVERED, Event.NOT_DELIVERED),
    )
    for message_id, direction, event, count in rows:
        if direction == "in" and event == Event.DELIVERED:
            seen.delivered_events[message_id] = count
        elif direction == "out" and event == Event.NOT_DELIVERED:
            seen.not_delivered_events[message_id] = count
    return seen


@dataclass(frozen=True)
class Round:
    """What one delivery round of a sender to a peer did."""

    peer_before: Seen
    peer_after: Seen
    due: set[str]  # queued for the peer and not past their deadline when the round ran
    receipted: set[str]  # receipts the sender recorded in the round


# --- the state machine -------------------------------------------------------------------------


class DeliveryModel(RuleBasedStateMachine):
    template: ClassVar[Template]

    messages = Bundle[str]("messages")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.folder = Path(tempfile.mkdtemp(prefix="model-", dir=self.template.folder.parent))
        shutil.copytree(self.template.folder, self.folder, dirs_exist_ok=True)
        self.clock = ManualClock(self.template.made_at + 60_000)
        self.started_at = self.clock.now
        self.net = Network(self.folder, self.clock)
        # The reference model: every message created, by whom, for whom, with which envelope and
        # deadline. Each must end delivered exactly once, unless its deadline passed first.
        self.submitted: dict[str, Sent] = {}
        self.idempotency: dict[tuple[str, str], str] = {}  # (sender, key) -> message id
        # What was once observed committed must survive every crash: stored envelopes, recorded
        # receipts, and the give-ups no admin has resent since.
        self.ever_in_inbox: set[str] = set()
        self.ever_receipted: set[str] = set()
        self.given_up: set[str] = set()
        self.closed = False
        try:
            self.run(self.net.start())
        except BaseException:
            self._close()
            raise

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def seen(self) -> dict[str, Seen]:
        async def read_all() -> dict[str, Seen]:
            return {s: await read_node(n.ctx.db) for s, n in self.net.nodes.items()}

        return self.run(read_all())

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.run(self.net.close())
        finally:
            self.loop.close()
            shutil.rmtree(self.folder, ignore_errors=True)

    @staticmethod
    def _stale_at(created_at: int) -> int:
        """When the sender takes an envelope to be too old for its recipient (less a margin)."""
        margin_s = min(DELIVERY.max_future_skew_s, DELIVERY.max_age_s // 2)
        return created_at + (DELIVERY.max_age_s - margin_s) * 1000

    def _deadline(self, queued_at: int, created_at: int) -> int:
        """A full delivery deadline from queueing, but never past the envelope going stale."""
        return min(queued_at + DELIVERY.deadline_s * 1000, self._stale_at(created_at))

    # --- rules ---

    @initialize()
    def start(self) -> None:
        for node in self.net.nodes.values():
            assert node.config.delivery == DELIVERY, "the model assumes other delivery settings"
        self.check()

    @rule(
        target=messages,
        pair=st.sampled_from(PAIRS),
        key=st.none() | st.sampled_from(["k1", "k2"]),
    )
    def submit(self, pair: tuple[str, str], key: str | None) -> MultipleResults[str]:
        """A clerk's request, perhaps with an Idempotency-Key used before (a retry, or a misuse)."""
        return multiple(*self._submit(*pair, key))

    @rule(target=messages, pair=st.sampled_from(PAIRS), n=st.integers(2, 6))
    def submit_several(self, pair: tuple[str, str], n: int) -> MultipleResults[str]:
        """A busy clerk: enough traffic that one round has several envelopes in flight."""
        return multiple(*(m for _ in range(n) for m in self._submit(*pair, None)))

    def _submit(self, sender: str, recipient: str, key: str | None) -> list[str]:
        """The new message's id, or none when the key names an earlier submission."""
        ctx = self.net.nodes[sender].ctx
        payload = {"type": "mla_request", "to": recipient, "form": forms.example("mla_request")}
        earlier = self.idempotency.get((sender, key)) if key else None
        if earlier is not None and self.submitted[earlier].recipient != recipient:
            with pytest.raises(IdempotencyKeyReused):
                self.run(cases.submit(ctx, CLERK, payload, key))
            return []
        row, created = self.run(cases.submit(ctx, CLERK, payload, key))
        if earlier is not None:  # the clerk's retry: the same request, nothing new to send
            assert (row.id, created) == (earlier, False)
            return []
        assert created and row.id not in self.submitted
        assert (row.sender, row.recipient, row.status) == (sender, recipient, "queued")
        now = self.clock.now
        self.submitted[row.id] = Sent(
            sender, recipient, row.envelope_sha256, row.envelope, now, self._deadline(now, now)
        )
        if key:
            self.idempotency[(sender, key)] = row.id
        return [row.id]

    def _round(self, sender: str, peer: str) -> Round:
        """One delivery round, checked for what a round promises whatever the wire did: the
        envelopes to ``peer`` past their deadline are given up, and only those."""
        before = self.seen()
        self.run(self.net.deliver_round(sender, peer))
        after = self.seen()
        s0, s1 = before[sender], after[sender]
        queued = {m for m, p in s0.outbox.items() if p == peer}
        overdue = {m for m in queued if self.submitted[m].deadline_at <= self.clock.now}
        given_up = s1.with_status("undeliverable") - s0.with_status("undeliverable")
        assert given_up == overdue, "the round gave up on other envelopes than the overdue ones"
        newly = set(s1.received) - set(s0.received)
        assert newly <= queued - overdue, "a receipt for an envelope that was not due"
        return Round(before[peer], after[peer], queued - overdue, newly)

    @rule(pair=st.sampled_from(PAIRS))
    def deliver(self, pair: tuple[str, str]) -> None:
        r = self._round(*pair)
        if frozenset(pair) in self.net.cut:
            assert not r.receipted, "a receipt came back over a cut link"
            assert set(r.peer_after.inbox) == set(r.peer_before.inbox), "it crossed a cut link"
        elif r.due:
            assert r.receipted, f"a round over a working link delivered nothing of {len(r.due)}"

    @rule(pair=st.sampled_from(PAIRS))
    def lose_receipts(self, pair: tuple[str, str]) -> None:
        """One round in which the peer stores what it gets, and every answer is lost."""
        transport = self.net.nodes[pair[0]].transport
        transport.lose = 1 << 30
        try:
            r = self._round(*pair)
        finally:
            transport.lose = 0
        assert not r.receipted, "a receipt was recorded though none arrived"
        if r.due and frozenset(pair) not in self.net.cut:
            assert r.due & set(r.peer_after.inbox), "the peer stored nothing of the round"

    @rule(pair=st.sampled_from(PAIRS))
    def forge_receipts(self, pair: tuple[str, str]) -> None:
        """One round in which every receipt arrives with a flipped bit: none may be recorded."""
        transport = self.net.nodes[pair[0]].transport
        transport.forge = 1 << 30
        try:
            r = self._round(*pair)
        finally:
            transport.forge = 0
        assert not r.receipted, "a forged receipt was recorded"

    @rule(state=st.sampled_from(STATES))
    def crash(self, state: str) -> None:
        self.run(self.net.crash(state))

    @rule(pair=st.sampled_from(PAIRS))
    def crash_mid_round(self, pair: tuple[str, str]) -> None:
        """The sender dies after its peer answered, before any write of the round hit its disk."""
        sender, _ = pair
        image = self.net.image(sender)
        before = self.seen()[sender]
        self.run(self.net.deliver_round(*pair))
        self.run(self.net.crash(sender, image))
        after = self.seen()[sender]
        assert (after.outbox, after.received, after.out) == (
            before.outbox,
            before.received,
            before.out,
        )

    @rule(pair=st.sampled_from(PAIRS))
    def crash_receiver_mid_round(self, pair: tuple[str, str]) -> None:
        """The peer dies the moment its first answer of the round leaves: whatever it
        acknowledged must be on its disk then. Answers it would have given later never come."""
        sender, peer = pair
        receive = self.net.receivers[peer]
        images: list[DiskImage] = []

        async def dying(data: bytes, cert: bytes | None) -> bytes:
            answer = await receive(data, cert)
            if images:
                raise DeliveryError(f"{peer} died before answering")
            images.append(self.net.image(peer))
            return answer

        self.net.receivers[peer] = dying
        try:
            self._round(sender, peer)
        finally:
            self.net.receivers[peer] = receive
        if images:
            self.run(self.net.crash(peer, images[0]))

    @rule(link=st.sampled_from(LINKS))
    def partition(self, link: frozenset[str]) -> None:
        self.net.cut.add(link)

    @rule(link=st.sampled_from(LINKS))
    def heal(self, link: frozenset[str]) -> None:
        self.net.cut.discard(link)

    @rule()
    def heal_all(self) -> None:
        self.net.cut.clear()

    @precondition(lambda self: self.clock.now - self.started_at < MAX_ELAPSED_MS)
    @rule(hours=st.sampled_from([1, 24, 71, 73]))
    def time_passes(self, hours: int) -> None:
        """Hours go by (nothing runs meanwhile): deadlines pass, envelopes grow old."""
        self.clock.advance(hours * 3600)

    @precondition(lambda self: self.clock.now - self.started_at < MAX_ELAPSED_MS)
    @rule(data=st.data(), offset_ms=st.sampled_from([-1, 0]))
    def until_a_deadline(self, data: st.DataObject, offset_ms: int) -> None:
        """Time goes to the moment the next round runs one ms before, or exactly at, the
        deadline of a queued envelope: the edge where it is still sent, or given up."""
        step = int(ROUND_S * 1000)
        queued = sorted(
            m
            for node in self.seen().values()
            for m in node.outbox
            if self.submitted[m].deadline_at + offset_ms - step > self.clock.now
        )
        if queued:
            m = data.draw(st.sampled_from(queued))
            self.clock.now = self.submitted[m].deadline_at + offset_ms - step

    @precondition(lambda self: self.given_up)
    @rule(target=messages, data=st.data())
    def resend_given_up(self, data: st.DataObject) -> MultipleResults[str]:
        """An admin resends a message its node gave up on."""
        return multiple(*self._resend(data.draw(st.sampled_from(sorted(self.given_up)))))

    @rule(target=messages, message_id=messages)
    def resend(self, message_id: str) -> MultipleResults[str]:
        """An admin resends any message: refused unless it was given up and not resent yet."""
        return multiple(*self._resend(message_id))

    def _resend(self, message_id: str) -> list[str]:
        """The same bytes while young enough, else a re-sealed message naming the original (its
        id is returned). Only an undeliverable message that was not resent already can be."""
        sent = self.submitted[message_id]
        node = self.seen()[sent.sender]
        replaced = any(row[3] == message_id for row in node.out.values())
        ctx = self.net.nodes[sent.sender].ctx
        if node.out[message_id][1] != "undeliverable" or replaced:
            with pytest.raises(InvalidStateForAction):
                self.run(dead_letters.resend(ctx, ADMIN, message_id))
            return []
        carrier = self.run(dead_letters.resend(ctx, ADMIN, message_id))
        now = self.clock.now
        # The same bytes only while they stay acceptable for at least half a deadline more.
        reseal = self._stale_at(sent.created_at) - now < DELIVERY.deadline_s * 1000 // 2
        assert (carrier.id != message_id) == reseal, "resent the wrong way for the envelope's age"
        if not reseal:
            assert carrier.envelope == sent.envelope, "a resend changed the envelope"
            sent.deadline_at = self._deadline(now, sent.created_at)
            self.given_up.discard(message_id)
            return []
        assert (carrier.replaces, carrier.recipient) == (message_id, sent.recipient)
        assert carrier.id not in self.submitted
        self.submitted[carrier.id] = Sent(
            sent.sender,
            sent.recipient,
            carrier.envelope_sha256,
            carrier.envelope,
            now,
            self._deadline(now, now),
            replaces=message_id,
        )
        return [carrier.id]

    @rule(message_id=messages)
    def replay(self, message_id: str) -> None:
        """The envelope handed to its recipient again: at most one copy, the original receipt,
        even once the envelope is too old to be accepted the first time."""
        sent = self.submitted[message_id]
        before = self.seen()[sent.recipient]
        age_ms = self.clock.now - sent.created_at
        if message_id not in before.inbox and age_ms > DELIVERY.max_age_s * 1000:
            with pytest.raises(EnvelopeError) as refused:
                self.run(self._hand(message_id, sent.recipient))
            assert refused.value.code == "envelope_stale"
            assert message_id not in self.seen()[sent.recipient].inbox
            return
        receipt = self.run(self._hand(message_id, sent.recipient))
        after = self.seen()[sent.recipient]
        assert message_id in after.inbox, "the envelope was acknowledged, not stored"
        assert receipt == after.issued[message_id][1], "not answered with the stored receipt"
        if message_id in before.issued:
            assert receipt == before.issued[message_id][1], "the original receipt changed"

    @rule(message_id=messages, data=st.data())
    def misdirect(self, message_id: str, data: st.DataObject) -> None:
        """The envelope handed to a node it is not addressed to: refused, nothing stored."""
        sent = self.submitted[message_id]
        others = [s for s in STATES if s not in (sent.sender, sent.recipient)]
        third = data.draw(st.sampled_from(others))
        with pytest.raises(EnvelopeError) as refused:
            self.run(self._hand(message_id, third))
        assert refused.value.code == "envelope_wrong_recipient"
        assert message_id not in self.seen()[third].inbox

    async def _hand(self, message_id: str, to: str) -> bytes:
        sent = self.submitted[message_id]
        cert = self.net.nodes[sent.sender].cert_der
        return await self.net.receivers[to](sent.envelope, cert)

    # --- invariants ---

    @invariant()
    def consistent(self) -> None:
        self.check()

    def check(self) -> None:
        seen = self.seen()
        now = self.clock.now
        for state, node in seen.items():
            directory = self.net.nodes[state].ctx.directory()
            mine = {m for m, s in self.submitted.items() if s.sender == state}
            # Nothing created is lost, nothing else is invented; each message in one state.
            assert set(node.out) == mine, f"{state}'s sent messages differ from the model's"
            undeliverable = node.with_status("undeliverable")
            assert set(node.outbox) == mine - set(node.received) - undeliverable, (
                f"{state}'s outbox is not its unreceipted, not given up messages"
            )
            for m, peer in node.outbox.items():
                assert peer == self.submitted[m].recipient
            for m, (recipient, status, digest, replaces) in node.out.items():
                sent = self.submitted[m]
                assert (recipient, digest, replaces) == (sent.recipient, sent.digest, sent.replaces)
                expected = (
                    "delivered"
                    if m in node.received
                    else "queued"
                    if m in node.outbox
                    else "undeliverable"
                )
                assert status == expected, (m, status, expected)
                if status == "undeliverable":
                    assert sent.deadline_at <= now, f"{m} given up before its deadline"
                    assert node.not_delivered_events.get(m, 0) >= 1, f"{m}: no evidence"
            for m, (status, raw) in node.received.items():
                sent = self.submitted[m]
                receipt = verify_receipt(
                    raw,
                    directory,
                    expect_message_id=m,
                    expect_envelope_digest=sent.digest,
                    expect_signer=sent.recipient,
                )
                assert status == receipt.status == DELIVERED
                assert m in seen[sent.recipient].inbox, f"{m} receipted but not in the inbox"
                assert raw == seen[sent.recipient].issued[m][1], "not the recipient's receipt"
            # Every inbox message was submitted by its sender to this node, and is there once.
            assert node.duplicate_envelopes == 0, f"{state} stored an envelope twice"
            for m, (sender, recipient, digest) in node.inbox.items():
                origin = self.submitted.get(m)
                assert origin is not None, f"{state} holds {m}, which nobody submitted"
                assert (sender, recipient, digest) == (origin.sender, state, origin.digest)
                assert node.delivered_events.get(m) == 1, f"{m} delivered more than once"
                status, raw = node.issued[m]
                assert status == DELIVERED
                verify_receipt(
                    raw,
                    directory,
                    expect_message_id=m,
                    expect_envelope_digest=digest,
                    expect_signer=state,
                )
            assert set(node.issued) == set(node.inbox)
        # What was committed once is still committed, whatever crashed since.
        inboxes = {m for node in seen.values() for m in node.inbox}
        receipted = {m for node in seen.values() for m in node.received}
        given_up = {m for node in seen.values() for m in node.with_status("undeliverable")}
        assert self.ever_in_inbox <= inboxes, "a stored envelope vanished"
        assert self.ever_receipted <= receipted, "a recorded receipt vanished"
        assert self.given_up <= given_up, "a message given up on came back without a resend"
        self.ever_in_inbox, self.ever_receipted, self.given_up = inboxes, receipted, given_up

    def _drain(self) -> None:
        for _ in range(DRAIN_ROUNDS):
            seen = self.seen()
            pending = {(s, p) for s, n in seen.items() for p in n.outbox.values()}
            if not pending:
                return
            for sender, peer in sorted(pending):
                self._round(sender, peer)

    def teardown(self) -> None:
        """Heal everything and deliver until the outboxes are empty; then resend what was given
        up and deliver again. Every message ends delivered exactly once, or given up and carried
        by a delivered one (itself resent, or the message re-sealing it)."""
        try:
            # After a failed step only clean up: the failure is the report, not what follows it.
            if self.closed or sys.exc_info()[0] is not None:
                return
            self.net.cut.clear()
            self._drain()
            self.check()
            for m in sorted(self.given_up):
                self._resend(m)
            self.check()
            self._drain()
            self.check()
            seen = self.seen()
            for state, node in seen.items():
                assert not node.outbox, f"{state} still has {len(node.outbox)} to send"
            replaced_by = {s.replaces: m for m, s in self.submitted.items() if s.replaces}
            for m, sent in self.submitted.items():
                carrier = m
                while carrier in replaced_by:
                    carrier = replaced_by[carrier]
                assert carrier in seen[sent.sender].received, f"{m} has no receipt"
                assert carrier in seen[sent.recipient].inbox, f"{m} was never delivered"
        finally:
            self._close()


@pytest.mark.slow  # 200 examples take about a minute: outside the inner loop, always in CI
# A passing run takes about a minute at 200 examples; the margin lets Hypothesis shrink a
# failure to its smallest example instead of being cut off mid-way.
@pytest.mark.timeout(300 + 2 * EXAMPLES)
def test_delivery_matches_the_model(template: Template) -> None:
    class Model(DeliveryModel):
        pass

    Model.template = template
    run_state_machine_as_test(
        Model,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
