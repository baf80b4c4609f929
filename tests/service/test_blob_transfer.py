"""The receiving side of file transfers (service/blob_transfer.py), on real databases and keys:
who may send, offsets, quota, digests, and the checks an envelope's files pass before a receipt."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mla_node.errors import (
    AttachmentInvalid,
    AttachmentMissing,
    BlobError,
    BlobOffsetMismatch,
    BlobQuotaExceeded,
    BlobSenderUnknown,
    BlobTooLarge,
)
from mla_node.protocol import stream
from mla_node.protocol.attachments import AttachmentRef
from mla_node.service import blob_transfer
from mla_node.service.blob_transfer import PeerBlobs
from mla_node.service.context import NodeContext
from mla_node.storage.blobs import PartialBlob
from tests.service.memnet import Node, memory_network


@pytest_asyncio.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[dict[str, Node]]:
    async with memory_network(tmp_path) as (nodes, _):
        yield nodes


def cert_of(ctx: NodeContext) -> bytes:
    pem = ctx.identity.tls_cert_path.read_bytes()
    return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)


def reader(data: bytes, piece: int = 100_000) -> Callable[[int], Awaitable[bytes]]:
    chunks = [data[i : i + piece] for i in range(0, len(data), piece)]

    async def read(n: int) -> bytes:
        return chunks.pop(0) if chunks else b""

    return read


def sealed(data: bytes, key: bytes) -> bytes:
    sealer = stream.StreamSealer(key, os.urandom(7), os.urandom(16), stream.MIN_CHUNK)
    count, _ = stream.chunk_plaintext_sizes(len(data), stream.MIN_CHUNK)
    c = stream.MIN_CHUNK
    return sealer.header + b"".join(
        sealer.seal(data[i * c : (i + 1) * c], last=i == count - 1) for i in range(count)
    )


async def test_a_transfer_in_two_parts_and_the_refusals(nodes: dict[str, Node]) -> None:
    br, ar_cert = nodes["BR"].ctx, cert_of(nodes["AR"].ctx)
    blobs = PeerBlobs(br)
    blob = os.urandom(300_000)
    digest = hashlib.sha256(blob).digest()
    with pytest.raises(BlobSenderUnknown):
        await blobs.offset(None, digest)
    with pytest.raises(BlobSenderUnknown):
        await blobs.offset(cert_of(br), digest)  # not from itself either
    assert await blobs.offset(ar_cert, digest) == 0
    assert await blobs.append(ar_cert, digest, 0, len(blob), reader(blob[:120_000])) == 120_000
    assert await blobs.offset(ar_cert, digest) == 120_000
    with pytest.raises(BlobOffsetMismatch):
        await blobs.append(ar_cert, digest, 0, len(blob), reader(blob))
    with pytest.raises(BlobTooLarge):
        await blobs.append(ar_cert, digest, 0, br.config.peer.max_blob_bytes + 1, reader(b""))
    with pytest.raises(BlobError, match="longer"):
        await blobs.append(ar_cert, digest, 120_000, 130_000, reader(blob[120_000:]))
    # What arrived before the refusal is kept; the rest completes the file.
    held = await blobs.offset(ar_cert, digest)
    assert await blobs.append(ar_cert, digest, held, len(blob), reader(blob[held:])) == len(blob)
    assert br.blobs.path(digest).read_bytes() == blob
    assert await blobs.offset(ar_cert, digest) == len(blob)
    # Sent again after a lost answer: nothing to do.
    assert await blobs.append(ar_cert, digest, 0, len(blob), reader(blob)) == len(blob)


async def test_wrong_bytes_are_dropped_and_the_quota_holds(nodes: dict[str, Node]) -> None:
    br, ar_cert = nodes["BR"].ctx, cert_of(nodes["AR"].ctx)
    blobs = PeerBlobs(br)
    name = hashlib.sha256(b"the real file").digest()
    with pytest.raises(BlobError, match="hash"):
        await blobs.append(ar_cert, name, 0, 9, reader(b"forgeries"))
    assert await blobs.offset(ar_cert, name) == 0  # deleted: start over
    peer = br.config.peer.model_copy(update={"max_partial_bytes": 1 << 20})
    br.config = br.config.model_copy(update={"peer": peer})
    assert await blobs.append(ar_cert, name, 0, 1 << 20, reader(b"x" * 1000)) == 1000
    other = hashlib.sha256(b"another file").digest()
    with pytest.raises(BlobQuotaExceeded):  # 1000 bytes held + 1 MiB announced
        await blobs.append(ar_cert, other, 0, 1 << 20, reader(b""))


async def test_an_envelopes_files_are_checked_before_a_receipt(nodes: dict[str, Node]) -> None:
    br = nodes["BR"].ctx
    key, data = os.urandom(32), os.urandom(10_000)
    blob = sealed(data, key)
    digest = hashlib.sha256(blob).digest()
    ref = AttachmentRef(
        "a.bin", len(data), hashlib.sha256(data).digest(), digest, len(blob), stream.MIN_CHUNK, key
    )
    with pytest.raises(AttachmentMissing):
        await blob_transfer.check_received(br, [ref])
    br.blobs.root.mkdir(parents=True, exist_ok=True)
    br.blobs.path(digest).write_bytes(blob)
    await blob_transfer.check_received(br, [ref])
    for lie in (
        AttachmentRef(**{**ref.__dict__, "sha256": bytes(32)}),
        AttachmentRef(**{**ref.__dict__, "key": os.urandom(32)}),
    ):
        with pytest.raises(AttachmentInvalid):
            await blob_transfer.check_received(br, [lie])
    # Damaged here after it arrived: not the sender's fault; dropped, to be sent again.
    damaged = bytearray(blob)
    damaged[-1] ^= 1
    br.blobs.path(digest).write_bytes(bytes(damaged))
    with pytest.raises(AttachmentMissing):
        await blob_transfer.check_received(br, [ref])
    assert br.blobs.size(digest) is None


async def test_a_transfer_cancelled_while_a_piece_is_written_keeps_its_bytes_in_order(
    nodes: dict[str, Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sender hangs up while the first piece is still on its way to the disk: what arrived
    after it is written after it, so the transfer resumes from a file that is a true prefix."""
    br, ar_cert = nodes["BR"].ctx, cert_of(nodes["AR"].ctx)
    blob = os.urandom(22 * 100_000)  # two pieces of PEER_WRITE: 11 reads each
    digest = hashlib.sha256(blob).digest()
    disk_free, first_started = threading.Event(), threading.Event()
    original = PartialBlob.write

    def slow_first_write(self: PartialBlob, pieces: Sequence[bytes]) -> None:
        if not first_started.is_set():
            first_started.set()
            disk_free.wait(10)
        original(self, pieces)

    monkeypatch.setattr(PartialBlob, "write", slow_first_write)
    transfer = asyncio.create_task(
        PeerBlobs(br).append(ar_cert, digest, 0, len(blob), reader(blob))
    )
    await asyncio.to_thread(first_started.wait, 10)  # the second piece is in the buffer
    transfer.cancel()
    await asyncio.sleep(0.1)  # time for a rescue that would not wait to write the second piece
    disk_free.set()
    with pytest.raises(asyncio.CancelledError):
        await transfer
    assert br.blobs.partial_size("AR", digest) == len(blob)
    with (br.blobs.root / "partial" / "AR" / digest.hex()).open("rb") as f:
        assert f.read() == blob


def test_read_ahead_hands_over_chunks_errors_and_stops_with_its_caller() -> None:
    def chunks(fail_after: int | None) -> Iterator[bytes]:
        for i in range(50):
            if i == fail_after:
                raise AttachmentInvalid("tag")
            yield bytes([i]) * 10

    assert list(blob_transfer._read_ahead(chunks(None))) == list(chunks(None))
    failing = blob_transfer._read_ahead(chunks(7))
    got = [next(failing) for _ in range(7)]
    assert got == list(chunks(None))[:7]  # in order, up to the chunk that failed
    with pytest.raises(AttachmentInvalid):
        next(failing)
    before = threading.active_count()
    reader = blob_transfer._read_ahead(chunks(None))
    assert next(reader) == bytes([0]) * 10
    reader.close()  # the caller stops early: the producer is stopped and joined, not left blocked
    assert threading.active_count() == before
