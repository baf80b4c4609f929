"""Delivery deadlines, dead letters and the admin's resend, on a manual clock.

Days pass in an instant: the nodes' clock is a :class:`ManualClock`, and the delivery loops are
woken after each jump. Every outbound message must end queued, delivered, rejected (a signed
refusal) or undeliverable (its deadline passed, with signed evidence), and a resend must never
leave the receiver with the same request twice unless the link between the two is visible.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path

import pytest

from mla_node.errors import EnvelopeMalformed, InvalidStateForAction
from mla_node.protocol import forms
from mla_node.protocol.evidence import USER_ACTIONS, Event, verify_evidence
from mla_node.protocol.receipts import DELIVERED, REJECTED, verify_receipt
from mla_node.service import cases, dead_letters, inbound, views
from mla_node.service.context import Principal, Role
from mla_node.storage import repo
from tests.netkit import wait_for
from tests.service.memnet import (
    ADMIN,
    CLERK,
    ManualClock,
    Node,
    inbox,
    memory_network,
    submit,
    transport,
)

HOUR = 3600.0
DAY = 24 * HOUR
AUDITOR = Principal("tok_auditor", Role.AUDITOR, "auditor")


async def statuses(node: Node, ids: list[str]) -> list[str]:
    out = []
    for message_id in ids:
        message = await repo.get_message(node.ctx.db, message_id)
        assert message is not None
        out.append(message.status)
    return out


async def settle(node: Node, peer: str, ids: list[str], status: str) -> None:
    """Wake the sender's loop for ``peer`` until every message in ``ids`` has ``status``."""

    async def reached() -> bool:
        node.deliverer.wake(peer)
        return set(await statuses(node, ids)) == {status}

    await wait_for(reached, within_s=15)


async def events(node: Node, message_id: str) -> list[tuple[str, str | None]]:
    directory = node.ctx.directory()
    out = []
    for record in await repo.evidence_for(node.ctx.db, message_id, leave_out=USER_ACTIONS):
        evidence = verify_evidence(record, directory, node=node.ctx.state)
        # who acted (the actor) for a user's step, else the node's detail code
        out.append((evidence.event, evidence.detail or evidence.actor))
    return out


async def test_past_the_deadline_a_message_is_undeliverable_with_signed_evidence(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock()
    async with memory_network(tmp_path, clock=clock) as (nodes, down):
        ar = nodes["AR"]
        down.add("BR")
        ids = await submit(ar, "BR", 3)
        await wait_for(lambda: _attempted(ar), within_s=10)
        caplog.set_level(logging.WARNING, logger="mla_node.service.dead_letters")

        clock.advance(37 * HOUR)  # past half of the 72 h deadline: one warning per message
        await wait_for(lambda: _warned(caplog, len(ids)), within_s=10, interval=0.02)
        for _ in range(3):
            clock.advance(HOUR)
            ar.deliverer.wake("BR")
        assert await statuses(ar, ids) == ["queued"] * 3
        assert await repo.count_pending(ar.ctx.db) == 3

        clock.advance(35 * HOUR)  # 76 h: past the deadline
        await settle(ar, "BR", ids, "undeliverable")
        assert await repo.count_pending(ar.ctx.db) == 0
        assert _count(caplog, "approaching") == 3, "the warning is given once per message"
        assert _count(caplog, "ALERT undeliverable") == 3
        for message_id in ids:
            assert await events(ar, message_id) == [
                (Event.SUBMITTED, "clerk:clerk"),
                (Event.NOT_DELIVERED, dead_letters.DEADLINE_PASSED),
            ]
        peer = (await views.peers(ar.ctx))["peers"][0]
        assert (peer["state"], peer["undeliverable"], peer["deadlines_passed"]) == ("BR", 3, 3)
        listed = await views.list_requests(
            ar.ctx,
            box="outbox",
            status="undeliverable",
            form_type=None,
            case_id=None,
            peer=None,
            cursor=None,
            limit=50,
        )
        assert sorted(m["id"] for m in listed["items"]) == sorted(ids)

        # Nothing more happens to them, however long the peer stays away or comes back.
        down.clear()
        clock.advance(DAY)
        ar.deliverer.wake("BR")
        await ar.deliverer.stop()
        assert await inbox(nodes["BR"]) == []
        assert await statuses(ar, ids) == ["undeliverable"] * 3
        assert _count(caplog, "ALERT undeliverable") == 3


async def _attempted(node: Node) -> bool:
    row = await node.ctx.db.fetchone("SELECT MIN(attempts) FROM outbox")
    return bool(row and row[0] and row[0] >= 1)


def _count(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in r.getMessage() for r in caplog.records)


async def _warned(caplog: pytest.LogCaptureFixture, n: int) -> bool:
    return _count(caplog, "approaching") >= n


async def test_resending_the_original_envelope_delivers_exactly_once(tmp_path: Path) -> None:
    """The receiver stored it, but every receipt was lost: the deadline passes at the sender.
    The resend sends the same bytes, and the receiver's original receipt settles it."""
    clock = ManualClock()
    async with memory_network(tmp_path, clock=clock) as (nodes, _):
        ar, br = nodes["AR"], nodes["BR"]
        transport(ar).lose = 10**9
        [message_id] = await submit(ar, "BR")
        await wait_for(lambda: _inbox_has(br, message_id), within_s=10)
        clock.advance(73 * HOUR)
        await settle(ar, "BR", [message_id], "undeliverable")

        transport(ar).lose = 0
        # Stopped, so that the queue entry the resend made can be read before it is delivered.
        await ar.deliverer.stop()
        carrier = await dead_letters.resend(ar.ctx, ADMIN, message_id)
        assert (carrier.id, carrier.status) == (message_id, "queued")
        view = await views.get_request(ar.ctx, ADMIN, message_id)
        assert view["delivery"]["attempts"] == 0
        await ar.deliverer.start()
        await settle(ar, "BR", [message_id], "delivered")

        assert await inbox(br) == [message_id]
        recorded = await repo.get_receipt(ar.ctx.db, message_id)
        issued = await repo.get_receipt(br.ctx.db, message_id)
        assert recorded is not None and issued is not None
        assert recorded.receipt == issued.receipt, "the receiver's original receipt"
        assert [e for e, _ in await events(ar, message_id)] == [
            Event.SUBMITTED,
            Event.NOT_DELIVERED,
            Event.RESENT,
            Event.DELIVERED,
        ]
        assert (await events(ar, message_id))[2] == (Event.RESENT, message_id)
        peer = (await views.peers(ar.ctx))["peers"][0]
        assert (peer["undeliverable"], peer["deadlines_passed"]) == (0, 1)
        with pytest.raises(InvalidStateForAction):
            await dead_letters.resend(ar.ctx, ADMIN, message_id)


async def _inbox_has(node: Node, message_id: str) -> bool:
    return message_id in await inbox(node)


async def test_an_aged_message_is_resealed_and_the_link_is_visible_on_both_nodes(
    tmp_path: Path,
) -> None:
    """Too old to be accepted any more, the request is re-sealed as a new message naming it.
    The receiver had in fact stored the original (lost receipts): it ends with both, linked."""
    clock = ManualClock()
    async with memory_network(tmp_path, clock=clock) as (nodes, _):
        ar, br = nodes["AR"], nodes["BR"]
        transport(ar).lose = 10**9
        [original] = await submit(ar, "BR")
        await wait_for(lambda: _inbox_has(br, original), within_s=10)
        clock.advance(73 * HOUR)
        await settle(ar, "BR", [original], "undeliverable")
        clock.advance(3 * DAY)  # 6 days: under 36 h of acceptability left

        transport(ar).lose = 0
        carrier = await dead_letters.resend(ar.ctx, ADMIN, original)
        assert carrier.id != original
        assert (carrier.replaces, carrier.case_id, carrier.status) == (original, original, "queued")
        await settle(ar, "BR", [carrier.id], "delivered")

        sent = await views.get_request(ar.ctx, ADMIN, original)
        assert (sent["status"], sent["replaced_by"]) == ("undeliverable", carrier.id)
        assert [m["id"] for m in sent["thread"]] == [original, carrier.id]
        assert (await events(ar, original))[-1] == (Event.RESENT, carrier.id)
        assert await events(ar, carrier.id) == [
            (Event.SUBMITTED, "admin:admin"),
            (Event.DELIVERED, None),
        ]
        with pytest.raises(InvalidStateForAction, match=carrier.id):
            await dead_letters.resend(ar.ctx, ADMIN, original)
        peer = (await views.peers(ar.ctx))["peers"][0]
        assert peer["undeliverable"] == 0, "a replaced message no longer waits for an admin"

        # The receiver holds both, and each shows the link.
        assert await inbox(br) == sorted([original, carrier.id])
        first = await views.get_request(br.ctx, AUDITOR, original)
        second = await views.get_request(br.ctx, AUDITOR, carrier.id)
        assert (first["replaced_by"], first["replaces"]) == (carrier.id, None)
        assert (second["replaces"], second["case_id"]) == (original, original)
        assert second["form"] == first["form"]


async def test_a_resealed_request_the_receiver_never_had_opens_its_case_there(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    async with memory_network(tmp_path, clock=clock) as (nodes, down):
        ar, br = nodes["AR"], nodes["BR"]
        down.add("BR")
        [original] = await submit(ar, "BR")
        clock.advance(73 * HOUR)
        await settle(ar, "BR", [original], "undeliverable")
        clock.advance(4 * DAY)  # 7 days: stale at the receiver
        down.clear()
        carrier = await dead_letters.resend(ar.ctx, ADMIN, original)
        await settle(ar, "BR", [carrier.id], "delivered")
        assert await inbox(br) == [carrier.id]

        # The receiver answers in the case, and the request's use restriction still binds.
        reply, _ = await cases.reply(
            br.ctx,
            CLERK,
            carrier.id,
            {"type": "execution_result", "form": forms.example("execution_result")},
            None,
        )
        assert reply.case_id == original
        purpose = forms.example("mla_request")["stated_purpose"]
        assert reply.form["use_restriction"] == purpose
        await settle(br, "AR", [reply.id], "delivered")
        thread = (await views.get_request(ar.ctx, AUDITOR, original))["thread"]
        assert [m["id"] for m in thread] == [original, carrier.id, reply.id]


async def test_every_outbound_message_ends_in_a_known_state(tmp_path: Path) -> None:
    """Delivered, refused, undeliverable and still-queued messages side by side: each status
    matches the outbox, the receipt and the signed evidence, and past the last deadline nothing
    is left queued."""
    clock = ManualClock()
    async with memory_network(tmp_path, ("AR", "BR", "US"), clock=clock) as (nodes, down):
        ar = nodes["AR"]
        down.update({"BR", "US"})
        refused = await submit(ar, "BR", 3)
        for message_id in refused:  # broken in the sender's database: the signature fails
            await _corrupt_signature(ar, message_id)
        to_br = await submit(ar, "BR", 5)
        to_us = await submit(ar, "US", 4)
        down.discard("BR")
        clock.advance(10)  # past the retry backoff of the first attempts
        await settle(ar, "BR", refused, "rejected")
        await settle(ar, "BR", to_br, "delivered")
        await _check_states(ar)

        clock.advance(40 * HOUR)
        late = await submit(ar, "US", 2)  # its deadline is 40 h after the others'
        clock.advance(33 * HOUR)
        await settle(ar, "US", to_us, "undeliverable")
        assert await statuses(ar, late) == ["queued"] * 2
        await _check_states(ar)

        clock.advance(40 * HOUR)
        await settle(ar, "US", late, "undeliverable")
        outbound = await _outbound(ar)
        assert len(outbound) == 14
        assert {m.status for m in outbound} == {"delivered", "rejected", "undeliverable"}
        await _check_states(ar)


async def _corrupt_signature(node: Node, message_id: str) -> None:
    message = await repo.get_message(node.ctx.db, message_id)
    assert message is not None
    bad = message.envelope[:-1] + bytes([message.envelope[-1] ^ 1])
    await node.ctx.db.write(
        lambda tx: tx.execute(
            "UPDATE messages SET envelope = ?, envelope_sha256 = ? WHERE id = ?",
            (bad, hashlib.sha256(bad).digest(), message_id),
        )
    )


async def _outbound(node: Node) -> list[repo.MessageRow]:
    return await repo.list_messages(node.ctx.db, repo.ListFilter("out", limit=1000))


async def _check_states(node: Node) -> None:
    """The invariant: every outbound message is in exactly one known state, and its outbox row,
    receipt and evidence say the same."""
    directory = node.ctx.directory()
    queued = {r[0] for r in await node.ctx.db.fetchall("SELECT message_id FROM outbox")}
    for m in await _outbound(node):
        assert m.status in ("queued", "delivered", "rejected", "undeliverable"), m.status
        assert (m.id in queued) == (m.status == "queued"), (m.id, m.status)
        receipt = await repo.get_receipt(node.ctx.db, m.id)
        trail = [(e, d) for e, d in await events(node, m.id) if e != Event.SUBMITTED]
        if m.status == "queued":
            assert receipt is None and trail == []
        elif m.status == "undeliverable":
            assert receipt is None
            assert trail == [(Event.NOT_DELIVERED, dead_letters.DEADLINE_PASSED)]
        else:
            assert receipt is not None
            verified = verify_receipt(
                receipt.receipt,
                directory,
                expect_message_id=m.id,
                expect_envelope_digest=m.envelope_sha256,
                expect_signer=m.recipient,
            )
            if m.status == "delivered":
                assert verified.status == DELIVERED
                assert trail == [(Event.DELIVERED, None)]
            else:
                assert (verified.status, verified.code) == (REJECTED, "envelope_bad_signature")
                assert trail == [(Event.NOT_DELIVERED, "envelope_bad_signature")]


async def test_concurrent_resends_queue_it_once(tmp_path: Path) -> None:
    clock = ManualClock()
    async with memory_network(tmp_path, clock=clock) as (nodes, down):
        ar = nodes["AR"]
        down.add("BR")
        [message_id] = await submit(ar, "BR")
        clock.advance(73 * HOUR)
        await settle(ar, "BR", [message_id], "undeliverable")
        results = await asyncio.gather(
            *(dead_letters.resend(ar.ctx, ADMIN, message_id) for _ in range(5)),
            return_exceptions=True,
        )
        assert sum(isinstance(r, repo.MessageRow) for r in results) == 1
        assert sum(isinstance(r, InvalidStateForAction) for r in results) == 4
        assert await repo.count_pending(ar.ctx.db) == 1
        resent = [e for e, _ in await events(ar, message_id) if e == Event.RESENT]
        assert len(resent) == 1


async def test_only_an_undeliverable_outbound_message_can_be_resent(tmp_path: Path) -> None:
    async with memory_network(tmp_path) as (nodes, down):
        ar, br = nodes["AR"], nodes["BR"]
        down.add("BR")
        [queued] = await submit(ar, "BR")
        with pytest.raises(InvalidStateForAction, match="queued"):
            await dead_letters.resend(ar.ctx, ADMIN, queued)
        down.clear()
        await settle(ar, "BR", [queued], "delivered")
        with pytest.raises(InvalidStateForAction, match="delivered"):
            await dead_letters.resend(ar.ctx, ADMIN, queued)
        with pytest.raises(InvalidStateForAction, match="sent"):
            await dead_letters.resend(br.ctx, ADMIN, queued)


async def test_messages_queued_before_deadlines_existed_get_one_at_start(tmp_path: Path) -> None:
    clock = ManualClock()
    async with memory_network(tmp_path, clock=clock) as (nodes, down):
        ar = nodes["AR"]
        down.add("BR")
        [message_id] = await submit(ar, "BR")
        await ar.deliverer.stop()
        await ar.ctx.db.write(
            lambda tx: tx.execute("UPDATE outbox SET deadline_at = NULL, warn_at = NULL")
        )
        await ar.deliverer.start()
        row = await ar.ctx.db.fetchone("SELECT created_at, deadline_at, warn_at FROM outbox")
        assert row is not None
        assert row[1] - row[0] == 72 * 3600 * 1000
        assert row[2] - row[0] == 36 * 3600 * 1000
        clock.advance(73 * HOUR)
        await settle(ar, "BR", [message_id], "undeliverable")


async def test_a_resealed_acknowledgement_is_sent_although_the_request_is_acknowledged(
    tmp_path: Path,
) -> None:
    """Follow-ups are re-sealed too; the acknowledgement's once-only rule is about the clerk's
    act, which the resend does not repeat."""
    clock = ManualClock()
    async with memory_network(tmp_path, clock=clock) as (nodes, down):
        ar, br = nodes["AR"], nodes["BR"]
        [request] = await submit(ar, "BR")
        await settle(ar, "BR", [request], "delivered")
        down.add("AR")
        ack, _ = await cases.acknowledge(br.ctx, CLERK, request, {})
        clock.advance(6 * DAY)
        await settle(br, "AR", [ack.id], "undeliverable")
        down.clear()
        carrier = await dead_letters.resend(br.ctx, ADMIN, ack.id)
        assert (carrier.replaces, carrier.in_reply_to, carrier.form_type) == (
            ack.id,
            request,
            "acknowledgement",
        )
        await settle(br, "AR", [carrier.id], "delivered")
        events_at_sender = [e for e, _ in await events(ar, request)]
        assert events_at_sender == [Event.SUBMITTED, Event.DELIVERED, Event.ACKNOWLEDGED]
        received = await repo.get_message(ar.ctx.db, carrier.id)
        assert received is not None and received.replaces == ack.id


async def test_a_receiver_refuses_a_message_that_replaces_itself(tmp_path: Path) -> None:
    async with memory_network(tmp_path) as (nodes, _):
        ar, br = nodes["AR"], nodes["BR"]
        fixed = ar.ctx.new_id(ar.ctx.clock())
        sealed = cases.seal_message(
            ar.ctx,
            to="BR",
            form_type="mla_request",
            version=1,
            form=forms.example("mla_request"),
            case_id=fixed,
            reply_to=None,
            replaces=fixed,
            created_by="clerk",
            now=ar.ctx.clock(),
        )
        assert sealed.id != fixed
        ar.ctx.new_id = lambda now: fixed
        itself = cases.seal_message(
            ar.ctx,
            to="BR",
            form_type="mla_request",
            version=1,
            form=forms.example("mla_request"),
            case_id=fixed,
            reply_to=None,
            replaces=fixed,
            created_by="clerk",
            now=ar.ctx.clock(),
        )
        cert = transport(ar).sender_cert_der
        with pytest.raises(EnvelopeMalformed, match="replace itself"):
            await inbound.receive(br.ctx, itself.envelope, cert)
        # A re-sealed request names another message: its case need not be its own id.
        received = await inbound.receive(br.ctx, sealed.envelope, cert)
        assert received.receipt and not received.repeat
        stored = await repo.get_message(br.ctx.db, sealed.id)
        assert stored is not None and (stored.case_id, stored.replaces) == (fixed, fixed)
