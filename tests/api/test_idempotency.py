"""Idempotency-Key: a clerk's retries, however many and however concurrent, send one request."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from mla_node.protocol import forms
from mla_node.service.tokens import create_token
from tests.api.speckit import Api, Reply, delivered

pytestmark = pytest.mark.asyncio(loop_scope="module")

REQUESTS = "/api/v1/requests"


def body(form_type: str = "mla_request", **changes: Any) -> dict[str, Any]:
    return {"type": form_type, "to": "BR", "form": {**forms.example(form_type), **changes}}


async def outbox_ids(api: Api) -> list[str]:
    ids: list[str] = []
    cursor = ""
    while True:
        page = await api.get(f"{REQUESTS}?limit=200{cursor}", role="auditor")
        ids += [item["id"] for item in page.body["items"]]
        if page.body["next_cursor"] is None:
            return ids
        cursor = f"&cursor={page.body['next_cursor']}"


async def post(api: Api, payload: Any, key: str, role: str = "clerk") -> Reply:
    return await api.post(REQUESTS, payload, role=role, headers={"Idempotency-Key": key})


async def test_a_hundred_concurrent_retries_create_one_request(ar: Api) -> None:
    before = await outbox_ids(ar)
    key = str(uuid.uuid4())
    replies = await asyncio.gather(*(post(ar, body(), key) for _ in range(100)))
    assert {r.status for r in replies} == {201}
    ids = {r.body["id"] for r in replies}
    assert len(ids) == 1
    (message_id,) = ids
    assert {r.headers["Location"] for r in replies} == {f"{REQUESTS}/{message_id}"}
    fresh = [r for r in replies if "Idempotent-Replayed" not in r.headers]
    assert len(fresh) == 1, "exactly one call created it; the others were replays"
    assert all(r.body == fresh[0].body for r in replies)
    after = await outbox_ids(ar)
    assert after[0] == message_id
    assert after[1:] == before, "one new message in the outbox, nothing else"
    view = await ar.get(f"{REQUESTS}/{message_id}")
    assert [e["event"] for e in view.body["evidence"]][:1] == ["submitted"]
    assert [e["event"] for e in view.body["evidence"]].count("submitted") == 1


async def test_a_later_retry_is_replayed(ar: Api) -> None:
    key = str(uuid.uuid4())
    first = await post(ar, body(), key)
    again = await post(ar, body(), key)
    assert (first.status, again.status) == (201, 201)
    assert again.body == first.body
    assert again.headers["Idempotent-Replayed"] == "true"


async def test_the_same_key_with_another_body_is_refused(ar: Api) -> None:
    key = str(uuid.uuid4())
    first = await post(ar, body(), key)
    assert first.status == 201
    before = await outbox_ids(ar)
    for other in (body(urgency="urgent"), body("extradition_request"), {**body(), "to": "ZZ"}):
        reply = await post(ar, other, key)
        assert reply.status == 422, reply.body
        assert reply.problem()["code"] == "idempotency_key_reused"
        assert reply.body["field"] == "Idempotency-Key"
    assert await outbox_ids(ar) == before


async def test_concurrent_different_bodies_with_one_key_create_one_request(ar: Api) -> None:
    key = str(uuid.uuid4())
    before = await outbox_ids(ar)
    bodies = [body(case_reference=f"FCR {i}/2024") for i in range(20)]
    replies = await asyncio.gather(*(post(ar, b, key) for b in bodies))
    created = [r for r in replies if r.status == 201]
    assert len(created) == 1
    assert {r.status for r in replies} == {201, 422}
    assert len(await outbox_ids(ar)) == len(before) + 1


async def test_keys_are_per_token(ar: Api) -> None:
    _, secret = await create_token(
        ar.node.runtime.ctx.db,
        "clerk",
        "second clerk",
        0,
        signer=ar.node.runtime.ctx.identity.signing_key,
        state="AR",
    )
    ar.node.tokens["clerk2"] = secret
    key = str(uuid.uuid4())
    mine = await post(ar, body(), key)
    theirs = await post(ar, body(), key, role="clerk2")
    assert (mine.status, theirs.status) == (201, 201)
    assert mine.body["id"] != theirs.body["id"]
    assert "Idempotent-Replayed" not in theirs.headers


async def test_without_a_key_each_call_is_a_new_request(ar: Api) -> None:
    first = await ar.post(REQUESTS, body())
    second = await ar.post(REQUESTS, body())
    assert first.body["id"] != second.body["id"]


async def test_replies_are_idempotent_too(ar: Api, br: Api) -> None:
    request_id = await delivered(ar, br)
    inquiry = {"type": "status_inquiry", "form": forms.example("status_inquiry")}
    key = str(uuid.uuid4())
    path = f"{REQUESTS}/{request_id}/replies"
    replies = await asyncio.gather(
        *(ar.post(path, inquiry, headers={"Idempotency-Key": key}) for _ in range(20))
    )
    assert len({r.body["id"] for r in replies}) == 1
    view = await ar.get(f"{REQUESTS}/{request_id}")
    assert [m["type"] for m in view.body["thread"]] == ["mla_request", "status_inquiry"]


async def test_a_key_reused_on_another_request_is_not_a_replay(ar: Api, br: Api) -> None:
    first_request, second_request = await delivered(ar, br), await delivered(ar, br)
    inquiry = {"type": "status_inquiry", "form": forms.example("status_inquiry")}
    key = str(uuid.uuid4())
    first = await ar.post(
        f"{REQUESTS}/{first_request}/replies", inquiry, headers={"Idempotency-Key": key}
    )
    second = await ar.post(
        f"{REQUESTS}/{second_request}/replies", inquiry, headers={"Idempotency-Key": key}
    )
    assert first.body["in_reply_to"] == first_request
    # Either refused as a reused key, or a new reply to the second request: never the first reply.
    assert second.status == 422 or second.body["in_reply_to"] == second_request, second.body
