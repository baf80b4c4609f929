"""Uploads no submission named are deleted after ``clerk_api.unsubmitted_upload_s``, with their
encrypted files; submitted ones are never touched (service/attachments.py)."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from mla_node.errors import FormInvalid
from mla_node.protocol import forms
from mla_node.service import attachments, cases
from mla_node.service.context import NodeContext
from mla_node.storage import attachment_repo
from tests.service.memnet import CLERK, ManualClock, memory_network

DAY_S = 24 * 3600


def reader(data: bytes) -> Callable[[int], Awaitable[bytes]]:
    chunks = [data]

    async def read(n: int) -> bytes:
        return chunks.pop() if chunks else b""

    return read


async def submit_naming(ctx: NodeContext, upload_id: str) -> None:
    request = {"type": "mla_request", "to": "BR", "form": forms.example("mla_request")}
    await cases.submit(ctx, CLERK, {**request, "attachments": [upload_id]}, None)


async def test_abandoned_uploads_go_and_submitted_ones_stay(tmp_path: Path) -> None:
    clock = ManualClock()
    async with memory_network(tmp_path, clock=clock) as (nodes, _):
        ar = nodes["AR"].ctx
        old = await attachments.upload(ar, CLERK, reader(os.urandom(5000)), length=None, name="a")
        used = await attachments.upload(ar, CLERK, reader(os.urandom(5000)), length=None, name="b")
        await submit_naming(ar, used.id)
        clock.advance(7 * DAY_S - 60)
        fresh = await attachments.upload(ar, CLERK, reader(os.urandom(10)), length=None, name="c")
        assert await attachments.expire_unsubmitted(ar) == 0  # not a week old yet

        clock.advance(120)
        assert await attachments.expire_unsubmitted(ar) == 1
        assert await attachment_repo.get(ar.db, old.id) is None
        assert not ar.blobs.path(old.blob_sha256).exists()  # its encrypted file too
        assert ar.blobs.path(used.blob_sha256).exists()  # submitted: kept
        assert await attachment_repo.get(ar.db, fresh.id) is not None  # younger: kept
        assert await attachments.expire_unsubmitted(ar) == 0  # nothing more to do

        with pytest.raises(FormInvalid):  # a submission naming the expired upload is refused
            await submit_naming(ar, old.id)
