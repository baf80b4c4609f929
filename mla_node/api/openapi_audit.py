"""The auditor routes' part of the OpenAPI document (api/audit_routes.py)."""

from __future__ import annotations

from typing import Any

from mla_node.api.audit_routes import BUNDLE_TYPE, MAX_INT_PARAM
from mla_node.api.openapi import (
    _json_ok,
    _nullable,
    _object,
    _ref,
    _responses,
)
from mla_node.service.audit_views import MAX_LOG_PAGE

_ROLES = ["admin", "auditor"]
_HEX_SHA = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_B64 = {"type": "string", "contentEncoding": "base64"}
_SEQ = {"type": "integer", "minimum": 1, "maximum": MAX_INT_PARAM}


def _query(name: str, schema: dict[str, Any], description: str, *, required: bool) -> Any:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": schema,
        "description": description,
    }


def audit_schemas() -> dict[str, Any]:
    return {
        "Checkpoint": _object(
            {
                "size": {"type": "integer", "minimum": 0},
                "root": _HEX_SHA,
                "at": {"type": "string", "format": "date-time"},
                "checkpoint": {**_B64, "description": "The signed checkpoint, as signed."},
                "kid": {"type": "string"},
                "verified": {"type": "boolean"},
                "verification_error": {"type": "string"},
            },
            optional=("kid", "verification_error"),
            description="A signed tree head of the node's log, re-verified on every read.",
        ),
        "Checkpoints": _object(
            {
                "node": {"type": "string"},
                "items": {"type": "array", "items": _ref("Checkpoint")},
            }
        ),
        "LogPage": _object(
            {
                "node": {"type": "string"},
                "items": {
                    "type": "array",
                    "items": {
                        "allOf": [
                            {
                                "type": "object",
                                "properties": {"seq": _SEQ, "record": _B64},
                                "required": ["seq", "record"],
                            },
                            {"oneOf": [_ref("EvidenceLogRecord"), _ref("EvidenceLogUnverified")]},
                        ]
                    },
                },
                "next_after": _nullable(
                    {**_SEQ, "description": "Pass as `after` to get the next page."}
                ),
            }
        ),
        # The log page's items are the request view's evidence records with their seq and bytes.
        "EvidenceLogRecord": {
            "type": "object",
            "properties": {"verified": {"const": True}},
            "required": ["verified", "event", "node", "at", "sha256"],
        },
        "EvidenceLogUnverified": {
            "type": "object",
            "properties": {"verified": {"const": False}, "verification_error": {"type": "string"}},
            "required": ["verified", "verification_error"],
        },
        "InclusionProof": _object(
            {
                "seq": _SEQ,
                "size": _SEQ,
                "leaf_hash": _HEX_SHA,
                "root": _HEX_SHA,
                "proof": {"type": "array", "items": _HEX_SHA},
            },
            description="RFC 9162 §2.1.3 audit path of record `seq` in the tree of `size`.",
        ),
        "ConsistencyProof": _object(
            {
                "from": _SEQ,
                "to": _SEQ,
                "from_root": _HEX_SHA,
                "to_root": _HEX_SHA,
                "proof": {"type": "array", "items": _HEX_SHA},
            },
            description="RFC 9162 §2.1.4 proof that the tree of `from` is a prefix of `to`.",
        ),
    }


def audit_paths() -> dict[str, Any]:
    read_errors = (400, 401, 403)
    return {
        "/api/v1/audit/checkpoints": {
            "get": {
                "operationId": "listCheckpoints",
                "tags": ["audit"],
                "summary": "The node's signed checkpoints (tree heads), smallest first",
                "x-roles": _ROLES,
                "responses": _responses(
                    _json_ok(200, "Checkpoints", "Every checkpoint the node signed."),
                    *read_errors,
                ),
            },
            "post": {
                "operationId": "signCheckpoint",
                "tags": ["audit"],
                "summary": "Sign a checkpoint of the log as it is now",
                "description": "Commits to the log's current records (changes none). When the "
                "log has not grown, the newest checkpoint is returned again.",
                "x-roles": _ROLES,
                "responses": _responses(
                    _json_ok(200, "Checkpoint", "The checkpoint of the current log."),
                    *read_errors,
                    503,
                ),
            },
        },
        "/api/v1/audit/log": {
            "get": {
                "operationId": "readLog",
                "tags": ["audit"],
                "summary": "The log's records (evidence and user actions), oldest first",
                "x-roles": _ROLES,
                "parameters": [
                    _query(
                        "after",
                        {"type": "integer", "minimum": 0, "maximum": MAX_INT_PARAM, "default": 0},
                        "Only records with a larger seq.",
                        required=False,
                    ),
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": MAX_LOG_PAGE, "default": 100},
                        f"Page size, 1 to {MAX_LOG_PAGE}.",
                        required=False,
                    ),
                ],
                "responses": _responses(
                    _json_ok(200, "LogPage", "Records, each re-verified."), *read_errors
                ),
            },
        },
        "/api/v1/audit/proofs/inclusion": {
            "get": {
                "operationId": "inclusionProof",
                "tags": ["audit"],
                "summary": "Inclusion proof of one record",
                "x-roles": _ROLES,
                "parameters": [
                    _query("seq", _SEQ, "The record's seq.", required=True),
                    _query(
                        "size",
                        _SEQ,
                        "The tree size (default: the newest checkpoint's).",
                        required=False,
                    ),
                ],
                "responses": _responses(
                    _json_ok(200, "InclusionProof", "The audit path."), *read_errors
                ),
            },
        },
        "/api/v1/audit/proofs/consistency": {
            "get": {
                "operationId": "consistencyProof",
                "tags": ["audit"],
                "summary": "Consistency proof between two sizes of the log",
                "x-roles": _ROLES,
                "parameters": [
                    _query("from", _SEQ, "The older tree size.", required=True),
                    _query("to", _SEQ, "The newer tree size.", required=True),
                ],
                "responses": _responses(
                    _json_ok(200, "ConsistencyProof", "The proof."), *read_errors
                ),
            },
        },
        "/api/v1/audit/bundles/{id}": {
            "parameters": [{"$ref": "#/components/parameters/MessageId"}],
            "get": {
                "operationId": "exportBundle",
                "tags": ["audit"],
                "summary": "The evidence bundle of the case this message belongs to",
                "description": "Records the export (`exported`, with the caller) in the log, "
                "signs a checkpoint, and returns the case's envelopes, receipts, evidence "
                "records with inclusion proofs, the checkpoint and the directory: verify it "
                "offline with `mla-node audit verify-bundle FILE --trust trust-root.json`. It "
                "discloses the messages' content to clerks and admins, and to auditors only when "
                "`audit.auditors_see_content` is set.",
                "x-roles": ["admin", "auditor", "clerk"],
                "responses": _responses(
                    {
                        "200": {
                            "description": "The bundle (canonical JSON, docs/audit.md).",
                            "content": {BUNDLE_TYPE: {"schema": {"type": "object"}}},
                        }
                    },
                    *read_errors,
                    404,
                    409,
                    503,
                ),
            },
        },
    }
