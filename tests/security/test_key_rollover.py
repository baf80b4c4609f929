"""Key rollover under steady traffic, and revocation, across real nodes over real mutual TLS.

A node rotates its signing and encryption keys with ``mla-node keys rotate``: new keys in
``keys/``, the old ones kept in ``keys/retired/`` (identity.py's layout), a new registration
admitted by the authority with an overlap window and the same TLS certificate, the directory
published to every node, which each pick up live. Traffic never stops: 0 deliveries fail, and
receipts and evidence signed with the old keys still verify once the overlap has ended. A revoked
key is refused by every peer within one directory refresh.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mla_node import authority
from mla_node.cli import cli
from mla_node.identity import REGISTRATION_FILE
from mla_node.localnet import LocalNode, publish_directory
from mla_node.runtime import NodeRuntime
from tests.netkit import Network, RunningNode, bound_socket, running_network, wait_for

OVERLAP_S = 5
POLL_S = 1.0  # localnet's delivery.directory_poll_s


def rotate_keys(node: LocalNode) -> Path:
    """``mla-node keys rotate``, as the operator runs it; the new registration's path."""
    result = CliRunner().invoke(
        cli, ["keys", "rotate", "--config", str(node.config_path)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.stderr
    return node.config.keys_dir / REGISTRATION_FILE


async def traffic(
    src: RunningNode, dst: str, stop: asyncio.Event, sent: list[tuple[RunningNode, str, float]]
) -> None:
    while not stop.is_set():
        created = await src.submit(dst)
        sent.append((src, created["id"], time.time()))
        await asyncio.sleep(0.05)


async def settled(net: Network, sent: list[tuple[RunningNode, str, float]]) -> dict[str, int]:
    outcome: dict[str, int] = {}
    for src, mid, _ in sent:
        _, view = await src.call("GET", f"/api/v1/requests/{mid}")
        outcome[view["status"]] = outcome.get(view["status"], 0) + 1
    return outcome


async def directory_version(net: Network) -> int:
    return max(n.runtime.ctx.trust.current.version for n in net.nodes.values())  # type: ignore[union-attr]


@pytest.mark.slow
async def test_rotation_under_traffic_loses_nothing_and_old_proofs_verify(tmp_path: Path) -> None:
    async with running_network(tmp_path, ("AR", "BR", "US")) as net:
        ar = net["AR"]
        keys_dir = ar.local.config.keys_dir
        old_signing = ar.runtime.ctx.identity.signing_key.kid
        old_tls = ar.runtime.ctx.directory().node("AR").tls_cert_sha256  # type: ignore[union-attr]
        stop = asyncio.Event()
        sent: list[tuple[RunningNode, str, float]] = []
        pairs = [("AR", "BR"), ("AR", "US"), ("BR", "AR"), ("US", "AR")]
        tasks = [asyncio.create_task(traffic(net[a], b, stop, sent)) for a, b in pairs]
        await asyncio.sleep(1.5)
        before = list(sent)  # sealed with, and answered under, the old keys

        registration = rotate_keys(ar.local)
        # The authority's side through the command line, as an operator runs it.
        admitted = CliRunner().invoke(
            cli,
            [
                "authority",
                "admit",
                str(registration),
                "--dir",
                str(tmp_path / "authority"),
                "--overlap",
                str(OVERLAP_S),
                "--keep-certificate",
            ],
        )
        assert admitted.exit_code == 0, admitted.output
        found = re.search(r"directory version (\d+) published", admitted.output)
        assert found is not None, admitted.output
        version = int(found.group(1))
        publish_directory(tmp_path, [n.local for n in net.nodes.values()])
        published = time.monotonic()

        async def adopted() -> bool:
            return (
                all(
                    n.runtime.ctx.trust.current is not None
                    and n.runtime.ctx.trust.current.version == version
                    for n in net.nodes.values()
                )
                and ar.runtime.ctx.identity.signing_key.kid != old_signing
            )

        await wait_for(adopted, within_s=5 * POLL_S, interval=0.01)
        adoption_s = time.monotonic() - published
        new_signing = ar.runtime.ctx.identity.signing_key.kid
        entry = ar.runtime.ctx.directory().node("AR")
        assert entry is not None
        assert entry.tls_cert_sha256 == old_tls  # message keys rotated, TLS pin untouched
        assert {k.kid for k in entry.keys if k.use == "sign"} == {old_signing, new_signing}

        # Keep the traffic going until the old keys' overlap has ended.
        await asyncio.sleep(OVERLAP_S + 0.5 - (time.monotonic() - published))
        stop.set()
        await asyncio.gather(*tasks)
        assert time.time() * 1000 > result_cut(entry, old_signing)

        async def all_delivered() -> bool:
            return set((await settled(net, sent)).keys()) <= {"delivered", "received"}

        try:
            await wait_for(all_delivered, within_s=30)
        finally:
            outcome = await settled(net, sent)
            print(
                f"\nrollover: {len(sent)} messages, outcomes {outcome}, adopted in "
                f"{adoption_s * 1000:.0f} ms"
            )
        assert outcome == {"delivered": len(sent)}  # 0 deliveries failed

        # Old receipts (signed by AR's old key) and old evidence still verify after the window.
        for src, mid, _ in before:
            _, view = await src.call("GET", f"/api/v1/requests/{mid}")
            assert view["receipt"]["verified"] is True, view["receipt"]
            assert view["evidence"], mid
            assert all(e["verified"] for e in view["evidence"]), view["evidence"]
        ar_before = [mid for src, mid, _ in before if src is ar]
        assert ar_before
        # And the messages AR received under its old keys still read back verified at AR.
        for mid in [m for s, m, _ in before if s is not ar]:
            _, view = await ar.call("GET", f"/api/v1/requests/{mid}", role="auditor")
            assert all(e["verified"] for e in view["evidence"]), view["evidence"]
        # The retired keys stay on disk, private.
        retired = sorted(p.name for p in (keys_dir / "retired").iterdir())
        assert any(name.startswith(f"signing-{old_signing}") for name in retired)


def result_cut(entry: Any, kid: str) -> int:
    return int(next(k.not_after for k in entry.keys if k.kid == kid))


@pytest.mark.slow
async def test_revoked_key_is_refused_by_every_peer_within_one_refresh(tmp_path: Path) -> None:
    async with running_network(tmp_path, ("AR", "BR", "US")) as net:
        ar = net["AR"]
        kid = ar.runtime.ctx.identity.signing_key.kid
        now = dt.datetime.now(dt.UTC)
        authority.revoke_key(tmp_path / "authority", kid, now=now)
        publish_directory(tmp_path, [n.local for n in net.nodes.values()])
        published = time.monotonic()
        latency: dict[str, float] = {}

        async def everyone_knows() -> bool:
            for state in ("BR", "US"):
                current = net[state].runtime.ctx.trust.current
                if state not in latency and current is not None and kid in current.revoked:
                    latency[state] = time.monotonic() - published
            return len(latency) == 2

        await wait_for(everyone_knows, within_s=5 * POLL_S, interval=0.01)
        print(
            f"\nrevocation: refused by every peer after {max(latency.values()) * 1000:.0f} ms "
            f"({ {s: round(v * 1000) for s, v in latency.items()} } ms), poll {POLL_S} s"
        )
        assert max(latency.values()) <= POLL_S + 0.5

        # From then on every peer refuses what the revoked key signs, for good and with proof.
        ids = [(await ar.submit(to))["id"] for to in ("BR", "US")]

        async def refused() -> bool:
            views = [(await ar.call("GET", f"/api/v1/requests/{m}"))[1] for m in ids]
            return all(v["status"] == "rejected" for v in views)

        await wait_for(refused, within_s=10)
        for mid in ids:
            _, view = await ar.call("GET", f"/api/v1/requests/{mid}")
            assert view["receipt"]["code"] == "envelope_revoked_key"
            assert view["receipt"]["verified"] is True  # the refusal itself is signed
        for state in ("BR", "US"):
            _, page = await net[state].call("GET", "/api/v1/requests?box=inbox", role="auditor")
            assert [i for i in page["items"] if i["id"] in ids] == []


@pytest.mark.slow
async def test_a_node_restarted_before_its_new_key_is_listed_signs_with_the_old_one(
    tmp_path: Path,
) -> None:
    """``keys rotate``, then a restart before the authority lists the new key: the node must not
    sign with a key every peer refuses; it signs with the retired one until the directory
    lists the new one, and switches then, live."""
    clerk, peer = bound_socket(), bound_socket()  # the restarted node's; closed after the network
    try:
        async with running_network(tmp_path, ("AR", "BR")) as net:
            ar = net["AR"]
            old_signing = ar.runtime.ctx.identity.signing_key.kid
            registration = rotate_keys(ar.local)  # not admitted yet
            await ar.runtime.stop()
            # running_network stops whatever runtime the node has at its end: this one.
            ar.runtime = await NodeRuntime.start(
                ar.local.config, clerk_socket=clerk, peer_socket=peer
            )
            assert ar.runtime.ctx.identity.signing_key.kid == old_signing
            first = await ar.submit("BR")
            await wait_for(lambda: delivered(ar, first["id"]), within_s=15)  # BR took it

            authority.admit(
                tmp_path / "authority",
                registration,
                now=dt.datetime.now(dt.UTC),
                overlap_s=OVERLAP_S,
                keep_certificate=True,
            )
            publish_directory(tmp_path, [n.local for n in net.nodes.values()])

            async def switched() -> bool:
                return ar.runtime.ctx.identity.signing_key.kid != old_signing

            await wait_for(switched, within_s=5 * POLL_S, interval=0.05)
            second = await ar.submit("BR")
            await wait_for(lambda: delivered(ar, second["id"]), within_s=15)
    finally:
        clerk.close()
        peer.close()


async def delivered(node: RunningNode, message_id: str) -> bool:
    _, view = await node.call("GET", f"/api/v1/requests/{message_id}")
    return bool(view["status"] == "delivered")
