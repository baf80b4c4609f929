"""Evidence files through the clerk API, between two real nodes over mutual TLS.

Upload (streamed, encrypted as it arrives) → named in a submission → pushed to the recipient
before the envelope → checked there before the receipt → downloaded, decrypted chunk by chunk.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from mla_node.protocol import forms
from mla_node.storage import attachment_repo
from tests.api.speckit import Api, wait_for_status

pytestmark = pytest.mark.asyncio(loop_scope="module")

OCTET = {"Content-Type": "application/octet-stream"}


async def upload(api: Api, data: bytes, name: str = "bank-records.pdf") -> dict[str, Any]:
    reply = await api(
        "POST", "/api/v1/attachments", data=io.BytesIO(data), headers={**OCTET, "X-File-Name": name}
    )
    assert reply.status == 201, reply.body
    assert reply.headers["Location"] == f"/api/v1/attachments/{reply.body['id']}"
    body: dict[str, Any] = reply.body
    return body


async def send_with_files(sender: Api, receiver: Api, *ids: str) -> str:
    body = {
        "type": "mla_request",
        "to": receiver.node.state,
        "form": forms.example("mla_request"),
        "attachments": list(ids),
    }
    created = await sender.post("/api/v1/requests", body)
    assert created.status == 201, created.body
    message_id: str = created.body["id"]
    await wait_for_status(sender, message_id, "delivered")
    return message_id


async def download(
    api: Api, message_id: str, n: int, role: str = "clerk"
) -> tuple[int, Any, bytes]:
    node = api.node
    async with node.http.get(
        f"{api.base}/api/v1/requests/{message_id}/attachments/{n}", headers=api.auth(role)
    ) as resp:
        return resp.status, resp.headers, await resp.read()


async def test_a_file_goes_from_clerk_to_clerk_encrypted_and_verified(ar: Api, br: Api) -> None:
    data = os.urandom(2 * (1 << 20) + 12345)  # three chunks, the last one short
    up = await upload(ar, data, "Extrato bancário 2025.pdf")
    assert up["size"] == len(data)
    assert up["sha256"] == hashlib.sha256(data).hexdigest()
    assert up["name"] == "Extrato bancário 2025.pdf"
    assert up["message_id"] is None
    # The stored bytes are ciphertext, named by their digest.
    row = await attachment_repo.get(ar.node.runtime.ctx.db, up["id"])
    assert row is not None
    stored = ar.node.runtime.ctx.blobs.path(row.blob_sha256).read_bytes()
    assert hashlib.sha256(stored).digest() == row.blob_sha256
    assert data[:4096] not in stored

    empty = await upload(ar, b"", "")
    assert (empty["size"], empty["name"]) == (0, "attachment")

    message_id = await send_with_files(ar, br, up["id"], empty["id"])
    assert (await ar.get(f"/api/v1/attachments/{up['id']}")).body["message_id"] == message_id

    view = await br.get(f"/api/v1/requests/{message_id}")
    assert view.body["attachments"] == [
        {"n": 0, "name": up["name"], "size": len(data), "sha256": up["sha256"]},
        {"n": 1, "name": "attachment", "size": 0, "sha256": hashlib.sha256(b"").hexdigest()},
    ]
    status, headers, got = await download(br, message_id, 0)
    assert status == 200 and got == data
    assert (
        headers["Repr-Digest"]
        == f"sha-256=:{base64.b64encode(hashlib.sha256(data).digest()).decode()}:"
    )
    assert headers["Content-Disposition"] == (
        'attachment; filename="Extrato banc_rio 2025.pdf"; '
        "filename*=UTF-8''Extrato%20banc%C3%A1rio%202025.pdf"
    )
    status, _, got = await download(br, message_id, 1)
    assert (status, got) == (200, b"")
    # The sender's clerks see their own files too.
    assert (await download(ar, message_id, 0))[2] == data
    # Downloads are user actions in the log.
    log = await br.get("/api/v1/audit/log?limit=500", role="auditor")
    details = [i.get("detail") for i in log.body["items"] if i.get("event") == "viewed"]
    assert "attachment:0" in details and "attachment:1" in details


async def test_a_stored_file_unlike_its_record_is_never_served_whole(ar: Api, br: Api) -> None:
    """Every chunk's tag is checked as it is read, and the plaintext's digest before the last
    chunk leaves: a file whose record names another digest is an error answer when it has one
    chunk, a cut download when it has more; a damaged first chunk is an error answer."""
    one = await upload(ar, b"short evidence")
    three = await upload(ar, os.urandom(2 * (1 << 20) + 5))
    damaged = await upload(ar, b"damaged on disk")
    message_id = await send_with_files(ar, br, one["id"], three["id"], damaged["id"])
    ctx = br.node.runtime.ctx

    async def record_another_digest(tx: Any) -> None:
        await tx.execute(
            "UPDATE attachments SET sha256 = ? WHERE message_id = ? AND position < 2",
            (bytes(32), message_id),
        )

    await ctx.db.write(record_another_digest)
    reply = await br.get(f"/api/v1/requests/{message_id}/attachments/0")
    assert reply.status == 503 and reply.problem()["code"] == "blob_corrupt"
    with pytest.raises(aiohttp.ClientPayloadError):
        await download(br, message_id, 1)

    rows = await attachment_repo.for_message(ctx.db, message_id)
    stored = ctx.blobs.path(rows[2].blob_sha256)
    data = bytearray(stored.read_bytes())
    data[-20] ^= 1  # inside the first (and only) chunk's ciphertext
    stored.chmod(0o600)
    stored.write_bytes(bytes(data))
    reply = await br.get(f"/api/v1/requests/{message_id}/attachments/2")
    assert reply.status == 503 and reply.problem()["code"] == "blob_corrupt"
    # The intact file of the same request is still served whole.
    assert (await download(ar, message_id, 0))[2] == b"short evidence"


async def test_who_may_download(ar: Api, br: Api) -> None:
    up = await upload(ar, b"sensitive")
    message_id = await send_with_files(ar, br, up["id"])
    assert (await download(br, message_id, 0, "admin"))[0] == 200
    # An auditor sees size and digest, not the name, and may not download.
    view = await br.get(f"/api/v1/requests/{message_id}", role="auditor")
    assert view.body["attachments"][0]["name"] is None
    assert view.body["attachments"][0]["sha256"] == up["sha256"]
    reply = await br.get(f"/api/v1/requests/{message_id}/attachments/0", role="auditor")
    assert reply.status == 403 and reply.problem()["code"] == "forbidden"
    ctx = br.node.runtime.ctx
    ctx.config = ctx.config.model_copy(
        update={"audit": ctx.config.audit.model_copy(update={"auditors_see_content": True})}
    )
    try:
        assert (await download(br, message_id, 0, "auditor"))[2] == b"sensitive"
    finally:
        ctx.config = ctx.config.model_copy(
            update={"audit": ctx.config.audit.model_copy(update={"auditors_see_content": False})}
        )


async def test_a_file_is_used_once_and_must_exist(ar: Api, br: Api) -> None:
    up = await upload(ar, b"once")
    await send_with_files(ar, br, up["id"])
    body = {"type": "mla_request", "to": "BR", "form": forms.example("mla_request")}
    for attachments, field in (
        ([up["id"]], "attachments.0"),  # used already
        (["01ARZ3NDEKTSV4RRFFQ69G5FAV"], "attachments.0"),  # never uploaded
        (["nope"], "attachments.0"),
        ([up["id"], up["id"]], "attachments.1"),
        ("x", "attachments"),
    ):
        reply = await ar.post("/api/v1/requests", {**body, "attachments": attachments})
        assert reply.status == 422, reply.body
        assert reply.problem()["code"] == "form_invalid"
        assert field in [e["field"] for e in reply.problem()["errors"]]


async def test_bad_uploads_are_refused_and_leave_nothing(ar: Api) -> None:
    ctx = ar.node.runtime.ctx
    reply = await ar(
        "POST", "/api/v1/attachments", data=b"x", headers={"Content-Type": "text/plain"}
    )
    assert (reply.status, reply.problem()["code"]) == (415, "unsupported_media_type")
    assert (await ar.get("/api/v1/attachments/01ARZ3NDEKTSV4RRFFQ69G5FAV")).status == 404
    assert (await ar.get("/api/v1/requests/01ARZ3NDEKTSV4RRFFQ69G5FAV/attachments/x")).status == 400
    assert (await ar.get("/api/v1/requests/01ARZ3NDEKTSV4RRFFQ69G5FAV/attachments/0")).status == 404
    for expect in (b"", b"Expect: 100-continue\r\n"):
        head = b"Content-Type: application/octet-stream\r\n" + expect
        head += f"Authorization: Bearer {ar.node.tokens['clerk']}\r\n".encode()
        status, problem = await _declared(ar, head, 1 << 50)
        assert (status, problem["code"]) == (413, "payload_too_large")
    # A chunked body is cut off as soon as it passes the limit; its temporary file goes.
    small = ctx.config.clerk_api.model_copy(update={"max_attachment_bytes": 3 << 20})
    ctx.config = ctx.config.model_copy(update={"clerk_api": small})
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(64):
            sent += 1 << 20
            yield b"\0" * (1 << 20)

    try:
        async with ar.node.http.post(
            ar.base + "/api/v1/attachments", data=endless(), headers={**ar.auth("clerk"), **OCTET}
        ) as resp:
            assert resp.status == 413
    finally:
        ctx.config = ctx.config.model_copy(
            update={"clerk_api": small.model_copy(update={"max_attachment_bytes": 64 << 30})}
        )
    assert sent < 64 << 20
    assert list((ctx.blobs.root / "tmp").iterdir()) == []


async def _declared(api: Api, head: bytes, length: int) -> tuple[int, dict[str, Any]]:
    """Send headers declaring ``length`` bytes, and no body; the status and problem."""
    host, port = api.base.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        start = f"POST /api/v1/attachments HTTP/1.1\r\nHost: {host}\r\nContent-Length: {length}\r\n"
        writer.write(start.encode() + head + b"\r\n")
        await writer.drain()
        status_line = await reader.readline()
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers["content-length"]))
    finally:
        writer.close()
    return int(status_line.split()[1]), json.loads(body)
