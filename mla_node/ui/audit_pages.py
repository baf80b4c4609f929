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
CHECKPOINT_PAGE = 20


def _number(request: web.Request, name: str) -> int:
    raw = request.query.get(name, "0")
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 18 else 0


async def audit_page(request: web.Request) -> web.Response:
    """The log oldest first, ``LOG_PAGE`` records a page (``?after=`` the last seq shown: seqs
    run 1, 2, 3, ... with no gap); the checkpoints newest first, ``CHECKPOINT_PAGE`` a page
    (``?cp=`` how many newer ones to skip). Each list's links keep the other's place."""
    after = _number(request, "after")
    cp = _number(request, "cp")
    ctx = node(request)
    newest_first = list(reversed((await audit_views.checkpoints(ctx))["items"]))
    return render(
        request,
        "audit.html",
        checkpoints=newest_first[cp : cp + CHECKPOINT_PAGE],
        cp_prev=max(0, cp - CHECKPOINT_PAGE) if cp > 0 else None,
        cp_next=cp + CHECKPOINT_PAGE if cp + CHECKPOINT_PAGE < len(newest_first) else None,
        log=await audit_views.log_page(ctx, after=after, limit=LOG_PAGE),
        prev_after=max(0, after - LOG_PAGE) if after > 0 else None,
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
