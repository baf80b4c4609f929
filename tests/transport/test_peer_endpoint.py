"""The peer endpoint over real mutual TLS: fail closed, idempotent, receipts only after commit."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mla_node import authority
from mla_node.ids import new_ulid
from mla_node.protocol import forms
from mla_node.protocol.envelope import envelope_digest, seal_envelope
from mla_node.protocol.keys import Suite
from mla_node.protocol.receipts import verify_receipt
from mla_node.runtime import NodeRuntime, wall_clock_ms
from mla_node.transport.http import ENVELOPE_PATH, ENVELOPE_TYPE, pinned_client_context
from tests.netkit import Network, RunningNode, running_network, wait_for


def seal_from(
    sender: RunningNode,
    recipient: RunningNode,
    *,
    created: int | None = None,
    to: str | None = None,
    body: dict[str, Any] | None = None,
) -> bytes:
    ctx = sender.runtime.ctx
    directory = ctx.directory()
    entry = directory.node(recipient.state)
    assert entry is not None
    now = ctx.clock()
    key = directory.encryption_key(recipient.state, Suite.MLKEM768_X25519, now)
    assert key is not None
    created = now if created is None else created
    mid = new_ulid(created)
    if to is not None:
        target = directory.node(to)
        assert target is not None
        entry = target
    return seal_envelope(
        signing_key=ctx.identity.signing_key,
        sender=sender.state,
        recipient=entry,
        recipient_kid=key.kid,
        recipient_public=key.public,
        suite=Suite.MLKEM768_X25519,
        message_id=mid,
        message_type="case",
        created_at=created,
        body=body
        or {
            "type": "mla_request",
            "version": 1,
            "form": forms.example("mla_request"),
            "case": mid,
            "reply_to": None,
        },
    )


async def post_as(
    sender: RunningNode,
    recipient: RunningNode,
    data: bytes | io.BytesIO,
    content_type: str = ENVELOPE_TYPE,
    path: str = ENVELOPE_PATH,
) -> tuple[int, bytes, str]:
    """POST raw bytes to ``recipient``'s peer endpoint (``path``) presenting ``sender``'s
    certificate."""
    identity = sender.runtime.ctx.identity
    entry = recipient.runtime.ctx.directory().node(recipient.state)
    assert entry is not None
    context = pinned_client_context(
        identity.tls_cert_path, identity.tls_key_path, entry.tls_cert_der
    )
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http,
        http.post(
            recipient.runtime.peer_url + path,
            data=data,
            headers={"Content-Type": content_type},
        ) as resp,
    ):
        return resp.status, await resp.read(), resp.content_type


async def inbox_count(node: RunningNode) -> int:
    _, page = await node.call("GET", "/api/v1/requests?box=inbox&limit=200", role="auditor")
    return len(page["items"])


@pytest.fixture
async def net(tmp_path: Path) -> Any:
    async with running_network(tmp_path, ("AR", "BR", "US")) as network:
        yield network


async def test_replays_get_the_byte_identical_receipt_and_one_delivery(net: Network) -> None:
    envelope = seal_from(net["AR"], net["BR"])
    answers = [await post_as(net["AR"], net["BR"], envelope) for _ in range(20)]
    assert {status for status, _, _ in answers} == {200}
    assert len({body for _, body, _ in answers}) == 1
    receipt = verify_receipt(
        answers[0][1],
        net["BR"].runtime.ctx.directory(),
        expect_envelope_digest=envelope_digest(envelope),
        expect_signer="BR",
    )
    assert receipt.status == "delivered"
    assert await inbox_count(net["BR"]) == 1
    # Counted as what they were: one delivery, then repeats (a sender's lost answers).
    received = net["BR"].runtime.deliverer.metrics.received
    assert received[(("peer", "AR"), ("outcome", "delivered"))] == 1
    assert received[(("peer", "AR"), ("outcome", "repeat"))] == 19


REPLAYS = 1000


async def test_a_thousand_replays_across_restarts_get_the_original_receipt(
    tmp_path: Path,
) -> None:
    """One envelope replayed 1,000 times, the receiver restarted three times in between: stored
    once, and every answer is the byte-identical receipt of the first delivery."""
    async with running_network(tmp_path, ("AR", "BR")) as net:
        ar, br = net["AR"], net["BR"]
        envelope = seal_from(ar, br)
        identity = ar.runtime.ctx.identity
        entry = br.runtime.ctx.directory().node("BR")
        assert entry is not None
        context = pinned_client_context(
            identity.tls_cert_path, identity.tls_key_path, entry.tls_cert_der
        )
        answers: list[tuple[int, bytes]] = []
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http:
            for n in range(REPLAYS):
                if n and n % (REPLAYS // 4) == 0:
                    await br.runtime.stop()
                    br.runtime = await NodeRuntime.start(br.local.config)
                async with http.post(
                    br.runtime.peer_url + ENVELOPE_PATH,
                    data=envelope,
                    headers={"Content-Type": ENVELOPE_TYPE},
                ) as resp:
                    answers.append((resp.status, await resp.read()))
        assert len(answers) == REPLAYS
        assert {status for status, _ in answers} == {200}
        assert len({body for _, body in answers}) == 1
        assert await inbox_count(br) == 1
        # the node's log also holds the creation of the test's API tokens (user actions)
        rows = await br.runtime.ctx.db.fetchall(
            "SELECT event FROM evidence WHERE event != 'token_created'"
        )
        assert [r[0] for r in rows] == ["delivered"]


async def test_client_certificate_must_be_the_senders(net: Network) -> None:
    envelope = seal_from(net["AR"], net["BR"])
    status, body, content_type = await post_as(net["US"], net["BR"], envelope)
    assert (status, content_type) == (403, "application/problem+json")
    assert b"envelope_sender_mismatch" in body
    assert await inbox_count(net["BR"]) == 0


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda n: seal_from(n["AR"], n["BR"], to="US"), "envelope_wrong_recipient"),
        (
            lambda n: seal_from(
                n["AR"], n["BR"], created=n["AR"].runtime.ctx.clock() - 8 * 86400_000
            ),
            "envelope_stale",
        ),
        (
            lambda n: seal_from(n["AR"], n["BR"], created=n["AR"].runtime.ctx.clock() + 3600_000),
            "envelope_from_future",
        ),
        (lambda n: seal_from(n["AR"], n["BR"])[:-10], "envelope_malformed"),
        (lambda n: b"\x94\x01\xc4\x00\xc4\x00\xc4\x00", "envelope_malformed"),
    ],
)
async def test_refusals_are_signed_and_store_nothing(net: Network, mutate: Any, code: str) -> None:
    data = mutate(net)
    status, body, content_type = await post_as(net["AR"], net["BR"], data)
    assert content_type == "application/problem+json"
    assert 400 <= status < 500
    problem = json.loads(body)
    assert problem["code"] == code
    if code != "envelope_malformed" or "receipt" in problem:
        rejection = verify_receipt(
            base64.b64decode(problem["receipt"]),
            net["AR"].runtime.ctx.directory(),
            expect_signer="BR",
        )
        assert (rejection.status, rejection.code) == ("rejected", code)
        assert rejection.envelope_digest == envelope_digest(data)
    assert await inbox_count(net["BR"]) == 0


async def test_oversized_and_wrong_type_are_refused_before_use(net: Network) -> None:
    status, body, _ = await post_as(net["AR"], net["BR"], io.BytesIO(b"\x00" * (2 << 20)))
    assert status == 413
    assert json.loads(body)["code"] in ("envelope_too_large", "payload_too_large")
    status, body, _ = await post_as(net["AR"], net["BR"], b"{}", "application/json")
    assert status == 415
    assert json.loads(body)["code"] == "unsupported_media_type"
    assert await inbox_count(net["BR"]) == 0


async def test_a_client_without_a_network_certificate_is_refused(net: Network) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http:
        with pytest.raises(aiohttp.ClientError):
            async with http.post(net["BR"].runtime.peer_url + ENVELOPE_PATH, data=b"x"):
                pass


async def test_stale_refusal_stops_retries_and_is_evidence(net: Network) -> None:
    """A signed permanent refusal ends delivery with 'not_delivered' evidence; no retry loop."""
    ar = net["AR"]
    # BR lives eight days ahead: whatever AR sends now is past the seven-day maximum age there.
    net["BR"].runtime.ctx.clock = lambda: wall_clock_ms() + 8 * 86400_000
    created = await ar.submit("BR")

    async def rejected() -> bool:
        _, view = await ar.call("GET", f"/api/v1/requests/{created['id']}")
        return bool(view["status"] == "rejected")

    await wait_for(rejected)
    _, view = await ar.call("GET", f"/api/v1/requests/{created['id']}")
    assert view["receipt"]["verified"] is True
    assert view["receipt"]["code"] == "envelope_stale"
    assert [e["event"] for e in view["evidence"]] == ["submitted", "not_delivered"]


async def test_newer_directory_is_picked_up_live_and_older_refused(net: Network) -> None:
    folder = net.folder
    node = net["AR"]
    before = node.runtime.ctx.directory().version
    old_copy = node.local.config.directory_path.read_bytes()
    authority.publish(folder / "authority", now=dt.datetime.now(dt.UTC))
    authority.install_directory(folder / "authority", node.local.config.directory_path)
    assert await node.runtime.ctx.trust.refresh()
    assert node.runtime.ctx.directory().version == before + 1
    node.local.config.directory_path.write_bytes(old_copy)
    assert not await node.runtime.ctx.trust.refresh()
    assert node.runtime.ctx.directory().version == before + 1
    assert node.runtime.ctx.trust.last_error is not None
    assert node.runtime.ctx.trust.last_error.code == "directory_rollback"


async def test_expired_directory_stops_sending_with_a_clear_status(net: Network) -> None:
    node = net["AR"]
    directory = node.runtime.ctx.directory()
    node.runtime.ctx.clock = lambda: directory.expires_at + 1
    status, body = await node.call(
        "POST",
        "/api/v1/requests",
        json={"type": "mla_request", "to": "BR", "form": forms.example("mla_request")},
    )
    assert (status, body["code"]) == (503, "directory_expired")
    async with node.http.get(node.runtime.clerk_url + "/readyz") as resp:
        assert resp.status == 503
        assert (await resp.json())["checks"]["directory"] == "directory_expired"
