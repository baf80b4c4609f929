"""A peer with several endpoints, over real mutual TLS: load spread, fail-over, cool-down.

Two aiohttp servers on 127.0.0.1 stand for two workers of Brazil's node: both present Brazil's
certificate and count what they get. The sender takes turns between them; with one stopped every
send still succeeds through the other, and once it is back (after the cool-down) it gets its share
again. A peer's HTTP answer, even a refusal, is never retried at another endpoint. Evidence files
go through the same chooser, and a transfer resumes at whichever endpoint answers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from mla_node import pki
from mla_node.errors import DeliveryError
from mla_node.identity import load_identity
from mla_node.localnet import create_network
from mla_node.protocol.directory import NodeEntry, TrustRoot, verify_directory
from mla_node.transport.base import EndpointChooser, Outgoing, PeerAnswer
from mla_node.transport.batches import BATCH_PATH
from mla_node.transport.blobs import Read, add_blob_routes
from mla_node.transport.http import ENVELOPE_PATH, RECEIPT_TYPE, HttpTransport
from mla_node.transport.listening import close_servers
from mla_node.transport.problems import PROBLEM_JSON, Handler

COOL_DOWN_S = 0.3
ENVELOPE = b"\x93sealed-envelope-bytes"


class SharedBlobs:
    """The one file store both workers share (as with one database and one storage)."""

    def __init__(self) -> None:
        self.held: dict[bytes, bytearray] = {}

    async def offset(self, cert_der: bytes | None, digest: bytes) -> int:
        return len(self.held.get(digest, b""))

    async def append(
        self, cert_der: bytes | None, digest: bytes, offset: int, length: int, read: Read
    ) -> int:
        held = self.held.setdefault(digest, bytearray())
        assert offset == len(held)
        while chunk := await read(1 << 16):
            held += chunk
        return len(held)


@dataclass
class Worker:
    """One worker's peer endpoint: stoppable and restartable on the same port."""

    tls: ssl.SSLContext
    blobs: SharedBlobs
    status: int = 200
    port: int = 0
    envelopes: int = 0
    blob_requests: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)  # every request, answered or not
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.envelopes += 1
        if self.status == 200:
            return web.Response(body=b"receipt", content_type=RECEIPT_TYPE)
        if self.status == 400:
            return web.Response(
                status=400,
                text='{"code": "envelope_stale"}',
                content_type=PROBLEM_JSON,
            )
        return web.Response(status=self.status, text="busy")

    async def start(self) -> None:
        @web.middleware
        async def count_blobs(request: web.Request, handler: Handler) -> web.StreamResponse:
            self.paths.append(request.path)
            if request.path.startswith("/peer/v1/blobs/"):
                self.blob_requests.append(request.method)
            return await handler(request)

        app = web.Application(middlewares=[count_blobs])
        app.router.add_post(ENVELOPE_PATH, self.handle)
        add_blob_routes(app, self.blobs)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port, ssl_context=self.tls)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await close_servers([self.runner])
            self.runner = None


@dataclass
class Setup:
    transport: HttpTransport
    entry: NodeEntry
    workers: list[Worker]
    blobs: SharedBlobs


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    now = dt.datetime.now(dt.UTC)
    nodes = create_network(
        tmp_path,
        ["AR", "BR"],
        peer_ports={"AR": 1, "BR": 1},
        clerk_ports={"AR": 1, "BR": 1},
        now=now,
    )
    ar, br = nodes["AR"], nodes["BR"]
    trust = TrustRoot.from_json(ar.config.trust_root_path.read_bytes())
    directory = verify_directory(
        ar.config.directory_path.read_bytes(), trust, now=int(now.timestamp() * 1000)
    )
    entry = directory.node("BR")
    assert entry is not None
    ca = tmp_path / "network-ca.pem"
    ca.write_bytes(trust.tls_ca_pem)
    br_identity = load_identity(br.config.keys_dir)
    tls = pki.server_ssl_context(br_identity.tls_cert_path, br_identity.tls_key_path, ca)
    blobs = SharedBlobs()
    workers = [Worker(tls, blobs), Worker(tls, blobs)]
    for worker in workers:
        await worker.start()
    identity = load_identity(ar.config.keys_dir)
    transport = HttpTransport(
        identity.tls_cert_path, identity.tls_key_path, endpoint_cool_down_s=COOL_DOWN_S
    )
    try:
        yield Setup(transport, entry.with_endpoints([w.url for w in workers]), workers, blobs)
    finally:
        await transport.close()
        for worker in workers:
            await worker.stop()


async def send_all(setup: Setup, n: int, *, concurrently: bool = False) -> None:
    if concurrently:
        answers = await asyncio.gather(
            *(setup.transport.send(setup.entry, ENVELOPE) for _ in range(n))
        )
    else:
        answers = [await setup.transport.send(setup.entry, ENVELOPE) for _ in range(n)]
    assert [a.receipt for a in answers] == [b"receipt"] * n


def counts(setup: Setup) -> list[int]:
    return [w.envelopes for w in setup.workers]


async def test_sends_spread_fail_over_and_come_back_after_the_cool_down(setup: Setup) -> None:
    b = setup.workers[1]
    await send_all(setup, 20)
    assert counts(setup) == [10, 10]  # round-robin, one each in turn

    await b.stop()
    await send_all(setup, 20)  # sequential: the first one to b fails over within the send
    await send_all(setup, 20, concurrently=True)
    assert counts(setup) == [50, 10]
    assert setup.transport.endpoints.cooling(setup.entry) == [b.url]

    await b.start()  # the same port
    await asyncio.sleep(COOL_DOWN_S * 1.5)
    assert setup.transport.endpoints.cooling(setup.entry) == []
    await send_all(setup, 20)
    assert counts(setup) == [60, 20]


async def test_every_endpoint_down_is_one_delivery_error_naming_each(setup: Setup) -> None:
    for worker in setup.workers:
        await worker.stop()
    with pytest.raises(DeliveryError) as info:
        await setup.transport.send(setup.entry, ENVELOPE)
    assert all(w.url in info.value.detail for w in setup.workers)
    # All cooling down: still tried (the soonest usable first) rather than refused outright.
    await setup.workers[1].start()
    answer = await setup.transport.send(setup.entry, ENVELOPE)
    assert answer.receipt == b"receipt"


@pytest.mark.parametrize("status", [400, 503])
async def test_an_http_answer_is_not_retried_elsewhere(setup: Setup, status: int) -> None:
    for worker in setup.workers:
        worker.status = status
    if status == 400:
        answer = await setup.transport.send(setup.entry, ENVELOPE)
        assert answer.refused_code == "envelope_stale"
    else:
        with pytest.raises(DeliveryError, match="HTTP 503"):
            await setup.transport.send(setup.entry, ENVELOPE)
    assert counts(setup) == [1, 0]
    assert setup.transport.endpoints.cooling(setup.entry) == []


async def test_a_peer_without_batches_gets_each_envelope_alone_and_no_batch_again(
    setup: Setup,
) -> None:
    """These workers are nodes from before batches: the batch endpoint is unknown to them (404).
    The batch's envelopes go one by one, and the next batch does not ask again."""
    for _ in range(2):
        batch = [Outgoing(ENVELOPE, f"request-{n:04}") for n in range(3)]
        answers = await setup.transport.send_batch(setup.entry, batch)
        assert answers == [PeerAnswer(b"receipt")] * 3
    paths = [p for w in setup.workers for p in w.paths]
    assert paths.count(BATCH_PATH) == 1
    assert paths.count(ENVELOPE_PATH) == 6


async def test_a_file_goes_through_the_endpoint_that_answers_and_resumes(
    setup: Setup, tmp_path: Path
) -> None:
    a, b = setup.workers
    data = os.urandom(300_000)
    path = tmp_path / "blob"
    path.write_bytes(data)
    digest = hashlib.sha256(data).digest()
    setup.blobs.held[digest] = bytearray(data[:100_000])  # a transfer cut earlier, at a

    await a.stop()
    sent = await setup.transport.push_blob(setup.entry, digest, len(data), path, stall_s=5)
    assert sent == 200_000  # only the rest, through b
    assert setup.blobs.held[digest] == data
    assert (a.blob_requests, b.blob_requests) == ([], ["HEAD", "PATCH"])
    assert setup.transport.endpoints.cooling(setup.entry) == [a.url]
    # Held whole now: whichever endpoint is asked says so.
    assert await setup.transport.push_blob(setup.entry, digest, len(data), path, stall_s=5) == 0


def test_chooser_round_robin_and_cool_down_without_a_network() -> None:
    now = [100.0]
    chooser = EndpointChooser(cool_down_s=5, clock=lambda: now[0])
    entry = NodeEntry(
        state="BR",
        authority="x",
        endpoint="https://a",
        suites=(),
        tls_cert_sha256="",
        tls_cert_der=b"",
        keys=(),
        endpoints=("https://a", "https://b", "https://c"),
    )
    assert [chooser.order(entry)[0] for _ in range(4)] == [
        "https://a",
        "https://b",
        "https://c",
        "https://a",
    ]
    chooser.failed(entry, "https://b")
    # b last; the turns go round a and c only, so they share b's load evenly
    assert chooser.order(entry) == ["https://a", "https://c", "https://b"]
    assert chooser.order(entry) == ["https://c", "https://a", "https://b"]
    assert chooser.order(entry) == ["https://a", "https://c", "https://b"]
    now[0] += 1
    chooser.failed(entry, "https://a")
    chooser.failed(entry, "https://c")
    # All cooling: every one is still offered, the soonest usable again first.
    assert chooser.order(entry) == ["https://b", "https://a", "https://c"]
    now[0] += 5
    assert chooser.cooling(entry) == []
    chooser.failed(entry, "https://a")
    chooser.answered(entry, "https://a")
    assert chooser.cooling(entry) == []
