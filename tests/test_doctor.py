"""``doctor`` finds each planted problem; ``conformance`` passes a sound peer and catches one that
takes a bad envelope (issue 8, items 7 and 8). Real nodes in-process, real mutual TLS."""

from __future__ import annotations

from pathlib import Path

import pytest

from mla_node import conformance, doctor
from mla_node.config import NodeConfig, NodeSection
from mla_node.identity import load_identity
from mla_node.service import inbound
from mla_node.storage.db import SQLITE_MIGRATIONS, load_migrations, open_database
from mla_node.transport.http import HttpTransport
from tests import pgkit
from tests.netkit import running_network

DAY_MS = 86_400_000


def statuses(rows: list[doctor.Row]) -> dict[str, str]:
    return {row.check: row.status for row in rows}


async def test_doctor_passes_a_sound_node_and_finds_each_planted_problem(tmp_path: Path) -> None:
    async with running_network(tmp_path, ("AR", "BR", "US")) as net:
        config = net["AR"].local.config
        now = net["AR"].runtime.ctx.clock()
        rows = await doctor.diagnose(config, now)
        assert {r.status for r in rows} == {doctor.OK}, rows
        assert statuses(rows)["peer BR"] == statuses(rows)["peer US"] == doctor.OK
        assert statuses(rows)["node process"] == doctor.OK  # and it says "running"

        # A private key readable by others.
        signing = config.keys_dir / "signing.key"
        signing.chmod(0o640)
        found = statuses(await doctor.diagnose(config, now))
        assert found["key file signing.key"] == found["keys"] == doctor.FAIL
        signing.chmod(0o600)

        # An unreachable peer.
        await net["US"].runtime.stop()
        net.nodes.pop("US")
        found = statuses(await doctor.diagnose(config, now, peer_timeout_s=5))
        assert found["peer US"] == doctor.FAIL and found["peer BR"] == doctor.OK

        # Certificates near their end, then ended (the directory ends before them).
        near = statuses(await doctor.diagnose(config, now + 380 * DAY_MS, peer_timeout_s=5))
        assert near["certificate tls"] == doctor.WARN
        ended = statuses(await doctor.diagnose(config, now + 400 * DAY_MS, peer_timeout_s=5))
        assert ended["certificate tls"] == doctor.FAIL
        assert ended["directory"] == doctor.FAIL


# The too_large case is one byte over 1 MiB, sent as bytes (ignored by default outside tests).
@pytest.mark.filterwarnings("ignore:Sending a large body directly:ResourceWarning")
async def test_conformance_passes_a_peer_that_fails_closed_and_catches_one_that_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_network(tmp_path, ("AR", "BR", "US")) as net:
        config = net["AR"].local.config
        directory = net["AR"].runtime.ctx.directory()
        identity = load_identity(config.keys_dir)
        br = directory.node("BR")
        assert br is not None
        cases = conformance.negative_cases(
            directory, "AR", br, identity.signing_key, net["AR"].runtime.ctx.clock()
        )
        names = {c.name for c in cases}
        assert {"sender_mismatch", "too_large", "stale", "reflection"} <= names
        transport = HttpTransport(identity.tls_cert_path, identity.tls_key_path)
        try:
            outcomes = await conformance.run_all(transport, br, directory, cases)
            assert [o for o in outcomes if not o.ok] == []
            assert sum(o.signed == "verified" for o in outcomes) >= 2 * 14
            # Every case but the one too large for a batch came once more, in one batch.
            batched = [o.case.name for o in outcomes if o.case.name.endswith(" (batch)")]
            assert batched == [f"{c.name} (batch)" for c in cases if c.name != "too_large"]
            _, inbox = await net["BR"].call("GET", "/api/v1/requests?box=inbox")
            assert inbox["items"] == []  # nothing was left at the peer

            # A peer that takes whatever it is sent: caught.
            async def careless(ctx: object, data: bytes, cert: bytes | None) -> inbound.Received:
                return inbound.Received(b"thanks")

            monkeypatch.setattr(inbound, "receive", careless)
            outcomes = await conformance.run_all(transport, br, directory, cases[:3])
            assert [(o.ok, o.got) for o in outcomes] == [(False, "accepted")] * 6  # batched too
        finally:
            await transport.close()


async def test_doctor_checks_a_shared_postgresql_database_without_migrating_it(
    tmp_path: Path,
) -> None:
    async with pgkit.fresh_database() as url:
        config = NodeConfig(
            node=NodeSection(state="AR", authority_name="AR", database=url), base_dir=tmp_path
        )
        [row] = await doctor._shared_database(config)
        assert row.status == doctor.FAIL
        assert "start a worker of this version to migrate it" in row.detail  # not migrated
        await (await open_database(url)).close()  # a worker migrated it
        [row] = await doctor._shared_database(config)
        known = len(load_migrations(SQLITE_MIGRATIONS))
        assert (row.status, row.detail) == (doctor.OK, f"PostgreSQL, schema version {known}, ok")
