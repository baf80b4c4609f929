"""Encrypted evidence files between nodes, resumable, over the mutual-TLS peer endpoint.

Modelled on tus (tus.io) and the IETF resumable-uploads draft, reduced to what two nodes need:

```
HEAD  /peer/v1/blobs/<hex sha256>   -> 200, Upload-Offset: <bytes the receiver holds>
PATCH /peer/v1/blobs/<hex sha256>      Upload-Offset: <n>, Upload-Length: <total>,
                                       Content-Type: application/offset+octet-stream,
                                       body: the file's bytes from n on
                                    -> 204, Upload-Offset: <bytes now held>
```

The file is named by the SHA-256 of its (encrypted) bytes; the receiver appends to its partial
copy, fsyncs, and moves it into its store when the bytes hash to the name. A transfer cut at 60 %
resumes at 60 %: the next HEAD says how far it got. Offsets that disagree are ``409
blob_offset_mismatch``, and the sender starts its next try with a new HEAD.

A transfer has no deadline as a whole (a large file on a slow link takes long), but one that
makes no progress for ``stall_s`` is abandoned: the sender watches the bytes it hands to the
connection, so a peer that stops reading cannot hold a delivery for ever.

A peer with several endpoints (workers sharing one database and one file store) is asked through
the transport's ``EndpointChooser``: a transfer whose endpoint cannot be reached, or is cut, starts
again with a HEAD at the next endpoint, which reports the same offset, and resumes from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import BinaryIO, Protocol

import aiohttp
from aiohttp import web

from mla_node.errors import BlobError, DeliveryError, UnsupportedMediaType
from mla_node.pki import peer_certificate_der
from mla_node.protocol.directory import NodeEntry
from mla_node.storage.blobs import is_digest
from mla_node.transport.base import CONNECT_TIMEOUT_S, CONNECTION_ERRORS, EndpointChooser

BLOB_PATH = "/peer/v1/blobs/"
OFFSET = "Upload-Offset"
LENGTH = "Upload-Length"
PATCH_TYPE = "application/offset+octet-stream"
READ_SIZE = 1 << 20
MAX_HEADER_DIGITS = 19  # below 2**63

Read = Callable[[int], Awaitable[bytes]]


class BlobReceiver(Protocol):
    """The receiving node's side (``service/blob_transfer.PeerBlobs``)."""

    async def offset(self, cert_der: bytes | None, digest: bytes) -> int: ...  # pragma: no cover

    async def append(
        self, cert_der: bytes | None, digest: bytes, offset: int, length: int, read: Read
    ) -> int: ...  # pragma: no cover


# --- the peer endpoint ------------------------------------------------------------------------


def _digest(request: web.Request) -> bytes:
    text = request.match_info["digest"]
    if not is_digest(text):  # checked before it names anything on disk
        raise BlobError("the file is named by 64 lowercase hex digits of its SHA-256")
    return bytes.fromhex(text)


def _count(request: web.Request, name: str) -> int:
    value = request.headers.get(name, "")
    if not (value.isascii() and value.isdigit() and len(value) <= MAX_HEADER_DIGITS):
        raise BlobError(f"{name} must be a whole number of bytes", field=name)
    return int(value)


def add_blob_routes(app: web.Application, blobs: BlobReceiver) -> None:
    async def head(request: web.Request) -> web.Response:
        held = await blobs.offset(peer_certificate_der(request.transport), _digest(request))
        return web.Response(status=200, headers={OFFSET: str(held), "Cache-Control": "no-store"})

    async def patch(request: web.Request) -> web.Response:
        digest = _digest(request)
        if request.content_type != PATCH_TYPE:
            raise UnsupportedMediaType(f"expected {PATCH_TYPE}")
        offset, length = _count(request, OFFSET), _count(request, LENGTH)
        if request.content_length is not None and offset + request.content_length > length:
            raise BlobError("Upload-Offset plus the body is more than Upload-Length")
        held = await blobs.append(
            peer_certificate_der(request.transport), digest, offset, length, request.content.read
        )
        return web.Response(status=204, headers={OFFSET: str(held)})

    app.router.add_route("HEAD", BLOB_PATH + "{digest}", head)
    app.router.add_route("PATCH", BLOB_PATH + "{digest}", patch)


# --- the sending side -------------------------------------------------------------------------


class _Progress:
    def __init__(self) -> None:
        self.at = time.monotonic()
        self.sent = 0

    def moved(self, n: int) -> None:
        self.at = time.monotonic()
        self.sent += n


async def _file_body(f: BinaryIO, progress: _Progress) -> AsyncIterator[bytes]:
    while piece := await asyncio.to_thread(f.read, READ_SIZE):
        progress.moved(0)  # read from disk: not stalled
        yield piece
        progress.moved(len(piece))  # handed on: the connection took it


async def push_blob(
    session: aiohttp.ClientSession,
    peer: NodeEntry,
    digest: bytes,
    size: int,
    path: Path,
    *,
    stall_s: float,
    endpoints: EndpointChooser | None = None,
) -> int:
    """Make the peer hold the whole file; returns the bytes sent this time (0: it had it).
    Raises DeliveryError for anything but success: the delivery is retried later, and resumes
    from what the peer holds by then. ``endpoints`` chooses among the peer's endpoints (a
    fresh chooser when None: the primary first)."""
    chooser = endpoints if endpoints is not None else EndpointChooser()
    progress = _Progress()
    failures: list[str] = []
    for endpoint in chooser.order(peer):
        url = endpoint.rstrip("/") + BLOB_PATH + digest.hex()
        progress.moved(0)  # a new endpoint gets its own stall allowance
        try:
            sent = await _guard(
                _push(session, url, size, path, progress, stall_s), progress, stall_s
            )
        except DeliveryError:
            raise
        except CONNECTION_ERRORS as exc:
            chooser.failed(peer, endpoint)
            failures.append(f"{url}: {type(exc).__name__}: {exc}")
            continue
        except (aiohttp.ClientError, OSError) as exc:
            raise DeliveryError(
                f"{peer.state}: file {digest.hex()[:16]}: {type(exc).__name__}: {exc}"
            ) from exc
        chooser.answered(peer, endpoint)
        return sent
    raise DeliveryError(
        f"{peer.state}: file {digest.hex()[:16]}: no endpoint could be reached: "
        + "; ".join(failures)
    )


async def _push(
    session: aiohttp.ClientSession,
    url: str,
    size: int,
    path: Path,
    progress: _Progress,
    stall_s: float,
) -> int:
    # No total deadline (the default one would cut a large file at 5 minutes) and no read
    # deadline during the PATCH (nothing comes back until the body is sent): _guard watches.
    # Connecting is bounded tighter than a stall, so that an endpoint whose machine is gone
    # fails as unreachable (and the next one is tried) before the stall guard gives up.
    connect_s = min(stall_s, CONNECT_TIMEOUT_S)
    head_timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_s, sock_read=stall_s)
    async with session.head(url, allow_redirects=False, timeout=head_timeout) as resp:
        held = _held(resp)
    if held == size:
        return 0
    if held > size:
        raise DeliveryError(f"the peer holds {held} bytes of a {size}-byte file")
    headers = {
        OFFSET: str(held),
        LENGTH: str(size),
        "Content-Type": PATCH_TYPE,
        "Content-Length": str(size - held),
    }
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_s)
    # The file is closed here, not by the body generator: aiohttp drops a generator it stopped
    # reading (a cut connection) without closing it.
    f = await asyncio.to_thread(path.open, "rb")
    try:
        await asyncio.to_thread(f.seek, held)
        async with session.patch(
            url,
            data=_file_body(f, progress),
            headers=headers,
            allow_redirects=False,
            timeout=timeout,
        ) as resp:
            now_held = _held(resp, 204)
    finally:
        f.close()
    if now_held != size:
        raise DeliveryError(f"the peer holds {now_held} of {size} bytes after the transfer")
    return size - held


def _held(resp: aiohttp.ClientResponse, ok: int = 200) -> int:
    value = resp.headers.get(OFFSET, "")
    if resp.status != ok or not (value.isascii() and value.isdigit()):
        raise DeliveryError(
            f"file transfer: HTTP {resp.status} ({resp.headers.get('Content-Type')})"
        )
    return int(value)


async def _guard(work: Awaitable[int], progress: _Progress, stall_s: float) -> int:
    """Run ``work`` while it makes progress; cancel it once nothing moved for ``stall_s``."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=stall_s / 4)
            if done:
                return task.result()
            if time.monotonic() - progress.at > stall_s:
                raise DeliveryError(f"file transfer stalled for {stall_s:.0f} s")
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
