"""The auditor's pages: checkpoints, the log (user actions included), bundle export, and the
verification of an uploaded bundle with the network's trust root."""

from __future__ import annotations

import asyncio

from aiohttp import BodyPartReader, web

from mla_node.errors import InvalidParameter, MlaError, PayloadTooLarge
from mla_node.ids import is_ulid
from mla_node.protocol.bundle import verify_bundle
from mla_node.service import audit_views
from mla_node.ui.core import CSRF_FIELD, check_csrf, node, principal, render

MAX_BUNDLE = 64 * 1024 * 1024
LOG_PAGE = 50


async def audit_page(request: web.Request) -> web.Response:
    raw = request.query.get("after", "0")
    after = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 18 else 0
    ctx = node(request)
    return render(
        request,
        "audit.html",
        checkpoints=await audit_views.checkpoints(ctx),
        log=await audit_views.log_page(ctx, after=after, limit=LOG_PAGE),
    )


async def bundle_download(request: web.Request) -> web.Response:
    message_id = request.match_info["id"]
    if not is_ulid(message_id):
        raise InvalidParameter("the id must be a 26-character message id", field="id")
    bundle = await audit_views.export_bundle(node(request), principal(request), message_id)
    return web.Response(
        body=bundle.data,
        content_type="application/vnd.mla-node.bundle+json",
        headers={
            "Content-Disposition": f'attachment; filename="case-{bundle.case_id}.bundle.json"',
            "Cache-Control": "no-store",
        },
    )


async def verify_page(request: web.Request) -> web.Response:
    return render(request, "verify.html", verdict=None)


async def verify_upload(request: web.Request) -> web.Response:
    """multipart/form-data: the CSRF field first, then the bundle file."""
    reader = await request.multipart()
    first = await reader.next()
    token = None
    if isinstance(first, BodyPartReader) and first.name == CSRF_FIELD:
        token = (await first.read(decode=True)).decode("utf-8", "replace")
    check_csrf(request, token)
    part = await reader.next()
    if not isinstance(part, BodyPartReader) or part.name != "bundle":
        raise InvalidParameter("choose a bundle file", field="bundle")
    data = bytearray()
    while chunk := await part.read_chunk():
        data += chunk
        if len(data) > MAX_BUNDLE:
            raise PayloadTooLarge(f"a bundle may have at most {MAX_BUNDLE} bytes")
    trust = node(request).trust.trust_root
    try:
        report = await asyncio.to_thread(verify_bundle, bytes(data), trust)
    except MlaError as exc:
        verdict = {"ok": False, "code": exc.code, "detail": exc.detail, "account": []}
    else:
        verdict = {
            "ok": True,
            "node": report.node,
            "case": report.case,
            "directory_version": report.directory_version,
            "messages": len(report.messages),
            "records": len(report.evidence),
            "account": report.account(),
        }
    return render(request, "verify.html", status=200, verdict=verdict, filename=part.filename)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/audit", audit_page)
    router.add_get("/audit/verify", verify_page)
    router.add_post("/audit/verify", verify_upload)
    router.add_get("/bundles/{id}", bundle_download)
