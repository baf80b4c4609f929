"""The problem+json shape is pinned, and bad input of every kind gets a 4xx problem, never a 500.

Like datasette's tests/test_error_shape.py: clients key on these exact fields and codes, so a
change here is a breaking change of the API and must be made on purpose.
"""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import pytest

from mla_node.protocol import forms
from tests.api.speckit import PROBLEM_JSON, Api, Reply, delivered

pytestmark = pytest.mark.asyncio(loop_scope="module")

REQUESTS = "/api/v1/requests"
BASE_KEYS = {"type", "title", "status", "detail", "code"}


def mla_request(**form_changes: Any) -> dict[str, Any]:
    form = {**forms.example("mla_request"), **form_changes}
    return {"type": "mla_request", "to": "BR", "form": form}


def assert_problem(reply: Reply, status: int, code: str, keys: set[str] | None = None) -> None:
    assert reply.status == status, reply.body
    assert reply.content_type == PROBLEM_JSON
    body = reply.problem()
    assert set(body) == (keys or BASE_KEYS), body
    assert body["code"] == code
    assert body["status"] == status
    assert body["type"] == f"/problems/{code}"
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]


# --- the shape ----------------------------------------------------------------------------------


async def test_a_form_with_several_bad_fields_names_every_one(ar: Api) -> None:
    body = mla_request(language="xx", assistance_sought=[], deadline="31/12/2025", colour="red")
    del body["form"]["case_reference"]
    body["form"]["contact_officer"] = {**body["form"]["contact_officer"], "email": "lucia at home"}
    reply = await ar.post(REQUESTS, body)
    assert_problem(reply, 422, "form_invalid", BASE_KEYS | {"errors", "field"})
    assert reply.body["field"] == reply.body["errors"][0]["field"]
    assert {(e["field"], e["code"]) for e in reply.body["errors"]} == {
        ("form.case_reference", "missing"),
        ("form.language", "invalid_value"),
        ("form.assistance_sought", "too_short"),
        ("form.deadline", "invalid_date"),
        ("form.colour", "extra_field"),
        ("form.contact_officer.email", "invalid_format"),
    }
    for error in reply.body["errors"]:
        assert set(error) == {"field", "code", "message"}
        assert error["message"].endswith(".")
        assert "lucia at home" not in error["message"], "a form's contents never echo back"


async def test_bad_outer_fields_are_all_named_too(ar: Api) -> None:
    reply = await ar.post(REQUESTS, {"type": "mla", "to": "brazil", "form": [], "urgent": True})
    assert_problem(reply, 422, "form_invalid", BASE_KEYS | {"errors", "field"})
    assert {(e["field"], e["code"]) for e in reply.body["errors"]} == {
        ("urgent", "extra_field"),
        ("type", "invalid_value"),
        ("to", "invalid_value"),
        ("form", "invalid_type"),
    }


async def test_a_list_position_is_part_of_the_field(ar: Api) -> None:
    form = forms.example("mla_request")
    measures = [form["assistance_sought"][0], {"kind": "teleportation", "description": ""}]
    reply = await ar.post(REQUESTS, mla_request(assistance_sought=measures))
    assert {(e["field"], e["code"]) for e in reply.body["errors"]} == {
        ("form.assistance_sought.1.kind", "invalid_value"),
        ("form.assistance_sought.1.description", "too_short"),
    }


async def test_unknown_version_names_the_field_and_the_known_versions(ar: Api) -> None:
    reply = await ar.post(REQUESTS, {**mla_request(), "version": 99})
    assert_problem(reply, 422, "unknown_form_type", BASE_KEYS | {"field", "known_versions"})
    assert reply.body["field"] == "version"
    assert reply.body["known_versions"] == [1]


async def test_a_bad_parameter_names_the_field(ar: Api) -> None:
    reply = await ar.get(f"{REQUESTS}?limit=0")
    assert_problem(reply, 400, "invalid_parameter", BASE_KEYS | {"field"})
    assert reply.body["field"] == "limit"


async def test_unauthenticated_and_forbidden(ar: Api) -> None:
    assert_problem(await ar.get(REQUESTS, role=None), 401, "unauthenticated")
    assert_problem(await ar.get(REQUESTS, role="bad"), 401, "unauthenticated")
    assert_problem(await ar.post(REQUESTS, mla_request(), role="auditor"), 403, "forbidden")


async def test_unknown_route_and_method(ar: Api) -> None:
    assert_problem(await ar.get("/api/v1/nothing-here"), 404, "not_found")
    assert_problem(await ar("DELETE", REQUESTS), 405, "method_not_allowed")


async def test_method_not_allowed_says_what_is_allowed(ar: Api) -> None:
    reply = await ar("DELETE", REQUESTS)
    assert set(reply.headers.get("Allow", "").split(",")) >= {"GET", "POST"}


# --- bad input, never a 500 ---------------------------------------------------------------------

JSON_HEADERS = {"Content-Type": "application/json"}
DEEP = "[" * 100_000 + "]" * 100_000

# (name, method, path, raw body or None, extra headers, expected status, expected code, field)
BAD_INPUT: list[tuple[str, str, str, str | bytes | None, dict[str, str], int, str, str | None]] = [
    ("no body", "POST", REQUESTS, None, {}, 400, "malformed_body", None),
    ("empty body", "POST", REQUESTS, "", JSON_HEADERS, 400, "malformed_body", None),
    ("malformed JSON", "POST", REQUESTS, '{"type": ', JSON_HEADERS, 400, "malformed_body", None),
    ("trailing junk", "POST", REQUESTS, "{} {}", JSON_HEADERS, 400, "malformed_body", None),
    ("not UTF-8", "POST", REQUESTS, b'{"a": "\xff"}', JSON_HEADERS, 400, "malformed_body", None),
    ("array", "POST", REQUESTS, "[]", JSON_HEADERS, 400, "malformed_body", None),
    ("string", "POST", REQUESTS, '"mla_request"', JSON_HEADERS, 400, "malformed_body", None),
    ("number", "POST", REQUESTS, "42", JSON_HEADERS, 400, "malformed_body", None),
    ("null", "POST", REQUESTS, "null", JSON_HEADERS, 400, "malformed_body", None),
    ("deeply nested", "POST", REQUESTS, DEEP, JSON_HEADERS, 400, "malformed_body", None),
    (
        "text/plain",
        "POST",
        REQUESTS,
        "{}",
        {"Content-Type": "text/plain"},
        415,
        "unsupported_media_type",
        None,
    ),
    (
        "form-encoded",
        "POST",
        REQUESTS,
        "type=mla_request",
        {"Content-Type": "application/x-www-form-urlencoded"},
        415,
        "unsupported_media_type",
        None,
    ),
    ("unknown query", "GET", f"{REQUESTS}?sort=id", None, {}, 400, "invalid_parameter", "sort"),
    ("bad box", "GET", f"{REQUESTS}?box=trash", None, {}, 400, "invalid_parameter", "box"),
    ("limit 0", "GET", f"{REQUESTS}?limit=0", None, {}, 400, "invalid_parameter", "limit"),
    ("limit 201", "GET", f"{REQUESTS}?limit=201", None, {}, 400, "invalid_parameter", "limit"),
    ("limit -1", "GET", f"{REQUESTS}?limit=-1", None, {}, 400, "invalid_parameter", "limit"),
    ("limit text", "GET", f"{REQUESTS}?limit=ten", None, {}, 400, "invalid_parameter", "limit"),
    ("limit empty", "GET", f"{REQUESTS}?limit=", None, {}, 400, "invalid_parameter", "limit"),
    ("bad status", "GET", f"{REQUESTS}?status=sent", None, {}, 400, "invalid_parameter", "status"),
    ("bad type", "GET", f"{REQUESTS}?type=letter", None, {}, 400, "invalid_parameter", "type"),
    ("bad peer", "GET", f"{REQUESTS}?peer=br", None, {}, 400, "invalid_parameter", "peer"),
    (
        "limit huge",
        "GET",
        f"{REQUESTS}?limit={'9' * 5000}",
        None,
        {},
        400,
        "invalid_parameter",
        "limit",
    ),
    ("bad cursor", "GET", f"{REQUESTS}?cursor=abc", None, {}, 400, "invalid_parameter", "cursor"),
    (
        "bad case",
        "GET",
        f"{REQUESTS}?case=1%27%20OR%201=1",
        None,
        {},
        400,
        "invalid_parameter",
        "case",
    ),
    ("short id", "GET", f"{REQUESTS}/abc", None, {}, 400, "invalid_parameter", "id"),
    (
        "lowercase id",
        "GET",
        f"{REQUESTS}/01jabcdefghjkmnpqrstvwxyz0",
        None,
        {},
        400,
        "invalid_parameter",
        "id",
    ),
    (
        "id with I",
        "GET",
        f"{REQUESTS}/01IIIIIIIIIIIIIIIIIIIIIIII",
        None,
        {},
        400,
        "invalid_parameter",
        "id",
    ),
    ("id too long", "GET", f"{REQUESTS}/{'0' * 27}", None, {}, 400, "invalid_parameter", "id"),
    ("id NUL", "GET", f"{REQUESTS}/%00", None, {}, 400, "invalid_parameter", "id"),
    ("unknown id", "GET", f"{REQUESTS}/{'0' * 26}", None, {}, 404, "not_found", "id"),
    (
        "reply bad id",
        "POST",
        f"{REQUESTS}/abc/replies",
        "{}",
        JSON_HEADERS,
        400,
        "invalid_parameter",
        "id",
    ),
    (
        "reply unknown id",
        "POST",
        f"{REQUESTS}/{'0' * 26}/replies",
        "{}",
        JSON_HEADERS,
        404,
        "not_found",
        "id",
    ),
    ("ack bad id", "POST", f"{REQUESTS}/abc/acknowledge", None, {}, 400, "invalid_parameter", "id"),
    (
        "ack unknown id",
        "POST",
        f"{REQUESTS}/{'0' * 26}/acknowledge",
        None,
        {},
        404,
        "not_found",
        "id",
    ),
    (
        "idempotency key too long",
        "POST",
        REQUESTS,
        "{}",
        {**JSON_HEADERS, "Idempotency-Key": "k" * 256},
        400,
        "invalid_parameter",
        "Idempotency-Key",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "data", "headers", "status", "code", "field"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_INPUT],
)
async def test_bad_input_gets_a_problem_not_a_500(
    ar: Api,
    method: str,
    path: str,
    data: str | bytes | None,
    headers: dict[str, str],
    status: int,
    code: str,
    field: str | None,
) -> None:
    reply = await ar(method, path, data=data, headers=headers)
    assert reply.status == status, reply.body
    assert reply.problem()["code"] == code
    assert reply.body.get("field") == field


@pytest.mark.parametrize("bad_type", [[], {"x": 1}], ids=["list", "object"])
async def test_an_unhashable_type_is_a_form_problem(ar: Api, bad_type: object) -> None:
    reply = await ar.post(REQUESTS, {"type": bad_type, "to": "BR", "form": {}})
    assert reply.status == 422


async def test_a_body_over_the_limit_is_413(ar: Api) -> None:
    limit = ar.node.local.config.clerk_api.max_body_bytes
    body = json.dumps(mla_request(summary_of_facts="x" * limit)).encode()
    reply = await ar("POST", REQUESTS, data=io.BytesIO(body), headers=JSON_HEADERS)
    assert_problem(reply, 413, "payload_too_large")
    # and the node is fine afterwards
    assert (await ar.post(REQUESTS, mla_request())).status == 201


async def test_a_form_too_large_to_seal_is_413_naming_the_form(ar: Api) -> None:
    # Within every field's limits and under the body limit, but 3-byte characters make the sealed
    # (padded) envelope larger than a node accepts.
    measures = [{"kind": "other", "description": "漢" * 4000}] * 50
    body = json.dumps(mla_request(assistance_sought=measures), ensure_ascii=False).encode()
    assert len(body) < ar.node.local.config.clerk_api.max_body_bytes
    reply = await ar("POST", REQUESTS, data=io.BytesIO(body), headers=JSON_HEADERS)
    assert_problem(reply, 413, "payload_too_large", BASE_KEYS | {"field"})
    assert reply.body["field"] == "form"


async def test_many_bad_requests_at_once_are_all_answered(ar: Api) -> None:
    replies = await asyncio.gather(
        *(ar(m, p, data=d, headers=h) for _, m, p, d, h, *_ in BAD_INPUT * 3)
    )
    assert [r.status for r in replies] == [case[5] for case in BAD_INPUT * 3]


async def test_unknown_or_own_state_is_unknown_state(ar: Api) -> None:
    for to in ("ZZ", "AR"):
        reply = await ar.post(REQUESTS, {**mla_request(), "to": to})
        assert_problem(reply, 422, "unknown_state", BASE_KEYS | {"field"})
        assert reply.body["field"] == "to"


async def test_acknowledging_an_outbound_request_is_409(ar: Api, br: Api) -> None:
    request_id = await delivered(ar, br)
    assert_problem(await ar.post(f"{REQUESTS}/{request_id}/acknowledge"), 409, "invalid_state")
    ack = {"type": "acknowledgement", "form": forms.example("acknowledgement")}
    reply = await ar.post(f"{REQUESTS}/{request_id}/replies", ack)
    assert_problem(reply, 409, "invalid_state")


async def test_acknowledging_twice_is_409(ar: Api, br: Api) -> None:
    request_id = await delivered(ar, br)
    assert (await br.post(f"{REQUESTS}/{request_id}/acknowledge")).status == 201
    assert_problem(await br.post(f"{REQUESTS}/{request_id}/acknowledge"), 409, "invalid_state")
    ack = {"type": "acknowledgement", "form": forms.example("acknowledgement")}
    reply = await br.post(f"{REQUESTS}/{request_id}/replies", ack)
    assert_problem(reply, 409, "invalid_state")


async def test_concurrent_acknowledgements_send_one(ar: Api, br: Api) -> None:
    request_id = await delivered(ar, br)
    path = f"{REQUESTS}/{request_id}/acknowledge"
    replies = await asyncio.gather(*(br.post(path) for _ in range(10)))
    assert sorted(r.status for r in replies) == [201] + [409] * 9
    view = await br.get(f"{REQUESTS}/{request_id}", role="auditor")
    assert [m["type"] for m in view.body["thread"]] == ["mla_request", "acknowledgement"]


async def test_acknowledging_a_follow_up_is_409(ar: Api, br: Api) -> None:
    request_id = await delivered(ar, br)
    inquiry = {"type": "status_inquiry", "form": forms.example("status_inquiry")}
    sent = await ar.post(f"{REQUESTS}/{request_id}/replies", inquiry)
    assert sent.status == 201
    assert_problem(await ar.post(f"{REQUESTS}/{sent.body['id']}/acknowledge"), 409, "invalid_state")


async def test_an_acknowledgement_with_a_bad_form_names_its_fields(ar: Api, br: Api) -> None:
    request_id = await delivered(ar, br)
    reply = await br.post(
        f"{REQUESTS}/{request_id}/acknowledge", {"form": {"received_on": "yesterday"}}
    )
    assert_problem(reply, 422, "form_invalid", BASE_KEYS | {"errors", "field"})
    assert {(e["field"], e["code"]) for e in reply.body["errors"]} == {
        ("form.received_on", "invalid_date"),
        ("form.central_authority_reference", "missing"),
    }
    assert (await br.post(f"{REQUESTS}/{request_id}/acknowledge")).status == 201


async def test_a_follow_up_of_a_request_type_is_refused(ar: Api, br: Api) -> None:
    request_id = await delivered(ar, br)
    reply = await br.post(f"{REQUESTS}/{request_id}/replies", mla_request())
    assert_problem(reply, 422, "form_invalid", BASE_KEYS | {"errors", "field"})
    assert {(e["field"], e["code"]) for e in reply.body["errors"]} == {
        ("to", "extra_field"),
        ("type", "invalid_value"),
    }


# --- bytes no well-behaved client sends -------------------------------------------------------


async def test_an_idempotency_key_that_is_not_printable_ascii_is_refused(ar: Api) -> None:
    token = ar.node.tokens["clerk"].encode()
    body = json.dumps(mla_request()).encode()
    for key in (b"\xff\xfe", b"caf\xc3\xa9", b"a\tb"):
        headers = b"Authorization: Bearer " + token + b"\r\nContent-Type: application/json\r\n"
        reply = await ar.raw("POST", REQUESTS, headers + b"Idempotency-Key: " + key + b"\r\n", body)
        assert reply.status == 400, (key, reply.body)
        assert reply.problem()["field"] == "Idempotency-Key"


async def test_an_authorization_header_that_is_not_utf8_is_401(ar: Api) -> None:
    reply = await ar.raw("GET", REQUESTS, b"Authorization: Bearer \xff\xfe\r\n")
    assert reply.status == 401


async def test_query_and_path_bytes_that_are_not_utf8_are_refused(ar: Api) -> None:
    token = b"Authorization: Bearer " + ar.node.tokens["clerk"].encode() + b"\r\n"
    assert (await ar.raw("GET", f"{REQUESTS}/%FF%FE", token)).status == 400
    assert (await ar.raw("GET", f"{REQUESTS}?%FF=1", token)).status == 400
    assert (await ar.raw("GET", f"{REQUESTS}?limit=%FF", token)).status == 400


@pytest.mark.parametrize("body", [[1, 2], {"from": {"received_on": "2025-03-12"}}])
async def test_an_acknowledge_body_of_the_wrong_shape_is_refused(
    ar: Api, br: Api, body: object
) -> None:
    request_id = await delivered(ar, br)
    reply = await br.post(f"{REQUESTS}/{request_id}/acknowledge", body)
    assert reply.status in (400, 422), reply.body
