"""Two real nodes (Argentina, Brazil) for the web interface's tests, and a signed-in browser-like
HTTP client (cookie jar, CSRF token read from the page)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.netkit import Network, RunningNode, running_network, wait_for

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def net(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Network]:
    async with running_network(tmp_path_factory.mktemp("ui"), ("AR", "BR")) as network:
        yield network


@dataclass
class Browser:
    """An HTTP client that behaves like a browser towards /ui/: cookies kept, redirects not
    followed (the tests look at them), the page's CSRF token remembered."""

    node: RunningNode
    http: aiohttp.ClientSession
    csrf: str = ""

    @property
    def base(self) -> str:
        return self.node.runtime.clerk_url

    async def get(self, path: str, **kw: Any) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.http.get(self.base + path, allow_redirects=False, **kw) as r:
            text = await r.text()
            found = CSRF.search(text)
            if found:
                self.csrf = found.group(1)
            return r.status, text, r

    async def post(
        self, path: str, data: Any = None, **kw: Any
    ) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.http.post(
            self.base + path, data=data if data is not None else {}, allow_redirects=False, **kw
        ) as r:
            return r.status, await r.text(), r

    async def sign_in(self, role: str = "clerk") -> None:
        await self.get("/ui/signin")
        status, _, _ = await self.post(
            "/ui/signin", {"csrf": self.csrf, "token": self.node.tokens[role], "next": ""}
        )
        assert status == 303, status
        await self.get("/ui/cases")


@asynccontextmanager
async def browser(node: RunningNode, role: str | None = "clerk") -> AsyncIterator[Browser]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        b = Browser(node, http)
        if role is not None:
            await b.sign_in(role)
        yield b


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def clerk_case(net: Network) -> str:
    """A request Argentina sent to Brazil through the API, delivered."""
    sent = await net["AR"].submit("BR")

    async def delivered() -> bool:
        _, body = await net["AR"].call("GET", "/api/v1/requests?box=outbox")
        return any(m["id"] == sent["id"] and m["status"] == "delivered" for m in body["items"])

    await wait_for(delivered)
    case_id: str = sent["id"]
    return case_id
