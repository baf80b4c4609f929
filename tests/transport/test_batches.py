"""Several envelopes in one exchange, between real nodes over mutual TLS (docs/protocol.md §5.2).

Each envelope of a batch is answered as if it had come alone, in order: a receipt, or a refusal
with its code and a signed rejection receipt. A batch that is not the documented array is refused
as a whole with a problem naming the entry at fault, and nothing of it is stored.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from mla_node.protocol import codec
from mla_node.protocol.envelope import envelope_digest, read_header
from mla_node.protocol.receipts import verify_receipt
from mla_node.transport.base import Outgoing, PeerAnswer
from mla_node.transport.batches import BATCH_PATH, BATCH_TYPE, MAX_BATCH, pack_batch, unpack_batch
from mla_node.transport.http import HttpTransport, read_at_most
from mla_node.transport.listening import close_servers
from tests.netkit import Network, running_network
from tests.transport.test_peer_endpoint import inbox_count, post_as, seal_from

DAY_MS = 24 * 3600 * 1000


@pytest.fixture
async def net(tmp_path: Path) -> Any:
    async with running_network(tmp_path, ("AR", "BR")) as network:
        yield network


async def test_each_envelope_of_a_batch_gets_its_own_answer_in_order(
    net: Network, request_id_log: pytest.LogCaptureFixture
) -> None:
    ar, br = net["AR"], net["BR"]
    fresh, other = seal_from(ar, br), seal_from(ar, br)
    stale = seal_from(ar, br, created=ar.runtime.ctx.clock() - 8 * DAY_MS)
    transport = ar.runtime.deliverer.transport
    assert isinstance(transport, HttpTransport)
    entry = ar.runtime.ctx.directory().node("BR")
    assert entry is not None
    # The same envelope twice in one batch: the two race to be stored, and one is.
    batch = [fresh, stale, other, fresh]
    request_ids = [f"batch-entry-{n}" for n in range(4)]
    answers = await transport.send_batch(
        entry, [Outgoing(e, r) for e, r in zip(batch, request_ids, strict=True)]
    )

    assert len(answers) == 4 and all(isinstance(a, PeerAnswer) for a in answers)
    receipts = [a.receipt for a in answers if isinstance(a, PeerAnswer)]
    assert None not in receipts
    directory = ar.runtime.ctx.directory()
    verified = [
        verify_receipt(r, directory, expect_envelope_digest=envelope_digest(e), expect_signer="BR")
        for r, e in zip(receipts, batch, strict=True)
        if r is not None
    ]
    assert [v.status for v in verified] == ["delivered", "rejected", "delivered", "delivered"]
    assert isinstance(answers[1], PeerAnswer) and answers[1].refused_code == "envelope_stale"
    assert verified[1].code == "envelope_stale"
    assert receipts[3] == receipts[0]  # the original receipt, byte for byte
    assert await inbox_count(br) == 2
    # BR's line for each envelope names the request id that came with that envelope.
    for n, envelope in enumerate(batch[:3]):
        mid = read_header(envelope)[0].message_id
        lines = [
            r.getMessage()
            for r in request_id_log.records
            if r.__dict__.get("request_id") == request_ids[n]
        ]
        assert any(mid in line for line in lines), (n, lines)
    # Of the two copies one was stored and the other answered as a repeat (whichever lost).
    received = br.runtime.deliverer.metrics.received
    outcomes = {labels[1][1]: n for labels, n in received.items() if labels[0] == ("peer", "AR")}
    assert outcomes == {"delivered": 2, "repeat": 1, "envelope_stale": 1}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"\xc1", None),  # not msgpack
        (codec.pack([]), None),
        (codec.pack({"envelope": b"x"}), None),
        (codec.pack([{"envelope": "text", "request_id": None}]), "[0].envelope"),
        (codec.pack([{"envelope": b"x", "request_id": None, "more": 1}]), "[0]"),
        (codec.pack([{"envelope": b"x", "request_id": None}, 7]), "[1]"),
        (codec.pack([{"envelope": b"x", "request_id": "r" * 65}]), "[0].request_id"),
        (codec.pack([{"envelope": b"x", "request_id": None}] * (MAX_BATCH + 1)), None),
    ],
)
async def test_a_malformed_batch_is_refused_naming_the_entry_at_fault(
    net: Network, body: bytes, field: str | None
) -> None:
    status, answer, content_type = await post_as(net["AR"], net["BR"], body, BATCH_TYPE, BATCH_PATH)
    assert (status, content_type) == (400, "application/problem+json")
    problem = json.loads(answer)
    assert problem["code"] == "batch_malformed"
    assert problem.get("field") == field
    assert await inbox_count(net["BR"]) == 0


async def test_a_batch_of_a_wrong_media_type_is_refused(net: Network) -> None:
    envelope = seal_from(net["AR"], net["BR"])
    body = codec.pack([{"envelope": envelope, "request_id": None}])
    status, answer, _ = await post_as(net["AR"], net["BR"], body, "application/msgpack", BATCH_PATH)
    assert (status, json.loads(answer)["code"]) == (415, "unsupported_media_type")
    assert await inbox_count(net["BR"]) == 0


def test_the_wire_format_round_trips() -> None:
    batch = [Outgoing(b"\x93one", "req-00000001"), Outgoing(b"\x93two", None)]
    assert unpack_batch(pack_batch(batch), 1 << 20) == batch


async def test_a_full_batch_is_answered_whole(net: Network) -> None:
    """64 envelopes, the most a batch holds: their answers (a receipt each, with the receiver's
    head) are larger than one TLS record."""
    ar, br = net["AR"], net["BR"]
    batch = [seal_from(ar, br) for _ in range(MAX_BATCH)]
    transport = ar.runtime.deliverer.transport
    entry = ar.runtime.ctx.directory().node("BR")
    assert isinstance(transport, HttpTransport) and entry is not None
    answers = await transport.send_batch(entry, [Outgoing(e) for e in batch])
    receipts = [a.receipt for a in answers if isinstance(a, PeerAnswer)]
    assert len(receipts) == MAX_BATCH and None not in receipts
    assert sum(len(r) for r in receipts if r is not None) > 16 << 10  # more than a TLS record
    assert await inbox_count(br) == MAX_BATCH


async def test_an_answer_that_arrives_in_parts_is_read_whole() -> None:
    """One ``read(n)`` returns what has arrived so far: the sender reads on until the end."""
    parts = [b"a" * 3000, b"b" * 3000, b"c" * 10]

    async def slowly(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = sum(map(len, parts))
        await response.prepare(request)
        for part in parts:
            await response.write(part)
            await asyncio.sleep(0.05)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/", slowly)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/") as resp:
            assert await read_at_most(resp, 1 << 16) == b"".join(parts)
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/") as resp:
            assert await read_at_most(resp, 4000) == b"".join(parts)[:4000]
    finally:
        await close_servers([runner])
