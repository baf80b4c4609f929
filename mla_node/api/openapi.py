"""The OpenAPI 3.1 document of the clerk API, served at ``GET /openapi.json``.

Built once from the code it describes wherever it can be: the treaty forms' JSON Schemas and
examples come from ``protocol.forms``, the error codes each status may carry from ``errors``, the
page size limit from ``service.views``. What cannot be derived (the routes, the roles allowed on
each, the shapes of the JSON views) is written here, and ``tests/api`` holds it to the running
application: every route and every policy entry is in the document and the other way round, every
example is accepted by a real node, and every response of a real node validates against it.
"""

from __future__ import annotations

import copy
import functools
from typing import Any, Final

from mla_node import errors
from mla_node.ids import ULID_PATTERN
from mla_node.protocol import forms
from mla_node.protocol.evidence import EVENTS
from mla_node.protocol.keys import Suite
from mla_node.service.views import MAX_PAGE
from mla_node.storage.repo import MESSAGE_STATUSES

__all__ = ["API_VERSION", "openapi_document", "problem_codes"]

API_VERSION: Final = "1.0.0"

JSON: Final = "application/json"
PROBLEM_JSON: Final = "application/problem+json"

STATE_PATTERN: Final = r"^[A-Z]{2}$"
HEX_SHA256_PATTERN: Final = r"^[0-9a-f]{64}$"
# Outbox: queued -> delivered | rejected | undeliverable. Inbox: received -> retrieved.
RECEIPT_STATUSES: Final = ("delivered", "rejected")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _camel(form_type: str) -> str:
    return "".join(part.capitalize() for part in form_type.split("_"))


def _object(
    properties: dict[str, Any], *, optional: tuple[str, ...] = (), description: str = ""
) -> dict[str, Any]:
    """A closed object: every property listed, all required unless named optional."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
        "additionalProperties": False,
    }
    if description:
        schema["description"] = description
    return schema


# --- error responses --------------------------------------------------------------------------


def problem_codes(status: int) -> list[str]:
    """The stable codes the clerk API can answer with this status (peer-protocol errors aside)."""
    api_families = (
        errors.ClientError,
        errors.TrustError,
        errors.StorageError,
        errors.ShuttingDown,
    )
    codes = {
        cls.code
        for cls in errors.all_error_classes()
        if cls.status == status and (issubclass(cls, api_families) or cls is errors.MlaError)
    }
    # Answers aiohttp itself gives before a handler runs, translated by the problem middleware.
    codes |= {404: {"not_found"}, 405: {"method_not_allowed"}}.get(status, set())
    return sorted(codes)


_ERROR_RESPONSES: Final[dict[int, tuple[str, str]]] = {
    400: ("BadRequest", "The body is not JSON of the expected shape, or a parameter is invalid."),
    401: ("Unauthenticated", "No bearer token, or the token is unknown or revoked."),
    403: ("Forbidden", "The token's role may not do this."),
    404: ("NotFound", "No request or message with this id."),
    409: ("Conflict", "The request is not in a state that allows this action."),
    413: (
        "PayloadTooLarge",
        "The body is larger than the node's clerk_api.max_body_bytes, or the form (`field`: "
        "`form`) is too large to be sealed into one envelope.",
    ),
    415: ("UnsupportedMediaType", "The body is not sent as application/json."),
    422: (
        "Unprocessable",
        "The submission is well-formed JSON but cannot be accepted: invalid form fields (every "
        "one of them listed in `errors`), unknown type or version, unknown recipient state, or "
        "an Idempotency-Key reused with a different body.",
    ),
    500: ("InternalError", "An unexpected error; it has been logged with its traceback."),
    503: (
        "Unavailable",
        "No valid directory of nodes (missing, expired or refused), the database is unusable, "
        "or the node is shutting down (writes only; send them again once it is back).",
    ),
}


def _error_response(status: int) -> dict[str, Any]:
    _, description = _ERROR_RESPONSES[status]
    codes = problem_codes(status)
    return {
        "description": description + " Codes: " + ", ".join(f"`{c}`" for c in codes) + ".",
        "content": {
            PROBLEM_JSON: {
                "schema": {
                    "allOf": [
                        _ref("Problem"),
                        {"properties": {"status": {"const": status}, "code": {"enum": codes}}},
                    ]
                }
            }
        },
    }


def _responses(ok: dict[str, Any], *errors_: int) -> dict[str, Any]:
    responses = dict(ok)
    for status in sorted({*errors_, 500}):
        responses[str(status)] = {"$ref": f"#/components/responses/{_ERROR_RESPONSES[status][0]}"}
    return responses


# --- schemas ----------------------------------------------------------------------------------


def _form_versions(form_type: str) -> list[int]:
    versions = []
    for version in range(1, forms.LATEST_VERSION[form_type] + 1):
        try:
            forms.form_model(form_type, version)
        except errors.UnknownFormType:
            continue
        versions.append(version)
    return versions


def _form_ref(form_type: str) -> dict[str, Any]:
    refs = [_ref(forms.form_model(form_type, v).__name__) for v in _form_versions(form_type)]
    return refs[0] if len(refs) == 1 else {"anyOf": refs}


def _submission_name(form_type: str) -> str:
    return "Submit" + _camel(form_type)


_HANDLING: Final[dict[str, Any]] = {
    "enum": list(forms.HANDLING_CODES),
    "description": "How far the content may travel at the receiving authority (A-55 Art. 25): "
    "ordinary (within the authority), confidential (need to know; the default), "
    "strictly_confidential (named officials only). It travels inside the signed envelope.",
}


def _attachments_property() -> dict[str, Any]:
    from mla_node.api.openapi_attachments import attachments_property  # builds on this module

    return attachments_property()


def _submission_schema(form_type: str, *, follow_up: bool) -> dict[str, Any]:
    model = forms.form_model(form_type, forms.LATEST_VERSION[form_type])
    properties: dict[str, Any] = {
        "type": {"const": form_type},
        "version": {
            "type": "integer",
            "enum": _form_versions(form_type),
            "default": forms.LATEST_VERSION[form_type],
            "description": "Version of the form; the latest when left out.",
        },
    }
    if not follow_up:
        properties["to"] = {
            "type": "string",
            "pattern": STATE_PATTERN,
            "description": "Two-letter code of the requested state; it must have a node in the "
            "directory (see GET /api/v1/peers).",
        }
    properties["form"] = _form_ref(form_type)
    properties["handling"] = {
        **_HANDLING,
        "description": _HANDLING["description"] + " Left out: confidential for a request, the "
        "handling of the message answered for a follow-up (never less strict than it).",
    }
    properties["attachments"] = _attachments_property()
    schema = _object(
        properties,
        optional=("version", "handling", "attachments"),
        description=model.__doc__ or "",
    )
    schema["title"] = _submission_name(form_type)
    schema["examples"] = [_example_body(form_type, follow_up=follow_up)]
    return schema


EXAMPLE_RECIPIENT: Final = "BR"


def _example_body(form_type: str, *, follow_up: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"type": form_type, "version": forms.LATEST_VERSION[form_type]}
    if not follow_up:
        body["to"] = EXAMPLE_RECIPIENT
    body["form"] = forms.example(form_type)
    return body


def _one_of_submissions(types: list[str], description: str) -> dict[str, Any]:
    return {
        "description": description,
        "oneOf": [_ref(_submission_name(t)) for t in types],
        "discriminator": {
            "propertyName": "type",
            "mapping": {t: f"#/components/schemas/{_submission_name(t)}" for t in types},
        },
    }


def _message_summary() -> dict[str, Any]:
    ulid = {"type": "string", "pattern": ULID_PATTERN.pattern}
    return _object(
        {
            "id": {**ulid, "description": "Message id (a ULID), the same on both nodes."},
            "box": {"enum": ["outbox", "inbox"], "description": "Sent (outbox) or received."},
            "type": {"enum": sorted(forms.ALL_TYPES)},
            "version": {"type": "integer", "minimum": 1},
            "from": {"type": "string", "pattern": STATE_PATTERN},
            "to": {"type": "string", "pattern": STATE_PATTERN},
            "case_id": {**ulid, "description": "Id of the request that opened the case."},
            "in_reply_to": _nullable(ulid),
            "status": {
                "enum": list(MESSAGE_STATUSES),
                "description": "Outbox: queued, then delivered, rejected (a signed refusal) or "
                "undeliverable (its delivery deadline passed; an admin may resend it). Inbox: "
                "received, then retrieved once a clerk has opened it.",
            },
            "created_at": {"type": "string", "format": "date-time"},
            "replaces": {
                **_nullable(ulid),
                "description": "The undeliverable message this one re-seals (an admin's resend); "
                "null for every other message.",
            },
            "handling": _HANDLING,
        },
        description="One message of a case: a request or a follow-up.",
    )


def _request_view() -> dict[str, Any]:
    summary = _message_summary()
    hex_sha = {"type": "string", "pattern": HEX_SHA256_PATTERN}
    when = {"type": "string", "format": "date-time"}
    ulid = {"type": "string", "pattern": ULID_PATTERN.pattern}
    properties = {
        **summary["properties"],
        "form": {
            "anyOf": [{"type": "object"}, {"type": "null"}],
            "description": "The validated form, as signed and stored; null once a purge has "
            "removed the contents (see `purged_at`).",
        },
        "envelope_sha256": hex_sha,
        "use_restriction": _nullable(
            {"type": "string", "description": "The purpose the contents may be used for only."}
        ),
        "receipt": _nullable(_ref("Receipt")),
        "evidence": {"type": "array", "items": _ref("Evidence")},
        "thread": {
            "type": "array",
            "items": _ref("MessageSummary"),
            "description": "Every message of the case, oldest first.",
        },
        "purged_at": {
            **_nullable(when),
            "description": "When a purge removed the form and the envelope bytes; digests, "
            "receipt and evidence are kept (docs/retention.md).",
        },
        "replaced_by": {
            **_nullable(ulid),
            "description": "The message that re-sealed this one when an admin resent it.",
        },
        "delivery": _nullable(_ref("DeliveryState")),
        "attachments": {
            "type": "array",
            "items": _ref("AttachmentInfo"),
            "description": "The request's evidence files, in order.",
        },
        "legal_hold": {
            **_nullable(_ref("HoldInfo")),
            "description": "The legal hold on the case thread, if any.",
        },
    }
    schema = _object(
        properties,
        description="A request or follow-up with its receipt, its verified evidence timeline "
        "and its case thread. A clerk opening a received request records `retrieved` evidence.",
    )
    schema["allOf"] = [
        {
            "if": {"properties": {"type": {"const": t}}, "required": ["type"]},
            "then": {"properties": {"form": _nullable(_form_ref(t))}},
        }
        for t in sorted(forms.ALL_TYPES)
    ]
    return schema


def _schemas() -> dict[str, Any]:
    hex_sha = {"type": "string", "pattern": HEX_SHA256_PATTERN}
    state = {"type": "string", "pattern": STATE_PATTERN}
    when = {"type": "string", "format": "date-time"}
    schemas: dict[str, Any] = {
        "FieldProblem": _object(
            {
                "field": {
                    "type": "string",
                    "description": "Dotted path of the field at fault, e.g. "
                    "`form.contact_officer.email` or `form.assistance_sought.0.kind`.",
                },
                "code": {
                    "type": "string",
                    "description": "Stable code: missing, extra_field, too_short, too_long, "
                    "invalid_value, invalid_format, invalid_type, invalid_date, out_of_range, "
                    "too_many_problems.",
                },
                "message": {"type": "string", "description": "Plain-English explanation."},
            }
        ),
        "Problem": _object(
            {
                "type": {"type": "string", "description": "`/problems/<code>`."},
                "title": {"type": "string"},
                "status": {"type": "integer", "minimum": 400, "maximum": 599},
                "detail": {"type": "string"},
                "code": {
                    "type": "string",
                    "pattern": "^[a-z][a-z0-9_]*$",
                    "description": "Stable error code; see docs/errors.md.",
                },
                "field": {
                    "type": "string",
                    "description": "The field, parameter or header at fault, when there is one.",
                },
                "errors": {
                    "type": "array",
                    "items": _ref("FieldProblem"),
                    "minItems": 1,
                    "description": "Every bad field of the submission, not only the first.",
                },
                "known_types": {"type": "array", "items": {"type": "string"}},
                "known_versions": {"type": "array", "items": {"type": "integer"}},
            },
            optional=("field", "errors", "known_types", "known_versions"),
            description="RFC 9457 problem details with mla_node's stable `code`.",
        ),
        "MessageSummary": _message_summary(),
        "RequestView": _request_view(),
        "Receipt": _object(
            {
                "status": {"enum": list(RECEIPT_STATUSES)},
                "code": _nullable({"type": "string"}),
                "signed_by": state,
                "at": when,
                "sha256": hex_sha,
                "verified": {"type": "boolean"},
                "verification_error": {"type": "string"},
            },
            optional=("verification_error",),
            description="The receipt the recipient node signed, re-verified on every read.",
        ),
        "Evidence": {
            "oneOf": [_ref("EvidenceRecord"), _ref("EvidenceUnverified")],
            "description": "One signed evidence record, verified on every read.",
        },
        "EvidenceRecord": _object(
            {
                "event": {"enum": sorted(EVENTS)},
                "node": state,
                "message_id": {"type": "string"},
                "case_id": {"type": "string"},
                "envelope_sha256": _nullable(hex_sha),
                "peer": _nullable(state),
                "at": when,
                "detail": _nullable({"type": "string"}),
                "receipt_sha256": _nullable(hex_sha),
                "actor": _nullable(
                    {
                        "type": "string",
                        "description": "Whose action it was, `role:name`; null for the node's own.",
                    }
                ),
                "content_sha256": _nullable(
                    {
                        **hex_sha,
                        "description": "On `submitted` (sender) and `delivered` (receiver): the "
                        "commitment to the message's content both nodes sign (docs/protocol.md).",
                    }
                ),
                "kid": {"type": "string"},
                "sha256": hex_sha,
                "verified": {"const": True},
            }
        ),
        "EvidenceUnverified": _object(
            {"verified": {"const": False}, "verification_error": {"type": "string"}},
            description="A record that does not verify; `verification_error` is a stable code.",
        ),
        "RequestPage": _object(
            {
                "items": {"type": "array", "items": _ref("MessageSummary")},
                "next_cursor": _nullable(
                    {
                        "type": "string",
                        "pattern": ULID_PATTERN.pattern,
                        "description": "Pass as `cursor` to get the next page.",
                    }
                ),
            },
            description="One page of a box, newest first.",
        ),
        "Peers": _object(
            {
                "state": state,
                "directory": _object(
                    {
                        "version": _nullable({"type": "integer"}),
                        "expires_at": _nullable(when),
                        "expired": {"type": "boolean"},
                    }
                ),
                "peers": {"type": "array", "items": _ref("Peer")},
            }
        ),
        "Peer": _object(
            {
                "state": state,
                "authority": {"type": "string"},
                "endpoint": {"type": "string", "format": "uri"},
                "suites": {"type": "array", "items": {"enum": [s.value for s in Suite]}},
                "tls_cert_sha256": {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"},
                "keys": {"type": "array", "items": _ref("PeerKey")},
                "reachable": _nullable({"type": "boolean"}),
                "last_success_at": _nullable(when),
                "last_error": _nullable({"type": "string"}),
                "queued": {"type": "integer", "minimum": 0},
                "oldest_queued_at": _nullable(when),
                "undeliverable": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Messages to this peer now undeliverable (deadline passed) "
                    "and not resent: they wait for an admin.",
                },
                "deadlines_passed": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "How many messages to this peer ever passed their delivery "
                    "deadline (a counter; it never goes down).",
                },
            }
        ),
        "DeliveryState": _object(
            {
                "attempts": {"type": "integer", "minimum": 0},
                "next_attempt_at": when,
                "deadline_at": _nullable(when),
                "last_error": _nullable({"type": "string"}),
            },
            description="Delivery of a message still in the outbox: attempts so far, the next "
            "one, and the deadline past which the node gives up (status `undeliverable`).",
        ),
        "HoldInfo": _object(
            {"since": when, "by": {"type": "string"}, "reason": _nullable({"type": "string"})},
            description="A legal hold: the purge never touches the case thread while it holds.",
        ),
        "LegalHold": _object(
            {
                "case_id": {"type": "string", "pattern": ULID_PATTERN.pattern},
                "held": {"type": "boolean"},
                "since": _nullable(when),
                "by": _nullable({"type": "string"}),
                "reason": _nullable({"type": "string"}),
            },
            description="The legal hold of a case thread after the call: `held`, and while held "
            "who placed it, when and why (the first hold is kept when a case is held again).",
        ),
        "HoldBody": _object(
            # null is what retention.set_hold takes it for: no reason.
            {"reason": _nullable({"type": "string", "minLength": 1, "maxLength": 500})},
            optional=("reason",),
            description="Why the case is held (a court order's reference, say). Optional.",
        ),
        "PeerKey": _object(
            {
                "kid": {"type": "string"},
                "use": {"enum": ["sign", "encrypt"]},
                "alg": {"type": "string"},
                "not_before": when,
                "not_after": when,
                "revoked": {"type": "boolean"},
            }
        ),
        "Health": _object({"status": {"const": "ok"}}),
        "Readiness": _object(
            {
                "ready": {"type": "boolean"},
                "checks": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "description": "Check name (directory, database, keys, certificates, "
                    "sender, background) -> `ok` or what is wrong.",
                },
            }
        ),
        "AcknowledgeBody": _object(
            {"form": _form_ref("acknowledgement")},
            optional=("form",),
            description="Leave out the form (or the whole body) to acknowledge with today's date "
            "and the request's id as the central authority's reference.",
        ),
        "RequestSubmission": _one_of_submissions(
            sorted(forms.REQUEST_TYPES), "A request that opens a new case."
        ),
        "FollowUpSubmission": _one_of_submissions(
            sorted(forms.FOLLOW_UP_TYPES),
            "A follow-up in the case of the request named in the path, sent to the other state.",
        ),
    }
    for form_type in sorted(forms.ALL_TYPES):
        follow_up = form_type in forms.FOLLOW_UP_TYPES
        schemas[_submission_name(form_type)] = _submission_schema(form_type, follow_up=follow_up)
    for name, schema in forms.all_schema_components().items():
        if name in schemas:
            raise RuntimeError(f"form component {name} clashes with an API schema")
        schemas[name] = schema
    return schemas


# --- paths ------------------------------------------------------------------------------------


def _param(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/parameters/{name}"}


def _json_ok(status: int, schema: str, description: str) -> dict[str, Any]:
    return {str(status): {"description": description, "content": {JSON: {"schema": _ref(schema)}}}}


def _examples(types: list[str]) -> dict[str, Any]:
    return {t: {"$ref": f"#/components/examples/{t}"} for t in sorted(types)}


def _example_components() -> dict[str, Any]:
    """One submission body per form type, ``components/examples/<type>``: the README's demo reads
    ``.components.examples.mla_request.value`` and POSTs it as is."""
    return {
        t: {
            "summary": (forms.form_model(t, forms.LATEST_VERSION[t]).__doc__ or t).strip(),
            "value": _example_body(t, follow_up=t in forms.FOLLOW_UP_TYPES),
        }
        for t in sorted(forms.ALL_TYPES)
    }


def _paths() -> dict[str, Any]:
    created = {"201": {"$ref": "#/components/responses/Created"}}
    submit_errors = (400, 401, 403, 413, 415, 422, 503)
    return {
        "/api/v1/requests": {
            "post": {
                "operationId": "submitRequest",
                "tags": ["requests"],
                "summary": "Submit a request to another state (opens a case)",
                "description": "Validates the form, signs and encrypts it for the requested "
                "state's node, stores it in the outbox and records `submitted` evidence. "
                "Delivery happens in the background; watch `status` and the receipt. Safe to "
                "retry with the same `Idempotency-Key`.",
                "x-roles": ["clerk"],
                "parameters": [_param("IdempotencyKey")],
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {
                            "schema": _ref("RequestSubmission"),
                            "examples": _examples(sorted(forms.REQUEST_TYPES)),
                        }
                    },
                },
                "responses": _responses(created, *submit_errors),
            },
            "get": {
                "operationId": "listRequests",
                "tags": ["requests"],
                "summary": "List a box (outbox or inbox), newest first, one page at a time",
                "x-roles": ["admin", "approver", "auditor", "clerk"],
                "parameters": [
                    _param(p) for p in ("box", "status", "type", "case", "peer", "cursor", "limit")
                ],
                "responses": _responses(
                    _json_ok(200, "RequestPage", "One page of the box."), 400, 401, 403
                ),
            },
        },
        "/api/v1/requests/{id}": {
            "parameters": [_param("MessageId")],
            "get": {
                "operationId": "getRequest",
                "tags": ["requests"],
                "summary": "One request or follow-up, with receipt, evidence and case thread",
                "description": "When a clerk opens a received request for the first time, the "
                "node records signed `retrieved` evidence and the status becomes `retrieved`.",
                "x-roles": ["admin", "approver", "auditor", "clerk"],
                "responses": _responses(
                    _json_ok(200, "RequestView", "The request."), 400, 401, 403, 404
                ),
            },
        },
        "/api/v1/requests/{id}/replies": {
            "parameters": [_param("MessageId")],
            "post": {
                "operationId": "replyToRequest",
                "tags": ["requests"],
                "summary": "Send a follow-up in the case of a request",
                "description": "Addressed to the other state of the case. `execution_result` "
                "and `supplement` carry the case's use restriction. An `acknowledgement` is "
                "only possible for a received request not acknowledged yet.",
                "x-roles": ["clerk"],
                "parameters": [_param("IdempotencyKey")],
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {
                            "schema": _ref("FollowUpSubmission"),
                            "examples": _examples(sorted(forms.FOLLOW_UP_TYPES)),
                        }
                    },
                },
                "responses": _responses(created, *submit_errors, 404, 409),
            },
        },
        "/api/v1/requests/{id}/acknowledge": {
            "parameters": [_param("MessageId")],
            "post": {
                "operationId": "acknowledgeRequest",
                "tags": ["requests"],
                "summary": "Acknowledge receipt of a request this node received",
                "description": "Sends a signed acknowledgement to the requesting state and "
                "records `acknowledged` evidence. Only once per received request.",
                "x-roles": ["clerk"],
                "requestBody": {
                    "required": False,
                    "content": {
                        JSON: {
                            "schema": _ref("AcknowledgeBody"),
                            "examples": {
                                "with_form": {
                                    "summary": "With the central authority's own reference",
                                    "value": {"form": forms.example("acknowledgement")},
                                },
                                "default": {
                                    "summary": "Today's date, the request id as reference",
                                    "value": {},
                                },
                            },
                        }
                    },
                },
                "responses": _responses(created, 400, 401, 403, 404, 409, 413, 415, 422, 503),
            },
        },
        "/api/v1/requests/{id}/resend": {
            "parameters": [_param("MessageId")],
            "post": {
                "operationId": "resendRequest",
                "tags": ["requests"],
                "summary": "Send an undeliverable message again (admin)",
                "description": "Only for a message this node sent whose delivery deadline "
                "passed (`undeliverable`) and that was not resent already. While its original "
                "envelope stays acceptable to the receiver for at least half a deadline more, "
                "those very bytes go back into the outbox with a new deadline: a receiver that "
                "stored them after all answers with its original receipt, so the message is "
                "delivered exactly once. Otherwise the form is re-sealed as a new message in the "
                "same case whose signed body names the one it `replaces`; the original stays "
                "`undeliverable` with `replaced_by`. The answer is the message now in the "
                "outbox (`Location` too): the same id, or the new one. Records signed `resent` "
                "evidence on the original.",
                "x-roles": ["admin"],
                "responses": _responses(
                    {
                        "200": {
                            "description": "Queued again; the message now carrying it.",
                            "headers": {
                                "Location": {
                                    "required": True,
                                    "schema": {"type": "string"},
                                    "description": "`/api/v1/requests/{id}` of that message.",
                                }
                            },
                            "content": {JSON: {"schema": _ref("MessageSummary")}},
                        }
                    },
                    400,
                    401,
                    403,
                    404,
                    409,
                    422,
                    503,
                ),
            },
        },
        "/api/v1/requests/{id}/hold": {
            "parameters": [_param("MessageId")],
            "post": {
                "operationId": "placeLegalHold",
                "tags": ["retention"],
                "summary": "Place the case thread of a message under a legal hold (admin)",
                "description": "A purge never touches a held thread (docs/retention.md). "
                "Holding a held case again changes nothing and answers the existing hold.",
                "x-roles": ["admin"],
                "requestBody": {
                    "required": False,
                    "content": {
                        JSON: {
                            "schema": _ref("HoldBody"),
                            "examples": {
                                "with_reason": {
                                    "summary": "With the order that requires it",
                                    "value": {"reason": "Juzgado Federal 4, oficio 1234/2025"},
                                },
                                "no_reason": {"summary": "Without a reason", "value": {}},
                            },
                        }
                    },
                },
                "responses": _responses(
                    _json_ok(200, "LegalHold", "The case is held."),
                    400,
                    401,
                    403,
                    404,
                    413,
                    415,
                    422,
                    503,
                ),
            },
            "delete": {
                "operationId": "liftLegalHold",
                "tags": ["retention"],
                "summary": "Lift the legal hold of the case thread of a message (admin)",
                "description": "A case that is not held answers the same.",
                "x-roles": ["admin"],
                "responses": _responses(
                    _json_ok(200, "LegalHold", "The case is not held (any more)."),
                    400,
                    401,
                    403,
                    404,
                    503,
                ),
            },
        },
        "/api/v1/peers": {
            "get": {
                "operationId": "listPeers",
                "tags": ["peers"],
                "summary": "The other states' nodes, their keys and delivery health",
                "x-roles": ["admin", "approver", "auditor", "clerk"],
                "responses": _responses(
                    _json_ok(200, "Peers", "The directory in use and each peer."), 401, 403
                ),
            },
        },
        "/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "tags": ["meta"],
                "summary": "This document",
                "security": [],
                "x-roles": [],
                "responses": _responses(
                    {
                        "200": {
                            "description": "The OpenAPI 3.1 document.",
                            "content": {JSON: {"schema": {"type": "object"}}},
                        }
                    }
                ),
            },
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "tags": ["meta"],
                "summary": "Liveness: the process answers",
                "security": [],
                "x-roles": [],
                "responses": _responses(_json_ok(200, "Health", "Alive.")),
            },
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "tags": ["meta"],
                "summary": "Readiness: a valid directory, a usable database, a running sender",
                "security": [],
                "x-roles": [],
                "responses": _responses(
                    {
                        "200": {
                            "description": "Ready.",
                            "content": {JSON: {"schema": _ref("Readiness")}},
                        },
                        "503": {
                            "description": "Not ready; `checks` says which check failed.",
                            "content": {JSON: {"schema": _ref("Readiness")}},
                        },
                    }
                ),
            },
        },
    }


def _parameters() -> dict[str, Any]:
    def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {
            "name": name,
            "in": "query",
            "required": False,
            "schema": schema,
            "description": description,
        }

    return {
        "MessageId": {
            "name": "id",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": ULID_PATTERN.pattern},
            "description": "Message id (26-character ULID).",
        },
        "IdempotencyKey": {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "pattern": "^[ -~]{1,255}$"},
            "description": "Any unique string of 1 to 255 printable ASCII characters (a UUID is "
            "fine). A retry with the same key and "
            "the same body returns the message created the first time (201, with "
            "`Idempotent-Replayed: true`) instead of sending it again; the same key with a "
            "different body is refused (422 `idempotency_key_reused`). Keys are per token.",
        },
        "box": query(
            "box", {"enum": ["outbox", "inbox"], "default": "outbox"}, "Which box to list."
        ),
        "status": query("status", {"enum": list(MESSAGE_STATUSES)}, "Only this status."),
        "type": query("type", {"enum": sorted(forms.ALL_TYPES)}, "Only this form type."),
        "case": query(
            "case",
            {"type": "string", "pattern": ULID_PATTERN.pattern},
            "Only the messages of this case (the id of the request that opened it).",
        ),
        "peer": query(
            "peer",
            {"type": "string", "pattern": STATE_PATTERN},
            "Only messages to (outbox) or from (inbox) this state.",
        ),
        "cursor": query(
            "cursor",
            {"type": "string", "pattern": ULID_PATTERN.pattern},
            "`next_cursor` of the previous page.",
        ),
        "limit": query(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 50},
            f"Page size, 1 to {MAX_PAGE}.",
        ),
    }


@functools.cache
def _build() -> dict[str, Any]:
    # Imported here: the audit part builds on this module's helpers.
    from mla_node.api.openapi_attachments import attachment_paths, attachment_schemas
    from mla_node.api.openapi_audit import audit_paths, audit_schemas
    from mla_node.api.openapi_ops import ops_paths, ops_schemas

    responses: dict[str, Any] = {
        name: _error_response(status) for status, (name, _) in _ERROR_RESPONSES.items()
    }
    responses["Created"] = {
        "description": "Created (or, for a retried Idempotency-Key, the earlier result).",
        "headers": {
            "Location": {
                "required": True,
                "schema": {"type": "string"},
                "description": "`/api/v1/requests/{id}` of the new message.",
            },
            "Idempotent-Replayed": {
                "schema": {"const": "true"},
                "description": "Present when this is the result of an earlier identical call.",
            },
        },
        "content": {JSON: {"schema": _ref("MessageSummary")}},
    }
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "mla_node clerk API",
            "version": API_VERSION,
            "summary": "Exchange mutual legal assistance and extradition requests between the "
            "central authorities of OAS states.",
            "description": "The local API of one state's node. Every call except the three "
            "public ones needs `Authorization: Bearer <token>`; the `x-roles` of each operation "
            "lists the token roles allowed (deny by default). Errors are RFC 9457 "
            "`application/problem+json` with a stable `code` (docs/errors.md). See docs/api.md.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/", "description": "This node"}],
        "tags": [
            {"name": "requests", "description": "Requests, follow-ups and acknowledgements."},
            {"name": "retention", "description": "Legal holds on case threads."},
            {"name": "peers", "description": "The other states' nodes."},
            {"name": "audit", "description": "The node's transparency log, read-only."},
            {"name": "meta", "description": "Health and this document."},
        ],
        "security": [{"bearerAuth": []}],
        "paths": {**_paths(), **audit_paths(), **attachment_paths(), **ops_paths()},
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token of this node (`mla-node token create --config "
                    "FILE --role ROLE`), shown once when it is created; each token has one "
                    "role: clerk, approver, auditor or admin.",
                }
            },
            "parameters": _parameters(),
            "responses": responses,
            "examples": _example_components(),
            "schemas": {**_schemas(), **audit_schemas(), **attachment_schemas(), **ops_schemas()},
        },
    }


def openapi_document() -> dict[str, Any]:
    """The document, built once; each caller gets its own copy to read or change freely."""
    return copy.deepcopy(_build())
