"""A large evidence file between two node processes: upload, node to node, download, memory.

    .venv/bin/python -m bench.transfer            # 1 GiB
    .venv/bin/python -m bench.transfer --quick    # 64 MiB

Two ``mla-node`` processes (supervisor, as ``mla-node network up`` starts them) on loopback,
mutual TLS, SQLite WAL ``synchronous=FULL``. Measured, each as MB/s of the file's size:

- ``local write+fsync``: this process writing the same number of bytes to a new file in the same
  folder and fsyncing it (the disk's ceiling for what the receiver must do);
- ``local write+fsync, stored bytes``: the same, writing the very bytes BR stores (the encrypted
  file, read back from BR's store first so that reading costs nothing). This disk is a virtual
  one whose speed depends on what is written: the test pattern above is mostly repetitive, the
  ciphertext is not, and the two references differ by up to 1.5× from run to run; both are
  shown, and the ratio uses each;
- ``clerk upload``: ``POST /api/v1/attachments`` at AR, streamed from this process, until the
  201 (encrypted, hashed, written and fsynced at AR);
- ``node to node``: the file already stored at AR, from the submission naming it until AR's
  status is ``delivered``: pushed to BR over TLS, fsynced, its digest checked, then decrypted and
  checked against the signed envelope at BR, the envelope stored, the receipt signed and
  verified back at AR;
- ``download``: ``GET /api/v1/requests/{id}/attachments/0`` at BR, decrypted and verified as
  it streams (this process hashes what it receives, too).

And each node's peak RSS (``VmHWM``) after all of it. ``run(quick)`` returns the figures;
``tests/system/test_attachment_memory.py`` uses the same pieces to hold memory constant.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import MIB, load_average, size_label, table
from bench.e2e import peak_rss_of
from mla_node.config import load_config
from mla_node.localnet import Manifest
from mla_node.protocol import forms
from mla_node.supervisor import network_down, network_up

SENDER, RECIPIENT = "AR", "BR"
BLOCK = MIB
POLL_S = 0.02
_PATTERN = os.urandom(BLOCK)  # content does not matter to a node that encrypts it


def pattern(size: int) -> Iterator[bytes]:
    """``size`` bytes in blocks, each block distinct (the index is written into it)."""
    for offset in range(0, size, BLOCK):
        n = min(BLOCK, size - offset)
        yield (offset.to_bytes(8, "big") + _PATTERN[8:])[:n]


def pattern_sha256(size: int) -> str:
    digest = hashlib.sha256()
    for block in pattern(size):
        digest.update(block)
    return digest.hexdigest()


@contextmanager
def two_nodes() -> Iterator[Manifest]:
    with tempfile.TemporaryDirectory(prefix="mla-transfer-") as tmp:
        folder = Path(tmp) / "network"
        manifest, procs = network_up(folder, [SENDER, RECIPIENT])
        try:
            yield manifest
        finally:
            network_down(folder, procs=procs)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def upload(
    http: aiohttp.ClientSession, manifest: Manifest, size: int, name: str = "evidence.bin"
) -> dict[str, Any]:
    node = manifest.nodes[SENDER]

    async def body() -> AsyncIterator[bytes]:
        for block in pattern(size):
            yield block

    headers = {**_auth(node.token), "Content-Type": "application/octet-stream"}
    headers["X-File-Name"] = name
    async with http.post(
        node.clerk_url + "/api/v1/attachments", data=body(), headers=headers
    ) as resp:
        result: dict[str, Any] = await resp.json()
        if resp.status != 201:
            raise RuntimeError(f"upload: {resp.status} {result}")
        return result


async def send_and_wait(
    http: aiohttp.ClientSession, manifest: Manifest, attachment_id: str, timeout_s: float = 600
) -> str:
    """Submit a request carrying the file; return its id once AR holds BR's verified receipt."""
    node = manifest.nodes[SENDER]
    submission = {
        "type": "mla_request",
        "to": RECIPIENT,
        "form": forms.example("mla_request"),
        "attachments": [attachment_id],
    }
    async with http.post(
        node.clerk_url + "/api/v1/requests", json=submission, headers=_auth(node.token)
    ) as resp:
        created = await resp.json()
        if resp.status != 201:
            raise RuntimeError(f"submit: {resp.status} {created}")
    message_id: str = created["id"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        async with http.get(
            f"{node.clerk_url}/api/v1/requests/{message_id}", headers=_auth(node.auditor_token)
        ) as resp:
            if (await resp.json())["status"] == "delivered":
                return message_id
        await asyncio.sleep(POLL_S)
    raise RuntimeError(f"{message_id} not delivered within {timeout_s} s")


async def download_sha256(
    http: aiohttp.ClientSession, manifest: Manifest, message_id: str
) -> tuple[str, int]:
    node = manifest.nodes[RECIPIENT]
    digest, size = hashlib.sha256(), 0
    url = f"{node.clerk_url}/api/v1/requests/{message_id}/attachments/0"
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
    async with http.get(url, headers=_auth(node.token), timeout=timeout) as resp:
        if resp.status != 200:
            raise RuntimeError(f"download: {resp.status}")
        async for piece in resp.content.iter_chunked(BLOCK):
            digest.update(piece)
            size += len(piece)
    return digest.hexdigest(), size


def local_write_fsync(folder: Path, blocks: Iterable[bytes]) -> float:
    """Seconds to write ``blocks`` to a new file in ``folder`` and fsync it."""
    path = folder / "fsync-probe.bin"
    started = time.perf_counter()
    with path.open("wb") as f:
        for block in blocks:
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    seconds = time.perf_counter() - started
    path.unlink()
    return seconds


def file_blocks(source: Path) -> Iterator[bytes]:
    with source.open("rb") as f:
        while block := f.read(BLOCK):
            yield block


def stored_blob(manifest: Manifest, state: str) -> Path:
    """The largest file in ``state``'s evidence store: the one the part sent."""
    config = load_config(manifest.nodes[state].config)
    return max(
        (p for p in config.files_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size
    )


def _mb_s(size: int, seconds: float) -> float:
    return round(size / seconds / 1e6, 1)


async def _measure(
    manifest: Manifest, size: int, progress: Callable[[str], None]
) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        started = time.perf_counter()
        up = await upload(http, manifest, size)
        upload_s = time.perf_counter() - started
        progress(f"  transfer: uploaded {size_label(size)} in {upload_s:.2f} s")
        started = time.perf_counter()
        message_id = await send_and_wait(http, manifest, up["id"])
        transfer_s = time.perf_counter() - started
        progress(f"  transfer: delivered in {transfer_s:.2f} s")
        started = time.perf_counter()
        got_sha, got_size = await download_sha256(http, manifest, message_id)
        download_s = time.perf_counter() - started
    if (got_sha, got_size) != (up["sha256"], size):
        raise RuntimeError("the downloaded file is not the uploaded one")
    return {"upload_s": upload_s, "transfer_s": transfer_s, "download_s": download_s}


def run(quick: bool) -> dict[str, object]:
    size = (64 if quick else 1024) * MIB
    progress = print
    load_before = load_average()
    with two_nodes() as manifest:
        folder = manifest.folder
        fsync_s = local_write_fsync(folder, pattern(size))
        times = asyncio.run(_measure(manifest, size, progress))
        peak = {s: peak_rss_of(n.pid) for s, n in manifest.nodes.items()}
        stored = stored_blob(manifest, RECIPIENT)
        stored_size = stored.stat().st_size
        for _ in file_blocks(stored):  # into the page cache: reading them back costs nothing
            pass
        stored_fsync_s = local_write_fsync(folder, file_blocks(stored))
    return {
        "file_bytes": size,
        "local_write_fsync_mb_s": _mb_s(size, fsync_s),
        "clerk_upload_mb_s": _mb_s(size, times["upload_s"]),
        "node_to_node_mb_s": _mb_s(size, times["transfer_s"]),
        "node_to_node_vs_local": round(fsync_s / times["transfer_s"], 2),
        "stored_bytes": stored_size,
        "local_write_fsync_stored_mb_s": _mb_s(stored_size, stored_fsync_s),
        "node_to_node_vs_local_stored": round(stored_fsync_s / times["transfer_s"], 2),
        "download_mb_s": _mb_s(size, times["download_s"]),
        "node_to_node_s": round(times["transfer_s"], 2),
        "node_peak_rss_mib": peak,
        "load_before": load_before,
        "load_after": load_average(),
    }


def render(result: dict[str, object]) -> str:
    size = result["file_bytes"]
    assert isinstance(size, int)
    peak = result["node_peak_rss_mib"]
    assert isinstance(peak, dict)
    rows = [
        ("local write+fsync", result["local_write_fsync_mb_s"], ""),
        ("local write+fsync, stored bytes", result["local_write_fsync_stored_mb_s"], ""),
        ("clerk upload (AR)", result["clerk_upload_mb_s"], ""),
        (
            "node to node, to verified receipt",
            result["node_to_node_mb_s"],
            f"{result['node_to_node_vs_local']}x local, "
            f"{result['node_to_node_vs_local_stored']}x stored bytes",
        ),
        ("download (BR)", result["download_mb_s"], ""),
    ]
    memory = f"peak RSS: {', '.join(f'{s} {v} MiB' for s, v in peak.items())}"
    return f"evidence file of {size_label(size)}\n" + table(("", "MB/s", ""), rows) + "\n" + memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="64 MiB instead of 1 GiB")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()
    result = run(args.quick)
    print(render(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
