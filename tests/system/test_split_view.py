"""Peer-witnessed heads between two real nodes over mutual TLS (real SQLite files, real HTTP).

A split view is staged as it would happen: BR's database is put back to a backup taken mid-way
after AR has witnessed a later head, BR is restarted and its log grows another history past that
head; AR's next delivery catches it, writes the evidence file (which verifies offline with the
trust root and directory files alone), raises the ALERT and stores the row. Honest growth across
many checkpoints, in both directions, raises nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from mla_node.cli import cli
from mla_node.protocol.checkpoint import Checkpoint, verify_checkpoint
from mla_node.protocol.directory import TrustRoot, verify_directory
from mla_node.protocol.witness import SplitReason
from mla_node.runtime import NodeRuntime
from mla_node.service import audit_log, witness
from mla_node.storage import repo, witness_repo
from mla_node.witness_file import check_split_view_file, summary_lines
from tests.dbkit import backup
from tests.netkit import RunningNode, running_network, wait_for


async def deliver(sender: RunningNode, to: str, n: int) -> None:
    for _ in range(n):
        await sender.submit(to)

    async def sent() -> bool:
        return await repo.count_pending(sender.runtime.ctx.db) == 0

    await wait_for(sent)


async def checkpoint(node: RunningNode) -> Checkpoint:
    ctx = node.runtime.ctx
    return verify_checkpoint(await audit_log.checkpoint(ctx), ctx.directory(), node=node.state)


async def witnessed_up_to(node: RunningNode, peer: str, size: int) -> None:
    async def stored() -> bool:
        heads = await witness_repo.heads_of(node.runtime.ctx.db, peer)
        return size in [h.size for h in heads]

    try:
        await wait_for(stored, within_s=10)
    except AssertionError as exc:
        # A newer head is stored only with its consistency proof, which the peer endpoint sends
        # when the runtime gives make_peer_app its log_proof source.
        raise AssertionError(
            f"{node.state} never stored {peer}'s head of size {size}: does runtime.py pass "
            "log_proof=inbound.log_proof to make_peer_app?"
        ) from exc


async def until(check: Callable[[], bool]) -> None:
    async def ready() -> bool:
        return check()

    await wait_for(ready, within_s=10)


def alerts(caplog: pytest.LogCaptureFixture) -> list[str]:
    # Only this test's kind: the example forms' legal deadlines are long past and raise their own.
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("ALERT split_view")]


def put_back(db: Path, copy: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    db.write_bytes(copy.read_bytes())


async def test_a_node_restored_from_a_backup_that_grows_another_history_is_caught(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_network(tmp_path, ("AR", "BR")) as net:
        ar, br = net["AR"], net["BR"]
        await deliver(ar, "BR", 3)
        await checkpoint(br)
        copy = tmp_path / "br-backup.db"
        await asyncio.to_thread(backup, br.local.config.database_path, copy)

        await deliver(ar, "BR", 4)
        held = await checkpoint(br)
        await deliver(ar, "BR", 1)  # its receipt shows `held`, proven from AR's older head
        await witnessed_up_to(ar, "BR", held.size)

        await br.runtime.stop()
        await asyncio.to_thread(put_back, br.local.config.database_path, copy)
        br.runtime = await NodeRuntime.start(br.local.config)
        shrunk = await checkpoint(br)
        assert shrunk.size < held.size

        await deliver(ar, "BR", held.size - shrunk.size + 2)  # another history, past `held`
        forked = await checkpoint(br)
        assert forked.size > held.size
        assert alerts(caplog) == []  # BR's smaller heads meanwhile show no contradiction

        await deliver(ar, "BR", 1)  # AR names `held`; BR cannot prove its new head extends it
        await until(lambda: len(alerts(caplog)) == 1)

        [row] = await witness_repo.split_views(ar.runtime.ctx.db, "BR")
        assert row.reason == SplitReason.PROOF_FAILED.value
        assert (row.stored_head, row.shown_head) == (held.raw, forked.raw)
        assert row.evidence_file is not None
        evidence = Path(row.evidence_file)
        assert evidence.parent == ar.local.config.database_path.parent / "evidence"
        assert evidence.name.startswith("split-view-BR-")
        [alert] = alerts(caplog)
        assert alert.startswith(f"ALERT split_view peer=BR sizes={held.size},{forked.size}")
        assert any(
            r.levelno == logging.ERROR and r.name == witness.log.name for r in caplog.records
        )

        # Offline, as an auditor would: the trust root and directory files, nothing of AR's.
        config = ar.local.config
        directory = verify_directory(
            config.directory_path.read_bytes(),
            TrustRoot.from_json(config.trust_root_path.read_bytes()),
            now=0,
        )
        view = check_split_view_file(evidence, directory)
        assert (view.node, view.reason) == ("BR", SplitReason.PROOF_FAILED)
        assert (view.first.raw, view.second.raw) == (held.raw, forked.raw)
        assert summary_lines(view)[0].startswith("Split view verified: BR signed two histories")
        command = [
            "audit",
            "verify-split-view",
            str(evidence),
            "--trust",
            str(config.trust_root_path),
            "--directory",
            str(config.directory_path),
        ]
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 0, result.output
        assert "Split view verified: BR signed two histories" in result.output

        # Delivery to BR goes on: the alert is for humans.
        await deliver(ar, "BR", 2)
        rows = await ar.runtime.ctx.db.fetchall("SELECT DISTINCT status FROM messages")
        assert [r[0] for r in rows] == ["delivered"]


async def test_honest_growth_across_many_checkpoints_raises_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_network(tmp_path, ("AR", "BR")) as net:
        ar, br = net["AR"], net["BR"]
        for _ in range(5):
            await deliver(ar, "BR", 2)
            await deliver(br, "AR", 2)
            br_head, ar_head = await checkpoint(br), await checkpoint(ar)
            await deliver(ar, "BR", 1)
            await deliver(br, "AR", 1)
            await witnessed_up_to(ar, "BR", br_head.size)
            await witnessed_up_to(br, "AR", ar_head.size)
        for node, peer in ((ar, "BR"), (br, "AR")):
            sizes = [h.size for h in await witness_repo.heads_of(node.runtime.ctx.db, peer)]
            assert len(sizes) >= 6, sizes  # the start head, then one per round at least
            assert await witness_repo.split_views(node.runtime.ctx.db) == []
            assert not witness.evidence_dir(node.runtime.ctx).exists()
        assert alerts(caplog) == []
