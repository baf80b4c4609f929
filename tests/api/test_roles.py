"""Who may call what: every route and every role, against a literal table.

The table is written out by hand on purpose: it is the access policy as a reviewer reads it, and
a change to ``POLICY`` that does not change this table fails here.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_asyncio

from mla_node.protocol import forms
from tests.api.speckit import Api
from tests.api.test_attachments import send_with_files, upload
from tests.api.test_openapi import app_routes

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROLES = ("clerk", "approver", "auditor", "admin", None, "bad")

# fmt: off
#                                                   clerk approver auditor admin  none  bad token
MATRIX: dict[tuple[str, str], tuple[int, int, int, int, int, int]] = {
    ("POST", "/api/v1/requests"):                   (201,  403,     403,    403,   401,  401),
    ("GET",  "/api/v1/requests"):                   (200,  200,     200,    200,   401,  401),
    ("GET",  "/api/v1/requests/{id}"):              (200,  200,     200,    200,   401,  401),
    ("POST", "/api/v1/requests/{id}/replies"):      (201,  403,     403,    403,   401,  401),
    ("POST", "/api/v1/requests/{id}/acknowledge"):  (201,  403,     403,    403,   401,  401),
    # resend: the admin may, but a received request is not an undeliverable one of ours: 409
    ("POST", "/api/v1/requests/{id}/resend"):       (403,  403,     403,    409,   401,  401),
    ("POST", "/api/v1/requests/{id}/hold"):         (403,  403,     403,    200,   401,  401),
    ("DELETE", "/api/v1/requests/{id}/hold"):       (403,  403,     403,    200,   401,  401),
    ("GET",  "/api/v1/peers"):                      (200,  200,     200,    200,   401,  401),
    ("GET",  "/api/v1/audit/checkpoints"):          (403,  403,     200,    200,   401,  401),
    ("POST", "/api/v1/audit/checkpoints"):          (403,  403,     200,    200,   401,  401),
    ("GET",  "/api/v1/audit/log"):                  (403,  403,     200,    200,   401,  401),
    ("GET",  "/api/v1/audit/proofs/inclusion"):     (403,  403,     200,    200,   401,  401),
    ("GET",  "/api/v1/audit/proofs/consistency"):   (403,  403,     200,    200,   401,  401),
    ("GET",  "/api/v1/audit/bundles/{id}"):         (200,  403,     200,    200,   401,  401),
    ("GET",  "/openapi.json"):                      (200,  200,     200,    200,   200,  200),
    ("GET",  "/healthz"):                           (200,  200,     200,    200,   200,  200),
    ("GET",  "/readyz"):                            (200,  200,     200,    200,   200,  200),
    # metrics: counts per peer are worth a token; the read-only auditor's is enough
    ("GET",  "/metrics"):                           (403,  403,     200,    200,   401,  401),
    ("GET",  "/api/v1/alerts"):                     (403,  403,     403,    200,   401,  401),
    ("POST", "/api/v1/attachments"):                (201,  403,     403,    403,   401,  401),
    # the clerk may, but {id} is the received request's, not an upload's: 404
    ("GET",  "/api/v1/attachments/{id}"):           (404,  403,     403,    403,   401,  401),
    # whoever sees the form: an auditor only with audit.auditors_see_content (off here)
    ("GET",  "/api/v1/requests/{id}/attachments/{n}"): (200, 200,   403,    200,   401,  401),
}
# fmt: on

QUERIES: dict[tuple[str, str], str] = {
    ("GET", "/api/v1/audit/proofs/inclusion"): "?seq=1",
    ("GET", "/api/v1/audit/proofs/consistency"): "?from=1&to=1",
}

BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/api/v1/requests"): {
        "type": "mla_request",
        "to": "AR",
        "form": forms.example("mla_request"),
    },
    ("POST", "/api/v1/requests/{id}/replies"): {
        "type": "status_inquiry",
        "form": forms.example("status_inquiry"),
    },
}


async def test_the_table_covers_every_route() -> None:
    assert set(MATRIX) == app_routes()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def received(ar: Api, br: Api) -> str:
    """A request Brazil received from Argentina, with one evidence file; only the table's one
    clerk call acknowledges it."""
    up = await upload(ar, b"%PDF-1.7 records")
    return await send_with_files(ar, br, up["id"])


@pytest.mark.parametrize("role", ROLES, ids=[str(r) for r in ROLES])
@pytest.mark.parametrize(("method", "template"), list(MATRIX), ids=[f"{m} {t}" for m, t in MATRIX])
async def test_role_matrix(
    br: Api, received: str, method: str, template: str, role: str | None
) -> None:
    expected = MATRIX[(method, template)][ROLES.index(role)]
    path = template.replace("{id}", received).replace("{n}", "0")
    path += QUERIES.get((method, template), "")
    file = (method, template) == ("POST", "/api/v1/attachments")
    reply = await br(
        method,
        path,
        role=role,
        json_body=BODIES.get((method, template)),
        data=b"evidence" if file else None,
        headers={"Content-Type": "application/octet-stream"} if file else None,
    )
    assert reply.status == expected, reply.body
    if expected == 401:
        assert reply.problem()["code"] == "unauthenticated"
    if expected == 403:
        assert reply.problem()["code"] == "forbidden"


@pytest.mark.parametrize(
    "authorization",
    ["", "Bearer", "Bearer ", "bearer {token}", "Basic {token}", "Bearer {token}x", "{token}"],
)
async def test_malformed_authorization_is_401(br: Api, authorization: str) -> None:
    header = authorization.format(token=br.node.tokens["clerk"])
    reply = await br.get("/api/v1/requests", role=None, headers={"Authorization": header})
    assert reply.status == 401
    assert reply.problem()["code"] == "unauthenticated"
