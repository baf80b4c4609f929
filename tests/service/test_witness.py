"""Witnessing peers' log heads with the real use cases and databases, wired in memory.

Honest growth over many checkpoints stores each new head and raises nothing; a receiver whose
database is put back to an older copy and then grows another history is caught by the sender at
its next delivery, with an evidence file that verifies offline; witnessing never costs a delivery.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from mla_node.protocol.checkpoint import Checkpoint, sign_checkpoint, verify_checkpoint
from mla_node.protocol.merkle import verify_consistency
from mla_node.protocol.witness import SplitReason, Verdict, verify_split_view
from mla_node.runtime import MIGRATIONS
from mla_node.service import audit_log, witness
from mla_node.service.log_heads import LogHeads
from mla_node.storage import witness_repo
from mla_node.storage.db import Database, load_migrations
from tests.dbkit import backup
from tests.netkit import wait_for
from tests.service.memnet import Node, memory_network, outbox_empty, submit

ALERT_LOGGER = "mla_node.service.witness"


async def deliver(sender: Node, to: str, n: int) -> None:
    await submit(sender, to, n)
    await wait_for(lambda: outbox_empty(sender), within_s=15)


async def witnessed(node: Node, peer: str) -> list[int]:
    return [h.size for h in await witness_repo.heads_of(node.ctx.db, peer)]


async def witnessed_up_to(node: Node, peer: str, size: int) -> None:
    """Wait for ``node`` to store ``peer``'s head of ``size``: heads are judged just after a
    receipt is recorded, so an empty outbox alone does not say it happened yet."""

    async def stored() -> bool:
        return size in await witnessed(node, peer)

    await wait_for(stored, within_s=10)


async def until(check: Callable[[], bool]) -> None:
    async def ready() -> bool:
        return check()

    await wait_for(ready, within_s=10)


def logged(caplog: pytest.LogCaptureFixture, start: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(start)]


def alerts(caplog: pytest.LogCaptureFixture) -> list[str]:
    return logged(caplog, "ALERT")


async def restore(node: Node, copy: Path) -> None:
    """Put the node's database back to ``copy``, as an operator restoring a backup would, and
    start it again: a checkpoint of the log as it now stands, nothing held in memory."""
    path = node.ctx.config.database_path
    await node.ctx.db.close()
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    path.write_bytes(copy.read_bytes())
    node.ctx.db = await Database.open(path, load_migrations(MIGRATIONS))
    node.ctx.heads = LogHeads()
    await audit_log.checkpoint(node.ctx)


async def test_honest_growth_over_many_checkpoints_raises_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=ALERT_LOGGER)
    async with memory_network(tmp_path) as (nodes, _):
        ar, br = nodes["AR"], nodes["BR"]
        for _ in range(6):
            await deliver(ar, "BR", 2)
            await deliver(br, "AR", 1)
            br_head = verify_checkpoint(
                await audit_log.checkpoint(br.ctx), br.ctx.directory(), node="BR"
            )
            await audit_log.checkpoint(ar.ctx)
            await deliver(ar, "BR", 1)  # its receipt shows the new head, with the proof
            await witnessed_up_to(ar, "BR", br_head.size)
        sizes = await witnessed(ar, "BR")
        assert len(sizes) == 6 and sizes == sorted(sizes)  # one per round
        assert len(await witnessed(br, "AR")) == 5  # AR's head of each round, seen the next
        # What was stored is one history: each head a prefix of the next, proven by BR's log.
        heads = await witness_repo.heads_of(ar.ctx.db, "BR")
        for old, new in itertools.pairwise(heads):
            proof = await audit_log.consistency_proof(br.ctx, old.size, new.size)
            verify_consistency(old.size, new.size, old.root, new.root, proof)
        assert await witness_repo.split_views(ar.ctx.db) == []
        assert await witness_repo.split_views(br.ctx.db) == []
        assert alerts(caplog) == []
        assert not witness.evidence_dir(ar.ctx).exists()


async def test_a_receiver_put_back_to_an_old_copy_is_caught_at_the_next_delivery(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # SQLite whatever the backend under test: the node is put back to a copy of its file.
    async with memory_network(tmp_path, backend="sqlite") as (nodes, _):
        ar, br = nodes["AR"], nodes["BR"]
        await deliver(ar, "BR", 3)
        await audit_log.checkpoint(br.ctx)
        copy = tmp_path / "br-backup.db"
        await asyncio.to_thread(backup, br.ctx.config.database_path, copy)
        await deliver(ar, "BR", 4)
        held = verify_checkpoint(await audit_log.checkpoint(br.ctx), br.ctx.directory(), node="BR")
        await deliver(ar, "BR", 1)
        await witnessed_up_to(ar, "BR", held.size)

        await restore(br, copy)  # BR's log is now shorter than the head AR holds
        await deliver(ar, "BR", held.size + 2)  # ... and grows again, another history
        forked = verify_checkpoint(
            await audit_log.checkpoint(br.ctx), br.ctx.directory(), node="BR"
        )
        assert forked.size > held.size
        assert alerts(caplog) == []  # smaller heads meanwhile prove nothing: no alarm yet

        await deliver(ar, "BR", 1)  # AR names the head it holds; BR's proof cannot match it
        await until(lambda: len(alerts(caplog)) == 1)  # logged once file and row are written
        [row] = await witness_repo.split_views(ar.ctx.db, "BR")
        assert row.reason == SplitReason.PROOF_FAILED.value and row.evidence_file is not None
        evidence = Path(row.evidence_file)
        assert evidence.parent == witness.evidence_dir(ar.ctx)
        assert evidence.name.startswith("split-view-BR-") and evidence.suffix == ".json"
        assert stat.S_IMODE(evidence.stat().st_mode) == 0o600
        assert stat.S_IMODE(evidence.parent.stat().st_mode) == 0o700
        view = verify_split_view(evidence.read_bytes(), ar.ctx.directory())
        assert (view.node, view.reason) == ("BR", SplitReason.PROOF_FAILED)
        assert (view.first.raw, view.second.raw) == (held.raw, forked.raw)
        [alert] = alerts(caplog)
        assert alert.startswith(f"ALERT split_view peer=BR sizes={held.size},{forked.size}")
        assert str(evidence) in alert

        # Delivery to BR goes on; the same fork is not reported again.
        await deliver(ar, "BR", 2)
        await until(lambda: len(logged(caplog, "BR still contradicts")) == 2)
        assert len(await witness_repo.split_views(ar.ctx.db)) == 1
        assert len(alerts(caplog)) == 1
        assert [p.name for p in witness.evidence_dir(ar.ctx).iterdir()] == [evidence.name]


def signed_head(node: Node, size: int, root: bytes) -> Checkpoint:
    data = sign_checkpoint(
        node.ctx.identity.signing_key,
        node=node.ctx.state,
        size=size,
        root=root,
        at=node.ctx.clock(),
    )
    return verify_checkpoint(data, node.ctx.directory(), node=node.ctx.state)


async def test_two_roots_for_one_size_are_caught_without_a_proof(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with memory_network(tmp_path) as (nodes, _):
        ar, br = nodes["AR"], nodes["BR"]
        first = signed_head(br, 5, b"\x01" * 32)
        assert await witness.observe(ar.ctx, "BR", first, None) is not None
        again = await witness.observe(ar.ctx, "BR", first, None)
        assert again is not None and again.verdict is Verdict.SAME
        # An evidence file of that name already there (a restored database's, say) is kept.
        folder = witness.evidence_dir(ar.ctx)
        folder.mkdir()
        ar_clock = ar.ctx.clock
        ar.ctx.clock = lambda: 1_767_225_600_123
        (folder / "split-view-BR-20260101T000000.123Z.json").write_text("older evidence")
        decision = await witness.observe(ar.ctx, "BR", signed_head(br, 5, b"\x02" * 32), None)
        ar.ctx.clock = ar_clock
        assert decision is not None and decision.verdict is Verdict.SPLIT_VIEW
        [row] = await witness_repo.split_views(ar.ctx.db)
        assert row.evidence_file == str(folder / "split-view-BR-20260101T000000.123Z-2.json")
        assert (folder / "split-view-BR-20260101T000000.123Z.json").read_text() == "older evidence"
        doc = json.loads(Path(row.evidence_file).read_bytes())
        assert doc["reason"] == "same_size_different_root" and doc["proof"] is None
        view = verify_split_view(Path(row.evidence_file).read_bytes(), ar.ctx.directory())
        assert view.reason is SplitReason.SAME_SIZE
        assert len(alerts(caplog)) == 1


async def test_witnessing_never_costs_a_delivery(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: object) -> None:
        raise RuntimeError("witnessing is broken")

    monkeypatch.setattr(witness, "observe", broken)
    monkeypatch.setattr(witness, "witnessed_size", broken)
    async with memory_network(tmp_path) as (nodes, _):
        await deliver(nodes["AR"], "BR", 3)
        rows = await nodes["AR"].ctx.db.fetchall("SELECT status FROM messages")
        assert [r[0] for r in rows] == ["delivered"] * 3
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("witnessing the log head of BR failed" in m for m in logged)
    assert any("could not read the witnessed head of BR" in m for m in logged)
