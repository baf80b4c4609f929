"""Memory stays constant whatever an evidence file's size: two node processes, two file sizes.

Each file is uploaded to AR (streamed), sent to BR with a request until AR holds BR's verified
receipt, and downloaded from BR (streamed, its SHA-256 checked). The peak RSS of each node
process (``VmHWM``) after the small file and after one eight times larger must be the same give
or take a few MiB, and under a fixed bound. Sizes: 32 and 256 MiB; with ``MLA_FULL=1`` 64 MiB
and 2 GiB.
"""

from __future__ import annotations

import asyncio
import os

import aiohttp
import pytest

from bench.common import MIB
from bench.e2e import peak_rss_of
from bench.transfer import download_sha256, pattern_sha256, send_and_wait, two_nodes, upload
from mla_node.localnet import Manifest

pytestmark = pytest.mark.slow

FULL = os.environ.get("MLA_FULL") == "1"
SMALL, LARGE = (64, 2048) if FULL else (32, 256)
PEAK_BOUND_MIB = 120  # a node's peak, whatever the file (idle about 70 MiB, ~90 measured)
GROWTH_BOUND_MIB = 24  # small file to large (~10 measured: allocator noise, not the file)


def test_peak_memory_does_not_grow_with_the_file() -> None:
    # Synchronous: starting the node processes runs an event loop of its own.
    with two_nodes() as manifest:
        peaks = asyncio.run(_send_two_sizes(manifest))
    print(f"\npeak RSS after {SMALL} MiB: {peaks[0]}; after {LARGE} MiB: {peaks[1]}")
    for state in peaks[0]:
        small, large = peaks[0][state], peaks[1][state]
        assert small is not None and large is not None
        assert large < PEAK_BOUND_MIB, (state, large)
        assert large - small < GROWTH_BOUND_MIB, (state, small, large)


async def _send_two_sizes(manifest: Manifest) -> list[dict[str, float | None]]:
    peaks = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as http:
        for size in (SMALL * MIB, LARGE * MIB):
            up = await upload(http, manifest, size)
            assert up["size"] == size and up["sha256"] == pattern_sha256(size)
            message_id = await send_and_wait(http, manifest, up["id"])
            assert await download_sha256(http, manifest, message_id) == (up["sha256"], size)
            peaks.append({s: peak_rss_of(n.pid) for s, n in manifest.nodes.items()})
    return peaks
