"""Graceful shutdown under load: stop a node while clerks submit to it and envelopes flow both
ways, restart it, and find every request delivered exactly once with one verified receipt.

Clerks send every submission with an ``Idempotency-Key``. An answer lost to the shutdown (a 503
``shutting_down``, or the connection closing under it) is sent again with the same key after the
restart: the node returns the message it created the first time, or creates it now. So the set of
requests is known exactly, and each recipient's inbox must be that set, no more, no less.

The first test stops an in-process node as SIGTERM does (``NodeRuntime.stop``); the second (slow)
sends a real SIGTERM to a node process of ``mla-node network up``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mla_node.protocol import forms
from mla_node.runtime import NodeRuntime
from tests.netkit import running_network, wait_for

Call = Callable[[str, str, str, Any, dict[str, str]], Awaitable[tuple[int, Any]]]


@dataclass
class Load:
    """Clerks submitting as fast as they can, each submission with its own key."""

    call: Call  # (state, method, path, json, headers) -> (status, body); may raise ClientError
    pairs: list[tuple[str, str]]
    sent: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (sender, recipient)
    unknown: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (sender, to)
    refused: int = 0  # 503 shutting_down answers seen
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    @staticmethod
    def body(to: str) -> dict[str, Any]:
        return {"type": "mla_request", "to": to, "form": forms.example("mla_request")}

    async def clerk(self, offset: int) -> None:
        for sender, to in itertools.islice(itertools.cycle(self.pairs), offset, None):
            if self.stop.is_set():
                return
            key = str(uuid.uuid4())
            try:
                status, body = await self.call(
                    sender, "POST", "/api/v1/requests", self.body(to), {"Idempotency-Key": key}
                )
            except (aiohttp.ClientError, OSError):
                self.unknown[key] = (sender, to)
                await asyncio.sleep(0.05)  # the node is going or gone: no busy loop meanwhile
                continue
            if status == 201:
                self.sent[body["id"]] = (sender, to)
            else:
                assert (status, body["code"]) == (503, "shutting_down"), body
                self.refused += 1
                self.unknown[key] = (sender, to)
                await asyncio.sleep(0.01)

    async def resolve_unknown(self) -> None:
        """After the restart: each submission whose answer was lost, again with its key."""
        for key, (sender, to) in self.unknown.items():
            status, body = await self.call(
                sender, "POST", "/api/v1/requests", self.body(to), {"Idempotency-Key": key}
            )
            assert status == 201, body
            self.sent[body["id"]] = (sender, to)

    async def check_exactly_once(self, states: tuple[str, ...]) -> None:
        for state in states:
            inbox: list[str] = []
            cursor = ""
            while True:
                _, page = await self.call(
                    state, "GET", f"/api/v1/requests?box=inbox&limit=200{cursor}", None, {}
                )
                inbox += [item["id"] for item in page["items"]]
                if not page["next_cursor"]:
                    break
                cursor = f"&cursor={page['next_cursor']}"
            expected = sorted(m for m, (_, to) in self.sent.items() if to == state)
            assert len(inbox) == len(set(inbox)), f"duplicates in {state}'s inbox"
            assert sorted(inbox) == expected, f"{state}'s inbox differs from what was sent"
        for message_id, (sender, _) in self.sent.items():
            _, view = await self.call(sender, "GET", f"/api/v1/requests/{message_id}", None, {})
            assert view["status"] == "delivered", (message_id, view["status"])
            assert view["receipt"]["verified"] is True
            assert [e["event"] for e in view["evidence"]] == ["submitted", "delivered"]

    async def drained(self, states: tuple[str, ...]) -> bool:
        for state in states:
            _, peers = await self.call(state, "GET", "/api/v1/peers", None, {})
            if any(p["queued"] for p in peers["peers"]):
                return False
        return True


async def test_stop_under_load_then_restart_delivers_every_request_once(tmp_path: Path) -> None:
    states = ("AR", "BR")
    async with running_network(tmp_path, states) as net:

        async def call(
            state: str, method: str, path: str, body: Any, headers: dict[str, str]
        ) -> tuple[int, Any]:
            return await net[state].call(method, path, json=body, headers=headers)

        load = Load(call, [("AR", "BR"), ("BR", "AR")])
        clerks = [asyncio.create_task(load.clerk(i)) for i in range(8)]
        await wait_for(lambda: _at_least(load, 150), within_s=30)

        ar = net["AR"]
        await ar.runtime.stop()  # what SIGTERM does (run_until_stopped)
        await asyncio.sleep(0.3)  # BR keeps submitting to AR and retrying its envelopes
        load.stop.set()
        await asyncio.gather(*clerks)
        ar.runtime = await NodeRuntime.start(ar.local.config)

        await load.resolve_unknown()
        await wait_for(lambda: load.drained(states), within_s=60)
        await load.check_exactly_once(states)
        assert len(load.sent) >= 150


async def _at_least(load: Load, n: int) -> bool:
    return len(load.sent) >= n


# --- a real process and a real SIGTERM ------------------------------------------------------------


def network_cli(folder: Path, *args: str, timeout: float = 120) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "mla_node", "network", *args, "--dir", str(folder)],
        check=True,
        timeout=timeout,
        capture_output=True,
        text=True,
    )
    return result.stdout


@pytest.mark.slow
async def test_sigterm_under_load_then_restart_delivers_every_request_once(
    tmp_path: Path,
) -> None:
    states = ("AR", "BR", "US")
    folder = tmp_path / "net"
    network_cli(folder, "up", "--states", ",".join(states))
    try:
        nodes = json.loads((folder / "network.json").read_text())["nodes"]
        async with aiohttp.ClientSession() as http:

            async def call(
                state: str, method: str, path: str, body: Any, headers: dict[str, str]
            ) -> tuple[int, Any]:
                node = nodes[state]
                async with http.request(
                    method,
                    node["clerk_url"] + path,
                    json=body,
                    headers={"Authorization": f"Bearer {node['token']}", **headers},
                ) as resp:
                    return resp.status, await resp.json(content_type=None)

            pairs = [(s, r) for s in states for r in states if s != r]
            load = Load(call, pairs)
            clerks = [asyncio.create_task(load.clerk(i)) for i in range(12)]
            await wait_for(lambda: _at_least(load, 300), within_s=60)
            stopped = await asyncio.to_thread(network_cli, folder, "stop-node", "AR")
            assert stopped.startswith("AR  stopped"), stopped  # SIGTERM sufficed: no SIGKILL
            await asyncio.sleep(1.0)  # the others keep submitting to AR, and retrying
            load.stop.set()
            await asyncio.gather(*clerks)
            await asyncio.to_thread(network_cli, folder, "start-node", "AR")
            nodes = json.loads((folder / "network.json").read_text())["nodes"]

            await load.resolve_unknown()
            await wait_for(lambda: load.drained(states), within_s=90, interval=0.5)
            await load.check_exactly_once(states)
            log = (folder / "nodes" / "AR" / "node.log").read_text()
            assert "node AR stopping" in log
            assert "Traceback" not in log
            print(
                f"\n{len(load.sent)} requests; {load.refused} writes refused with 503 "
                f"shutting_down and {len(load.unknown)} answers lost to the shutdown, all "
                "resolved with their Idempotency-Key; every request delivered exactly once"
            )
    finally:
        network_cli(folder, "down", timeout=60)
