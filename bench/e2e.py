"""Part ``e2e``: two real nodes on loopback, from the clerk's submission to the verified receipt
back at the sender, against plain aiohttp POSTs of the same body between two processes.

**Nodes as processes.** AR and BR run as ``mla-node run`` processes started by
``mla_node.supervisor`` (what ``mla-node network up`` does), with real keys, SQLite in WAL with
``synchronous=FULL``, and mutual TLS between them. In-process runtimes (``tests/netkit.py``) would
put both nodes and the load generator on one event loop and one core; as processes each node has
its own interpreter and event loop, as in production, and the two cores are shared the way they
would be.

**Closed loop.** At concurrency *c*, *c* clerks each submit a request (``POST /api/v1/requests``,
the treaty's A-55 example request to BR) and wait until AR holds BR's verified receipt before
submitting the next. Throughput counts the completions inside the measuring window (after a
warm-up); latency is from the start of the POST to the moment the sender is seen to hold the
receipt.

**Completion signal.** The bench reads the sender's SQLite database, read-only, every
``POLL_PAUSE_S``, for a row in ``receipts`` (role ``received``) for each submission it waits for.
AR writes that row in the very transaction that verified BR's receipt and took the envelope out
of the outbox (``service/delivery.py``, ``_record``), so its presence is exactly "the sender holds
the verified receipt", committed. It costs the nodes nothing: the query runs in the bench
process, not on a node's event loop, and a WAL reader never blocks the writer. The API offers no
such signal: polling ``GET /api/v1/requests/{id}`` re-verifies every receipt and evidence record
and signs a ``viewed`` record per message, and even polling the queue through
``GET /api/v1/requests?status=queued`` every 0.5 ms took a third off the throughput at
concurrency 16 (121 against 179 requests/s with a 10 ms pause, same run). The price is
resolution: a completion is seen up to one poll period late (``poll_ms`` in the results). At the
end of every level the API must list nothing ``rejected`` or ``undeliverable``.

**Where the time goes.** Each node row also gives the median of the clerk's POST alone, until
its 201 (the request sealed, signed and committed at the sender); the rest of the latency is
delivery: the exchange, the receiver's work and commit, the sender's verification and commit.

**Batches, on and off.** A second pair of nodes, configured with ``delivery.batch_max = 1``, sends
each envelope in its own exchange (as every node did before batches, docs/protocol.md §5.2); it
runs the same closed loop, level by level beside the first, so the batches' effect is a ratio
measured in one run.

**Ceiling.** ``bench/echo_server.py`` in another process answers the same bytes with a 201; the
same closed loop drives it at the same concurrency, alternating with the nodes level by level so
both see the same machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import ROOT, load_average, load_label, percentiles_ms, table
from mla_node.localnet import Manifest, init_network
from mla_node.protocol import forms
from mla_node.supervisor import network_down, network_up

SENDER, RECIPIENT = "AR", "BR"
MAX_ERRORS = 20  # a level stops after this many failed operations: something is broken
OP_TIMEOUT_S = 30.0  # one submission's receipt, or one plain POST
POLL_PAUSE_S = 0.0005  # between the watcher's reads: the resolution of a completion time
_PAGE = 200  # the API's largest page


@dataclass(frozen=True)
class E2ESettings:
    levels: Sequence[int]
    seconds: float  # measured, per level and per side
    warmup_s: float
    max_ops: int  # per level and side, a bound on top of the time


class OpFailed(Exception):
    pass


def submission_body(recipient: str = RECIPIENT) -> bytes:
    """The clerk's JSON: the complete A-55 example request, as the README's tour sends it, with
    its deadline a year ahead. The example's own date has passed, which would make every request
    of a run an overdue case for the node's alert check: a load of its own, not this one."""
    due = (dt.date.today() + dt.timedelta(days=365)).isoformat()
    form = {**forms.example("mla_request"), "deadline": due}
    return json.dumps({"type": "mla_request", "to": recipient, "form": form}).encode()


# --- the closed loop -----------------------------------------------------------------------------

Op = Callable[[], Awaitable[float]]  # does one operation, returns when (perf_counter) it completed


@dataclass
class LoopResult:
    latencies: list[float] = field(default_factory=list)
    completed: int = 0  # inside the measuring window
    operations: int = 0  # every completed operation, warm-up and stragglers too
    window_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        rate = self.completed / self.window_s if self.window_s > 0 else 0.0
        return {
            "completed": self.completed,
            "window_s": round(self.window_s, 3),
            "per_s": round(rate, 1),
            **percentiles_ms(self.latencies),
            "errors": len(self.errors),
            "first_error": self.errors[0] if self.errors else None,
        }


async def closed_loop(
    op: Op, *, concurrency: int, seconds: float, warmup_s: float, max_ops: int
) -> LoopResult:
    """``concurrency`` workers run ``op`` back to back for ``warmup_s + seconds`` or ``max_ops``
    operations in all, whichever ends first; every operation is bounded by OP_TIMEOUT_S."""
    result = LoopResult()
    start = time.perf_counter()
    measure_from, stop_at = start + warmup_s, start + warmup_s + seconds
    tickets = itertools.count()
    last_end = measure_from

    async def worker() -> None:
        nonlocal last_end
        while time.perf_counter() < stop_at and next(tickets) < max_ops:
            if len(result.errors) >= MAX_ERRORS:
                return
            began = time.perf_counter()
            try:
                ended = await asyncio.wait_for(op(), OP_TIMEOUT_S)
            except (OpFailed, aiohttp.ClientError, TimeoutError) as exc:
                result.errors.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            result.operations += 1
            if began >= measure_from:
                result.latencies.append(ended - began)
            if measure_from <= ended <= stop_at:
                result.completed += 1
                last_end = max(last_end, ended)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    # Ended by max_ops before the time: the window is what was used of it.
    result.window_s = (stop_at if time.perf_counter() >= stop_at else last_end) - measure_from
    return result


# --- the watcher: when does the sender hold the receipt? -----------------------------------------


def settle_receipts(db: sqlite3.Connection, pending: dict[str, asyncio.Future[float]]) -> None:
    """One autocommit read (microseconds, and a WAL reader never blocks the node's writer):
    which of the waiting ids have a receipt the sender verified and stored; each is resolved
    with the time it was seen (or fails, when it was refused) and leaves ``pending``."""
    waiting = list(pending)
    if not waiting:
        return
    marks = ",".join("?" * len(waiting))
    rows = db.execute(
        # Only "?" marks are formatted into the statement; the ids are parameters.
        "SELECT message_id, status FROM receipts "
        f"WHERE role = 'received' AND message_id IN ({marks})",
        waiting,
    ).fetchall()
    resolve_receipts(rows, pending)


def resolve_receipts(
    rows: Iterable[tuple[str, str]], pending: dict[str, asyncio.Future[float]]
) -> None:
    """(message id, receipt status) just read: each leaves ``pending``, resolved now."""
    seen = time.perf_counter()
    for message_id, status in rows:
        future = pending.pop(message_id)
        if future.done():  # its submission timed out and gave up waiting
            continue
        if status == "delivered":
            future.set_result(seen)
        else:
            future.set_exception(OpFailed(f"{message_id} was {status}"))


class Watcher:
    """Reads the sender's database, read-only, for the receipts of the submissions it waits for;
    resolves each one with the time its receipt was first seen."""

    def __init__(self, database: Path) -> None:
        self._database = database
        self._pending: dict[str, asyncio.Future[float]] = {}
        self.polls = 0
        self.watched_s = 0.0
        self.failure: OpFailed | None = None

    def expect(self, message_id: str) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if self.failure is not None:
            future.set_exception(self.failure)
        else:
            self._pending[message_id] = future
        return future

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop``; a failed poll fails every waiting submission (they would
        otherwise wait for OP_TIMEOUT_S) and ends the watch."""
        self.polls, self.failure = 0, None
        began = time.perf_counter()
        uri = f"{self._database.resolve().as_uri()}?mode=ro"
        try:
            with contextlib.closing(sqlite3.connect(uri, uri=True, isolation_level=None)) as db:
                while not stop.is_set():
                    self._poll(db)
                    await asyncio.sleep(POLL_PAUSE_S)
        except (OpFailed, sqlite3.Error) as exc:
            self.failure = exc if isinstance(exc, OpFailed) else OpFailed(f"watcher: {exc}")
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(self.failure)
            self._pending.clear()
        finally:
            self.watched_s = time.perf_counter() - began

    def _poll(self, db: sqlite3.Connection) -> None:
        settle_receipts(db, self._pending)
        self.polls += 1

    def period_ms(self) -> float | None:
        """The mean time between two reads: how late a completion can be seen."""
        return round(self.watched_s / self.polls * 1000, 3) if self.polls else None


def submit_op(
    http: aiohttp.ClientSession,
    clerk_url: str,
    token: str,
    body: bytes,
    watcher: Watcher,
    answered: list[tuple[float, float]] | None = None,
) -> Op:
    """``answered``, when given, gets (start, seconds) of each POST's 201: the clerk's part of
    the latency, the rest being delivery up to the verified receipt."""
    url = f"{clerk_url}/api/v1/requests"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    async def op() -> float:
        began = time.perf_counter()
        async with http.post(url, data=body, headers=headers) as resp:
            answer = await resp.json()
            if resp.status != 201:
                raise OpFailed(f"submission answered {resp.status}: {answer}")
        if answered is not None:
            answered.append((began, time.perf_counter() - began))
        return await watcher.expect(answer["id"])

    return op


def post_op(http: aiohttp.ClientSession, url: str, body: bytes) -> Op:
    headers = {"Content-Type": "application/json"}

    async def op() -> float:
        async with http.post(url, data=body, headers=headers) as resp:
            await resp.read()
            if resp.status != 201:
                raise OpFailed(f"plain POST answered {resp.status}")
        return time.perf_counter()

    return op


async def _not_delivered(http: aiohttp.ClientSession, clerk_url: str, token: str) -> int:
    """How many of the sender's messages ended other than delivered (must be none)."""
    count = 0
    for status in ("rejected", "undeliverable"):
        async with http.get(
            f"{clerk_url}/api/v1/requests",
            params={"box": "outbox", "status": status, "limit": str(_PAGE)},
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            count += len((await resp.json())["items"])
    return count


# Counted by the nodes: the sender's attempts and the exchanges that carried them, and the
# envelopes the receiver answered as repeats (sent again once stored: exactly once means none
# here, as nothing is lost on loopback).
_COUNTERS = (
    (SENDER, f'mla_delivery_attempts_total{{peer="{RECIPIENT}"}}'),
    (SENDER, f'mla_delivery_exchanges_total{{peer="{RECIPIENT}"}}'),
    (RECIPIENT, f'mla_envelopes_received_total{{peer="{SENDER}",outcome="repeat"}}'),
)


async def _node_counts(http: aiohttp.ClientSession, pair: Manifest) -> list[float]:
    """The counters above, from each node's /metrics (0 for one not counted yet)."""
    texts = {}
    for state in {state for state, _ in _COUNTERS}:
        node = pair.nodes[state]
        async with http.get(
            f"{node.clerk_url}/metrics", headers={"Authorization": f"Bearer {node.auditor_token}"}
        ) as resp:
            texts[state] = await resp.text()
    values = []
    for state, sample in _COUNTERS:
        found = [
            v for n, _, v in (x.rpartition(" ") for x in texts[state].splitlines()) if n == sample
        ]
        values.append(float(found[0]) if found else 0.0)
    return values


# --- processes -----------------------------------------------------------------------------------


@contextlib.contextmanager
def echo_server() -> Iterator[tuple[str, int]]:
    """The plain aiohttp server in a process of its own; yields its URL and pid."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.echo_server", "--fd", str(sock.fileno())],
        cwd=ROOT,
        pass_fds=[sock.fileno()],
        stdin=subprocess.DEVNULL,
    )
    sock.close()  # the child holds it now; connections wait in its backlog until it accepts
    try:
        yield f"http://127.0.0.1:{port}/echo", proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def peak_rss_of(pid: int | None) -> float | None:
    """A running process's peak RSS in MiB (``VmHWM`` from /proc), or None."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError):
        return None
    return None


def cpu_seconds_of(pid: int | None) -> float | None:
    """CPU time (user + system) a running process has used so far, from /proc, or None."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _cpu_ms_per_op(
    pids: dict[str, int | None], before: dict[str, float | None], operations: int
) -> dict[str, float | None]:
    """Each server process's CPU milliseconds per operation over a level: its cost, which the
    other load on the machine hardly changes (unlike its rate)."""
    out: dict[str, float | None] = {}
    for name, pid in pids.items():
        start, end = before[name], cpu_seconds_of(pid)
        if start is None or end is None or operations == 0:
            out[name] = None
        else:
            out[name] = round((end - start) / operations * 1000, 3)
    return out


# --- the part ------------------------------------------------------------------------------------


E2E, SINGLES = "mla_node e2e", "mla_node, 1/exchange"


async def _levels(
    networks: dict[str, Manifest],
    echo: tuple[str, int],
    settings: E2ESettings,
    progress: Callable[[str], None],
) -> list[dict[str, Any]]:
    """``networks``: side name -> the pair of nodes measured under it."""
    body = submission_body()
    connector = aiohttp.TCPConnector(limit=max(settings.levels) + 8)
    rows = []
    async with aiohttp.ClientSession(connector=connector) as http:
        echo_url, echo_pid = echo
        sides: list[tuple[str, Op, dict[str, int | None], Manifest | None, Watcher | None]] = [
            ("plain aiohttp", post_op(http, echo_url, body), {"server": echo_pid}, None, None)
        ]
        answered: list[tuple[float, float]] = []  # the node sides' POSTs, of the current level
        for name, pair in networks.items():
            clerk_side = pair.nodes[SENDER]
            reader = Watcher(Path(clerk_side.database))
            submit = submit_op(http, clerk_side.clerk_url, clerk_side.token, body, reader, answered)
            pids = {s: n.pid for s, n in pair.nodes.items()}
            sides.append((name, submit, pids, pair, reader))
        for concurrency in settings.levels:
            for side, op, servers, manifest, watcher in sides:
                load_before = load_average()
                sender = manifest.nodes[SENDER] if manifest else None
                counts_before = await _node_counts(http, manifest) if manifest else None
                cpu_before = {name: cpu_seconds_of(pid) for name, pid in servers.items()}
                stop = asyncio.Event()
                polling = asyncio.create_task(watcher.run(stop)) if watcher else None
                answered.clear()
                measure_from = time.perf_counter() + settings.warmup_s
                try:
                    loop = await closed_loop(
                        op,
                        concurrency=concurrency,
                        seconds=settings.seconds,
                        warmup_s=settings.warmup_s,
                        max_ops=settings.max_ops,
                    )
                finally:
                    stop.set()
                    if polling is not None:
                        await polling
                row = {"side": side, "concurrency": concurrency, **loop.summary()}
                row["cpu_ms_per_req"] = _cpu_ms_per_op(servers, cpu_before, loop.operations)
                if manifest and watcher and sender and counts_before is not None:
                    row["poll_ms"] = watcher.period_ms()
                    posts = [took for began, took in answered if began >= measure_from]
                    row["post_p50_ms"] = percentiles_ms(posts)["p50_ms"]
                    row["not_delivered"] = await _not_delivered(
                        http, sender.clerk_url, sender.token
                    )
                    after = await _node_counts(http, manifest)
                    attempts, exchanges, repeats = (
                        a - b for a, b in zip(after, counts_before, strict=True)
                    )
                    row["envelopes_per_exchange"] = (
                        round(attempts / exchanges, 2) if exchanges else None
                    )
                    row["repeats"] = int(repeats)
                row["load_before"], row["load_after"] = load_before, load_average()
                rows.append(row)
                progress(f"  e2e c={concurrency:<3} {side:<20} {row['per_s']:>9,.1f}/s")
    return rows


def _one_per_exchange(folder: Path) -> None:
    """Make the network in ``folder`` (not started yet) send each envelope alone."""
    for config in (folder / "nodes").glob("*/config.toml"):
        text = config.read_text(encoding="utf-8")
        singles = text.replace("\nbatch_max = 16\n", "\nbatch_max = 1\n")
        if singles == text:
            raise RuntimeError(f"{config} sets no batch_max = 16 to change")
        config.write_text(singles, encoding="utf-8")


def run(settings: E2ESettings, progress: Callable[[str], None] = print) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mla-bench-") as tmp, echo_server() as echo:
        folder, singles_folder = Path(tmp) / "network", Path(tmp) / "network-singles"
        started = time.perf_counter()
        manifest, procs = network_up(folder, [SENDER, RECIPIENT])
        startup_s = time.perf_counter() - started
        try:
            init_network(singles_folder, [SENDER, RECIPIENT], now=dt.datetime.now(dt.UTC))
            _one_per_exchange(singles_folder)
            singles, singles_procs = network_up(singles_folder, [SENDER, RECIPIENT])
            try:
                networks = {E2E: manifest, SINGLES: singles}
                rows = asyncio.run(_levels(networks, echo, settings, progress))
                peak = {s: peak_rss_of(n.pid) for s, n in manifest.nodes.items()}
            finally:
                network_down(singles_folder, procs=singles_procs)
        finally:
            network_down(folder, procs=procs)
    return {
        "settings": {
            "levels": list(settings.levels),
            "seconds": settings.seconds,
            "warmup_s": settings.warmup_s,
            "max_ops": settings.max_ops,
            "body_bytes": len(submission_body()),
            "body": "the mla_request example (forms.example, deadline a year ahead), JSON, to BR",
            "nodes": "two mla-node processes (supervisor), SQLite WAL synchronous=FULL, mTLS",
            "singles": f"'{SINGLES}': a second pair with delivery.batch_max = 1",
            "completion": "the sender's verified receipt, read from its database (read-only)",
        },
        "network_up_s": round(startup_s, 2),
        "node_peak_rss_mib": peak,
        "rows": rows,
        "ratios": _ratios(rows),
    }


def _ratios(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    by = {(r["side"], r["concurrency"]): r for r in rows}
    out = []
    for (side, concurrency), row in by.items():
        plain = by.get(("plain aiohttp", concurrency))
        if side != E2E or plain is None or not plain["per_s"]:
            continue
        singles = by.get((SINGLES, concurrency))
        out.append(
            {
                "concurrency": concurrency,
                "e2e_per_s": row["per_s"],
                "plain_per_s": plain["per_s"],
                "share_of_plain": round(row["per_s"] / plain["per_s"], 3),
                "singles_per_s": singles["per_s"] if singles else None,
                "over_singles": (
                    round(row["per_s"] / singles["per_s"], 3)
                    if singles and singles["per_s"]
                    else None
                ),
            }
        )
    return out


def _cpu_label(cpu: dict[str, float | None]) -> str:
    return ", ".join(f"{name} {ms:.2f}" for name, ms in cpu.items() if ms is not None) or "-"


def render(result: dict[str, Any]) -> str:
    header = ["side", "c", "req/s", "p50 ms", "p95 ms", "p99 ms", "POST p50", "done", "errors"]
    header += ["poll ms", "env/exch", "repeats", "server CPU ms/req", "load"]
    lines = [
        [
            r["side"],
            r["concurrency"],
            r["per_s"],
            r["p50_ms"],
            r["p95_ms"],
            r["p99_ms"],
            r.get("post_p50_ms"),
            r["completed"],
            r["errors"] + r.get("not_delivered", 0),
            r.get("poll_ms"),
            r.get("envelopes_per_exchange"),
            r.get("repeats"),
            _cpu_label(r["cpu_ms_per_req"]),
            load_label(r["load_before"]),
        ]
        for r in result["rows"]
    ]
    ratio_lines = [
        [
            q["concurrency"],
            q["e2e_per_s"],
            q["plain_per_s"],
            f"{q['share_of_plain']:.1%}",
            q.get("singles_per_s"),
            f"{q['over_singles']:.2f}x" if q.get("over_singles") else "-",
        ]
        for q in result["ratios"]
    ]
    s = result["settings"]
    peak = ", ".join(f"{k} {v} MiB" for k, v in result["node_peak_rss_mib"].items())
    notes = [
        f"body: {s['body_bytes']:,} bytes ({s['body']}); plain aiohttp POSTs the same bytes",
        f"completion: {s['completion']} (poll ms: mean time between reads, the resolution)",
        "POST p50: the clerk's POST alone, until its 201 (the rest of p50 is delivery); "
        "repeats: envelopes the receiver got again after storing them (should be 0)",
        f"nodes: {s['nodes']}; peak RSS {peak}; network up in {result['network_up_s']} s",
        f"batches off: {s.get('singles', '-')}",
    ]
    return "\n".join(
        [
            table(header, lines),
            *notes,
            "",
            table(
                [
                    "c",
                    "e2e req/s",
                    "plain req/s",
                    "e2e / plain",
                    "1/exchange req/s",
                    "e2e / 1/exch",
                ],
                ratio_lines,
            ),
        ]
    )
