"""Files between nodes: what the sender pushes, what the receiver accepts and checks.

The sender pushes each file of a message before its envelope (``transport/blobs.py``, resumable
like tus: the receiver says how many bytes it holds, the sender sends the rest). The receiver
takes files only from nodes of the directory, each into its own folder and within its quota of
incomplete transfers (``PeerBlobs``); a file enters the store only once its bytes hash to its
name. When the envelope comes, every file it names must be here (``attachment_missing``,
transient, otherwise) and must be what the signed body says: it decrypts with its key, every tag
and the last-chunk flag hold, and its size and SHA-256 match (``attachment_invalid``,
permanent). Only then is the envelope stored and its receipt signed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import queue
import threading
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mla_node.errors import (
    AttachmentInvalid,
    AttachmentMissing,
    BlobError,
    BlobOffsetMismatch,
    BlobQuotaExceeded,
    BlobSenderUnknown,
    BlobTooLarge,
)
from mla_node.protocol.attachments import AttachmentRef
from mla_node.service.attachments import Read, plaintext_chunks
from mla_node.service.context import NodeContext
from mla_node.storage import attachment_repo
from mla_node.storage.attachment_repo import AttachmentRow
from mla_node.storage.blobs import BlobStore, PartialBlob
from mla_node.storage.db import Transaction

PEER_WRITE = 1 << 20  # a peer's transfer is written to disk in pieces of this size
READ_AHEAD = 4  # decrypted chunks waiting for the hash, at most (each is one chunk, 1 MiB)


# --- receiving (inbound) ----------------------------------------------------------------------


async def check_received(ctx: NodeContext, refs: Sequence[AttachmentRef]) -> None:
    """Every file the envelope names is here, whole, and is what the signed body says."""
    for i, ref in enumerate(refs):
        where = f"body.attachments[{i}]"
        if await asyncio.to_thread(ctx.blobs.size, ref.blob) != ref.blob_size:
            raise AttachmentMissing(f"file {ref.blob.hex()} is not here (yet)", field=where)
        try:
            await asyncio.to_thread(_verify, ctx.blobs, ref)
        except AttachmentInvalid as exc:
            if await asyncio.to_thread(_digest_of, ctx.blobs, ref.blob) != ref.blob:
                # Our copy changed on disk since it arrived: not the sender's fault. Drop it;
                # the sender pushes it again when it retries.
                await asyncio.to_thread(ctx.blobs.path(ref.blob).unlink, missing_ok=True)
                raise AttachmentMissing(f"file {ref.blob.hex()} was damaged", field=where) from exc
            raise AttachmentInvalid(exc.detail, field=where) from exc


def _verify(store: BlobStore, ref: AttachmentRef) -> None:
    with store.open(ref.blob) as f:
        for _ in verified_plaintext(f, ref):
            pass


def verified_plaintext(f: BinaryIO, ref: AttachmentRef) -> Iterator[bytes]:
    """The plaintext of the encrypted file ``f``, chunk by chunk, checked against ``ref``: every
    tag and the last-chunk flag as it goes, the size and SHA-256 once it is through (a caller
    keeping the chunks must wait for the end before trusting them): ``AttachmentInvalid``."""
    digest = hashlib.sha256()
    size = 0
    for plaintext in _read_ahead(plaintext_chunks(f, ref.key, ref.chunk, ref.size)):
        digest.update(plaintext)
        size += len(plaintext)
        yield plaintext
    if size != ref.size or digest.digest() != ref.sha256:
        raise AttachmentInvalid("the file's size or SHA-256 is not what the envelope says")


def _read_ahead(chunks: Iterator[bytes]) -> Generator[bytes, None, None]:
    """``chunks``, produced on a thread of their own while the caller works on the last one.

    The receipt waits for this check, and it is two passes of about equal cost that both let go
    of the GIL: reading and decrypting the file, and hashing what came out. One after the other
    they took a second per GiB; side by side, the time of the slower. Errors of the producer
    reach the caller where the chunk would have; a caller that stops early stops the producer."""
    handoff: queue.Queue[tuple[bytes | None, BaseException | None]] = queue.Queue(READ_AHEAD)
    stop = threading.Event()

    def produce() -> None:
        try:
            for chunk in chunks:
                while not stop.is_set():
                    with contextlib.suppress(queue.Full):
                        handoff.put((chunk, None), timeout=0.1)
                        break
                if stop.is_set():
                    return
            handoff.put((None, None))
        except BaseException as exc:  # handed over, raised in the caller
            handoff.put((None, exc))

    producer = threading.Thread(target=produce, name="verify-read", daemon=True)
    producer.start()
    try:
        while True:
            chunk, error = handoff.get()
            if error is not None:
                raise error
            if chunk is None:
                return
            yield chunk
    finally:
        stop.set()
        producer.join()


def _digest_of(store: BlobStore, blob: bytes) -> bytes:
    digest = hashlib.sha256()
    with store.open(blob) as f:
        while piece := f.read(1 << 20):
            digest.update(piece)
    return digest.digest()


async def record_received(
    tx: Transaction, ctx: NodeContext, message_id: str, refs: Sequence[AttachmentRef], now: int
) -> None:
    for position, ref in enumerate(refs):
        await attachment_repo.insert(
            tx,
            AttachmentRow(
                id=ctx.new_id(now),
                message_id=message_id,
                position=position,
                name=ref.name,
                size=ref.size,
                sha256=ref.sha256,
                blob_sha256=ref.blob,
                blob_size=ref.blob_size,
                chunk_size=ref.chunk,
                file_key=ref.key,
                created_by=None,
                created_at=now,
            ),
        )


# --- sending (delivery) -----------------------------------------------------------------------


@dataclass(frozen=True)
class OutgoingBlob:
    digest: bytes
    size: int
    path: Path


async def outgoing(ctx: NodeContext, message_id: str) -> list[OutgoingBlob]:
    rows = await attachment_repo.for_message(ctx.db, message_id)
    return [OutgoingBlob(r.blob_sha256, r.blob_size, ctx.blobs.path(r.blob_sha256)) for r in rows]


# --- a peer's transfers (the peer endpoint) ---------------------------------------------------


class PeerBlobs:
    """The receiving side of ``/peer/v1/blobs``: offsets, and appending a transfer.

    Only a node of the directory (its TLS client certificate) may send files, each into its own
    folder, within ``peer.max_partial_bytes`` of incomplete transfers. A file is named by its
    digest and enters the store only once its bytes hash to that name. Which envelope it belongs
    to is learnt when the envelope comes; files no envelope claims are the sender's quota."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self._busy: set[tuple[str, bytes]] = set()

    def _sender(self, cert_der: bytes | None) -> str:
        if cert_der is not None:
            fingerprint = "sha256:" + hashlib.sha256(cert_der).hexdigest()
            for state, node in self.ctx.directory().nodes.items():
                if node.tls_cert_sha256 == fingerprint and state != self.ctx.state:
                    return state
        raise BlobSenderUnknown("the client certificate is not a node's of the directory")

    async def offset(self, cert_der: bytes | None, digest: bytes) -> int:
        """How many bytes of the file this node holds: all of them once it is complete."""
        peer = self._sender(cert_der)
        complete = await asyncio.to_thread(self.ctx.blobs.size, digest)
        if complete is not None:
            return complete
        return await asyncio.to_thread(self.ctx.blobs.partial_size, peer, digest)

    async def append(
        self, cert_der: bytes | None, digest: bytes, offset: int, length: int, read: Read
    ) -> int:
        """Append the body to the file from ``offset``; returns the bytes now held."""
        peer = self._sender(cert_der)
        store = self.ctx.blobs
        if length > self.ctx.config.peer.max_blob_bytes:
            raise BlobTooLarge(f"{length} bytes is more than this node accepts")
        complete = await asyncio.to_thread(store.size, digest)
        if complete is not None:
            return complete  # sent before, a receipt of it lost: nothing to do
        if (peer, digest) in self._busy:
            raise BlobOffsetMismatch("another transfer of this file is in progress")
        held = await asyncio.to_thread(store.partial_size, peer, digest)
        if offset != held or offset > length:
            raise BlobOffsetMismatch(f"this node holds {held} bytes of the file, not {offset}")
        quota = self.ctx.config.peer.max_partial_bytes
        if await asyncio.to_thread(store.partial_bytes, peer) + (length - offset) > quota:
            raise BlobQuotaExceeded(f"{peer}'s incomplete transfers would pass {quota} bytes")
        self._busy.add((peer, digest))
        try:
            partial = await asyncio.to_thread(store.append_partial, peer, digest, offset)
            return await self._receive(partial, length, read)
        finally:
            self._busy.discard((peer, digest))

    async def _receive(self, partial: PartialBlob, length: int, read: Read) -> int:
        # The body's pieces go to the disk as they came, a list at a time (no copy into one
        # buffer: the event loop already decrypts every byte of TLS).
        gathered: list[bytes] = []
        gathered_bytes = 0
        written = partial.size  # bytes handed to the disk, the write in flight included
        pending: asyncio.Future[None] | None = None
        try:
            while data := await read(PEER_WRITE):
                if written + gathered_bytes + len(data) > length:
                    raise BlobError("the body is longer than Upload-Length says")
                gathered.append(data)
                gathered_bytes += len(data)
                if gathered_bytes >= PEER_WRITE:
                    # One list hashed and written in a thread while the next one arrives.
                    if pending is not None:
                        # Shielded: a cancel here leaves the write running on its thread, and
                        # the rescue below must wait for it, or it would write beside it.
                        await asyncio.shield(pending)
                    pieces, written = gathered, written + gathered_bytes
                    gathered, gathered_bytes = [], 0
                    pending = asyncio.ensure_future(asyncio.to_thread(partial.write, pieces))
            if pending is not None:
                await asyncio.shield(pending)
                pending = None
            await asyncio.to_thread(partial.write, gathered)
            written += gathered_bytes
            gathered = []
        except BaseException:
            # Keep what arrived (the sender resumes from there), fsynced.
            if pending is not None:
                with contextlib.suppress(BaseException):
                    await asyncio.shield(pending)
            if gathered:
                await asyncio.to_thread(partial.write, gathered)
            await asyncio.to_thread(partial.close)
            raise
        if written < length:
            await asyncio.to_thread(partial.close)
            return written
        if not await asyncio.to_thread(partial.complete):
            raise BlobError("the file's bytes do not hash to its name; send it again")
        return written
