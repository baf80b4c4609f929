"""Evidence files at this node: a clerk's upload, attaching it to a submission, downloading.

One encryption at rest and on the wire: a clerk's upload is encrypted as it streams in
(``protocol/stream.py``, a fresh key per file) and only those ciphertext bytes are stored and
sent; the key travels inside the signed, HPKE-encrypted envelope. Memory stays constant whatever
the file's size: the bytes pass through in chunks of ``stream.DEFAULT_CHUNK`` (1 MiB), and the
file I/O, encryption and hashing run in worker threads so the event loop keeps serving.

Moving files between nodes is ``service/blob_transfer.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from mla_node.errors import (
    AttachmentInvalid,
    BlobCorrupt,
    FieldProblem,
    Forbidden,
    FormInvalid,
    InvalidStateForAction,
    MlaError,
    NotFound,
    PayloadTooLarge,
)
from mla_node.protocol import stream
from mla_node.service.context import NodeContext, Principal
from mla_node.service.views import _record_viewed, may_see_content
from mla_node.storage import attachment_repo, repo
from mla_node.storage.attachment_repo import AttachmentRow
from mla_node.storage.blobs import BackgroundHash, BlobStore
from mla_node.storage.db import Transaction

log = logging.getLogger(__name__)

Read = Callable[[int], Awaitable[bytes]]  # up to n bytes of a body; b"" at its end


# --- a clerk's upload --------------------------------------------------------------------------


class _Sealing:
    """The worker-thread half of an upload: hash, encrypt and write one chunk at a time (both
    digests on threads of their own, beside the encryption and the write)."""

    def __init__(self, store: BlobStore, key: bytes) -> None:
        self.sealer = stream.StreamSealer(
            key,
            os.urandom(stream.NONCE_PREFIX_LEN),
            os.urandom(stream.FILE_ID_LEN),
            stream.DEFAULT_CHUNK,
        )
        self.plain = BackgroundHash()
        self.blob = store.new_file()
        self.blob.write(self.sealer.header)

    def chunk(self, data: bytes, last: bool) -> None:
        self.plain.update(data)
        self.blob.write(self.sealer.seal(data, last=last))


async def upload(
    ctx: NodeContext, principal: Principal, read: Read, *, length: int | None, name: str
) -> AttachmentRow:
    """Encrypt a clerk's file as it streams in, store it under its digest, record it unused.

    ``length`` is the declared Content-Length (None when chunked): over the limit it is refused
    before a byte is read; a chunked body is cut off as soon as it passes the limit."""
    limit = ctx.config.clerk_api.max_attachment_bytes
    if length is not None and length > limit:
        raise PayloadTooLarge(f"{length} bytes is more than the {limit} a file may have")
    key = os.urandom(stream.KEY_LEN)
    sealing = await asyncio.to_thread(_Sealing, ctx.blobs, key)
    chunk = stream.DEFAULT_CHUNK
    size = 0
    pending: asyncio.Future[None] | None = None
    try:
        buffer = bytearray()
        while data := await read(chunk):
            size += len(data)
            if size > limit:
                raise PayloadTooLarge(f"the file is larger than the {limit} bytes allowed")
            buffer += data
            if len(buffer) > chunk:  # more follows this chunk, so it is not the last
                piece = bytes(buffer[:chunk])
                del buffer[:chunk]
                # One chunk sealed in a thread while the next one arrives.
                if pending is not None:
                    await pending
                pending = asyncio.ensure_future(asyncio.to_thread(sealing.chunk, piece, False))
        if pending is not None:
            await pending
        await asyncio.to_thread(sealing.chunk, bytes(buffer), True)
        blob_digest = await asyncio.to_thread(sealing.blob.commit)
        plain_digest = await asyncio.to_thread(sealing.plain.digest)
    except BaseException:
        if pending is not None and not pending.done():
            with contextlib.suppress(BaseException):
                await asyncio.shield(pending)
        sealing.blob.abort()
        sealing.plain.close()
        raise
    now = ctx.clock()
    row = AttachmentRow(
        id=ctx.new_id(now),
        message_id=None,
        position=None,
        name=name,
        size=size,
        sha256=plain_digest,
        blob_sha256=blob_digest,
        blob_size=sealing.blob.size,
        chunk_size=chunk,
        file_key=key,
        created_by=principal.actor,
        created_at=now,
    )
    await ctx.db.write(lambda tx: attachment_repo.insert(tx, row))
    return row


async def get_upload(ctx: NodeContext, attachment_id: str) -> AttachmentRow:
    row = await attachment_repo.get(ctx.db, attachment_id)
    if row is None:
        raise NotFound(f"no file {attachment_id!r}", field="id")
    return row


def upload_view(row: AttachmentRow) -> dict[str, object]:
    return {
        "id": row.id,
        "name": row.name,
        "size": row.size,
        "sha256": row.sha256.hex(),
        "message_id": row.message_id,
    }


# --- attaching to a submission ------------------------------------------------------------------


async def uploads_for_submission(ctx: NodeContext, ids: Sequence[str]) -> list[AttachmentRow]:
    """The uploads a submission names: each must exist here and not be attached yet."""
    rows, problems = [], []
    for i, attachment_id in enumerate(ids):
        row = await attachment_repo.get(ctx.db, attachment_id)
        where = f"attachments.{i}"
        if row is None:
            problems.append(
                FieldProblem(where, "invalid_value", "No file with this id was uploaded here.")
            )
        elif row.message_id is not None or row.file_key is None:
            problems.append(
                FieldProblem(
                    where, "invalid_value", "This file is attached to another message already."
                )
            )
        else:
            rows.append(row)
    if problems:
        raise FormInvalid(f"{len(problems)} attachment(s) cannot be used", problems=problems)
    return rows


async def claim_uploads(tx: Transaction, ids: Sequence[str], message_id: str) -> None:
    """Inside the submission's write job: of two submissions naming one file, the second fails."""
    taken = await attachment_repo.claim(tx, ids, message_id)
    if taken:
        raise FormInvalid(
            "a file was attached to another message meanwhile",
            problems=[
                FieldProblem(
                    f"attachments.{list(ids).index(t)}",
                    "invalid_value",
                    "This file is attached to another message already.",
                )
                for t in taken
            ],
        )


def plaintext_chunks(f: BinaryIO, key: bytes, chunk: int, size: int) -> Iterator[bytes]:
    """Decrypt an open encrypted file chunk by chunk; any mismatch is ``AttachmentInvalid``."""
    opener = stream.StreamOpener(key, f.read(stream.HEADER_LEN), chunk_size=chunk)
    count, last_size = stream.chunk_plaintext_sizes(size, chunk)
    for i in range(count):
        last = i == count - 1
        expected = (last_size if last else chunk) + stream.TAG_LEN
        data = f.read(expected)
        if len(data) != expected:
            raise AttachmentInvalid("the file is shorter than its size says")
        yield opener.open(data, last=last)
    if f.read(1):
        raise AttachmentInvalid("the file is longer than its size says")


# --- downloading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Download:
    name: str
    size: int
    sha256: bytes
    chunks: AsyncGenerator[bytes, None]


async def open_download(
    ctx: NodeContext, principal: Principal, message_id: str, n: int
) -> Download:
    """The ``n``-th file of a message, decrypted chunk by chunk as it is read. Its first chunk
    is checked before this returns, so a damaged file is an error answer, not a cut download."""
    message = await repo.get_message(ctx.db, message_id)
    if message is None:
        raise NotFound(f"no request or message {message_id!r}", field="id")
    if not may_see_content(ctx, principal):
        raise Forbidden("this role does not see the content of requests, files included")
    if message.purged_at is not None:
        raise InvalidStateForAction("the contents of this case were purged")
    rows = await attachment_repo.for_message(ctx.db, message_id)
    if not 0 <= n < len(rows):
        raise NotFound(f"message {message_id} has {len(rows)} file(s)", field="n")
    row = rows[n]
    if row.file_key is None:
        raise InvalidStateForAction("the contents of this case were purged")
    if await asyncio.to_thread(ctx.blobs.size, row.blob_sha256) != row.blob_size:
        raise BlobCorrupt(f"the stored file {row.blob_sha256.hex()} is missing or truncated")
    chunks = _decrypting(ctx.blobs, row)
    try:
        first = await anext(chunks)
    except AttachmentInvalid as exc:
        await chunks.aclose()
        raise BlobCorrupt(f"the stored file {row.blob_sha256.hex()} does not decrypt") from exc
    await _record_viewed(ctx, message, principal, f"attachment:{n}")
    return Download(row.name, row.size, row.sha256, _prepend(first, chunks))


async def _decrypting(store: BlobStore, row: AttachmentRow) -> AsyncGenerator[bytes, None]:
    """The plaintext, read and decrypted on a worker thread, hashed on another (the hash is the
    slower of the two on a CPU without SHA instructions), and checked against the recorded
    digest before its last chunk is handed on: a file that is not the one recorded never
    reaches a client whole (a one-chunk file is an error answer, a longer one a cut download)."""
    assert row.file_key is not None
    f = await asyncio.to_thread(store.open, row.blob_sha256)
    digest = BackgroundHash()
    try:
        pieces = plaintext_chunks(f, row.file_key, row.chunk_size, row.size)
        held: bytes | None = None
        while (plaintext := await asyncio.to_thread(_next_hashed, pieces, digest)) is not None:
            if held is not None:
                yield held
            held = plaintext
        if await asyncio.to_thread(digest.digest) != row.sha256:
            raise BlobCorrupt(f"the stored file {row.blob_sha256.hex()} is not the one recorded")
        if held is not None:
            yield held
    finally:
        f.close()
        await asyncio.to_thread(digest.close)  # after: a cancel here must not leave f open


def _next_hashed(pieces: Iterator[bytes], digest: BackgroundHash) -> bytes | None:
    piece = next(pieces, None)
    if piece is not None:
        digest.update(piece)
    return piece


async def _prepend(first: bytes, rest: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()  # closes the file when the client goes away mid-download


# --- uploads never submitted --------------------------------------------------------------------


async def expire_unsubmitted(ctx: NodeContext) -> int:
    """Delete the uploads no submission named within ``clerk_api.unsubmitted_upload_s``, and their
    encrypted files: a clerk's abandoned uploads must not fill the disk. Returns how many.

    The rows go in one write (a submission naming one of them meanwhile finds it gone, or claims
    it first and keeps it); the files after the commit, so a crash leaves at worst a file no row
    names, which the next run cannot see but which costs only its disk space."""
    before = ctx.clock() - int(ctx.config.clerk_api.unsubmitted_upload_s * 1000)
    count, freed = await ctx.db.write(lambda tx: attachment_repo.expire_unsubmitted(tx, before))
    for blob in freed:
        await asyncio.to_thread(ctx.blobs.path(blob).unlink, missing_ok=True)
    if count:
        log.info("deleted %d upload(s) never submitted, %d file(s)", count, len(freed))
    return count


async def expire_unsubmitted_every(ctx: NodeContext, interval_s: float) -> None:
    while True:
        try:
            await expire_unsubmitted(ctx)
        except MlaError as exc:  # the database is away for now: the next round tries again
            log.warning("could not delete expired uploads: %s", exc.detail)
        await asyncio.sleep(interval_s)
