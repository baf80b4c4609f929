"""The web interface's deny-by-default role table, against every route it registers, and a role
matrix over real sessions: every UI route, every role, signed out.

The API's own table (tests/api/test_roles.py) covers the API; the clerk app's bearer-token
middleware lets only requests routed into the UI sub-application through to this table.
"""

from __future__ import annotations

from typing import Any, cast

import pytest

from mla_node.api.app import make_clerk_app
from mla_node.service.context import NodeContext
from mla_node.ui import UI_POLICY
from tests.netkit import Network
from tests.ui.conftest import browser

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _ready() -> dict[str, Any]:
    return {"ready": True, "checks": {}}


def ui_routes() -> set[tuple[str, str]]:
    app = make_clerk_app(cast(NodeContext, object()), _ready, 1 << 20)
    routes = set()
    for route in app.router.routes():
        assert route.resource is not None
        if route.resource.canonical.startswith("/ui/") and route.method != "HEAD":
            routes.add((route.method, route.resource.canonical))
    return routes


async def test_every_ui_route_has_a_policy_entry_and_every_entry_a_route() -> None:
    assert ui_routes() == set(UI_POLICY)


ROLES = ("clerk", "approver", "auditor", "admin", None)
# GET pages only: what a session of each role gets (303: to the sign-in page).
# fmt: off
#                                     clerk approver auditor admin signed out
PAGES: dict[str, tuple[int, int, int, int, int]] = {
    "/ui/signin":                      (200,  200,     200,    200,  200),
    "/ui/cases":                       (200,  200,     200,    200,  303),
    "/ui/inbox":                       (200,  200,     200,    200,  303),
    "/ui/requests/{id}":               (200,  200,     200,    200,  303),
    "/ui/new":                         (200,  403,     403,    403,  303),
    "/ui/network":                     (200,  200,     200,    200,  303),
    "/ui/audit":                       (403,  403,     200,    200,  303),
    "/ui/audit/verify":                (403,  403,     200,    200,  303),
    "/ui/bundles/{id}":                (200,  403,     200,    200,  303),
}
# fmt: on


@pytest.mark.parametrize("role", ROLES, ids=[str(r) for r in ROLES])
@pytest.mark.parametrize("template", list(PAGES))
async def test_ui_role_matrix(
    net: Network, clerk_case: str, template: str, role: str | None
) -> None:
    expected = PAGES[template][ROLES.index(role)]
    async with browser(net["AR"], role) as b:
        status, _, _ = await b.get(template.replace("{id}", clerk_case))
        assert status == expected, (template, role)


@pytest.mark.parametrize("role", ["approver", "auditor", "admin"])
async def test_only_a_clerk_posts_case_actions(net: Network, clerk_case: str, role: str) -> None:
    async with browser(net["BR"], role) as b:
        for path in (
            f"/ui/requests/{clerk_case}/acknowledge",
            f"/ui/requests/{clerk_case}/reply",
            "/ui/new",
        ):
            status, _, _ = await b.post(path, {"csrf": b.csrf})
            assert status == 403, (path, role)
        status, _, _ = await b.post(
            "/ui/attachments",
            data=b"x",
            headers={"Content-Type": "application/octet-stream", "X-CSRF-Token": b.csrf},
        )
        assert status == 403
