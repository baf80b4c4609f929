"""Evidence files in the clerk API: upload (streamed), look up an upload, download (streamed).

Their roles are in ``ATTACHMENT_POLICY``, merged into the app's deny-by-default ``POLICY``.
The upload is the one route without the ``clerk_api.max_body_bytes`` cap: its body is never
read into memory but encrypted to disk as it arrives, up to ``clerk_api.max_attachment_bytes``.
"""

from __future__ import annotations

import base64
import logging

from aiohttp import web
from aiohttp.web_urldispatcher import _default_expect_handler

from mla_node.api.request_context import CTX, message_id_of, node_of, principal_of
from mla_node.errors import InvalidParameter, MlaError, PayloadTooLarge, UnsupportedMediaType
from mla_node.protocol.attachments import content_disposition, decode_name_header
from mla_node.service import attachments
from mla_node.service.context import Role
from mla_node.transport.problems import problem_response

log = logging.getLogger(__name__)

OCTET_STREAM = "application/octet-stream"
NAME_HEADER = "X-File-Name"
UPLOADS = "/api/v1/attachments"
CONTENT = "/api/v1/requests/{id}/attachments/{n}"

ATTACHMENT_POLICY: dict[tuple[str, str], frozenset[Role]] = {
    ("POST", UPLOADS): frozenset({Role.CLERK}),
    ("GET", UPLOADS + "/{id}"): frozenset({Role.CLERK}),
    # Whoever sees a request's form sees its files (an auditor only with
    # audit.auditors_see_content): checked per call in service/attachments.open_download.
    ("GET", CONTENT): frozenset(Role),
}


async def _expect_continue(request: web.Request) -> web.StreamResponse | None:
    """``Expect: 100-continue`` (curl sends it for large bodies): refuse a declared size over the
    limit before the client sends a byte of it, instead of after."""
    limit = request.app[CTX].config.clerk_api.max_attachment_bytes
    if request.content_length is not None and request.content_length > limit:
        return problem_response(PayloadTooLarge(f"a file may have at most {limit} bytes"))
    await _default_expect_handler(request)
    return None


async def post_attachment(request: web.Request) -> web.Response:
    if request.content_type != OCTET_STREAM:
        raise UnsupportedMediaType(f"send the file's bytes as {OCTET_STREAM}")
    row = await attachments.upload(
        node_of(request),
        principal_of(request),
        request.content.read,
        length=request.content_length,
        name=decode_name_header(request.headers.get(NAME_HEADER)),
    )
    return web.json_response(
        attachments.upload_view(row),
        status=201,
        headers={"Location": f"{UPLOADS}/{row.id}"},
    )


async def get_attachment(request: web.Request) -> web.Response:
    row = await attachments.get_upload(node_of(request), message_id_of(request))
    return web.json_response(attachments.upload_view(row))


def file_position(request: web.Request) -> int:
    """The ``n`` of a ``.../attachments/{n}`` route: a file's position in its request."""
    raw = request.match_info["n"]
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3):
        raise InvalidParameter("n is the file's position in the request, from 0", field="n")
    return int(raw)


async def get_attachment_content(request: web.Request) -> web.StreamResponse:
    download = await attachments.open_download(
        node_of(request), principal_of(request), message_id_of(request), file_position(request)
    )
    return await stream_download(request, download)


async def stream_download(
    request: web.Request, download: attachments.Download
) -> web.StreamResponse:
    """Stream a decrypted evidence file (the clerk API's and the web interface's downloads)."""
    digest = base64.b64encode(download.sha256).decode()
    response = web.StreamResponse(
        headers={
            "Content-Type": OCTET_STREAM,
            "Content-Disposition": content_disposition(download.name),
            "Repr-Digest": f"sha-256=:{digest}:",  # RFC 9530: the client can check the file
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        }
    )
    response.content_length = download.size
    await response.prepare(request)
    try:
        if request.method != "HEAD":
            async for chunk in download.chunks:
                await response.write(chunk)
    except MlaError:
        # The status is sent already: cut the connection, so that the client sees fewer bytes
        # than Content-Length promised, never a shorter file taken for the whole.
        log.exception("download of a file of %s stopped", request.match_info["id"])
        if request.transport is not None:
            request.transport.abort()
        return response
    finally:
        await download.chunks.aclose()
    await response.write_eof()
    return response


def add_attachment_routes(router: web.UrlDispatcher) -> None:
    router.add_post(UPLOADS, post_attachment, expect_handler=_expect_continue)
    router.add_get(UPLOADS + "/{id}", get_attachment)
    router.add_get(CONTENT, get_attachment_content)
