"""Real nodes in-process for tests: real files, real SQLite, real mutual TLS on 127.0.0.1:0.

With ``fault_proxies=True`` a :class:`chaos.proxy.FaultProxy` stands on each node's endpoint port
(the one the directory lists) and forwards to the port the node listens on, and each node sends
from its own loopback address (127.0.0.2, 127.0.0.3, ...), so a test can break any link.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from chaos.proxy import FaultProxy, Link
from mla_node.localnet import LocalNode, create_network
from mla_node.protocol import forms
from mla_node.runtime import NodeRuntime
from mla_node.service.tokens import create_token


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@dataclass
class RunningNode:
    local: LocalNode
    runtime: NodeRuntime
    tokens: dict[str, str]
    http: aiohttp.ClientSession

    @property
    def state(self) -> str:
        return self.local.state

    def headers(self, role: str = "clerk", **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}", **extra}

    async def call(
        self,
        method: str,
        path: str,
        *,
        role: str = "clerk",
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        async with self.http.request(
            method,
            self.runtime.clerk_url + path,
            json=json,
            headers={**self.headers(role), **(headers or {})},
        ) as resp:
            body = await resp.json(content_type=None)
            return resp.status, body

    async def submit(self, to: str, form_type: str = "mla_request", **kw: Any) -> dict[str, Any]:
        status, body = await self.call(
            "POST",
            "/api/v1/requests",
            json={"type": form_type, "to": to, "form": forms.example(form_type)},
            **kw,
        )
        assert status == 201, body
        result: dict[str, Any] = body
        return result


@dataclass
class Network:
    folder: Path
    nodes: dict[str, RunningNode] = field(default_factory=dict)
    proxies: dict[str, FaultProxy] = field(default_factory=dict)  # in front of each node
    sources: dict[str, str] = field(default_factory=dict)  # the address each node sends from

    def __getitem__(self, state: str) -> RunningNode:
        return self.nodes[state]

    def link(self, sender: str, recipient: str) -> Link:
        """The way from ``sender`` to ``recipient`` (with ``fault_proxies=True``)."""
        return Link(self.proxies[recipient], self.sources[sender])


async def wait_for(
    check: Callable[[], Awaitable[bool]], within_s: float = 20.0, interval: float = 0.05
) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(interval)


@asynccontextmanager
async def running_network(
    folder: Path,
    states: tuple[str, ...] = ("AR", "BR", "US"),
    *,
    fault_proxies: bool = False,
    **create: Any,
) -> AsyncIterator[Network]:
    peer_socks = {s: bound_socket() for s in states}
    clerk_socks = {s: bound_socket() for s in states}
    endpoint_socks = {s: bound_socket() for s in states} if fault_proxies else peer_socks
    locals_ = create_network(
        folder,
        list(states),
        peer_ports={s: k.getsockname()[1] for s, k in endpoint_socks.items()},
        clerk_ports={s: k.getsockname()[1] for s, k in clerk_socks.items()},
        listen_ports={s: k.getsockname()[1] for s, k in peer_socks.items()},
        now=dt.datetime.now(dt.UTC),
        **create,
    )
    network = Network(folder)
    http = aiohttp.ClientSession()
    try:
        for i, (state, local) in enumerate(locals_.items()):
            if fault_proxies:
                # Each node sends from its own loopback address, so a proxy can cut one link.
                network.sources[state] = f"127.0.0.{i + 2}"
            runtime = await NodeRuntime.start(
                local.config,
                clerk_socket=clerk_socks[state],
                peer_socket=peer_socks[state],
                source_host=network.sources.get(state),
            )
            if fault_proxies:
                proxy = FaultProxy("127.0.0.1", local.listen_port, seed=i)
                network.proxies[state] = await proxy.start(sock=endpoint_socks[state])
            tokens = {}
            for role in ("clerk", "approver", "auditor", "admin"):
                _, tokens[role] = await create_token(
                    runtime.ctx.db,
                    role,
                    f"{role}-{state}",
                    runtime.ctx.clock(),
                    signer=runtime.ctx.identity.signing_key,
                    state=state,
                )
            network.nodes[state] = RunningNode(local, runtime, tokens, http)
        yield network
    finally:
        for node in network.nodes.values():
            await node.runtime.stop()
        for proxy in network.proxies.values():
            await proxy.close()
        await http.close()
        for sock in [*peer_socks.values(), *clerk_socks.values(), *endpoint_socks.values()]:
            sock.close()
