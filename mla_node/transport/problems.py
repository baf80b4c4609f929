"""RFC 9457 problem responses for every HTTP surface of the node (peer endpoint and clerk API).

One middleware turns our errors into problem+json with their stable code; anything else becomes
a 500 problem with no traceback and no internal detail (the traceback goes to the log only).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from mla_node.errors import MlaError, PayloadTooLarge

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def problem_response(err: MlaError) -> web.Response:
    body = err.problem()
    for key, value in list(body.items()):
        if isinstance(value, bytes):  # signed rejection receipts travel base64-encoded
            body[key] = base64.b64encode(value).decode()
    return web.json_response(body, status=err.status, content_type=PROBLEM_JSON)


def _http_problem(exc: web.HTTPException) -> dict[str, Any]:
    code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
        exc.status, "http_error"
    )
    return {
        "type": f"/problems/{code}",
        "title": exc.reason,
        "status": exc.status,
        "detail": exc.reason,
        "code": code,
    }


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except MlaError as err:
        return problem_response(err)
    except web.HTTPRequestEntityTooLarge:
        return problem_response(PayloadTooLarge("the request body is larger than allowed"))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # 405 must say what is allowed (RFC 9110 15.5.6).
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return web.json_response(
            _http_problem(exc), status=exc.status, content_type=PROBLEM_JSON, headers=headers
        )
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem_response(MlaError("an internal error occurred; it has been logged"))
