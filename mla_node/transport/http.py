"""Envelopes over HTTPS with mutual TLS: the sending side and the peer endpoint.

The client sends only to endpoints from the signed directory, follows no redirects, and accepts
only the very server certificate the directory lists for the peer. Foreign exceptions are
translated into ``DeliveryError`` at this boundary.
"""

from __future__ import annotations

import base64
import binascii
import json
import ssl
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from mla_node.crashpoints import crash_point
from mla_node.errors import DeliveryError, EnvelopeTooLarge, UnsupportedMediaType
from mla_node.pki import peer_certificate_der, read_private_file
from mla_node.protocol.directory import NodeEntry
from mla_node.transport.base import PeerAnswer, Receiver
from mla_node.transport.problems import PROBLEM_JSON, problem_middleware

ENVELOPE_PATH = "/peer/v1/envelopes"
ENVELOPE_TYPE = "application/vnd.mla-node.envelope+msgpack"
RECEIPT_TYPE = "application/vnd.mla-node.receipt+msgpack"
MAX_RECEIPT = 64 << 10


def pinned_client_context(
    cert_pem_path: Path, key_path: Path, peer_cert_der: bytes
) -> ssl.SSLContext:
    """A client context that trusts exactly one server certificate: the one the signed directory
    lists for the peer. The certificate itself is the trust anchor (partial-chain verification),
    so expiry and host name are still checked, and a certificate the CA issued to another node,
    or an older one of the same node, is refused at the handshake."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    ctx.load_verify_locations(cadata=peer_cert_der)
    read_private_file(key_path)  # refuses a key file others can read
    ctx.load_cert_chain(certfile=cert_pem_path, keyfile=key_path)
    return ctx


class HttpTransport:
    """One ``ClientSession`` (connection pool) per peer certificate: a directory update that
    rolls a peer's certificate over gets a new pinned session; the old one is closed.

    ``source_host`` binds outgoing connections to that local address (a network fault proxy in
    front of a peer tells the nodes of a local network apart by it: 127.0.0.2, 127.0.0.3, ...).
    """

    def __init__(
        self,
        cert_pem_path: Path,
        key_path: Path,
        *,
        max_connections_per_peer: int = 16,
        source_host: str | None = None,
    ) -> None:
        self._cert = cert_pem_path
        self._key = key_path
        self._max_per_peer = max_connections_per_peer
        self._local_addr = (source_host, 0) if source_host else None
        self._sessions: dict[str, tuple[str, aiohttp.ClientSession]] = {}

    async def _client(self, peer: NodeEntry) -> aiohttp.ClientSession:
        current = self._sessions.get(peer.state)
        if current is not None and current[0] == peer.tls_cert_sha256:
            return current[1]
        if current is not None:
            await current[1].close()
        context = pinned_client_context(self._cert, self._key, peer.tls_cert_der)
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                ssl=context, limit_per_host=self._max_per_peer, local_addr=self._local_addr
            ),
            auto_decompress=False,
        )
        self._sessions[peer.state] = (peer.tls_cert_sha256, session)
        return session

    async def send(self, peer: NodeEntry, envelope: bytes) -> PeerAnswer:
        url = peer.endpoint.rstrip("/") + ENVELOPE_PATH
        try:
            session = await self._client(peer)
            async with session.post(
                url,
                data=envelope,
                headers={"Content-Type": ENVELOPE_TYPE},
                allow_redirects=False,
            ) as resp:
                body = await resp.content.read(MAX_RECEIPT + 1)
                return _answer(peer, resp.status, resp.content_type, body)
        except DeliveryError:
            raise
        except (aiohttp.ClientError, OSError, ssl.SSLError, TimeoutError) as exc:
            raise DeliveryError(f"{peer.state} at {url}: {type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        for _, session in self._sessions.values():
            await session.close()
        self._sessions.clear()


def _answer(peer: NodeEntry, status: int, content_type: str, body: bytes) -> PeerAnswer:
    if len(body) > MAX_RECEIPT:
        raise DeliveryError(f"{peer.state} answered with an oversized body")
    if status == 200 and content_type == RECEIPT_TYPE:
        return PeerAnswer(body)
    if 400 <= status < 500 and content_type == PROBLEM_JSON:
        problem = _json(body)
        code = problem.get("code")
        receipt = problem.get("receipt")
        try:
            decoded = base64.b64decode(receipt, validate=True) if isinstance(receipt, str) else None
        except binascii.Error:
            decoded = None
        return PeerAnswer(decoded, code if isinstance(code, str) else "unknown")
    raise DeliveryError(f"{peer.state} answered HTTP {status} ({content_type})")


def _json(body: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(body)
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


def make_peer_app(receive: Receiver, max_envelope: int) -> web.Application:
    """The peer endpoint: one route, envelopes in, receipts out.

    The body limit is enforced by aiohttp before the body is read into memory (413).
    """

    async def post_envelope(request: web.Request) -> web.Response:
        if request.content_type != ENVELOPE_TYPE:
            raise UnsupportedMediaType(f"expected {ENVELOPE_TYPE}")
        if request.content_length is not None and request.content_length > max_envelope:
            raise EnvelopeTooLarge(f"{request.content_length} bytes is more than {max_envelope}")
        data = await request.read()
        receipt = await receive(data, peer_certificate_der(request.transport))
        response = web.Response(body=receipt, content_type=RECEIPT_TYPE)
        await response.prepare(request)
        await response.write_eof()
        crash_point("inbound.after_response")
        return response

    app = web.Application(middlewares=[problem_middleware], client_max_size=max_envelope)
    app.router.add_post(ENVELOPE_PATH, post_envelope)
    return app
