"""The auditor's routes of the clerk API: read-only views of the transparency log (docs/audit.md).

Their roles are in ``AUDIT_POLICY``, merged into the app's deny-by-default ``POLICY``.
"""

from __future__ import annotations

from aiohttp import web

from mla_node.api.request_context import message_id_of, node_of, principal_of
from mla_node.errors import InvalidParameter
from mla_node.service import audit_views
from mla_node.service.context import Role

BUNDLE_TYPE = "application/vnd.mla-node.bundle+json"
_AUDITORS = frozenset({Role.AUDITOR, Role.ADMIN})

AUDIT_POLICY: dict[tuple[str, str], frozenset[Role]] = {
    ("GET", "/api/v1/audit/checkpoints"): _AUDITORS,
    # Signing a head changes nothing the log says; it only commits to it, so auditors may ask.
    ("POST", "/api/v1/audit/checkpoints"): _AUDITORS,
    ("GET", "/api/v1/audit/log"): _AUDITORS,
    ("GET", "/api/v1/audit/proofs/inclusion"): _AUDITORS,
    ("GET", "/api/v1/audit/proofs/consistency"): _AUDITORS,
    # A clerk may need a case's bundle for a court as much as an auditor does.
    ("GET", "/api/v1/audit/bundles/{id}"): frozenset({Role.CLERK, Role.AUDITOR, Role.ADMIN}),
}


# The largest number a query parameter takes (18 digits: below SQLite's 2**63, and never a
# 4,300-digit string handed to int()). The document states it as each parameter's maximum.
MAX_INT_PARAM = 10**18 - 1


def _int_param(request: web.Request, name: str, *, default: int | None = None) -> int:
    raw = request.query.get(name)
    if raw is None:
        if default is None:
            raise InvalidParameter(f"{name} is required", field=name)
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= len(str(MAX_INT_PARAM))):
        raise InvalidParameter(f"{name} must be a whole number ≥ 0", field=name)
    return int(raw)


def _only(request: web.Request, *names: str) -> None:
    unknown = sorted(set(request.query) - set(names))
    if unknown:
        raise InvalidParameter(f"unknown query parameter {unknown[0]!r}", field=unknown[0])


async def get_checkpoints(request: web.Request) -> web.Response:
    _only(request)
    return web.json_response(await audit_views.checkpoints(node_of(request)))


async def post_checkpoint(request: web.Request) -> web.Response:
    _only(request)
    return web.json_response(await audit_views.sign_checkpoint_now(node_of(request)))


async def get_log(request: web.Request) -> web.Response:
    _only(request, "after", "limit")
    after = _int_param(request, "after", default=0)
    limit = _int_param(request, "limit", default=100)
    if not 1 <= limit <= audit_views.MAX_LOG_PAGE:
        raise InvalidParameter(f"limit must be 1 to {audit_views.MAX_LOG_PAGE}", field="limit")
    return web.json_response(await audit_views.log_page(node_of(request), after=after, limit=limit))


async def get_inclusion(request: web.Request) -> web.Response:
    _only(request, "seq", "size")
    seq = _int_param(request, "seq")
    size = _int_param(request, "size") if "size" in request.query else None
    return web.json_response(await audit_views.inclusion(node_of(request), seq=seq, size=size))


async def get_consistency(request: web.Request) -> web.Response:
    _only(request, "from", "to")
    view = await audit_views.consistency(
        node_of(request), old_size=_int_param(request, "from"), size=_int_param(request, "to")
    )
    return web.json_response(view)


async def get_bundle(request: web.Request) -> web.Response:
    _only(request)
    bundle = await audit_views.export_bundle(
        node_of(request), principal_of(request), message_id_of(request)
    )
    return web.Response(
        body=bundle.data,
        content_type=BUNDLE_TYPE,
        headers={
            "Content-Disposition": f'attachment; filename="case-{bundle.case_id}.bundle.json"'
        },
    )


def add_audit_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/v1/audit/checkpoints", get_checkpoints)
    router.add_post("/api/v1/audit/checkpoints", post_checkpoint)
    router.add_get("/api/v1/audit/log", get_log)
    router.add_get("/api/v1/audit/proofs/inclusion", get_inclusion)
    router.add_get("/api/v1/audit/proofs/consistency", get_consistency)
    router.add_get("/api/v1/audit/bundles/{id}", get_bundle)
