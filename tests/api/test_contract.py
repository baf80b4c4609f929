"""Every example in the document is accepted by a real node, and real answers match the document.

Every call goes through ``speckit.Api``, which validates each answer against the document's
response schema for that operation and status (and refuses undocumented statuses and any 500).
"""

from __future__ import annotations

import pytest

from mla_node.api.openapi import openapi_document
from mla_node.protocol import forms
from tests.api.speckit import SPEC, Api, delivered, example_values, wait_for_status

pytestmark = pytest.mark.asyncio(loop_scope="module")

REQUESTS = "/api/v1/requests"


async def test_every_request_example_is_accepted(ar: Api) -> None:
    examples = example_values("POST", REQUESTS)
    assert {e["type"] for e in examples.values()} == forms.REQUEST_TYPES
    for name, body in examples.items():
        assert body["to"] == "BR", "the examples are addressed to Brazil"
        reply = await ar.post(REQUESTS, body)
        assert reply.status == 201, (name, reply.body)
        assert reply.headers["Location"] == f"{REQUESTS}/{reply.body['id']}"
        assert "Idempotent-Replayed" not in reply.headers
        assert reply.body["type"] == body["type"]
        assert (reply.body["box"], reply.body["from"], reply.body["to"]) == ("outbox", "AR", "BR")
        assert reply.body["case_id"] == reply.body["id"]
        assert reply.body["in_reply_to"] is None
        await wait_for_status(ar, reply.body["id"], "delivered")


async def test_every_follow_up_example_is_accepted(ar: Api, br: Api) -> None:
    request_id = await delivered(ar, br)
    examples = example_values("POST", REQUESTS + "/{id}/replies")
    assert {e["type"] for e in examples.values()} == forms.FOLLOW_UP_TYPES
    for name, body in examples.items():
        # Each follow-up is answered by whichever side would send it; the API lets either.
        reply = await br.post(f"{REQUESTS}/{request_id}/replies", body)
        assert reply.status == 201, (name, reply.body)
        assert reply.body["in_reply_to"] == request_id
        assert reply.body["case_id"] == request_id
        assert (reply.body["from"], reply.body["to"]) == ("BR", "AR")
        await wait_for_status(br, reply.body["id"], "delivered")
    # AR sees the whole thread, every message validating against the document
    view = await ar.get(f"{REQUESTS}/{request_id}")
    assert sorted(m["type"] for m in view.body["thread"][1:]) == sorted(forms.FOLLOW_UP_TYPES)


async def test_every_acknowledge_example_is_accepted(ar: Api, br: Api) -> None:
    examples = example_values("POST", REQUESTS + "/{id}/acknowledge")
    assert examples
    for name, body in examples.items():
        request_id = await delivered(ar, br)
        reply = await br.post(f"{REQUESTS}/{request_id}/acknowledge", body)
        assert reply.status == 201, (name, reply.body)
        assert reply.body["type"] == "acknowledgement"


async def test_views_of_both_sides_match_the_document(ar: Api, br: Api) -> None:
    request_id = await delivered(ar, br, "extradition_request")
    sent = await ar.get(f"{REQUESTS}/{request_id}")
    assert sent.status == 200
    assert sent.body["receipt"]["verified"] is True
    assert sent.body["receipt"]["signed_by"] == "BR"
    assert [e["event"] for e in sent.body["evidence"]] == ["submitted", "delivered"]
    assert sent.body["form"] == forms.example("extradition_request")

    received = await br.get(f"{REQUESTS}/{request_id}")  # a clerk opens it: retrieved
    assert received.body["box"] == "inbox"
    assert received.body["status"] == "retrieved"
    assert received.body["envelope_sha256"] == sent.body["envelope_sha256"]
    assert [e["event"] for e in received.body["evidence"]] == ["delivered", "retrieved"]

    ack = await br.post(f"{REQUESTS}/{request_id}/acknowledge")
    assert ack.status == 201
    acknowledgement = await br.get(f"{REQUESTS}/{ack.body['id']}")
    assert acknowledgement.body["form"]["central_authority_reference"] == request_id


async def test_use_restriction_is_shown_and_carried(ar: Api, br: Api) -> None:
    request_id = await delivered(ar, br)
    body = example_values("POST", REQUESTS + "/{id}/replies")["execution_result"]
    result = await br.post(f"{REQUESTS}/{request_id}/replies", body)
    await wait_for_status(br, result.body["id"], "delivered")
    view = await ar.get(f"{REQUESTS}/{result.body['id']}")
    assert view.body["use_restriction"] == forms.example("mla_request")["stated_purpose"]


@pytest.mark.parametrize("box", ["outbox", "inbox"])
@pytest.mark.parametrize("role", ["clerk", "approver", "auditor", "admin"])
async def test_list_pages_match_the_document(ar: Api, br: Api, box: str, role: str) -> None:
    await delivered(ar, br)
    for api in (ar, br):
        page = await api.get(f"{REQUESTS}?box={box}&limit=200", role=role)
        assert page.status == 200
        assert all(item["box"] == box for item in page.body["items"])


async def test_peers_match_the_document(ar: Api, br: Api) -> None:
    await delivered(ar, br)
    peers = await ar.get("/api/v1/peers", role="auditor")
    assert peers.body["state"] == "AR"
    assert [p["state"] for p in peers.body["peers"]] == ["BR"]
    brazil = peers.body["peers"][0]
    assert brazil["reachable"] is True
    assert {k["use"] for k in brazil["keys"]} == {"sign", "encrypt"}
    assert peers.body["directory"]["expired"] is False


async def test_public_routes_match_the_document(ar: Api) -> None:
    assert (await ar.get("/healthz", role=None)).body == {"status": "ok"}
    ready = await ar.get("/readyz", role=None)
    assert ready.status == 200
    assert ready.body["ready"] is True
    served = await ar.get("/openapi.json", role=None)
    assert served.body == openapi_document() == SPEC
