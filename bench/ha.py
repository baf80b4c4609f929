"""Part ``ha``: workers on PostgreSQL (issue 9), side by side with SQLite, in one run.

**Networks.** Three local networks of AR and BR, one after the other, each started by
:func:`mla_node.supervisor.network_up` as ``mla-node network up`` starts it (real keys, mutual
TLS, every worker an ``mla-node run`` process of its own):

1. SQLite (WAL, ``synchronous=FULL``), one process per state: the e2e part's nodes;
2. PostgreSQL, one worker per state, each state on a database of its own on the server given
   by ``--postgres URL`` or ``MLA_TEST_POSTGRES``;
3. PostgreSQL, two workers per state sharing their state's database.

**Load.** At each concurrency *c*, *c* clerks in a closed loop (``bench.e2e.closed_loop``)
submit the ``mla_request`` example form to BR, as the e2e part does, and wait until AR holds
BR's verified receipt; the submissions go round-robin to every AR worker's clerk URL (a load
balancer's job), and AR's workers spread their deliveries over BR's workers (the directory lists
every worker's peer endpoint). A fixed number of requests per cell, after a warm-up of its own
on each network; req/s is from the first submission to the last verified receipt.

**Completion.** As in the e2e part, a ``receipts`` row (role ``received``) in AR's database,
written in the transaction that verified BR's receipt: read-only from the SQLite file by
``bench.e2e.Watcher``, and for PostgreSQL by :class:`PgWatcher`, one connection of the bench's
own to AR's database polling every ``PG_POLL_PAUSE_S``. That poll is a round trip to the server
(its backend's CPU is not counted below), so it polls less often than the SQLite reader.

**Costs.** The node CPU per request is that of every worker of both states (/proc); on a local
server, the PostgreSQL CPU per request is that of the server processes connected to the two
databases (``pg_stat_activity``), the watcher's own excluded.

Without a server URL the part is "skipped", not failed. Every network is stopped at the end of
its cell, also on an error, Ctrl-C or SIGTERM, and its PostgreSQL databases are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import os
import re
import signal
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from bench.common import load_average, load_label, table
from bench.e2e import (
    RECIPIENT,
    SENDER,
    OpFailed,
    Watcher,
    closed_loop,
    cpu_seconds_of,
    resolve_receipts,
    submission_body,
    submit_op,
)
from bench.scale import sigterm_as_interrupt, stop_all
from mla_node.localnet import Manifest, init_network, manifest_lock, read_manifest
from mla_node.supervisor import network_up

ENV_VAR = "MLA_TEST_POSTGRES"
FULL_REQUESTS = 3_000
QUICK_REQUESTS = 300
PG_POLL_PAUSE_S = 0.002  # between two reads of AR's PostgreSQL database
WARMUP_REQUESTS = 64  # per network, before its first cell: connections, pools, caches
LOOP_BOUND_S = 900.0  # a cell ends by its count; this only bounds a stuck one
CELLS: tuple[tuple[str, int], ...] = (("SQLite", 1), ("PostgreSQL", 1), ("PostgreSQL", 2))
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class HASettings:
    postgres: str | None  # the server's URL (its maintenance database), None: skipped
    levels: Sequence[int] = (16, 64)
    requests: int = FULL_REQUESTS  # per cell: one store, one worker count, one concurrency
    warmup: int = WARMUP_REQUESTS


def server_url(option: str | None) -> str | None:
    """The PostgreSQL server to use: ``--postgres``, else ``MLA_TEST_POSTGRES``, else None."""
    return option or os.environ.get(ENV_VAR) or None


# --- completion and costs on PostgreSQL ----------------------------------------------------------


class PgWatcher(Watcher):
    """``bench.e2e.Watcher`` reading AR's PostgreSQL database instead of its SQLite file."""

    def __init__(self, url: str) -> None:
        super().__init__(Path(os.devnull))  # no file: run() below reads the server
        self._url = url
        self.backend_pid: int | None = None  # its own server process, left out of the costs

    async def run(self, stop: asyncio.Event) -> None:
        import asyncpg

        self.polls, self.failure = 0, None
        began = time.perf_counter()
        try:
            conn = await asyncpg.connect(self._url)
            self.backend_pid = conn.get_server_pid()
            try:
                while not stop.is_set():
                    await self._read(conn)
                    await asyncio.sleep(PG_POLL_PAUSE_S)
            finally:
                await conn.close()
        except (OpFailed, OSError, asyncpg.PostgresError) as exc:
            failure = exc if isinstance(exc, OpFailed) else OpFailed(f"watcher: {exc}")
            self.failure = failure
            waiting, self._pending = self._pending, {}
            for future in (f for f in waiting.values() if not f.done()):
                future.set_exception(failure)
        finally:
            self.watched_s = time.perf_counter() - began

    async def _read(self, conn: Any) -> None:
        if self._pending:
            found = await conn.fetch(
                "SELECT message_id, status FROM receipts "
                "WHERE role = 'received' AND message_id = ANY($1::text[])",
                list(self._pending),
            )
            resolve_receipts(((r["message_id"], r["status"]) for r in found), self._pending)
        self.polls += 1


def _database_name(url: str) -> str:
    name = urlsplit(url).path.strip("/")
    if not re.fullmatch(r"mla_[a-z0-9_]{1,59}", name):  # made by localnet; DDL takes no params
        raise ValueError(f"not a database this bench made: {name!r}")
    return name


async def _backend_cpu(server: str, databases: list[str], skip: int | None) -> dict[int, float]:
    """CPU seconds used so far by each server process connected to ``databases`` (a local
    server only: the pids are this machine's)."""
    import asyncpg

    if urlsplit(server).hostname not in _LOCAL_HOSTS:
        return {}
    conn = await asyncpg.connect(server)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = ANY($1::text[]) AND pid <> $2",
            databases,
            skip or 0,
        )
    finally:
        await conn.close()
    used = {int(r["pid"]): cpu_seconds_of(int(r["pid"])) for r in rows}
    return {pid: s for pid, s in used.items() if s is not None}


async def _drop_databases(server: str, databases: list[str]) -> None:
    import asyncpg

    conn = await asyncpg.connect(server)
    try:
        for name in databases:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


# --- one network, its cells ----------------------------------------------------------------------


def _round_robin(ops: Sequence[Callable[[], Any]]) -> Callable[[], Any]:
    turn = itertools.cycle(ops)

    async def op() -> float:
        result: float = await next(turn)()
        return result

    return op


async def _cells(
    manifest: Manifest,
    store: str,
    workers: int,
    settings: HASettings,
    progress: Callable[[str], None],
) -> list[dict[str, Any]]:
    sender = manifest.nodes[SENDER]
    body = submission_body()
    on_pg = store == "PostgreSQL"
    databases = [_database_name(n.database) for n in manifest.nodes.values()] if on_pg else []
    pids = [w.pid for w in manifest.processes().values()]
    rows: list[dict[str, Any]] = []
    connector = aiohttp.TCPConnector(limit=max(settings.levels) + 8)
    async with aiohttp.ClientSession(connector=connector) as http:
        watcher = PgWatcher(sender.database) if on_pg else Watcher(Path(sender.database))
        op = _round_robin(
            [submit_op(http, w.clerk_url, sender.token, body, watcher) for w in sender.workers]
        )
        stop = asyncio.Event()
        polling = asyncio.create_task(watcher.run(stop))
        try:
            warm = await closed_loop(
                op,
                concurrency=min(settings.levels),
                seconds=LOOP_BOUND_S,
                warmup_s=0.0,
                max_ops=settings.warmup,
            )
            if warm.errors:
                raise OpFailed(f"warm-up: {warm.errors[0]}")
            for concurrency in settings.levels:
                load_before = load_average()
                node_cpu = [cpu_seconds_of(p) for p in pids]
                pg_cpu: dict[int, float] = {}
                if on_pg:
                    pg_cpu = await _backend_cpu(
                        settings.postgres or "", databases, watcher_pid(watcher)
                    )
                polls_before = watcher.polls
                began = time.perf_counter()
                loop = await closed_loop(
                    op,
                    concurrency=concurrency,
                    seconds=LOOP_BOUND_S,
                    warmup_s=0.0,
                    max_ops=settings.requests,
                )
                node_s = _used(node_cpu, [cpu_seconds_of(p) for p in pids])
                pg_s: float | None = None
                if on_pg and pg_cpu:
                    after = await _backend_cpu(
                        settings.postgres or "", databases, watcher_pid(watcher)
                    )
                    pg_s = sum(s - pg_cpu.get(pid, 0.0) for pid, s in after.items())
                summary = loop.summary()
                done = loop.operations
                row: dict[str, Any] = {
                    "store": store,
                    "workers": workers,
                    "concurrency": concurrency,
                    "requests": settings.requests,
                    **summary,
                    "node_cpu_ms_per_req": _per(node_s, done),
                    "postgres_cpu_ms_per_req": _per(pg_s, done),
                    "poll_ms": _poll_ms(watcher.polls - polls_before, began),
                    "load_before": load_before,
                    "load_after": load_average(),
                }
                rows.append(row)
                progress(
                    f"  ha {store:<10} workers={workers} c={concurrency:<3} "
                    f"{row['per_s']:>7,.1f}/s  p50 {row['p50_ms']} ms  errors {row['errors']}"
                )
        finally:
            stop.set()
            await polling
    return rows


def watcher_pid(watcher: Watcher) -> int | None:
    return watcher.backend_pid if isinstance(watcher, PgWatcher) else None


def _used(before: list[float | None], after: list[float | None]) -> float | None:
    pairs = list(zip(before, after, strict=True))
    if any(b is None or a is None for b, a in pairs):
        return None
    return sum(a - b for b, a in pairs if a is not None and b is not None)


def _per(seconds: float | None, count: int) -> float | None:
    return None if seconds is None or count == 0 else round(seconds / count * 1000, 2)


def _poll_ms(polls: int, began: float) -> float | None:
    """Mean time between two reads of the watcher over a cell (it runs across the cells)."""
    return round((time.perf_counter() - began) / polls * 1000, 3) if polls else None


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block is done, then act on them: creating a network's
    databases and writing the network.json that names them must not be cut in between."""
    caught: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    previous = {s: signal.signal(s, note) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if caught:
        raise KeyboardInterrupt(f"signal {caught[0]}")


def _network(
    store: str, workers: int, settings: HASettings, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Start one network, measure its cells, stop it (whatever happens) and drop its databases."""
    server = settings.postgres if store == "PostgreSQL" else None
    with tempfile.TemporaryDirectory(prefix="mla-bench-ha-") as tmp:
        folder = Path(tmp) / "network"
        procs: dict[str, Any] = {}
        left: list[str] = []
        rows: list[dict[str, Any]] = []
        up_s: float | None = None
        error: str | None = None
        began = time.perf_counter()
        try:
            with _signals_deferred(), manifest_lock(folder):
                # Its databases are known from network.json on: made before any Ctrl-C counts.
                init_network(
                    folder,
                    [SENDER, RECIPIENT],
                    now=dt.datetime.now(dt.UTC),
                    workers=workers,
                    database_server=server,
                )
            manifest, procs = network_up(
                folder, [SENDER, RECIPIENT], workers=workers, database_server=server
            )
            up_s = round(time.perf_counter() - began, 2)
            progress(f"  ha: {store}, {workers} worker(s) per state, up in {up_s} s")
            rows = asyncio.run(_cells(manifest, store, workers, settings, progress))
        except Exception as exc:  # a broken network fails the part, not the other cells
            error = f"{type(exc).__name__}: {exc}"[:500]
            progress(f"  ha: {store}, {workers} worker(s): {error}")
        finally:
            if procs:
                left = stop_all(folder, procs)
            made = read_manifest(folder)  # also when network_up itself was cut short
            if server is not None and made is not None and not left:
                databases = [_database_name(n.database) for n in made.nodes.values()]
                asyncio.run(_drop_databases(server, databases))
    return {
        "store": store,
        "workers": workers,
        "network_up_s": up_s,
        "error": error,
        "left_running": left,
        "rows": rows,
    }


# --- the part ------------------------------------------------------------------------------------


def run(settings: HASettings, progress: Callable[[str], None] = print) -> dict[str, Any]:
    result: dict[str, Any] = {
        "settings": {
            "levels": list(settings.levels),
            "requests_per_cell": settings.requests,
            "warmup_requests": settings.warmup,
            "postgres": _redacted(settings.postgres),
            "body_bytes": len(submission_body()),
            "body": "the mla_request example (forms.example, deadline a year ahead), AR to BR",
            "spread": "submissions round-robin over every AR worker's clerk URL",
            "completion": "AR's verified receipt, read from its database (SQLite file read-only; "
            f"PostgreSQL: a connection of the bench's own, every {PG_POLL_PAUSE_S * 1000:g} ms)",
        },
        "status": "ok",
        "networks": [],
        "rows": [],
    }
    reason = _unavailable(settings.postgres)
    if reason is not None:
        result["status"], result["reason"] = "skipped", reason
        return result
    with sigterm_as_interrupt():
        for store, workers in CELLS:
            network = _network(store, workers, settings, progress)
            result["rows"] += network.pop("rows")
            result["networks"].append(network)
    base = {r["concurrency"]: r["per_s"] for r in result["rows"] if r["store"] == "SQLite"}
    for row in result["rows"]:
        sqlite_rate = base.get(row["concurrency"])
        row["ratio_to_sqlite"] = round(row["per_s"] / sqlite_rate, 3) if sqlite_rate else None
    return result


def _unavailable(server: str | None) -> str | None:
    if server is None:
        return f"no PostgreSQL server: give --postgres URL or set {ENV_VAR}"
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        return "asyncpg is not installed (the postgresql extra)"
    return None


def _redacted(url: str | None) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


def ok(result: dict[str, Any]) -> bool:
    """Skipped, or every request delivered with a verified receipt and no worker left running."""
    if result["status"] == "skipped":
        return True
    complete = all(r["completed"] == r["requests"] and not r["errors"] for r in result["rows"])
    broken = any(n["error"] or n["left_running"] for n in result["networks"])
    return complete and not broken


def render(result: dict[str, Any]) -> str:
    if result["status"] == "skipped":
        return f"ha: skipped ({result['reason']})"
    header = ["store", "workers", "c", "req/s", "× SQLite", "p50 ms", "p99 ms", "done", "errors"]
    header += ["node CPU ms/req", "PG CPU ms/req", "poll ms", "load"]
    lines = [
        [
            r["store"],
            r["workers"],
            r["concurrency"],
            r["per_s"],
            f"{r['ratio_to_sqlite']:.2f}×" if r["ratio_to_sqlite"] is not None else None,
            r["p50_ms"],
            r["p99_ms"],
            f"{r['completed']:,}/{r['requests']:,}",
            r["errors"],
            r["node_cpu_ms_per_req"],
            r["postgres_cpu_ms_per_req"],
            r["poll_ms"],
            load_label(r["load_before"]),
        ]
        for r in result["rows"]
    ]
    s = result["settings"]
    ups = ", ".join(
        f"{n['store']} ×{n['workers']} {n['network_up_s']} s" for n in result["networks"]
    )
    left = sum(len(n["left_running"]) for n in result["networks"])
    notes = [
        f"body: {s['body_bytes']:,} bytes ({s['body']}); {s['spread']}; "
        f"{s['requests_per_cell']:,} requests per cell after {s['warmup_requests']} warm-up",
        f"req/s: first submission to last verified receipt; completion: {s['completion']}",
        "node CPU: every worker of AR and BR; PG CPU: the server processes connected to the two "
        "databases (the watcher's excluded)",
        f"networks up: {ups}; processes left running: {left}",
        *(
            f"error, {n['store']} ×{n['workers']}: {n['error']}"
            for n in result["networks"]
            if n["error"]
        ),
    ]
    return "\n".join([table(header, lines), *notes])
