"""State-aware retention: a purge removes old contents but never what is pending, in retry, held
or part of a case thread that is still open, and what it keeps still proves what happened."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner

from mla_node.cli import cli
from mla_node.errors import FormInvalid, InvalidStateForAction, NotFound
from mla_node.protocol import forms
from mla_node.service import cases, inbound, retention, views
from mla_node.service.context import Principal, Role
from mla_node.storage import repo
from tests.netkit import wait_for
from tests.service.memnet import (
    ADMIN,
    CLERK,
    ManualClock,
    Node,
    memory_network,
    outbox_empty,
    submit,
)

DAY_S = 24 * 3600
AUDITOR = Principal("tok_auditor", Role.AUDITOR, "auditor")


async def delivered(node: Node, ids: list[str]) -> None:
    async def done() -> bool:
        for message_id in ids:
            message = await repo.get_message(node.ctx.db, message_id)
            if message is None or message.status != "delivered":
                return False
        return True

    await wait_for(done, within_s=15)


async def opened_by_a_clerk(node: Node, message_id: str) -> None:
    await views.get_request(node.ctx, CLERK, message_id)


async def kept(node: Node, message_id: str) -> bool:
    message = await repo.get_message(node.ctx.db, message_id)
    assert message is not None
    return message.purged_at is None and bool(message.form) and bool(message.envelope)


async def test_a_purge_keeps_what_is_open_queued_or_held_and_the_proof_of_the_rest(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    async with memory_network(tmp_path, ("AR", "BR", "US"), clock=clock) as (nodes, down):
        ar = nodes["AR"]
        down.add("US")
        closed = await submit(ar, "BR", 2)
        held, threaded = await submit(ar, "BR", 2)
        await delivered(ar, [*closed, held, threaded])
        in_retry = await submit(ar, "US")  # the US node is down: queued, retried
        down.add("BR")
        follow_up, _ = await cases.reply(
            ar.ctx,
            CLERK,
            threaded,
            {"type": "status_inquiry", "form": forms.example("status_inquiry")},
            None,
        )  # queued: its whole thread stays
        hold = await retention.set_hold(ar.ctx, ADMIN, held, {"reason": "court order 12/2025"})
        assert (hold["held"], hold["by"], hold["reason"]) == (True, "admin", "court order 12/2025")
        before = {m: await repo.get_message(ar.ctx.db, m) for m in closed}

        later = clock() + 31 * DAY_S * 1000
        dry = await retention.purge(ar.ctx.db, older_than_days=30, now=later, dry_run=True)
        assert (dry.cases, dry.messages, dry.kept_open, dry.kept_held) == (2, 2, 2, 1)
        assert dry.freed_bytes > 0
        assert all([await kept(ar, m) for m in closed]), "a dry run changes nothing"

        # Not old enough yet: nothing.
        young = await retention.purge(ar.ctx.db, older_than_days=30, now=clock(), dry_run=False)
        assert (young.cases, young.kept_open, young.kept_held) == (0, 0, 0)

        report = await retention.purge(ar.ctx.db, older_than_days=30, now=later, dry_run=False)
        assert (report.cases, report.messages, report.freed_bytes) == (2, 2, dry.freed_bytes)
        assert (report.kept_open, report.kept_held) == (2, 1)
        for message_id in [*in_retry, threaded, follow_up.id, held]:
            assert await kept(ar, message_id), message_id
            assert await repo.message_body(ar.ctx.db, message_id) is not None
        for message_id in closed:
            message = await repo.get_message(ar.ctx.db, message_id)
            original = before[message_id]
            assert message is not None and original is not None
            assert not await kept(ar, message_id)
            assert await repo.message_body(ar.ctx.db, message_id) is None, "the body goes too"
            assert message.purged_at == later
            assert message.envelope_sha256 == original.envelope_sha256
            view = await views.get_request(ar.ctx, AUDITOR, message_id)
            assert view["form"] is None and view["use_restriction"] is None
            assert view["purged_at"] is not None
            assert view["receipt"]["verified"] is True, "the receipt still verifies"
            assert [e["event"] for e in view["evidence"]] == ["submitted", "delivered"]
            assert all(e["verified"] for e in view["evidence"])

        again = await retention.purge(ar.ctx.db, older_than_days=30, now=later, dry_run=False)
        assert again.cases == 0

        # The hold lifted, its thread goes at the next purge; the open ones are still sent.
        lifted = await retention.release_hold(ar.ctx, ADMIN, held)
        assert lifted == {"case_id": held, "held": False, "since": None, "by": None, "reason": None}
        last = await retention.purge(ar.ctx.db, older_than_days=30, now=later, dry_run=False)
        assert (last.cases, last.kept_held) == (1, 0)
        assert not await kept(ar, held)
        down.clear()
        clock.advance(10)
        for peer in ("BR", "US"):
            ar.deliverer.wake(peer)
        await delivered(ar, [*in_retry, follow_up.id])
        assert await outbox_empty(ar)
        assert await kept(ar, threaded)


async def test_a_purge_never_races_a_message_queued_into_the_thread(tmp_path: Path) -> None:
    clock = ManualClock()
    async with memory_network(tmp_path, clock=clock) as (nodes, down):
        ar = nodes["AR"]
        [request] = await submit(ar, "BR")
        await delivered(ar, [request])
        down.add("BR")
        later = clock() + 31 * DAY_S * 1000
        follow_up = cases.reply(
            ar.ctx,
            CLERK,
            request,
            {"type": "status_inquiry", "form": forms.example("status_inquiry")},
            None,
        )
        purge = retention.purge(ar.ctx.db, older_than_days=30, now=later, dry_run=False)
        (reply, _), report = await asyncio.gather(follow_up, purge)
        # Either order is fine, but never a purged request with a reply queued after it was
        # chosen: the purge selects and removes in one transaction of the single writer.
        if report.cases:
            assert not await kept(ar, request)
        else:
            assert await kept(ar, request)
        assert await kept(ar, reply.id)


async def test_the_receiver_purges_only_what_a_clerk_has_opened_and_still_knows_a_replay(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    async with memory_network(tmp_path, clock=clock) as (nodes, _):
        ar, br = nodes["AR"], nodes["BR"]
        opened, unread = await submit(ar, "BR", 2)
        await delivered(ar, [opened, unread])
        await opened_by_a_clerk(br, opened)
        later = clock() + 31 * DAY_S * 1000
        report = await retention.purge(br.ctx.db, older_than_days=30, now=later, dry_run=False)
        assert (report.cases, report.kept_open) == (1, 1)
        assert not await kept(br, opened)
        assert await kept(br, unread), "nobody has read it yet"

        # A replay of the purged envelope is still recognised: the original receipt, no new copy.
        sent = await repo.get_message(ar.ctx.db, opened)
        issued = await repo.get_receipt(br.ctx.db, opened)
        assert sent is not None and issued is not None
        cert = ar.deliverer.transport.sender_cert_der  # type: ignore[attr-defined]
        assert await inbound.receive(br.ctx, sent.envelope, cert) == inbound.Received(
            issued.receipt, repeat=True
        )
        assert len(await repo.list_messages(br.ctx.db, repo.ListFilter("in"))) == 2

        # Nothing can be answered under a use restriction that is gone.
        with pytest.raises(InvalidStateForAction, match="purged"):
            await cases.reply(
                br.ctx,
                CLERK,
                opened,
                {"type": "execution_result", "form": forms.example("execution_result")},
                None,
            )


async def test_legal_holds_cover_the_whole_thread_and_are_idempotent(tmp_path: Path) -> None:
    async with memory_network(tmp_path) as (nodes, _):
        ar, br = nodes["AR"], nodes["BR"]
        [request] = await submit(ar, "BR")
        await delivered(ar, [request])
        reply, _ = await cases.acknowledge(br.ctx, CLERK, request, {})
        first = await retention.set_hold(br.ctx, ADMIN, reply.id, {})
        assert (first["case_id"], first["held"], first["reason"]) == (request, True, None)
        again = await retention.set_hold(br.ctx, ADMIN, request, {"reason": "a second order"})
        assert again == first, "the first hold stands"
        view = await views.get_request(br.ctx, AUDITOR, request)
        assert view["legal_hold"]["by"] == "admin"
        assert (await retention.release_hold(br.ctx, ADMIN, request))["held"] is False
        assert (await retention.release_hold(br.ctx, ADMIN, reply.id))["held"] is False
        assert (await views.get_request(br.ctx, AUDITOR, request))["legal_hold"] is None
        with pytest.raises(FormInvalid) as bad:
            await retention.set_hold(br.ctx, ADMIN, request, {"reason": "", "until": "never"})
        assert {p.field for p in bad.value.problems} == {"reason", "until"}
        with pytest.raises(NotFound):
            await retention.set_hold(br.ctx, ADMIN, "01J00000000000000000000000", {})


def test_the_purge_command(tmp_path: Path) -> None:
    clock = ManualClock()
    clock.advance(-40 * DAY_S)  # the messages are 40 days old by the wall clock
    config = asyncio.run(_old_traffic(tmp_path, clock))
    runner = CliRunner()
    args = ["db", "purge", "--config", str(config), "--older-than", "30"]
    dry = runner.invoke(cli, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert dry.output.startswith("Would purge 1 case thread(s), 1 message(s), ")
    assert "Kept: 1 old thread(s) with an open message, 0 under a legal hold." in dry.output
    real = runner.invoke(cli, args)
    assert real.exit_code == 0, real.output
    assert real.output.startswith("Purged 1 case thread(s), 1 message(s), ")
    assert runner.invoke(cli, args).output.startswith("Purged 0 case thread(s)")
    too_recent = runner.invoke(cli, ["db", "purge", "--config", str(config), "--older-than", "0"])
    assert too_recent.exit_code == 2


async def _old_traffic(folder: Path, clock: ManualClock) -> Path:
    # SQLite whatever the backend under test: the command reads the node's config file.
    async with memory_network(folder, clock=clock, backend="sqlite") as (nodes, down):
        ar = nodes["AR"]
        [done] = await submit(ar, "BR")
        await delivered(ar, [done])
        down.add("BR")
        await submit(ar, "BR")
        return ar.ctx.config.base_dir / "config.toml"
