"""The evidence-file routes' part of the OpenAPI document (api/attachment_routes.py)."""

from __future__ import annotations

from typing import Any

from mla_node.api.attachment_routes import CONTENT, NAME_HEADER, OCTET_STREAM, UPLOADS
from mla_node.api.openapi import (
    HEX_SHA256_PATTERN,
    _json_ok,
    _nullable,
    _object,
    _ref,
    _responses,
)
from mla_node.ids import ULID_PATTERN
from mla_node.protocol.attachments import MAX_ATTACHMENTS, MAX_NAME_BYTES

_ULID = {"type": "string", "pattern": ULID_PATTERN.pattern}
_SHA = {"type": "string", "pattern": HEX_SHA256_PATTERN}
_NAME = {"type": "string", "minLength": 1, "maxLength": MAX_NAME_BYTES}


def attachments_property() -> dict[str, Any]:
    """The ``attachments`` member of a submission."""
    return {
        "type": "array",
        "items": _ULID,
        "maxItems": MAX_ATTACHMENTS,
        "uniqueItems": True,
        "description": "Ids of evidence files uploaded with POST /api/v1/attachments and not "
        "attached to a message yet. Each file's name, size, SHA-256 and key travel in the signed, "
        "encrypted envelope; the file itself is sent to the other node before it, resumably.",
    }


def attachment_schemas() -> dict[str, Any]:
    return {
        "Upload": _object(
            {
                "id": {**_ULID, "description": "Name it in a submission's `attachments`."},
                "name": {**_NAME, "description": "The display name, sanitised."},
                "size": {"type": "integer", "minimum": 0},
                "sha256": {**_SHA, "description": "SHA-256 of the file as uploaded."},
                "message_id": {
                    **_nullable(_ULID),
                    "description": "The message that carries it; null until a submission names it.",
                },
            },
            description="An evidence file stored (encrypted) at this node.",
        ),
        "AttachmentInfo": _object(
            {
                "n": {"type": "integer", "minimum": 0, "description": "Its position, from 0."},
                "name": {
                    **_nullable(_NAME),
                    "description": "Display name (sanitised); null for a role that does not "
                    "see the request's content.",
                },
                "size": {"type": "integer", "minimum": 0},
                "sha256": {**_SHA, "description": "SHA-256 of the file, signed by the sender."},
            },
            description="One evidence file of a request: download it from "
            "`/api/v1/requests/{id}/attachments/{n}`.",
        ),
    }


def attachment_paths() -> dict[str, Any]:
    id_param = {"$ref": "#/components/parameters/MessageId"}
    return {
        UPLOADS: {
            "post": {
                "operationId": "uploadAttachment",
                "tags": ["requests"],
                "summary": "Upload an evidence file (streamed; then name it in a submission)",
                "description": "The raw bytes of the file as the body. It is encrypted as it "
                "streams in (AES-256-GCM in 1 MiB chunks, a fresh key per file) and stored under "
                "the digest of the encrypted bytes: memory does not grow with the file, and no "
                "name on disk comes from the client. Up to `clerk_api.max_attachment_bytes` "
                "(not `max_body_bytes`); a larger Content-Length is refused before the body is "
                "read, also on `Expect: 100-continue`.",
                "x-roles": ["clerk"],
                "parameters": [
                    {
                        "name": NAME_HEADER,
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": "The file's name, percent-encoded UTF-8, optionally as an "
                        "RFC 8187 value (`UTF-8''na%C3%AFve.pdf`). Only shown, never used as a "
                        "path: control, bidi and other format characters are removed, path "
                        "separators and characters Windows forbids replaced, reserved device "
                        "names prefixed, the length cut to 255 UTF-8 bytes.",
                    }
                ],
                "requestBody": {
                    # An empty body is an empty file: HTTP cannot tell "no body" from it.
                    "required": False,
                    "content": {OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}},
                },
                "responses": _responses(
                    {
                        "201": {
                            "description": "Stored; not attached to anything yet.",
                            "headers": {
                                "Location": {
                                    "required": True,
                                    "schema": {"type": "string"},
                                    "description": "`/api/v1/attachments/{id}`.",
                                }
                            },
                            "content": {"application/json": {"schema": _ref("Upload")}},
                        }
                    },
                    400,
                    401,
                    403,
                    413,
                    415,
                    503,
                ),
            },
        },
        UPLOADS + "/{id}": {
            "parameters": [id_param],
            "get": {
                "operationId": "getAttachment",
                "tags": ["requests"],
                "summary": "An uploaded file: name, size, digest, the message carrying it",
                "x-roles": ["clerk"],
                "responses": _responses(_json_ok(200, "Upload", "The file."), 400, 401, 403, 404),
            },
        },
        CONTENT: {
            "parameters": [
                id_param,
                {
                    "name": "n",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[0-9]{1,3}$"},
                    "description": "The file's position in the request's `attachments`, from 0.",
                },
            ],
            "get": {
                "operationId": "downloadAttachment",
                "tags": ["requests"],
                "summary": "Download an evidence file of a request (streamed)",
                "description": "Decrypted chunk by chunk as it is sent, each chunk's tag "
                "checked; `Repr-Digest` (RFC 9530) carries its SHA-256, and a file that fails "
                "any check is cut off, never delivered short. Recorded as a signed `viewed` "
                "entry (`detail` `attachment:<n>`). The roles that see a request's form: an "
                "`auditor` only with `audit.auditors_see_content`.",
                "x-roles": ["admin", "approver", "auditor", "clerk"],
                "responses": _responses(
                    {
                        "200": {
                            "description": "The file's bytes.",
                            "headers": {
                                "Content-Disposition": {
                                    "required": True,
                                    "schema": {"type": "string"},
                                    "description": "RFC 6266, `filename` (ASCII) and "
                                    "`filename*` (UTF-8): the sanitised name.",
                                },
                                "Repr-Digest": {
                                    "required": True,
                                    "schema": {"type": "string"},
                                    "description": "`sha-256=:<base64>:` of the file.",
                                },
                            },
                            "content": {
                                OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}
                            },
                        }
                    },
                    400,
                    401,
                    403,
                    404,
                    409,
                    503,
                ),
            },
        },
    }
