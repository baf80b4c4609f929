"""The operators' routes of the clerk API: ``GET /metrics`` and ``GET /api/v1/alerts``, and the
request id every call carries (mla_node/logs.py).

``/metrics`` needs an auditor or admin token, unlike ``/healthz``: the counts per peer say how
much this state exchanges with each other state (the traffic analysis the coarse envelope
header is there to deny), so they are not for whoever reaches the clerk API's address. A
scraper sends the token with Prometheus' ``authorization`` setting; the read-only auditor role
is enough, so the scraper never holds a token that can act.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from mla_node.api.request_context import node_of
from mla_node.errors import InvalidParameter
from mla_node.logs import REQUEST_ID, REQUEST_ID_HEADER, new_request_id, valid_request_id
from mla_node.service import metrics
from mla_node.service.alerts import AlertMonitor, iso
from mla_node.service.context import Role
from mla_node.service.counters import DeliveryMetrics

OPS_POLICY: dict[tuple[str, str], frozenset[Role]] = {
    ("GET", "/metrics"): frozenset({Role.AUDITOR, Role.ADMIN}),
    ("GET", "/api/v1/alerts"): frozenset({Role.ADMIN}),
}


@dataclass(frozen=True)
class Ops:
    """What the operators' routes read besides the node: its counters and its alert monitor."""

    counters: DeliveryMetrics
    monitor: AlertMonitor


OPS: web.AppKey[Ops] = web.AppKey("ops", Ops)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give the call its request id: the caller's ``Mla-Request-Id`` when it is a well-formed
    one (a front proxy's, a client's), else a new one. Every log line of the call carries it,
    a submission stores it for its deliveries, and the answer names it."""
    rid = valid_request_id(request.headers.get(REQUEST_ID_HEADER)) or new_request_id()
    REQUEST_ID.set(rid)  # each request runs in its own task: this never leaks to another
    return await handler(request)


async def _name_request_id(request: web.Request, response: web.StreamResponse) -> None:
    rid = REQUEST_ID.get()
    if rid is not None:
        response.headers[REQUEST_ID_HEADER] = rid


async def get_metrics(request: web.Request) -> web.Response:
    ctx = node_of(request)
    if request.query:
        name = sorted(request.query)[0]
        raise InvalidParameter(f"unknown query parameter {name!r}", field=name)
    ops = request.app[OPS]
    text = await metrics.render(ctx, ops.counters, ops.monitor)
    return web.Response(text=text, headers={"Content-Type": metrics.CONTENT_TYPE})


async def get_alerts(request: web.Request) -> web.Response:
    ctx = node_of(request)
    if request.query:
        name = sorted(request.query)[0]
        raise InvalidParameter(f"unknown query parameter {name!r}", field=name)
    alerts = await request.app[OPS].monitor.current()
    return web.json_response(
        {
            "state": ctx.state,
            "checked_at": iso(ctx.clock()),
            "alerts": [a.as_json() for a in alerts],
        }
    )


def add_ops_routes(app: web.Application) -> None:
    app.on_response_prepare.append(_name_request_id)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/api/v1/alerts", get_alerts)
