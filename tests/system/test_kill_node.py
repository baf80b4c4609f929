"""Three real node processes over mutual TLS; one is killed with SIGKILL mid-run and restarted.

The acceptance test of the foundation: 300 requests in all six directions, the BR node killed for
``MLA_KILL_SECONDS`` (30 by default) while requests to and from it are in flight, then restarted.
At the end every request is in its recipient's inbox exactly once, every sender holds a verified
receipt for each, and no outbox holds anything.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mla_node.protocol import forms

STATES = ("AR", "BR", "US")
VICTIM = "BR"
TOTAL = 300
KILL_SECONDS = float(os.environ.get("MLA_KILL_SECONDS", "30"))

pytestmark = pytest.mark.slow


def cli(folder: Path, *args: str, timeout: float = 120) -> None:
    subprocess.run(
        [sys.executable, "-m", "mla_node", "network", *args, "--dir", str(folder)],
        check=True,
        timeout=timeout,
        capture_output=True,
    )


class Clerks:
    def __init__(self, http: aiohttp.ClientSession, network: dict[str, Any]) -> None:
        self.http = http
        self.nodes = network["nodes"]

    async def call(self, state: str, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        node = self.nodes[state]
        async with self.http.request(
            method,
            node["clerk_url"] + path,
            headers={"Authorization": f"Bearer {node['token']}"},
            **kw,
        ) as resp:
            return resp.status, await resp.json(content_type=None)

    async def submit(self, sender: str, recipient: str, n: int) -> str:
        form_type = ("mla_request", "extradition_request", "provisional_arrest")[n % 3]
        status, body = await self.call(
            sender,
            "POST",
            "/api/v1/requests",
            json={"type": form_type, "to": recipient, "form": forms.example(form_type)},
        )
        assert status == 201, body
        return str(body["id"])

    async def all_ids(self, state: str, box: str) -> list[str]:
        ids: list[str] = []
        cursor = ""
        while True:
            _, page = await self.call(state, "GET", f"/api/v1/requests?box={box}&limit=200{cursor}")
            ids += [item["id"] for item in page["items"]]
            if not page["next_cursor"]:
                return ids
            cursor = f"&cursor={page['next_cursor']}"


async def submit_wave(
    clerks: Clerks, pairs: list[tuple[str, str]], count: int, sent: dict[str, tuple[str, str]]
) -> None:
    jobs = list(itertools.islice(itertools.cycle(pairs), count))
    for chunk_start in range(0, len(jobs), 20):
        chunk = jobs[chunk_start : chunk_start + 20]
        ids = await asyncio.gather(
            *(clerks.submit(s, r, len(sent) + i) for i, (s, r) in enumerate(chunk))
        )
        for (s, r), message_id in zip(chunk, ids, strict=True):
            sent[message_id] = (s, r)


async def test_300_requests_exactly_once_with_a_node_killed(tmp_path: Path) -> None:
    folder = tmp_path / "net"
    cli(folder, "up", "--states", ",".join(STATES))
    try:
        network = json.loads((folder / "network.json").read_text())
        async with aiohttp.ClientSession() as http:
            clerks = Clerks(http, network)
            all_pairs = [(s, r) for s in STATES for r in STATES if s != r]
            without_victim = [(s, r) for s, r in all_pairs if s != VICTIM]
            sent: dict[str, tuple[str, str]] = {}

            await submit_wave(clerks, all_pairs, 90, sent)
            # The kill lands while envelopes are on their way to BR: submitted, sealed, queued
            # and being delivered at the very moment the process dies.
            in_flight = asyncio.create_task(submit_wave(clerks, without_victim, 60, sent))
            await asyncio.sleep(0.2)
            await asyncio.to_thread(cli, folder, "stop-node", VICTIM, "--kill")
            outage_started = time.monotonic()
            await in_flight
            await submit_wave(clerks, without_victim, 90, sent)
            await asyncio.sleep(max(0.0, KILL_SECONDS - (time.monotonic() - outage_started)))
            await asyncio.to_thread(cli, folder, "start-node", VICTIM)
            restarted = time.monotonic()
            network = json.loads((folder / "network.json").read_text())
            clerks.nodes = network["nodes"]
            await submit_wave(clerks, all_pairs, TOTAL - len(sent), sent)
            assert len(sent) == TOTAL

            deadline = time.monotonic() + 120
            while True:
                pending = 0
                for state in STATES:
                    _, peers = await clerks.call(state, "GET", "/api/v1/peers")
                    pending += sum(p["queued"] for p in peers["peers"])
                if pending == 0 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            assert pending == 0, f"{pending} envelopes still queued"
            print(
                f"\n{TOTAL} requests, {VICTIM} down {restarted - outage_started:.1f} s, "
                f"all delivered {time.monotonic() - restarted:.1f} s after its restart"
            )

            for state in STATES:
                inbox = await clerks.all_ids(state, "inbox")
                expected = sorted(m for m, (_, r) in sent.items() if r == state)
                assert len(inbox) == len(set(inbox)), f"duplicates in {state}'s inbox"
                assert sorted(inbox) == expected, f"{state}'s inbox differs from what was sent"

            unverified = []
            for message_id, (sender, _) in sent.items():
                _, view = await clerks.call(sender, "GET", f"/api/v1/requests/{message_id}")
                receipt = view["receipt"]
                if not (view["status"] == "delivered" and receipt and receipt["verified"]):
                    unverified.append((message_id, view["status"], receipt))
            assert unverified == []
    finally:
        cli(folder, "down", timeout=60)
