"""The admin's routes through the real API: resend an undeliverable message, legal holds, and
the 503 every write gets while the node is shutting down. Every answer is checked against the
OpenAPI document by ``speckit``."""

from __future__ import annotations

import pytest

from mla_node.protocol import forms
from mla_node.runtime import NodeRuntime
from tests.api.speckit import Api, delivered, wait_for_status
from tests.netkit import Network

pytestmark = pytest.mark.asyncio(loop_scope="module")

REQUESTS = "/api/v1/requests"
UNKNOWN_ID = "01J00000000000000000000000"


async def undeliverable(ar: Api, net: Network) -> str:
    """A request to a Brazil that is down, given up on: its deadline moved into the past."""
    br = net["BR"]
    await br.runtime.stop()
    try:
        created = await ar.post(
            REQUESTS,
            {"type": "mla_request", "to": "BR", "form": forms.example("mla_request")},
        )
        message_id: str = created.body["id"]
        ctx = ar.node.runtime.ctx
        await ctx.db.write(
            lambda tx: tx.execute(
                "UPDATE outbox SET deadline_at = ? WHERE message_id = ?", (0, message_id)
            )
        )
        ar.node.runtime.deliverer.wake("BR")
        await wait_for_status(ar, message_id, "undeliverable")
    finally:
        br.runtime = await NodeRuntime.start(br.local.config)
    return message_id


async def test_an_admin_resends_an_undeliverable_request(ar: Api, net: Network) -> None:
    message_id = await undeliverable(ar, net)
    view = await ar.get(f"{REQUESTS}/{message_id}", role="auditor")
    assert [e["event"] for e in view.body["evidence"]] == ["submitted", "not_delivered"]
    assert view.body["evidence"][1]["detail"] == "deadline_passed"
    peers = await ar.get("/api/v1/peers", role="admin")
    assert peers.body["peers"][0]["undeliverable"] == 1
    assert peers.body["peers"][0]["deadlines_passed"] >= 1
    listed = await ar.get(f"{REQUESTS}?status=undeliverable", role="admin")
    assert [m["id"] for m in listed.body["items"]] == [message_id]

    for role in ("clerk", "auditor", "approver"):
        refused = await ar.post(f"{REQUESTS}/{message_id}/resend", role=role)
        assert refused.problem()["code"] == "forbidden"
    resent = await ar.post(f"{REQUESTS}/{message_id}/resend", role="admin")
    assert resent.status == 200, resent.body
    assert (resent.body["id"], resent.body["status"]) == (message_id, "queued")
    assert resent.headers["Location"] == f"{REQUESTS}/{message_id}"
    await wait_for_status(ar, message_id, "delivered")
    view = await ar.get(f"{REQUESTS}/{message_id}", role="auditor")
    assert [e["event"] for e in view.body["evidence"]] == [
        "submitted",
        "not_delivered",
        "resent",
        "delivered",
    ]
    assert view.body["receipt"]["verified"] is True
    assert view.body["replaced_by"] is None and view.body["delivery"] is None

    again = await ar.post(f"{REQUESTS}/{message_id}/resend", role="admin")
    assert (again.status, again.problem()["code"]) == (409, "invalid_state")


async def test_resend_of_a_queued_message_shows_its_delivery_state(ar: Api, net: Network) -> None:
    br = net["BR"]
    await br.runtime.stop()
    try:
        created = await ar.post(
            REQUESTS,
            {"type": "mla_request", "to": "BR", "form": forms.example("mla_request")},
        )
        view = await ar.get(f"{REQUESTS}/{created.body['id']}", role="admin")
        assert view.body["status"] == "queued"
        assert view.body["delivery"]["deadline_at"] is not None
        refused = await ar.post(f"{REQUESTS}/{created.body['id']}/resend", role="admin")
        assert (refused.status, refused.problem()["code"]) == (409, "invalid_state")
    finally:
        br.runtime = await NodeRuntime.start(br.local.config)
    await wait_for_status(ar, created.body["id"], "delivered")


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        (f"{REQUESTS}/{UNKNOWN_ID}/resend", 404, "not_found"),
        (f"{REQUESTS}/not-an-id/resend", 400, "invalid_parameter"),
        (f"{REQUESTS}/{UNKNOWN_ID}/hold", 404, "not_found"),
        (f"{REQUESTS}/not-an-id/hold", 400, "invalid_parameter"),
    ],
)
async def test_bad_ids(ar: Api, path: str, status: int, code: str) -> None:
    reply = await ar.post(path, role="admin")
    assert (reply.status, reply.problem()["code"]) == (status, code)


async def test_legal_hold_on_a_case_thread(ar: Api, br: Api) -> None:
    request_id = await delivered(ar, br)
    hold = await br.post(
        f"{REQUESTS}/{request_id}/hold", {"reason": "Tribunal 2, order 44/2025"}, role="admin"
    )
    assert hold.status == 200, hold.body
    assert hold.body["case_id"] == request_id
    assert (hold.body["held"], hold.body["by"]) == (True, "admin-BR")
    view = await br.get(f"{REQUESTS}/{request_id}", role="auditor")
    assert view.body["legal_hold"]["reason"] == "Tribunal 2, order 44/2025"
    same = await br.post(f"{REQUESTS}/{request_id}/hold", role="admin")
    assert same.body == hold.body
    lifted = await br("DELETE", f"{REQUESTS}/{request_id}/hold", role="admin")
    assert lifted.status == 200 and lifted.body["held"] is False
    view = await br.get(f"{REQUESTS}/{request_id}", role="auditor")
    assert view.body["legal_hold"] is None


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        ({"reason": ""}, None, 422, "form_invalid"),
        ({"reason": "x" * 501}, None, 422, "form_invalid"),
        ({"until": "2030-01-01"}, None, 422, "form_invalid"),
        ([], None, 400, "malformed_body"),
        (None, {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
    ],
)
async def test_a_bad_hold_body(
    ar: Api, br: Api, body: object, headers: dict[str, str] | None, status: int, code: str
) -> None:
    request_id = await delivered(ar, br)
    path = f"{REQUESTS}/{request_id}/hold"
    if headers:
        reply = await br("POST", path, role="admin", data="reason", headers=headers)
    else:
        reply = await br.post(path, body, role="admin")
    assert (reply.status, reply.problem()["code"]) == (status, code)


async def test_every_write_is_refused_while_the_node_shuts_down(ar: Api, br: Api) -> None:
    request_id = await delivered(ar, br)
    ctx = br.node.runtime.ctx
    ctx.stopping = True
    try:
        writes = [
            ("POST", REQUESTS, "clerk", {"type": "mla_request", "to": "AR",
                                         "form": forms.example("mla_request")}),
            ("POST", f"{REQUESTS}/{request_id}/replies", "clerk",
             {"type": "status_inquiry", "form": forms.example("status_inquiry")}),
            ("POST", f"{REQUESTS}/{request_id}/acknowledge", "clerk", None),
            ("POST", f"{REQUESTS}/{request_id}/resend", "admin", None),
            ("POST", f"{REQUESTS}/{request_id}/hold", "admin", None),
            ("DELETE", f"{REQUESTS}/{request_id}/hold", "admin", None),
        ]  # fmt: skip
        for method, path, role, body in writes:
            reply = await br(method, path, role=role, json_body=body)
            assert (reply.status, reply.problem()["code"]) == (503, "shutting_down"), path
        assert (await br.get(f"{REQUESTS}/{request_id}", role="auditor")).status == 200
        assert (await br.get("/api/v1/peers")).status == 200
        ready = await br.node.runtime.readiness()  # what GET /readyz answers, with a 503
        assert (ready["ready"], ready["checks"]["sender"]) == (False, "shutting_down")
        # Unauthenticated is still 401 first: the shutdown says nothing to strangers.
        assert (await br.post(REQUESTS, {}, role=None)).status == 401
    finally:
        ctx.stopping = False
    acknowledged = await br.post(f"{REQUESTS}/{request_id}/acknowledge")
    assert acknowledged.status == 201
