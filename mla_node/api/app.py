"""The clerk API application: authentication, deny-by-default role policy, routes.

Every route has an entry in ``POLICY``; a route without one is refused to everybody (and a test
walks every route to make sure none is missing).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from mla_node.api.attachment_routes import ATTACHMENT_POLICY, add_attachment_routes
from mla_node.api.audit_routes import AUDIT_POLICY, add_audit_routes
from mla_node.api.openapi import openapi_document
from mla_node.api.ops_routes import OPS_POLICY, add_ops_routes, request_id_middleware
from mla_node.api.request_context import CTX, PRINCIPAL, message_id_of, principal_of
from mla_node.errors import (
    Forbidden,
    InvalidParameter,
    MalformedBody,
    ShuttingDown,
    UnsupportedMediaType,
)
from mla_node.ids import is_ulid
from mla_node.protocol import forms
from mla_node.service import cases, dead_letters, retention, views
from mla_node.service.context import NodeContext, Role
from mla_node.service.tokens import authenticate
from mla_node.storage import repo
from mla_node.transport.problems import problem_middleware
from mla_node.ui import add_ui, is_ui_request

ReadinessCheck = Callable[[], Awaitable[dict[str, Any]]]
READY: web.AppKey[ReadinessCheck] = web.AppKey("ready")

ANYONE = frozenset(Role)
PUBLIC: frozenset[Role] = frozenset()
# (method, route) -> roles allowed. PUBLIC routes need no token.
POLICY: dict[tuple[str, str], frozenset[Role]] = {
    ("POST", "/api/v1/requests"): frozenset({Role.CLERK}),
    ("GET", "/api/v1/requests"): ANYONE,
    ("GET", "/api/v1/requests/{id}"): ANYONE,
    ("POST", "/api/v1/requests/{id}/replies"): frozenset({Role.CLERK}),
    ("POST", "/api/v1/requests/{id}/acknowledge"): frozenset({Role.CLERK}),
    ("POST", "/api/v1/requests/{id}/resend"): frozenset({Role.ADMIN}),
    ("POST", "/api/v1/requests/{id}/hold"): frozenset({Role.ADMIN}),
    ("DELETE", "/api/v1/requests/{id}/hold"): frozenset({Role.ADMIN}),
    ("GET", "/api/v1/peers"): ANYONE,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    **AUDIT_POLICY,
    **ATTACHMENT_POLICY,
    **OPS_POLICY,
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    resource = request.match_info.route.resource
    if resource is None:  # no route matched: let aiohttp answer 404/405
        return await handler(request)
    if is_ui_request(request):  # sessions, not tokens: the UI applies its own UI_POLICY
        return await handler(request)
    allowed = POLICY.get((request.method, resource.canonical))
    if allowed is None and request.method == "HEAD":
        allowed = POLICY.get(("GET", resource.canonical))
    if allowed is PUBLIC:
        return await handler(request)
    principal = await authenticate(request.app[CTX].db, request.headers.get("Authorization"))
    if allowed is None or principal.role not in allowed:
        raise Forbidden(f"the {principal.role} role may not {request.method} {resource.canonical}")
    request[PRINCIPAL] = principal
    return await handler(request)


READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@web.middleware
async def shutdown_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Once the node is stopping (SIGTERM), reads still answer but writes are refused."""
    if request.method not in READ_METHODS and request.app[CTX].stopping:
        raise ShuttingDown("the node is shutting down; send this again once it is back")
    return await handler(request)


def _json_number(text: str) -> float | int:
    # JSON (and the document's JSON Schema) has one number type: 60.0 and 6e1 are the integer 60,
    # which the strict form models would refuse as a float. Beyond 2**53 a float is not exact.
    value = float(text)
    return int(value) if value.is_integer() and abs(value) <= 2**53 else value


async def _json_body(request: web.Request, *, optional: bool = False) -> Any:
    if not request.can_read_body:
        if optional:
            return {}
        raise MalformedBody("a JSON body is required")
    if request.content_type != "application/json":
        raise UnsupportedMediaType("send the body as application/json")
    raw = await request.read()
    try:
        return json.loads(raw, parse_float=_json_number)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedBody(f"the body is not valid JSON: {exc}") from None
    except RecursionError:  # "[[[[...": json.loads gives up past ~1000 levels
        raise MalformedBody("the body's JSON is nested too deeply") from None


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    # Printable ASCII, like the IETF idempotency-key draft's sf-string. A header that is not UTF-8
    # arrives here holding surrogates, which the database refused with a 500.
    if key is not None and not (1 <= len(key) <= 255 and all(" " <= c <= "~" for c in key)):
        raise InvalidParameter(
            "Idempotency-Key must be 1 to 255 printable ASCII characters", field="Idempotency-Key"
        )
    return key


def _created(message: repo.MessageRow, created: bool) -> web.Response:
    body = views.summary(message)
    headers = {"Location": f"/api/v1/requests/{message.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return web.json_response(body, status=201, headers=headers)


async def post_request(request: web.Request) -> web.Response:
    message, created = await cases.submit(
        request.app[CTX],
        principal_of(request),
        await _json_body(request),
        _idempotency_key(request),
    )
    return _created(message, created)


async def get_request(request: web.Request) -> web.Response:
    view = await views.get_request(request.app[CTX], principal_of(request), message_id_of(request))
    return web.json_response(view)


LIST_FILTERS = ("status", "type", "case", "peer", "cursor")


async def list_requests(request: web.Request) -> web.Response:
    q = request.query
    unknown = set(q) - {"box", "limit", *LIST_FILTERS}
    if unknown:
        raise InvalidParameter(
            f"unknown query parameter {sorted(unknown)[0]!r}", field=sorted(unknown)[0]
        )
    box = q.get("box", "outbox")
    if box not in ("outbox", "inbox"):
        raise InvalidParameter("box must be outbox or inbox", field="box")
    try:
        limit = int(q.get("limit", "50"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= views.MAX_PAGE:
        raise InvalidParameter(f"limit must be 1 to {views.MAX_PAGE}", field="limit")
    for name in ("case", "cursor"):
        if name in q and not is_ulid(q[name]):
            raise InvalidParameter(f"{name} must be a message id", field=name)
    # A typo in a filter must not look like an empty box.
    for name, allowed in (("status", repo.MESSAGE_STATUSES), ("type", forms.ALL_TYPES)):
        if name in q and q[name] not in allowed:
            raise InvalidParameter(
                f"{name} must be one of {', '.join(sorted(allowed))}", field=name
            )
    if "peer" in q and not (len(q["peer"]) == 2 and q["peer"].isascii() and q["peer"].isupper()):
        raise InvalidParameter("peer must be a two-letter state code", field="peer")
    page = await views.list_requests(
        request.app[CTX],
        box=box,
        status=q.get("status"),
        form_type=q.get("type"),
        case_id=q.get("case"),
        peer=q.get("peer"),
        cursor=q.get("cursor"),
        limit=limit,
    )
    return web.json_response(page)


async def post_reply(request: web.Request) -> web.Response:
    message, created = await cases.reply(
        request.app[CTX],
        principal_of(request),
        message_id_of(request),
        await _json_body(request),
        _idempotency_key(request),
    )
    return _created(message, created)


async def post_acknowledge(request: web.Request) -> web.Response:
    message, created = await cases.acknowledge(
        request.app[CTX],
        principal_of(request),
        message_id_of(request),
        await _json_body(request, optional=True),
    )
    return _created(message, created)


async def post_resend(request: web.Request) -> web.Response:
    message = await dead_letters.resend(
        request.app[CTX], principal_of(request), message_id_of(request)
    )
    return web.json_response(
        views.summary(message), headers={"Location": f"/api/v1/requests/{message.id}"}
    )


async def post_hold(request: web.Request) -> web.Response:
    view = await retention.set_hold(
        request.app[CTX],
        principal_of(request),
        message_id_of(request),
        await _json_body(request, optional=True),
    )
    return web.json_response(view)


async def delete_hold(request: web.Request) -> web.Response:
    view = await retention.release_hold(
        request.app[CTX], principal_of(request), message_id_of(request)
    )
    return web.json_response(view)


async def get_peers(request: web.Request) -> web.Response:
    return web.json_response(await views.peers(request.app[CTX]))


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    report = await request.app[READY]()
    return web.json_response(report, status=200 if report["ready"] else 503)


def make_clerk_app(
    ctx: NodeContext, ready: Callable[[], Awaitable[dict[str, Any]]], max_body: int
) -> web.Application:
    app = web.Application(
        middlewares=[
            request_id_middleware,
            problem_middleware,
            auth_middleware,
            shutdown_middleware,
        ],
        client_max_size=max_body,
    )
    app[CTX] = ctx
    app[READY] = ready
    r = app.router
    r.add_post("/api/v1/requests", post_request)
    r.add_get("/api/v1/requests", list_requests)
    r.add_get("/api/v1/requests/{id}", get_request)
    r.add_post("/api/v1/requests/{id}/replies", post_reply)
    r.add_post("/api/v1/requests/{id}/acknowledge", post_acknowledge)
    r.add_post("/api/v1/requests/{id}/resend", post_resend)
    r.add_post("/api/v1/requests/{id}/hold", post_hold)
    r.add_delete("/api/v1/requests/{id}/hold", delete_hold)
    r.add_get("/api/v1/peers", get_peers)
    r.add_get("/openapi.json", get_openapi)
    r.add_get("/healthz", healthz)
    r.add_get("/readyz", readyz)
    add_audit_routes(r)
    add_attachment_routes(r)
    add_ops_routes(app)
    add_ui(app)  # the web interface at /ui/ (mla_node/ui, docs/ui.md)
    return app
