"""Slowloris: 500 connections trickling a request byte by byte do not slow an honest clerk.

Loopback only, bounded (~15 s of attack). The honest clerk lists requests and submits new ones
all along; its p99 latency must stay at or under 2 s. The figure is printed (``-s``) and listed
in docs/security.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.netkit import RunningNode, running_network

SLOW_CONNECTIONS = 500
ATTACK_S = 15.0
BYTE_EVERY_S = 1.0
P99_LIMIT_S = 2.0
# A request that never ends: the request line, then headers one byte at a time, forever.
TRICKLE = b"POST /api/v1/requests HTTP/1.1\r\nHost: clerk\r\nContent-Type: application/json\r\n"


async def slow_client(host: str, port: int, stop: asyncio.Event, opened: list[int]) -> None:
    try:
        _reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return
    opened.append(1)
    try:
        i = 0
        while not stop.is_set():
            writer.write(
                TRICKLE[i % len(TRICKLE) : i % len(TRICKLE) + 1] if i < len(TRICKLE) else b"X"
            )
            await writer.drain()
            i += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), BYTE_EVERY_S)
    except OSError:
        pass  # the server dropped us: that is allowed
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def honest_clerk(node: RunningNode, stop: asyncio.Event, latencies: list[float]) -> None:
    n = 0
    while not stop.is_set():
        start = time.perf_counter()
        if n % 5 == 0:
            await node.submit("BR")
        else:
            status, _ = await node.call("GET", "/api/v1/requests?limit=20")
            assert status == 200
        latencies.append(time.perf_counter() - start)
        n += 1
        await asyncio.sleep(0.02)


@pytest.mark.slow
async def test_slowloris_does_not_starve_an_honest_clerk(tmp_path: Path) -> None:
    async with running_network(tmp_path, ("AR", "BR")) as net:
        node = net["AR"]
        url = urlsplit(node.runtime.clerk_url)
        assert url.hostname == "127.0.0.1"
        assert url.port is not None
        stop = asyncio.Event()
        opened: list[int] = []
        attackers = [
            asyncio.create_task(slow_client(url.hostname, url.port, stop, opened))
            for _ in range(SLOW_CONNECTIONS)
        ]
        await asyncio.sleep(1.0)  # every slow connection is open and has sent something
        latencies: list[float] = []
        clerk = asyncio.create_task(honest_clerk(node, stop, latencies))
        await asyncio.sleep(ATTACK_S)
        stop.set()
        await asyncio.wait_for(clerk, 10)
        await asyncio.wait_for(asyncio.gather(*attackers), 10)

    assert len(opened) == SLOW_CONNECTIONS
    assert len(latencies) > 50
    p99 = statistics.quantiles(latencies, n=100)[98]
    print(
        f"\nslowloris: {len(opened)} slow connections, {len(latencies)} honest requests, "
        f"p50 {statistics.median(latencies) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms"
    )
    assert p99 <= P99_LIMIT_S
