"""What every route handler reads from its request: the node, the caller, the message id."""

from __future__ import annotations

from aiohttp import web

from mla_node.errors import InvalidParameter
from mla_node.ids import is_ulid
from mla_node.service.context import NodeContext, Principal

CTX = web.AppKey("ctx", NodeContext)
PRINCIPAL = web.RequestKey("principal", Principal)


def node_of(request: web.Request) -> NodeContext:
    return request.app[CTX]


def principal_of(request: web.Request) -> Principal:
    principal: Principal = request[PRINCIPAL]
    return principal


def message_id_of(request: web.Request) -> str:
    message_id = request.match_info["id"]
    if not is_ulid(message_id):
        raise InvalidParameter("the id must be a 26-character message id", field="id")
    return message_id
