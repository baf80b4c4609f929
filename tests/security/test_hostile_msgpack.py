"""Hostile msgpack at the peer endpoint over real mutual TLS: refused quickly, memory bounded.

Huge length headers (array/map/bin/str claiming 2^32 - 1 items or bytes) and 10,000-deep nesting,
as the whole envelope and as the clear header inside a well-formed outer array, are refused with
``envelope_malformed`` (400), each in well under 50 ms of server time, and decoding them allocates
at most a few MB. (Bodies larger than the limit are refused with 413 before they are read:
tests/transport/test_peer_endpoint.py::test_oversized_and_wrong_type_are_refused_before_use.)
"""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest

from mla_node.errors import EnvelopeError
from mla_node.protocol.envelope import read_header
from mla_node.service import inbound
from mla_node.transport.http import ENVELOPE_PATH, ENVELOPE_TYPE, pinned_client_context
from tests.netkit import Network, running_network

U32 = b"\xff\xff\xff\xff"
DEPTH = 10_000

HOSTILE: dict[str, bytes] = {
    "array32 claiming 2^32-1 items": b"\xdd" + U32,
    "map32 claiming 2^32-1 pairs": b"\xdf" + U32,
    "bin32 claiming 4 GiB": b"\xc6" + U32,
    "str32 claiming 4 GiB": b"\xdb" + U32,
    "ext32 claiming 4 GiB": b"\xc9" + U32 + b"\x01",
    "array16 of 65535 nils, truncated": b"\xdc\xff\xff" + b"\xc0" * 100,
    "10,000-deep arrays": b"\x91" * DEPTH + b"\xc0",
    "10,000-deep maps": b"\x81\xa1k" * DEPTH + b"\xc0",
    "10,000-deep arrays, unterminated": b"\x91" * DEPTH,
    "array32 of one huge bin": b"\xdd\x00\x00\x00\x01\xc6" + U32,
}

# The same, hidden one level down: a well-formed outer envelope whose header is hostile.
HOSTILE_HEADER = {
    f"header: {name}": msgpack.packb([1, data, b"x" * 32, b"s" * 64], use_bin_type=True)
    for name, data in HOSTILE.items()
}
ALL = {**HOSTILE, **HOSTILE_HEADER}

MAX_SERVER_S = 0.050
MAX_PEAK_BYTES = 4 << 20


@pytest.fixture
async def net(tmp_path: Path) -> Any:
    async with running_network(tmp_path, ("AR", "BR")) as network:
        yield network


@pytest.fixture
def server_times(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Time the server's whole receive path (decode, verify, decrypt, store) per request."""
    times: list[float] = []
    real = inbound.receive

    async def timed(ctx: Any, data: bytes, cert: bytes | None) -> inbound.Received:
        start = time.perf_counter()
        try:
            return await real(ctx, data, cert)
        finally:
            times.append(time.perf_counter() - start)

    # The peer app looks ``inbound.receive`` up at each request, so the wrapper is what runs.
    monkeypatch.setattr(inbound, "receive", timed)
    return times


async def test_hostile_msgpack_is_refused_quickly_over_tls(
    net: Network, server_times: list[float]
) -> None:
    sender, recipient = net["AR"], net["BR"]
    identity = sender.runtime.ctx.identity
    entry = recipient.runtime.ctx.directory().node(recipient.state)
    assert entry is not None
    context = pinned_client_context(
        identity.tls_cert_path, identity.tls_key_path, entry.tls_cert_der
    )
    url = recipient.runtime.peer_url + ENVELOPE_PATH
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http:
        for name, data in ALL.items():
            async with http.post(url, data=data, headers={"Content-Type": ENVELOPE_TYPE}) as resp:
                body = json.loads(await resp.read())
                assert (resp.status, body["code"]) == (400, "envelope_malformed"), name
                assert "receipt" not in body, name  # nothing addressable to sign about
            assert server_times[-1] < MAX_SERVER_S, (name, server_times[-1])
    assert len(server_times) == len(ALL)
    print(f"\nhostile msgpack: slowest server-side refusal {max(server_times) * 1000:.2f} ms")
    _, page = await recipient.call("GET", "/api/v1/requests?box=inbox", role="auditor")
    assert page["items"] == []


@pytest.mark.parametrize("name", sorted(ALL))
def test_decoding_hostile_msgpack_allocates_little(name: str) -> None:
    data = ALL[name]
    tracemalloc.start()
    try:
        start = time.perf_counter()
        with pytest.raises(EnvelopeError) as err:
            read_header(data)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert err.value.code == "envelope_malformed"
    assert peak < MAX_PEAK_BYTES, f"{name}: peak {peak} bytes"
    assert elapsed < MAX_SERVER_S, f"{name}: {elapsed * 1000:.1f} ms"
