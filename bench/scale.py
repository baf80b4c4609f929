"""Part ``scale``: the 35 OAS member states as 35 node processes on one machine.

**Nodes.** The network is made by :func:`mla_node.localnet.init_network` (authority, keys,
certificates, tokens, directory) and started by :func:`mla_node.supervisor.network_up`, exactly
as ``mla-node network up --states AG,AR,...`` does: one ``mla-node run`` process per state, each
with its own interpreter, SQLite database (WAL, ``synchronous=FULL``) and mutual TLS to every
peer. Creating the files and starting the processes are timed apart; start-up is from the start
command to the moment every node has written its ready file and answers ``GET /readyz`` 200.

**Idle.** After start-up the nodes are left alone for ``settle_s``; then every node's resident
set (``VmRSS`` from /proc) is read, and its CPU use over the quiet window (directory polling,
checkpoints, alert checks: what 35 idle nodes cost the machine).

**Load.** ``requests`` submissions of the A-55 example request (``POST /api/v1/requests``), each
from a random sender to a random other state (seeded: every run sends the same pairs), by
``concurrency`` clerks in a closed loop: a clerk submits, waits until the sender holds the
recipient's verified receipt, then submits the next. Completion is read as the e2e part reads it
(``bench/e2e.py``): a ``receipts`` row (role ``received``) in the sender's database, read-only,
written in the transaction that verified the receipt; one poller reads all senders' databases.

**Checks, after the load.** Through each node's clerk API: its outbox lists every request it sent
as ``delivered`` and none ``rejected`` or ``undeliverable``, each recipient's inbox holds every
request sent to it, and ``GET /api/v1/requests/{id}`` at the sender shows the receipt
``"verified": true`` (the node re-verifies it against the directory) for every request (or a
seeded sample, see ``verify_sample``). The resident sets are read again after the load, with
the peak (``VmHWM``).

Every node is stopped at the end, also on an error or Ctrl-C (SIGTERM too), and the part checks
that no node process is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import signal
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp

from bench.common import load_average, load_label, percentiles_ms, table
from bench.e2e import cpu_seconds_of, settle_receipts, submission_body
from mla_node.localnet import Manifest, init_network, manifest_lock
from mla_node.supervisor import network_down, network_up

# The 35 member states of the OAS, ISO 3166 alpha-2.
OAS_MEMBERS: tuple[str, ...] = (
    "AG", "AR", "BS", "BB", "BZ", "BO", "BR", "CA", "CL", "CO", "CR", "CU", "DM", "DO", "EC", "SV",
    "GD", "GT", "GY", "HT", "HN", "JM", "MX", "NI", "PA", "PY", "PE", "KN", "LC", "VC", "SR", "TT",
    "US", "UY", "VE",
)  # fmt: skip
FULL_REQUESTS = 10_000
QUICK_REQUESTS = 700
IDLE_RSS_LIMIT_MIB = 80.0  # issue 6's acceptance figure, per node
OP_TIMEOUT_S = 120.0  # one submission until its receipt is seen
MAX_ERRORS = 20  # the load stops after this many failed operations: something is broken
POLL_PAUSE_S = 0.005  # between two rounds of reads of the senders' databases
_PAGE = 200  # the API's largest page


@dataclass(frozen=True)
class ScaleSettings:
    states: Sequence[str] = OAS_MEMBERS
    requests: int = FULL_REQUESTS
    concurrency: int = 32
    settle_s: float = 10.0  # left alone after start-up before the idle RSS is read
    start_timeout_s: float = 300.0
    verify_sample: int | None = None  # GET-verify this many requests (None: all of them)
    seed: int = 35


class OpFailed(Exception):
    pass


def pairs(states: Sequence[str], count: int, seed: int) -> list[tuple[str, str]]:
    """``count`` (sender, recipient) pairs of different states, drawn uniformly (seeded)."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        sender, recipient = rng.sample(list(states), 2)
        out.append((sender, recipient))
    return out


# --- /proc ---------------------------------------------------------------------------------------


def _status_kib(pid: int | None, key: str) -> float | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_of(pid: int | None) -> float | None:
    """A running process's resident set in MiB (``VmRSS``), or None."""
    return _status_kib(pid, "VmRSS")


def peak_rss_of(pid: int | None) -> float | None:
    return _status_kib(pid, "VmHWM")


def spread(values: dict[str, float | None]) -> dict[str, float | None]:
    """min, median and max of the values there are (None where none is known)."""
    known = {k: v for k, v in values.items() if v is not None}
    if not known:
        return {"min": None, "median": None, "max": None}
    return {
        "min": min(known.values()),
        "median": round(statistics.median(known.values()), 1),
        "max": max(known.values()),
    }


# --- the watcher ---------------------------------------------------------------------------------


class MeshWatcher:
    """Reads every sender's database, read-only, for the receipts of the submissions it waits
    for, in rounds; resolves each with the time its verified receipt was first seen."""

    def __init__(self, databases: dict[str, Path]) -> None:
        self._databases = databases
        self._pending: dict[str, dict[str, asyncio.Future[float]]] = {s: {} for s in databases}
        self.rounds = 0
        self.watched_s = 0.0
        self.failure: OpFailed | None = None

    def expect(self, sender: str, message_id: str) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if self.failure is not None:
            future.set_exception(self.failure)
        else:
            self._pending[sender][message_id] = future
        return future

    async def run(self, stop: asyncio.Event) -> None:
        began = time.perf_counter()
        with contextlib.ExitStack() as stack:
            try:
                dbs = {
                    s: stack.enter_context(
                        contextlib.closing(
                            sqlite3.connect(
                                f"{p.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None
                            )
                        )
                    )
                    for s, p in self._databases.items()
                }
                while not stop.is_set():
                    for sender, db in dbs.items():
                        self._poll(sender, db)
                    self.rounds += 1
                    await asyncio.sleep(POLL_PAUSE_S)
            except (OpFailed, sqlite3.Error) as exc:
                self.failure = exc if isinstance(exc, OpFailed) else OpFailed(f"watcher: {exc}")
                for waiting in self._pending.values():
                    for future in waiting.values():
                        if not future.done():
                            future.set_exception(self.failure)
                    waiting.clear()
            finally:
                self.watched_s = time.perf_counter() - began

    def _poll(self, sender: str, db: sqlite3.Connection) -> None:
        settle_receipts(db, self._pending[sender])

    def round_ms(self) -> float | None:
        return round(self.watched_s / self.rounds * 1000, 2) if self.rounds else None


# --- load and checks -----------------------------------------------------------------------------


@dataclass
class Load:
    sent: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (sender, recipient)
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    bench_cpu_s: float = 0.0  # this process's own CPU time over the load: it shares the cores
    round_ms: float | None = None


async def _load(
    manifest: Manifest,
    work: list[tuple[str, str]],
    settings: ScaleSettings,
    progress: Callable[[str], None],
) -> Load:
    bodies = {s: submission_body(s) for s in manifest.nodes}
    watcher = MeshWatcher({s: Path(n.database) for s, n in manifest.nodes.items()})
    result = Load()
    queue = iter(work)
    done = 0
    step = max(1, len(work) // 10)
    connector = aiohttp.TCPConnector(limit=settings.concurrency + 8)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def op(sender: str, recipient: str) -> float:
            node = manifest.nodes[sender]
            headers = {"Authorization": f"Bearer {node.token}", "Content-Type": "application/json"}
            async with http.post(
                f"{node.clerk_url}/api/v1/requests", data=bodies[recipient], headers=headers
            ) as resp:
                answer = await resp.json()
                if resp.status != 201:
                    raise OpFailed(f"{sender}→{recipient} answered {resp.status}: {answer}")
            result.sent[answer["id"]] = (sender, recipient)
            return await watcher.expect(sender, answer["id"])

        async def worker() -> None:
            nonlocal done
            for sender, recipient in queue:
                if len(result.errors) >= MAX_ERRORS:
                    return
                began = time.perf_counter()
                try:
                    ended = await asyncio.wait_for(op(sender, recipient), OP_TIMEOUT_S)
                except (OpFailed, aiohttp.ClientError, TimeoutError) as exc:
                    result.errors.append(f"{type(exc).__name__}: {exc}"[:300])
                    continue
                result.latencies.append(ended - began)
                done += 1
                if done % step == 0:
                    progress(f"  scale load: {done:,}/{len(work):,} receipts")

        stop = asyncio.Event()
        polling = asyncio.create_task(watcher.run(stop))
        began, cpu = time.perf_counter(), time.process_time()
        try:
            await asyncio.gather(*(worker() for _ in range(settings.concurrency)))
        finally:
            result.wall_s = time.perf_counter() - began
            result.bench_cpu_s = time.process_time() - cpu
            stop.set()
            await polling
    result.round_ms = watcher.round_ms()
    return result


async def _pages(
    http: aiohttp.ClientSession, clerk_url: str, token: str, params: dict[str, str]
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = {**params, "limit": str(_PAGE), **({"cursor": cursor} if cursor else {})}
        async with http.get(
            f"{clerk_url}/api/v1/requests",
            params=query,
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            if resp.status != 200:
                raise OpFailed(f"listing {params} answered {resp.status}")
            page = await resp.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def _checks(manifest: Manifest, load: Load, settings: ScaleSettings) -> dict[str, Any]:
    """What the clerk APIs say about every request sent: delivered, in the recipient's inbox,
    and a receipt the sender verifies."""
    began = time.perf_counter()
    sent = load.sent
    async with aiohttp.ClientSession() as http:
        delivered: set[str] = set()
        in_inbox: set[str] = set()
        failed = 0
        for node in manifest.nodes.values():
            out = await _pages(http, node.clerk_url, node.token, {"box": "outbox"})
            delivered |= {m["id"] for m in out if m["status"] == "delivered" and m["id"] in sent}
            failed += sum(m["status"] in ("rejected", "undeliverable") for m in out)
            inbox = await _pages(http, node.clerk_url, node.token, {"box": "inbox"})
            in_inbox |= {m["id"] for m in inbox if sent.get(m["id"], ("", ""))[1] == node.state}
        listed_s = time.perf_counter() - began

        ids = sorted(sent)
        if settings.verify_sample is not None and settings.verify_sample < len(ids):
            ids = sorted(random.Random(settings.seed).sample(ids, settings.verify_sample))
        verified = 0
        not_verified: list[str] = []
        gate = asyncio.Semaphore(settings.concurrency)

        async def verify(message_id: str) -> None:
            nonlocal verified
            node = manifest.nodes[sent[message_id][0]]
            async with (
                gate,
                http.get(
                    f"{node.clerk_url}/api/v1/requests/{message_id}",
                    headers={"Authorization": f"Bearer {node.token}"},
                ) as resp,
            ):
                view = await resp.json()
            receipt = view.get("receipt") or {}
            if resp.status == 200 and view.get("status") == "delivered" and receipt.get("verified"):
                verified += 1
            else:
                not_verified.append(message_id)

        verify_began = time.perf_counter()
        await asyncio.gather(*(verify(i) for i in ids))
        verify_s = time.perf_counter() - verify_began
    return {
        "outbox_delivered": len(delivered),
        "inbox_received": len(in_inbox),
        "rejected_or_undeliverable": failed,
        "receipts_checked": len(ids),
        "receipts_verified": verified,
        "first_not_verified": not_verified[:5],
        "list_s": round(listed_s, 2),
        "verify_s": round(verify_s, 2),
    }


# --- the part ------------------------------------------------------------------------------------


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """A SIGTERM to the bench unwinds like Ctrl-C, so the nodes are stopped on the way out."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave it as it is
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop_all(folder: Path, procs: dict[str, Any]) -> list[str]:
    """Stop every node (a second Ctrl-C must not cut this short); the states of any left."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        network_down(folder, procs=procs)
    finally:
        signal.signal(signal.SIGINT, previous)
    return [s for s, p in procs.items() if p.poll() is None]


def run(settings: ScaleSettings, progress: Callable[[str], None] = print) -> dict[str, Any]:
    states = list(settings.states)
    work = pairs(states, settings.requests, settings.seed)
    with (
        sigterm_as_interrupt(),
        tempfile.TemporaryDirectory(prefix="mla-bench-scale-") as tmp,
    ):
        folder = Path(tmp) / "network"
        load_at_create = load_average()
        began = time.perf_counter()
        with manifest_lock(folder):
            init_network(folder, states, now=dt.datetime.now(dt.UTC))
        create_s = time.perf_counter() - began
        progress(f"  scale: {len(states)} nodes created in {create_s:.1f} s; starting them")
        load_at_start = load_average()
        procs: dict[str, Any] = {}
        left: list[str] = []
        began = time.perf_counter()
        try:
            manifest, procs = network_up(folder, states, timeout=settings.start_timeout_s)
            startup_s = time.perf_counter() - began
            progress(f"  scale: {len(states)} nodes ready in {startup_s:.1f} s")
            pids = {s: n.pid for s, n in manifest.nodes.items()}

            cpu_before = {s: cpu_seconds_of(p) for s, p in pids.items()}
            time.sleep(settings.settle_s)
            idle_rss = {s: rss_of(p) for s, p in pids.items()}
            idle_cpu = {
                s: _cpu_share(cpu_before[s], cpu_seconds_of(p), settings.settle_s)
                for s, p in pids.items()
            }
            load_idle = load_average()
            idle = spread(idle_rss)
            progress(
                f"  scale: idle RSS {idle['min']}/{idle['median']}/{idle['max']} MiB "
                f"(min/median/max); {len(work):,} requests, concurrency {settings.concurrency}"
            )

            load_before = load_average()
            cpu_before = {s: cpu_seconds_of(p) for s, p in pids.items()}
            load = asyncio.run(_load(manifest, work, settings, progress))
            load_after = load_average()
            cpu_load = {s: _delta(cpu_before[s], cpu_seconds_of(p)) for s, p in pids.items()}
            after_rss = {s: rss_of(p) for s, p in pids.items()}
            peak_rss = {s: peak_rss_of(p) for s, p in pids.items()}
            progress(f"  scale: load done in {load.wall_s:.1f} s; checking through the APIs")
            checks = asyncio.run(_checks(manifest, load, settings))
        finally:
            if procs:
                progress("  scale: stopping every node")
                left = stop_all(folder, procs)
    completed = len(load.latencies)
    node_cpu_s = sum(v for v in cpu_load.values() if v is not None)
    result: dict[str, Any] = {
        "settings": {
            "states": states,
            "nodes": len(states),
            "requests": settings.requests,
            "concurrency": settings.concurrency,
            "settle_s": settings.settle_s,
            "seed": settings.seed,
            "body_bytes": len(submission_body(states[0])),
            "body": "the mla_request example (forms.example, deadline a year ahead), "
            "random sender → random other state",
            "nodes_how": "mla-node processes (supervisor, as `mla-node network up`), SQLite WAL "
            "synchronous=FULL, mTLS",
            "completion": "the sender's verified receipt, read from its database (read-only)",
        },
        "create_s": round(create_s, 2),
        "startup_s": round(startup_s, 2),
        "load_at_create": load_at_create,
        "load_at_startup": load_at_start,
        "idle": {
            "rss_mib": idle,
            "rss_mib_by_state": idle_rss,
            "cpu_percent": spread(idle_cpu),
            "limit_mib": IDLE_RSS_LIMIT_MIB,
            "within_limit": idle["max"] is not None and idle["max"] <= IDLE_RSS_LIMIT_MIB,
            "load": load_idle,
        },
        "load": {
            "requests": len(work),
            "submitted": len(load.sent),
            "completed": completed,
            "wall_s": round(load.wall_s, 2),
            "per_s": round(completed / load.wall_s, 1) if load.wall_s > 0 else 0.0,
            **percentiles_ms(load.latencies),
            "errors": len(load.errors),
            "first_error": load.errors[0] if load.errors else None,
            "poll_round_ms": load.round_ms,
            "bench_cpu_s": round(load.bench_cpu_s, 2),
            "node_cpu_ms_per_req": round(node_cpu_s / completed * 1000, 2) if completed else None,
            "load_before": load_before,
            "load_after": load_after,
        },
        "checks": checks,
        "after_load": {"rss_mib": spread(after_rss), "peak_rss_mib": spread(peak_rss)},
        "left_running": left,
    }
    result["all_delivered"] = (
        completed == len(work)
        and not load.errors
        and checks["outbox_delivered"] == len(work)
        and checks["inbox_received"] == len(work)
        and checks["rejected_or_undeliverable"] == 0
        and checks["receipts_verified"] == checks["receipts_checked"]
    )
    return result


def _delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def _cpu_share(before: float | None, after: float | None, seconds: float) -> float | None:
    used = _delta(before, after)
    return None if used is None or seconds <= 0 else round(used / seconds * 100, 2)


def ok(result: dict[str, Any]) -> bool:
    """Every request delivered with a verified receipt and no node left running."""
    return bool(result["all_delivered"]) and not result["left_running"]


def render(result: dict[str, Any]) -> str:
    s, idle, load, checks = result["settings"], result["idle"], result["load"], result["checks"]
    after = result["after_load"]

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    def mmm(d: dict[str, float | None]) -> str:
        return f"{d['min']} / {d['median']} / {d['max']}"

    verdict = "all" if result["all_delivered"] else "NOT all"
    rows: list[list[Any]] = [
        ["nodes", s["nodes"], ""],
        ["create (keys, certificates, tokens)", f"{result['create_s']} s", ""],
        [
            "start-up (start command → all ready)",
            f"{result['startup_s']} s",
            load_label(result["load_at_startup"]),
        ],
        [
            "idle RSS per node, min / median / max",
            f"{mmm(idle['rss_mib'])} MiB",
            load_label(idle["load"]),
        ],
        ["idle CPU per node, min / median / max", f"{mmm(idle['cpu_percent'])} %", ""],
        [
            f"requests (concurrency {s['concurrency']})",
            f"{load['completed']:,} / {load['requests']:,} in {load['wall_s']} s",
            load_label(load["load_before"]),
        ],
        ["requests/s", load["per_s"], load_label(load["load_after"])],
        [
            "p50 / p99 ms (POST → receipt at sender)",
            f"{ms(load['p50_ms'])} / {ms(load['p99_ms'])}",
            "",
        ],
        ["node CPU ms per request (all nodes)", load["node_cpu_ms_per_req"], ""],
        ["bench process CPU during the load", f"{load['bench_cpu_s']} s", ""],
        ["outbox delivered (API)", f"{checks['outbox_delivered']:,}", ""],
        ["inbox received (API)", f"{checks['inbox_received']:,}", ""],
        [
            "receipts verified (API GET)",
            f"{checks['receipts_verified']:,} / {checks['receipts_checked']:,}",
            "",
        ],
        [
            "rejected or undeliverable, errors",
            checks["rejected_or_undeliverable"] + load["errors"],
            "",
        ],
        ["RSS after load, min / median / max", f"{mmm(after['rss_mib'])} MiB", ""],
        ["peak RSS (VmHWM), min / median / max", f"{mmm(after['peak_rss_mib'])} MiB", ""],
        ["nodes left running", len(result["left_running"]), ""],
    ]
    within = "within" if idle["within_limit"] else "OVER"
    notes = [
        f"idle RSS: {within} the {idle['limit_mib']:g} MiB per node of issue 6 "
        f"(read {s['settle_s']:g} s after start-up); {verdict} requests delivered with "
        "verified receipts",
        f"completion: {s['completion']}, every {load['poll_round_ms']} ms over all senders",
    ]
    if load["first_error"]:
        notes.append(f"first error: {load['first_error']}")
    if checks["first_not_verified"]:
        notes.append(f"not verified: {', '.join(checks['first_not_verified'])}")
    return "\n".join([table(["scale", "value", "load"], rows), *notes])
