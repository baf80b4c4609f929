"""Handling codes and use restrictions (issue 5, item 8): they travel inside the signed envelope,
the receiver shows them, a follow-up never lowers them, and a disclosed export carries them."""

from __future__ import annotations

import pytest

from mla_node.protocol import forms
from mla_node.protocol.bundle import verify_bundle
from mla_node.protocol.directory import TrustRoot
from tests.api.speckit import Api, wait_for_status

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _submit(ar: Api, handling: str | None) -> str:
    body = {"type": "provisional_arrest", "to": "BR", "form": forms.example("provisional_arrest")}
    if handling is not None:
        body["handling"] = handling
    created = await ar.post("/api/v1/requests", body)
    assert created.status == 201, created.body
    message_id: str = created.body["id"]
    await wait_for_status(ar, message_id, "delivered")
    return message_id


async def test_the_handling_code_travels_and_the_receiver_shows_it(ar: Api, br: Api) -> None:
    sent = await _submit(ar, "strictly_confidential")
    mine = await ar.get(f"/api/v1/requests/{sent}")
    theirs = await br.get(f"/api/v1/requests/{sent}")
    assert mine.body["handling"] == theirs.body["handling"] == "strictly_confidential"
    listed = await br.get("/api/v1/requests?box=inbox")
    assert {m["id"]: m["handling"] for m in listed.body["items"]}[sent] == "strictly_confidential"

    default = await _submit(ar, None)
    assert (await br.get(f"/api/v1/requests/{default}")).body["handling"] == "confidential"


async def test_a_follow_up_is_never_handled_less_strictly_than_its_case(ar: Api, br: Api) -> None:
    sent = await _submit(ar, "strictly_confidential")
    for asked in (None, "ordinary"):
        body = {"type": "status_inquiry", "form": forms.example("status_inquiry")}
        if asked is not None:
            body["handling"] = asked
        reply = await br.post(f"/api/v1/requests/{sent}/replies", body)
        assert reply.status == 201, reply.body
        assert reply.body["handling"] == "strictly_confidential"


async def test_an_unknown_handling_code_is_refused_naming_the_field(ar: Api) -> None:
    body = {
        "type": "mla_request",
        "to": "BR",
        "form": forms.example("mla_request"),
        "handling": "top_secret",
    }
    reply = await ar.post("/api/v1/requests", body)
    assert reply.status == 422
    assert [p["field"] for p in reply.problem()["errors"]] == ["handling"]


async def test_a_disclosed_export_is_stamped_with_handling_and_use_restriction(ar: Api) -> None:
    body = {"type": "mla_request", "to": "BR", "form": forms.example("mla_request")}
    created = await ar.post("/api/v1/requests", body)
    sent = created.body["id"]
    await wait_for_status(ar, sent, "delivered")
    async with ar.node.http.get(
        f"{ar.base}/api/v1/audit/bundles/{sent}", headers=ar.auth("clerk")
    ) as resp:
        data = await resp.read()
    trust = TrustRoot.from_json(ar.node.runtime.ctx.config.trust_root_path.read_bytes())
    account = "\n".join(verify_bundle(data, trust).account())
    purpose = forms.example("mla_request")["stated_purpose"]
    assert f"HANDLING CONFIDENTIAL; USE RESTRICTED TO: {purpose}" in account
