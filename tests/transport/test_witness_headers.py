"""The log-head hints on the peer endpoint: ``Mla-Witnessed-Size`` in, ``Mla-Consistency-Proof``
out, on receipts and on refusals alike; malformed hints are ignored, never a failed delivery.

Plain HTTP on 127.0.0.1:0 with a stand-in receiver: the framing only (the mutual-TLS path with
real nodes is tests/system/test_split_view.py)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mla_node.errors import EnvelopeStale
from mla_node.protocol.witness import ConsistencyProof
from mla_node.transport.base import (
    WITNESSED_SIZE,
    LogProofSource,
    MemoryTransport,
    PeerAnswer,
)
from mla_node.transport.http import (
    ENVELOPE_PATH,
    ENVELOPE_TYPE,
    PROOF_HEADER,
    RECEIPT_TYPE,
    WITNESSED_SIZE_HEADER,
    make_peer_app,
    proof_header,
    single_answer,
)
from mla_node.transport.problems import PROBLEM_JSON
from tests.factory import NOW, make_network

Client = TestClient[web.Request, web.Application]
PROOF = ConsistencyProof(7, 12, (b"\x01" * 32, b"\x02" * 32, b"\x03" * 32))
asked: list[int] = []


async def receive(data: bytes, cert: bytes | None) -> bytes:
    if data == b"stale":
        raise EnvelopeStale("too old", extra={"receipt": b"signed refusal"})
    return b"a receipt"


async def log_proof(witnessed: int) -> ConsistencyProof | None:
    asked.append(witnessed)
    return PROOF if witnessed == 7 else None


async def client(source: LogProofSource | None) -> AsyncIterator[Client]:
    asked.clear()
    app = make_peer_app(receive, 1 << 20, log_proof=source)
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        yield c


@pytest.fixture
async def peer() -> AsyncIterator[Client]:
    async for c in client(log_proof):
        yield c


async def post(c: Client, body: bytes, witnessed: str | None) -> tuple[int, str, str | None, bytes]:
    headers = {"Content-Type": ENVELOPE_TYPE}
    if witnessed is not None:
        headers[WITNESSED_SIZE_HEADER] = witnessed
    async with c.post(ENVELOPE_PATH, data=body, headers=headers) as resp:
        return resp.status, resp.content_type, resp.headers.get(PROOF_HEADER), await resp.read()


async def test_a_receipt_comes_with_the_proof_from_the_witnessed_size(
    peer: Client,
) -> None:
    status, ctype, header, body = await post(peer, b"envelope", "7")
    assert (status, ctype, body) == (200, RECEIPT_TYPE, b"a receipt")
    assert header is not None and ConsistencyProof.from_header(header) == PROOF
    assert asked == [7]


async def test_a_refusal_comes_with_the_proof_too(peer: Client) -> None:
    status, ctype, header, body = await post(peer, b"stale", "7")
    assert (status, ctype) == (400, PROBLEM_JSON)
    problem = json.loads(body)
    assert problem["code"] == "envelope_stale"
    assert base64.b64decode(problem["receipt"]) == b"signed refusal"
    assert header == PROOF.header_value()


@pytest.mark.parametrize("witnessed", [None, "", "-1", "seven", "1" * 20, "٧"])
async def test_no_or_a_malformed_witnessed_size_gets_no_proof_and_still_a_receipt(
    peer: Client, witnessed: str | None
) -> None:
    status, _, header, body = await post(peer, b"envelope", witnessed)
    assert (status, header, body) == (200, None, b"a receipt")
    assert asked == []


async def test_a_node_that_has_nothing_to_prove_sends_no_proof(
    peer: Client,
) -> None:
    _, _, header, _ = await post(peer, b"envelope", "12")
    assert header is None and asked == [12]


async def test_without_a_proof_source_the_endpoint_answers_as_before() -> None:
    async for c in client(None):
        status, _, header, body = await post(c, b"envelope", "7")
        assert (status, header, body) == (200, None, b"a receipt")


def test_the_sender_reads_the_proof_and_ignores_a_malformed_one() -> None:
    assert proof_header(PROOF.header_value()) == PROOF
    assert proof_header("7 12 not-base64") is None
    assert proof_header(None) is None
    net = make_network(now=NOW)
    entry = net.directory.node("BR")
    assert entry is not None
    assert single_answer(entry, 200, RECEIPT_TYPE, b"r") == PeerAnswer(b"r")


async def test_the_memory_transport_carries_the_witnessed_size_and_the_proof() -> None:
    net = make_network(now=NOW)
    entry = net.directory.node("BR")
    assert entry is not None
    asked.clear()
    transport = MemoryTransport(b"cert", {"BR": receive}, set(), {"BR": log_proof})
    assert await transport.send(entry, b"envelope") == PeerAnswer(b"a receipt")
    token = WITNESSED_SIZE.set(7)
    try:
        assert await transport.send(entry, b"envelope") == PeerAnswer(b"a receipt", proof=PROOF)
        refused = await transport.send(entry, b"stale")
        assert refused == PeerAnswer(b"signed refusal", "envelope_stale", PROOF)
    finally:
        WITNESSED_SIZE.reset(token)
    assert asked == [7, 7]
