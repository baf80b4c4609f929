"""Hold the real clerk API to its OpenAPI document.

``Api`` calls a running node like a clerk's program would and checks every answer against the
document: the status must be documented for the operation, the content type must be the one the
document names, and the body must validate (JSON Schema 2020-12, formats checked) against the
documented schema, resolved inside the document itself. It also refuses any 500, so every test in
this folder doubles as a "bad input never gives a 500" test.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from multidict import CIMultiDict, CIMultiDictProxy
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from mla_node.api.openapi import openapi_document
from mla_node.protocol import forms
from tests.netkit import RunningNode, wait_for

SPEC: dict[str, Any] = openapi_document()
SPEC_URI = "urn:mla-node:openapi"
_REGISTRY: Registry[Any] = Registry().with_resource(
    SPEC_URI, Resource.from_contents(SPEC, default_specification=DRAFT202012)
)
PROBLEM_JSON = "application/problem+json"
BAD_TOKEN = "mla_this-token-was-never-issued"


def _escape(segment: str) -> str:
    return segment.replace("~", "~0").replace("/", "~1")


def pointer(*segments: str) -> str:
    return "/" + "/".join(_escape(s) for s in segments)


def validator_at(json_pointer: str) -> Draft202012Validator:
    """A validator for the schema at ``json_pointer`` inside the document (refs resolve in it)."""
    return Draft202012Validator(
        {"$ref": f"{SPEC_URI}#{json_pointer}"},
        registry=_REGISTRY,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def schema_errors(json_pointer: str, instance: object) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in validator_at(json_pointer).iter_errors(instance)
    ]


def resolve(obj: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """Follow a local ``$ref``; returns the target and its pointer (None when not a ref)."""
    ref = obj.get("$ref")
    if ref is None:
        return obj, None
    assert isinstance(ref, str) and ref.startswith("#/"), ref
    target: Any = SPEC
    for part in ref[2:].split("/"):
        target = target[part.replace("~1", "/").replace("~0", "~")]
    return target, ref[1:]


def template_of(path: str) -> str | None:
    """The documented path template a concrete path matches, if any."""
    for template in SPEC["paths"]:
        regex = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(regex, path):
            return str(template)
    return None


@dataclass
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    content_type: str
    body: Any

    def problem(self) -> dict[str, Any]:
        assert self.content_type == PROBLEM_JSON, (self.status, self.content_type, self.body)
        assert isinstance(self.body, dict)
        return self.body


def check_against_spec(method: str, path: str, reply: Reply) -> None:
    """Fail unless ``reply`` is what the document says ``method path`` may answer."""
    assert reply.status != 500, f"{method} {path} gave a 500: {reply.body}"
    if reply.status >= 400:
        assert reply.content_type == PROBLEM_JSON, (method, path, reply.status, reply.body)
        errors = schema_errors("/components/schemas/Problem", reply.body)
        assert not errors, (method, path, reply.body, errors)
        assert reply.body["status"] == reply.status
        assert reply.body["type"] == f"/problems/{reply.body['code']}"
    template = template_of(path.split("?")[0])
    if template is None or method.lower() not in SPEC["paths"][template]:
        return  # 404 / 405: answered by aiohttp, shape checked above
    responses = SPEC["paths"][template][method.lower()]["responses"]
    assert str(reply.status) in responses, (
        f"{method} {template} answered {reply.status}, which the document does not list: "
        f"{reply.body}"
    )
    where = pointer("paths", template, method.lower(), "responses", str(reply.status))
    response, ref_pointer = resolve(responses[str(reply.status)])
    where = ref_pointer or where
    for name, header in response.get("headers", {}).items():
        if header.get("required"):
            assert name in reply.headers, f"{method} {template}: header {name} missing"
    content = response.get("content", {})
    assert reply.content_type in content, (method, template, reply.status, reply.content_type)
    if not reply.content_type.endswith("json"):
        return  # a file's bytes (evidence downloads): nothing to validate against a schema
    errors = schema_errors(where + pointer("content", reply.content_type, "schema"), reply.body)
    assert not errors, f"{method} {template} {reply.status} breaks the document: {errors}"


class Api:
    """A clerk's program talking to one node, with every answer checked against the document."""

    def __init__(self, node: RunningNode) -> None:
        self.node = node
        self.base = node.runtime.clerk_url

    def auth(self, role: str | None) -> dict[str, str]:
        if role is None:
            return {}
        token = BAD_TOKEN if role == "bad" else self.node.tokens[role]
        return {"Authorization": f"Bearer {token}"}

    async def __call__(
        self,
        method: str,
        path: str,
        *,
        role: str | None = "clerk",
        json_body: Any = None,
        data: bytes | str | io.BytesIO | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        all_headers = {**self.auth(role), **(headers or {})}
        async with self.node.http.request(
            method, self.base + path, json=json_body, data=data, headers=all_headers
        ) as resp:
            raw = await resp.read()
            body: Any = raw  # a file's bytes stay bytes
            if resp.content_type.endswith("json") or not raw:
                text = raw.decode()
                body = json.loads(text) if text else None
            reply = Reply(resp.status, resp.headers, resp.content_type, body)
        check_against_spec(method, path, reply)
        return reply

    async def raw(self, method: str, path: str, headers: bytes, body: bytes = b"") -> Reply:
        """Send bytes no well-behaved client would (e.g. headers that are not UTF-8)."""
        host, port = self.base.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
            head += f"Content-Length: {len(body)}\r\n"
            writer.write(head.encode() + headers + b"\r\n" + body)
            await writer.drain()
            response = await reader.read()
        finally:
            writer.close()
            await writer.wait_closed()
        head_bytes, _, payload = response.partition(b"\r\n\r\n")
        status_line, *header_lines = head_bytes.decode("latin-1").split("\r\n")
        parsed: CIMultiDict[str] = CIMultiDict(
            (name.strip(), value.strip())
            for name, _, value in (line.partition(":") for line in header_lines)
        )
        content_type = parsed.get("Content-Type", "").split(";")[0].strip()
        reply = Reply(
            int(status_line.split()[1]),
            CIMultiDictProxy(parsed),
            content_type,
            json.loads(payload) if payload else None,
        )
        check_against_spec(method, path, reply)
        return reply

    async def get(self, path: str, **kw: Any) -> Reply:
        return await self("GET", path, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return await self("POST", path, json_body=body, **kw)


def example_values(method: str, template: str) -> dict[str, Any]:
    """Name -> value of every example of the operation's JSON request body."""
    media = SPEC["paths"][template][method.lower()]["requestBody"]["content"]["application/json"]
    return {name: resolve(ex)[0]["value"] for name, ex in media["examples"].items()}


async def delivered(sender: Api, receiver: Api, form_type: str = "mla_request") -> str:
    """Submit a request from ``sender`` to ``receiver``; return its id once its receipt is back."""
    body = {"type": form_type, "to": receiver.node.state, "form": forms.example(form_type)}
    created = await sender.post("/api/v1/requests", body)
    assert created.status == 201, created.body
    message_id: str = created.body["id"]
    await wait_for_status(sender, message_id, "delivered")
    return message_id


async def wait_for_status(api: Api, message_id: str, status: str) -> None:
    async def reached() -> bool:
        # as auditor: a clerk opening a received request would change its status
        view = await api.get(f"/api/v1/requests/{message_id}", role="auditor")
        return bool(view.body["status"] == status)

    await wait_for(reached)
