"""The OpenAPI document: valid 3.1, and in step with the routes, the role policy and the forms."""

from __future__ import annotations

import re
from typing import Any, cast

import pytest
from openapi_spec_validator import validate

from mla_node.api.app import POLICY, PUBLIC, make_clerk_app
from mla_node.api.openapi import openapi_document, problem_codes
from mla_node.errors import ClientError, all_error_classes
from mla_node.protocol import forms
from mla_node.service.context import NodeContext
from tests.api.speckit import SPEC, example_values, resolve, schema_errors

METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
REQUESTS = "/api/v1/requests"
REPLIES = "/api/v1/requests/{id}/replies"


async def _ready() -> dict[str, Any]:
    return {"ready": True, "checks": {}}


def app_routes() -> set[tuple[str, str]]:
    """(METHOD, path) of every API route the clerk app registers (aiohttp adds HEAD to each GET).
    The web interface's routes under /ui/ are not API operations and are left out."""
    app = make_clerk_app(cast(NodeContext, object()), _ready, 1 << 20)
    routes = set()
    for route in app.router.routes():
        assert route.resource is not None
        if route.resource.canonical.startswith("/ui/"):
            continue  # the web interface: its own session policy (tests/ui/test_ui_policy.py)
        routes.add((route.method, route.resource.canonical))
    heads = {(m, p) for m, p in routes if m == "HEAD"}
    assert all(("GET", p) in routes for _, p in heads), "a HEAD route without its GET"
    return routes - heads


def spec_operations() -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): op
        for path, item in SPEC["paths"].items()
        for method, op in item.items()
        if method in METHODS
    }


def test_the_document_is_valid_openapi_3_1() -> None:
    validate(openapi_document())
    assert SPEC["openapi"] == "3.1.0"


def test_every_route_is_documented_and_every_documented_operation_is_a_route() -> None:
    assert app_routes() == set(spec_operations())


def test_every_route_has_a_policy_entry_and_every_policy_entry_a_route() -> None:
    assert app_routes() == set(POLICY)


def test_documented_roles_and_security_match_the_policy() -> None:
    for key, op in spec_operations().items():
        allowed = POLICY[key]
        assert op["x-roles"] == sorted(r.value for r in allowed), key
        responses = op["responses"]
        if allowed is PUBLIC:
            assert op["security"] == [], key
            assert "401" not in responses and "403" not in responses, key
        else:
            assert "security" not in op, f"{key} must inherit the bearerAuth requirement"
            assert "401" in responses and "403" in responses, key
    assert SPEC["security"] == [{"bearerAuth": []}]
    assert SPEC["components"]["securitySchemes"]["bearerAuth"] == {
        **SPEC["components"]["securitySchemes"]["bearerAuth"],
        "type": "http",
        "scheme": "bearer",
    }


def test_path_parameters_are_declared() -> None:
    for path, item in SPEC["paths"].items():
        declared = {resolve(p)[0]["name"] for p in item.get("parameters", [])}
        assert declared == set(re.findall(r"\{([^}]+)\}", path)), path


def test_list_query_parameters_and_idempotency_key_are_documented() -> None:
    ops = spec_operations()
    names = {resolve(p)[0]["name"] for p in ops[("GET", REQUESTS)]["parameters"]}
    assert names == {"box", "status", "type", "case", "peer", "cursor", "limit"}
    for key in (("POST", REQUESTS), ("POST", REPLIES)):
        header = [resolve(p)[0] for p in ops[key]["parameters"]]
        assert [(h["name"], h["in"]) for h in header] == [("Idempotency-Key", "header")]


def test_every_error_response_is_problem_json_with_a_known_code() -> None:
    known = {cls.code for cls in all_error_classes()} | {"method_not_allowed"}
    for key, op in spec_operations().items():
        for status, response in op["responses"].items():
            body, _ = resolve(response)
            if int(status) < 400 or key == ("GET", "/readyz"):
                continue
            assert list(body["content"]) == ["application/problem+json"], (key, status)
            schema = body["content"]["application/problem+json"]["schema"]
            assert schema["allOf"][0] == {"$ref": "#/components/schemas/Problem"}
            codes = schema["allOf"][1]["properties"]["code"]["enum"]
            assert codes and set(codes) <= known, (key, status, codes)
    problem = SPEC["components"]["schemas"]["Problem"]
    assert set(problem["properties"]) >= {"type", "title", "status", "detail", "code", "field"}
    assert problem["properties"]["errors"]["items"] == {"$ref": "#/components/schemas/FieldProblem"}
    assert SPEC["components"]["schemas"]["FieldProblem"]["required"] == ["field", "code", "message"]


def test_every_client_error_code_is_listed_under_its_status() -> None:
    for cls in all_error_classes():
        if issubclass(cls, ClientError) and cls is not ClientError:
            assert cls.code in problem_codes(cls.status), cls


def test_created_responses_carry_location() -> None:
    for key, op in spec_operations().items():
        if "201" in op["responses"]:
            created, _ = resolve(op["responses"]["201"])
            assert created["headers"]["Location"]["required"] is True, key


def test_form_schemas_are_the_forms_own() -> None:
    schemas = SPEC["components"]["schemas"]
    for name, schema in forms.all_schema_components().items():
        assert schemas[name] == schema, name


def _variants(schema_name: str) -> set[str]:
    one_of = SPEC["components"]["schemas"][schema_name]["oneOf"]
    return {resolve(v)[0]["properties"]["type"]["const"] for v in one_of}


def test_submissions_are_one_of_the_request_types_and_follow_ups() -> None:
    assert _variants("RequestSubmission") == forms.REQUEST_TYPES
    assert _variants("FollowUpSubmission") == forms.FOLLOW_UP_TYPES
    assert "to" in SPEC["components"]["schemas"]["SubmitMlaRequest"]["required"]
    assert "to" not in SPEC["components"]["schemas"]["SubmitSupplement"]["properties"]


@pytest.mark.parametrize(
    ("template", "schema", "types"),
    [
        (REQUESTS, "RequestSubmission", forms.REQUEST_TYPES),
        (REPLIES, "FollowUpSubmission", forms.FOLLOW_UP_TYPES),
    ],
)
def test_every_type_has_an_example_that_validates(
    template: str, schema: str, types: frozenset[str]
) -> None:
    examples = example_values("POST", template)
    assert {e["type"] for e in examples.values()} == types
    for name, value in examples.items():
        assert value["form"] == forms.example(value["type"]), name
        assert not schema_errors(f"/components/schemas/{schema}", value), name
        variant = SPEC["components"]["schemas"]["Submit" + name.title().replace("_", "")]
        assert variant["examples"] == [value]


def test_an_invalid_submission_does_not_validate() -> None:
    # the schema checks are not vacuous: a form of the wrong type is refused
    body = {"type": "mla_request", "to": "BR", "form": forms.example("extradition_request")}
    assert schema_errors("/components/schemas/RequestSubmission", body)
    good = {"type": "mla_request", "to": "BR", "form": forms.example("mla_request")}
    assert not schema_errors("/components/schemas/RequestSubmission", good)
    for bad in ({**good, "to": "brazil"}, {**good, "cc": "US"}, {**good, "version": 2}):
        assert schema_errors("/components/schemas/RequestSubmission", bad), bad


def test_the_readme_finds_a_ready_to_send_example_of_each_type() -> None:
    # README: curl $AR/openapi.json | jq '.components.examples.mla_request.value'
    examples = SPEC["components"]["examples"]
    assert set(examples) == forms.ALL_TYPES
    for form_type, example in examples.items():
        assert example["value"]["type"] == form_type
        assert ("to" in example["value"]) == (form_type in forms.REQUEST_TYPES)


def test_each_caller_gets_its_own_copy() -> None:
    first = openapi_document()
    first["paths"].clear()
    assert openapi_document()["paths"]
