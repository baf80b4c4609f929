"""Envelopes over HTTPS with mutual TLS: the sending side and the peer endpoint.

The client sends only to endpoints from the signed directory, follows no redirects, and accepts
only the very server certificate the directory lists for the peer. Foreign exceptions are
translated into ``DeliveryError`` at this boundary.

A peer that runs several workers lists several endpoints (``NodeEntry.endpoints``), all
presenting its one certificate. Requests take turns among them (``EndpointChooser``), and one that
cannot be reached at the connection level (refused, reset, TLS handshake failed, no answer) is
tried at the next endpoint within the same ``send``: the receiving workers share one database and
an envelope is idempotent there, so a second try can only get the same receipt. Any HTTP answer,
a receipt or a refusal, is the peer's answer and is never retried elsewhere.

Several envelopes due to one peer at once can go in one exchange (``send_batch``, the batch
endpoint; transport/batches.py has the format): each is answered as if it had come alone. A peer
that does not know the batch endpoint (404) gets them one by one.

Two headers carry the log-head hints (docs/protocol.md §5.1): ``Mla-Witnessed-Size`` on the
request (the size of the receiver's newest head the sender holds) and ``Mla-Consistency-Proof``
on the answer, 200 or problem (the proof from that size to the head in the receipt). Neither is
signed and neither can cost a delivery: a malformed one is ignored.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import json
import ssl
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from mla_node.crashpoints import crash_point
from mla_node.errors import (
    DeliveryError,
    EnvelopeTooLarge,
    LogProofInvalid,
    MlaError,
    UnsupportedMediaType,
)
from mla_node.logs import REQUEST_ID, REQUEST_ID_HEADER, valid_request_id
from mla_node.pki import peer_certificate_der, read_private_file
from mla_node.protocol.directory import NodeEntry
from mla_node.protocol.witness import ConsistencyProof
from mla_node.transport.base import (
    CONNECT_TIMEOUT_S,
    CONNECTION_ERRORS,
    ENDPOINT_COOL_DOWN_S,
    WITNESSED_SIZE,
    BatchAnswer,
    EndpointChooser,
    LogProofSource,
    Outgoing,
    PeerAnswer,
    Receiver,
    one_by_one,
)
from mla_node.transport.batches import (
    ANSWERS_TYPE,
    BATCH_PATH,
    BATCH_TYPE,
    answer,
    pack_answers,
    pack_batch,
    unpack_answers,
    unpack_batch,
)
from mla_node.transport.blobs import BlobReceiver, add_blob_routes, push_blob
from mla_node.transport.problems import PROBLEM_JSON, problem_middleware, problem_response

ENVELOPE_PATH = "/peer/v1/envelopes"
ENVELOPE_TYPE = "application/vnd.mla-node.envelope+msgpack"
RECEIPT_TYPE = "application/vnd.mla-node.receipt+msgpack"
MAX_RECEIPT = 64 << 10
WITNESSED_SIZE_HEADER = "Mla-Witnessed-Size"
PROOF_HEADER = "Mla-Consistency-Proof"
# How long a peer that answered a batch with 404 (a node from before batches) gets single
# envelopes before it is offered a batch again (it may have been upgraded meanwhile).
SINGLES_RECHECK_S = 600.0


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
    ``endpoint_cool_down_s``: how long an endpoint that failed is passed over
    (``ENDPOINT_COOL_DOWN_S``); ``endpoints`` is the chooser, kept for the transport's life.
    """

    def __init__(
        self,
        cert_pem_path: Path,
        key_path: Path,
        *,
        max_connections_per_peer: int = 16,
        source_host: str | None = None,
        endpoint_cool_down_s: float = ENDPOINT_COOL_DOWN_S,
    ) -> None:
        self._cert = cert_pem_path
        self._key = key_path
        self._max_per_peer = max_connections_per_peer
        self._local_addr = (source_host, 0) if source_host else None
        self._sessions: dict[str, tuple[str, aiohttp.ClientSession]] = {}
        self._singles_until: dict[str, float] = {}  # state -> monotonic time of the next batch
        self.endpoints = EndpointChooser(endpoint_cool_down_s)

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
            timeout=aiohttp.ClientTimeout(total=300, sock_connect=CONNECT_TIMEOUT_S),
        )
        self._sessions[peer.state] = (peer.tls_cert_sha256, session)
        return session

    async def send(self, peer: NodeEntry, envelope: bytes) -> PeerAnswer:
        url, resp = await self._post(peer, ENVELOPE_PATH, ENVELOPE_TYPE, envelope)
        return await self._read_answer(peer, url, resp)

    async def send_batch(self, peer: NodeEntry, batch: Sequence[Outgoing]) -> list[BatchAnswer]:
        """Several envelopes in one exchange (transport/batches.py). A peer that does not know
        the batch endpoint yet (an older node: 404) gets them one by one, and no batch again
        for ``SINGLES_RECHECK_S``."""
        singles_until = self._singles_until.get(peer.state)
        if singles_until is not None and time.monotonic() < singles_until:
            return await one_by_one(self.send, peer, batch)
        url, resp = await self._post(peer, BATCH_PATH, BATCH_TYPE, pack_batch(batch))
        if resp.status == 404:
            resp.release()
            self._singles_until[peer.state] = time.monotonic() + SINGLES_RECHECK_S
            return await one_by_one(self.send, peer, batch)
        try:
            async with resp:
                limit = MAX_RECEIPT * len(batch)
                body = await read_at_most(resp, limit + 1)
                if resp.status != 200 or resp.content_type != ANSWERS_TYPE:
                    # the batch as a whole was refused or failed: a problem, as for one envelope
                    failed = single_answer(peer, resp.status, resp.content_type, body[:MAX_RECEIPT])
                    raise DeliveryError(f"{peer.state} refused a batch: {failed.refused_code}")
                answers = unpack_answers(peer, body, len(batch), limit)
                proof = proof_header(resp.headers.get(PROOF_HEADER))
        except DeliveryError:
            raise
        except (aiohttp.ClientError, OSError, ssl.SSLError, TimeoutError) as exc:
            raise DeliveryError(f"{peer.state} at {url}: {type(exc).__name__}: {exc}") from exc
        if proof is None:
            return answers
        return [
            dataclasses.replace(a, proof=proof) if isinstance(a, PeerAnswer) else a for a in answers
        ]

    async def _post(
        self, peer: NodeEntry, path: str, content_type: str, data: bytes
    ) -> tuple[str, aiohttp.ClientResponse]:
        """POST to the first of the peer's endpoints that answers; the URL and the answer's head.
        Carries the request id and witnessed size of the send in progress."""
        headers = {"Content-Type": content_type}
        request_id = REQUEST_ID.get()
        if request_id is not None:  # the receiver logs it: one id for the work on both nodes
            headers[REQUEST_ID_HEADER] = request_id
        witnessed = WITNESSED_SIZE.get()
        if witnessed is not None:
            headers[WITNESSED_SIZE_HEADER] = str(witnessed)
        try:
            session = await self._client(peer)
        except (OSError, ssl.SSLError) as exc:
            raise DeliveryError(f"{peer.state}: {type(exc).__name__}: {exc}") from exc
        failures: list[str] = []
        for endpoint in self.endpoints.order(peer):
            url = endpoint.rstrip("/") + path
            try:
                # Awaited without a body read: returns once the answer's head has arrived, so
                # what fails here failed before the peer answered anything.
                resp = await session.post(url, data=data, headers=headers, allow_redirects=False)
            except CONNECTION_ERRORS as exc:
                self.endpoints.failed(peer, endpoint)
                failures.append(f"{url}: {type(exc).__name__}: {exc}")
                continue
            except (aiohttp.ClientError, OSError) as exc:
                raise DeliveryError(f"{peer.state} at {url}: {type(exc).__name__}: {exc}") from exc
            self.endpoints.answered(peer, endpoint)
            return url, resp
        raise DeliveryError(f"{peer.state}: no endpoint could be reached: {'; '.join(failures)}")

    async def _read_answer(
        self, peer: NodeEntry, url: str, resp: aiohttp.ClientResponse
    ) -> PeerAnswer:
        try:
            async with resp:
                body = await read_at_most(resp, MAX_RECEIPT + 1)
                answer = single_answer(peer, resp.status, resp.content_type, body)
                proof = proof_header(resp.headers.get(PROOF_HEADER))
                return dataclasses.replace(answer, proof=proof) if proof else answer
        except DeliveryError:
            raise
        except (aiohttp.ClientError, OSError, ssl.SSLError, TimeoutError) as exc:
            raise DeliveryError(f"{peer.state} at {url}: {type(exc).__name__}: {exc}") from exc

    async def push_blob(
        self, peer: NodeEntry, digest: bytes, size: int, path: Path, *, stall_s: float
    ) -> int:
        """Send an encrypted file the peer does not hold whole yet (transport/blobs.py), over
        the same pinned connection pool as the envelopes."""
        try:
            session = await self._client(peer)
        except (OSError, ssl.SSLError) as exc:
            raise DeliveryError(f"{peer.state}: {type(exc).__name__}: {exc}") from exc
        return await push_blob(
            session, peer, digest, size, path, stall_s=stall_s, endpoints=self.endpoints
        )

    async def close(self) -> None:
        for _, session in self._sessions.values():
            await session.close()
        self._sessions.clear()


async def read_at_most(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The answer's body up to ``limit`` bytes. One ``read(n)`` returns what has arrived so far,
    which for a batch's answers (a receipt per envelope) can be a part of it."""
    body = bytearray()
    while len(body) < limit and (chunk := await resp.content.read(limit - len(body))):
        body += chunk
    return bytes(body)


def single_answer(peer: NodeEntry, status: int, content_type: str, body: bytes) -> PeerAnswer:
    """The single-envelope endpoint's answer (a receipt, or problem+json with the code and the
    rejection receipt in base64); DeliveryError for anything else, which is worth retrying."""
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
        return PeerAnswer.refusal(code, decoded)
    raise DeliveryError(f"{peer.state} answered HTTP {status} ({content_type})")


def proof_header(value: str | None) -> ConsistencyProof | None:
    """The consistency proof a peer's answer carries in its header; None when there is none or
    it cannot be read."""
    if value is None:
        return None
    try:
        return ConsistencyProof.from_header(value)
    except LogProofInvalid:
        return None  # as if none was sent: the sender asks again with its next envelope


def _witnessed_size(value: str | None) -> int | None:
    if value is None or not (value.isascii() and value.isdigit() and len(value) <= 19):
        return None
    return int(value)


def _json(body: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(body)
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


def make_peer_app(
    receive: Receiver,
    max_envelope: int,
    *,
    log_proof: LogProofSource | None = None,
    blobs: BlobReceiver | None = None,
) -> web.Application:
    """The peer endpoint: envelopes in, receipts out; with ``blobs``, encrypted files in
    (transport/blobs.py), streamed to disk.

    The envelope body limit is enforced by aiohttp before the body is read into memory (413).
    With ``log_proof``, a request naming a witnessed size gets the consistency proof in its
    answer.
    """

    async def with_proof(response: web.Response, witnessed: int | None) -> web.Response:
        proof = None if witnessed is None or log_proof is None else await log_proof(witnessed)
        if proof is not None:
            response.headers[PROOF_HEADER] = proof.header_value()
        return response

    async def body_of(request: web.Request, content_type: str) -> bytes:
        if request.content_type != content_type:
            raise UnsupportedMediaType(f"expected {content_type}")
        if request.content_length is not None and request.content_length > max_envelope:
            raise EnvelopeTooLarge(f"{request.content_length} bytes is more than {max_envelope}")
        return await request.read()

    async def post_envelope(request: web.Request) -> web.Response:
        data = await body_of(request, ENVELOPE_TYPE)
        witnessed = _witnessed_size(request.headers.get(WITNESSED_SIZE_HEADER))
        # The sender's request id, when well-formed, names this request in our log lines too.
        REQUEST_ID.set(valid_request_id(request.headers.get(REQUEST_ID_HEADER)))
        try:
            receipt = await receive(data, peer_certificate_der(request.transport))
        except MlaError as err:
            # A refusal carries a signed rejection receipt, and its head wants the proof too.
            return await with_proof(problem_response(err), witnessed)
        response = await with_proof(
            web.Response(body=receipt, content_type=RECEIPT_TYPE), witnessed
        )
        return await sent(request, response)

    async def post_batch(request: web.Request) -> web.Response:
        batch = unpack_batch(await body_of(request, BATCH_TYPE), max_envelope)
        witnessed = _witnessed_size(request.headers.get(WITNESSED_SIZE_HEADER))
        cert = peer_certificate_der(request.transport)

        async def one(item: Outgoing) -> dict[str, Any]:
            REQUEST_ID.set(valid_request_id(item.request_id))  # this envelope's task only
            try:
                receipt = await receive(item.envelope, cert)
            except MlaError as err:
                rejection = err.extra.get("receipt")
                return answer(
                    err.status, err.code, rejection if isinstance(rejection, bytes) else None
                )
            return answer(200, receipt=receipt)

        # All at once: their commits share the database's group commit.
        answers = await asyncio.gather(*(one(item) for item in batch))
        response = web.Response(body=pack_answers(answers), content_type=ANSWERS_TYPE)
        return await sent(request, await with_proof(response, witnessed))

    async def sent(request: web.Request, response: web.Response) -> web.Response:
        """The answer, written out before the handler returns (a crash point follows it)."""
        await response.prepare(request)
        await response.write_eof()
        crash_point("inbound.after_response")
        return response

    app = web.Application(middlewares=[problem_middleware], client_max_size=max_envelope)
    app.router.add_post(ENVELOPE_PATH, post_envelope)
    app.router.add_post(BATCH_PATH, post_batch)
    if blobs is not None:
        add_blob_routes(app, blobs)
    return app
