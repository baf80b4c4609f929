"""A peer that answers with a redirect is a failed delivery, and nothing goes where it points.

The endpoint comes from the signed directory; a redirect would let whoever controls that endpoint
(or a proxy in front of it) send the envelope, and the node's client certificate, anywhere: an
internal address, a plain-http URL. Here the peer's real TLS endpoint (Brazil's certificate, as
the directory lists it) answers every redirect status towards two sinks that would accept the
envelope over TLS or plain http: the transport refuses with a ``DeliveryError`` and the sinks
receive nothing. A control shows that a client following redirects would have reached them.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from mla_node import pki
from mla_node.errors import DeliveryError
from mla_node.identity import load_identity
from mla_node.localnet import LocalNode, create_network
from mla_node.protocol.directory import NodeEntry, TrustRoot, verify_directory
from mla_node.transport.http import (
    ENVELOPE_PATH,
    ENVELOPE_TYPE,
    HttpTransport,
    pinned_client_context,
)
from mla_node.transport.listening import close_servers
from tests.netkit import bound_socket

REDIRECTS = (301, 302, 303, 307, 308)
ENVELOPE = b"\x93sealed-envelope-bytes"


@dataclass
class Sink:
    """A server that records every request it gets."""

    url: str = ""
    received: list[tuple[str, str, bytes]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((request.method, request.path, await request.read()))
        return web.Response(status=200, body=b"taken")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serving(
    handler: Handler, tls: ssl.SSLContext | None, sock: socket.socket | None = None
) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site: web.BaseSite
    if sock is None:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    else:
        site = web.SockSite(runner, sock, ssl_context=tls)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"{'https' if tls else 'http'}://{host}:{port}"
    finally:
        await close_servers([runner])


@dataclass
class Setup:
    ar: LocalNode
    br_entry: NodeEntry
    br_tls: ssl.SSLContext
    endpoint_sock: socket.socket


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    sock = bound_socket()
    now = dt.datetime.now(dt.UTC)
    nodes = create_network(
        tmp_path,
        ["AR", "BR"],
        peer_ports={"AR": 1, "BR": sock.getsockname()[1]},
        clerk_ports={"AR": 1, "BR": 1},
        now=now,
    )
    ar, br = nodes["AR"], nodes["BR"]
    trust = TrustRoot.from_json(ar.config.trust_root_path.read_bytes())
    directory = verify_directory(
        ar.config.directory_path.read_bytes(), trust, now=int(now.timestamp() * 1000)
    )
    entry = directory.node("BR")
    assert entry is not None and entry.endpoint.startswith("https://127.0.0.1:")
    ca = tmp_path / "network-ca.pem"
    ca.write_bytes(trust.tls_ca_pem)
    br_identity = load_identity(br.config.keys_dir)
    tls = pki.server_ssl_context(br_identity.tls_cert_path, br_identity.tls_key_path, ca)
    return Setup(ar, entry, tls, sock)


@asynccontextmanager
async def redirecting_peer(
    setup: Setup, status: int, sinks: list[Sink]
) -> AsyncIterator[list[str]]:
    """Brazil's endpoint, with its real certificate, redirecting to each sink in turn."""
    async with (
        serving(sinks[0].handle, setup.br_tls) as tls_sink,  # same certificate: TLS would pass
        serving(sinks[1].handle, None) as plain_sink,
    ):
        targets = [tls_sink + ENVELOPE_PATH, plain_sink + ENVELOPE_PATH]
        asked: list[str] = []

        async def redirect(request: web.Request) -> web.Response:
            await request.read()
            target = targets[len(asked) % len(targets)]
            asked.append(target)
            return web.Response(status=status, headers={"Location": target})

        async with serving(redirect, setup.br_tls, setup.endpoint_sock):
            yield asked


@pytest.mark.parametrize("status", REDIRECTS)
async def test_a_redirect_is_a_failed_delivery_and_is_not_followed(
    setup: Setup, status: int
) -> None:
    identity = load_identity(setup.ar.config.keys_dir)
    transport = HttpTransport(identity.tls_cert_path, identity.tls_key_path)
    sinks = [Sink(), Sink()]
    try:
        async with redirecting_peer(setup, status, sinks) as asked:
            for _ in sinks:  # once towards each sink
                with pytest.raises(DeliveryError, match=f"HTTP {status}"):
                    await transport.send(setup.br_entry, ENVELOPE)
    finally:
        await transport.close()
    assert len(asked) == 2  # the peer really redirected, twice
    assert [s.received for s in sinks] == [[], []]


async def test_control_a_client_that_follows_redirects_would_hand_over_the_envelope(
    setup: Setup,
) -> None:
    """Without ``allow_redirects=False`` the sinks above would get the envelope: the test above
    would catch a transport that follows."""
    identity = load_identity(setup.ar.config.keys_dir)
    context = pinned_client_context(
        identity.tls_cert_path, identity.tls_key_path, setup.br_entry.tls_cert_der
    )
    sinks = [Sink(), Sink()]
    async with (
        redirecting_peer(setup, 307, sinks),
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http,
    ):
        for _ in sinks:
            async with http.post(
                setup.br_entry.endpoint + ENVELOPE_PATH,
                data=ENVELOPE,
                headers={"Content-Type": ENVELOPE_TYPE},
            ) as resp:
                assert resp.status == 200
    assert [s.received for s in sinks] == [[("POST", ENVELOPE_PATH, ENVELOPE)]] * 2
