"""High availability on PostgreSQL (issue 9): two worker processes per state, one SIGKILLed.

Real ``mla-node run`` processes over mutual TLS, every state's workers sharing one PostgreSQL
database on the test server (``tests/pgkit.py``; these tests skip outside CI when there is none).

1. Three states, two workers each: requests in all six directions over both workers' clerk APIs;
   a third of the way in one worker of a sending state and one of a receiving state are killed
   (not restarted). The client retries a POST that failed at the HTTP level on the other worker,
   with the same Idempotency-Key. Read back from the databases: nothing lost, nothing doubled,
   one verified receipt each, empty outboxes, every state's log verifies.
2. The worker holding the log's write lock is killed in the middle of a write transaction: the
   other worker commits the next evidence record within 5 s, and the log stays one history
   (the checkpoint taken before the kill is a prefix of the one after, with a consistency proof).

``MLA_FULL=1`` runs test 1 with 2,000 requests (600 otherwise). Both print their figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import secrets
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mla_node import auditor, supervisor
from mla_node.config import NodeConfig, load_config
from mla_node.protocol import forms
from mla_node.protocol.auditlog import Entry
from mla_node.protocol.checkpoint import peek_head
from mla_node.protocol.directory import Directory, TrustRoot, verify_directory
from mla_node.protocol.evidence import Event
from mla_node.protocol.merkle import Tree, leaf_hash, verify_consistency
from mla_node.protocol.receipts import DELIVERED, verify_receipt
from mla_node.storage.pg_engine import WRITER_LOCK
from tests.pgkit import server_url

pytestmark = pytest.mark.slow

FULL = os.environ.get("MLA_FULL") == "1"
TOTAL = 2000 if FULL else 600
CONCURRENCY = 16
FORM_TYPES = ("mla_request", "extradition_request", "provisional_arrest")
POST_DEADLINE_S = 60.0  # one submission, all its retries included
DELIVERY_DEADLINE_S = 120.0
HANDOVER_LIMIT_S = 5.0
SEQ_POLL_S = 0.05
COOL_DOWN_S = 5.0  # a clerk API that failed at the HTTP level is left alone this long


# --- the network ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Worker:
    state: str
    number: int  # 1 = the node's first worker (its endpoint comes first in the directory)
    pid: int
    clerk_url: str
    config: Path


@dataclass
class Net:
    folder: Path
    manifest: dict[str, Any]
    procs: supervisor.Processes

    def workers(self, state: str) -> list[Worker]:
        node = self.manifest["nodes"][state]
        return [
            Worker(state, n, int(w["pid"]), w["clerk_url"], Path(w["config"]))
            for n, w in enumerate(node["workers"], start=1)
        ]

    def database(self, state: str) -> str:
        return str(self.manifest["nodes"][state]["database"])

    def config(self, state: str) -> NodeConfig:
        return load_config(Path(self.manifest["nodes"][state]["config"]))

    def all_pids(self) -> list[int]:
        return [w.pid for s in self.manifest["nodes"] for w in self.workers(s)]


def start_network(folder: Path, states: list[str]) -> Net:
    _, procs = supervisor.network_up(folder, states, workers=2, database_server=server_url())
    manifest = json.loads((folder / "network.json").read_text())
    return Net(folder, manifest, procs)


def _ours(pid: int, folder: Path) -> bool:
    """Whether ``pid`` is still a live (not zombie) node process of the network in ``folder``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] != ["Z"] and os.fsencode(str(folder)) in cmdline


def stop_network(net: Net, stopped: set[int]) -> None:
    """``network down``, then SIGKILL whatever of ours is left (a test that failed midway)."""
    for pid in stopped:  # SIGSTOPped by test 2: a stopped process cannot act on SIGTERM
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    try:
        supervisor.network_down(net.folder, procs=net.procs, timeout=20)
    finally:
        for pid in net.all_pids():
            if _ours(pid, net.folder.resolve()):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for proc in net.procs.values():
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)


async def drop_databases(urls: list[str]) -> None:
    import asyncpg

    admin = await asyncpg.connect(server_url())
    try:
        for url in urls:
            name = url.rsplit("/", 1)[1]
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def connect(url: str) -> Any:
    import asyncpg

    return await asyncpg.connect(url)


# --- the clerks ----------------------------------------------------------------------------------


@dataclass
class Accepted:
    key: str
    message_id: str
    sender: str
    recipient: str


@dataclass
class Clerks:
    """A clerk client that knows every worker of each state, as one behind a load balancer would:
    a POST that fails at the HTTP level (refused, reset, no answer) is sent again to another
    worker of the state with the same Idempotency-Key, and that worker is left alone a while."""

    http: aiohttp.ClientSession
    net: Net
    tag: str = field(default_factory=lambda: secrets.token_hex(4))
    accepted: dict[str, Accepted] = field(default_factory=dict)  # by Idempotency-Key
    retried: int = 0  # POSTs sent again after an HTTP-level failure
    refused: int = 0  # of which the connection was refused (a worker known to be down)
    replayed: int = 0  # retries answered with the earlier result (Idempotent-Replayed)
    busy_retries: int = 0  # POSTs sent again after a 5xx or 429
    down_until: dict[str, float] = field(default_factory=dict)

    def token(self, state: str) -> str:
        return str(self.net.manifest["nodes"][state]["token"])

    def auditor_token(self, state: str) -> str:
        return str(self.net.manifest["nodes"][state]["auditor_token"])

    def _choose(self, state: str, prefer: int) -> Worker:
        workers = self.net.workers(state)
        order = workers[prefer % len(workers) :] + workers[: prefer % len(workers)]
        now = time.monotonic()
        up = [w for w in order if self.down_until.get(w.clerk_url, 0.0) <= now]
        return (up or order)[0]

    async def submit(self, n: int, sender: str, recipient: str, prefer: int) -> Accepted:
        key = f"ha-{self.tag}-{n}"
        form_type = FORM_TYPES[n % len(FORM_TYPES)]
        body = {"type": form_type, "to": recipient, "form": forms.example(form_type)}
        headers = {"Authorization": f"Bearer {self.token(sender)}", "Idempotency-Key": key}
        deadline = time.monotonic() + POST_DEADLINE_S
        again = False
        while True:
            worker = self._choose(sender, prefer)
            try:
                async with self.http.post(
                    worker.clerk_url + "/api/v1/requests", json=body, headers=headers
                ) as resp:
                    answer = await resp.json(content_type=None)
                    if resp.status == 201:
                        if again and resp.headers.get("Idempotent-Replayed") == "true":
                            self.replayed += 1
                        accepted = Accepted(key, str(answer["id"]), sender, recipient)
                        self.accepted[key] = accepted
                        return accepted
                    if resp.status < 500 and resp.status != 429:
                        raise AssertionError(f"{worker.clerk_url}: {resp.status} {answer}")
                    self.busy_retries += 1
                    await asyncio.sleep(0.2)
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
                self.retried += 1
                if isinstance(exc, aiohttp.ClientConnectorError):
                    self.refused += 1  # never reached a worker: nothing was in flight
                self.down_until[worker.clerk_url] = time.monotonic() + COOL_DOWN_S
                prefer += 1  # the other worker of the state
            again = True
            if time.monotonic() > deadline:
                raise AssertionError(f"request {key} not accepted in {POST_DEADLINE_S:g} s")

    async def checkpoint(self, worker: Worker) -> None:
        async with self.http.post(
            worker.clerk_url + "/api/v1/audit/checkpoints",
            headers={"Authorization": f"Bearer {self.auditor_token(worker.state)}"},
        ) as resp:
            assert resp.status == 200, await resp.text()


async def submit_all(
    clerks: Clerks,
    jobs: list[tuple[int, str, str, int]],
    concurrency: int,
    after_each: Callable[[int], None] = lambda _: None,
) -> None:
    """Submit ``jobs`` (number, sender, recipient, preferred worker), ``concurrency`` at a time;
    ``after_each`` gets the count accepted so far."""
    queue = iter(jobs)
    done = 0

    async def run() -> None:
        nonlocal done
        for n, sender, recipient, prefer in queue:
            await clerks.submit(n, sender, recipient, prefer)
            done += 1
            after_each(done)

    await asyncio.gather(*(run() for _ in range(concurrency)))


async def wait_delivered(clerks: Clerks, conns: dict[str, Any], within_s: float) -> None:
    """Until every accepted request is delivered at its sender and every outbox is empty."""
    deadline = time.monotonic() + within_s
    while True:
        expected = Counter(a.sender for a in clerks.accepted.values())
        missing = {}
        for state, conn in conns.items():
            delivered = await conn.fetchval(
                "SELECT COUNT(*) FROM messages WHERE direction = 'out' AND status = 'delivered'"
            )
            queued = await conn.fetchval("SELECT COUNT(*) FROM outbox")
            if delivered != expected[state] or queued:
                missing[state] = (expected[state] - delivered, queued)
        if not missing:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not delivered (missing, still queued) by state: {missing}")
        await asyncio.sleep(0.25)


async def wait_until(condition: Callable[[], bool], within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached in {within_s:g} s")
        await asyncio.sleep(0.05)


# --- reading the databases -----------------------------------------------------------------------


def node_directory(config: NodeConfig) -> Directory:
    trust = TrustRoot.from_json(config.trust_root_path.read_bytes())
    return verify_directory(config.directory_path.read_bytes(), trust, now=0)


async def read_log(conn: Any) -> auditor.NodeLog:
    """The evidence log as the database holds it (as mla_node/dbport.py reads PostgreSQL)."""
    rows = await conn.fetch("SELECT seq, record FROM evidence ORDER BY seq")
    heads = [
        bytes(r[0]) for r in await conn.fetch("SELECT checkpoint FROM checkpoints ORDER BY size")
    ]
    node = peek_head(heads[-1])[0] if heads else None
    return auditor.NodeLog(node, [Entry(int(r[0]), bytes(r[1])) for r in rows], heads)


def verify_log(state: str, log: auditor.NodeLog, directory: Directory) -> int:
    seqs = [e.seq for e in log.entries]
    assert seqs == list(range(1, len(seqs) + 1)), f"{state}'s evidence log has gaps"
    report = auditor.verify(log, directory, node=state)
    assert report.ok, f"{state}'s log does not verify: {report.findings[:5]}"
    assert report.entries == len(log.entries)
    return report.entries


async def check_state(
    state: str, conn: Any, config: NodeConfig, accepted: list[Accepted], principal: str
) -> dict[str, int]:
    """Nothing lost, nothing doubled, one verified receipt each side, an empty outbox and a log
    that verifies, in ``state``'s database. ``principal`` is the token id of its clerk."""
    directory = node_directory(config)
    sent = {a.message_id: a for a in accepted if a.sender == state}
    received = {a.message_id: a for a in accepted if a.recipient == state}

    rows = await conn.fetch(
        "SELECT id, direction, sender, recipient, status, envelope_sha256 FROM messages"
    )
    ids = Counter(r["id"] for r in rows)
    assert [i for i, c in ids.items() if c > 1] == [], f"{state}: a message id twice"
    out = {r["id"]: r for r in rows if r["direction"] == "out"}
    into = {r["id"]: r for r in rows if r["direction"] == "in"}
    assert sorted(out) == sorted(sent), f"{state}: sent messages differ from those accepted"
    assert sorted(into) == sorted(received), f"{state}: received messages differ from those sent"
    assert {r["status"] for r in out.values()} <= {"delivered"}, f"{state}: not all delivered"
    for message_id, row in out.items():
        assert (row["sender"], row["recipient"]) == (state, sent[message_id].recipient)
    for message_id, row in into.items():
        assert (row["sender"], row["recipient"]) == (received[message_id].sender, state)

    keys = await conn.fetch(
        "SELECT key, message_id FROM idempotency WHERE principal = $1", principal
    )
    assert len(keys) == len(sent), f"{state}: {len(keys)} idempotency keys for {len(sent)}"
    by_key = {a.key: a.message_id for a in sent.values()}
    assert {r["key"]: r["message_id"] for r in keys} == by_key, f"{state}: a key, two messages"

    receipts = await conn.fetch("SELECT message_id, role, status, receipt FROM receipts")
    per_message = Counter(r["message_id"] for r in receipts)
    assert [m for m, c in per_message.items() if c > 1] == []
    got = {r["message_id"]: r for r in receipts}
    assert sorted(m for m, r in got.items() if r["role"] == "received") == sorted(out)
    assert sorted(m for m, r in got.items() if r["role"] == "issued") == sorted(into)
    for message_id, r in got.items():
        message = out.get(message_id) or into[message_id]
        assert r["status"] == DELIVERED, f"{state}: receipt of {message_id} is {r['status']}"
        verify_receipt(
            bytes(r["receipt"]),
            directory,
            expect_message_id=message_id,
            expect_envelope_digest=bytes(message["envelope_sha256"]),
            expect_signer=message["recipient"],
        )

    assert await conn.fetchval("SELECT COUNT(*) FROM outbox") == 0, f"{state}: outbox not empty"
    events = Counter(
        (r["message_id"], r["event"])
        for r in await conn.fetch("SELECT message_id, event FROM evidence")
    )
    for message_id in out:
        assert events[message_id, Event.SUBMITTED] == 1, f"{state}: {message_id} submitted"
        assert events[message_id, Event.DELIVERED] == 1, f"{state}: {message_id} delivered"
    for message_id in into:
        assert events[message_id, Event.DELIVERED] == 1, f"{state}: {message_id} received"

    entries = verify_log(state, await read_log(conn), directory)
    return {"sent": len(out), "received": len(into), "log": entries}


async def clerk_principal(conn: Any) -> str:
    """The token id of the network's clerk (``network up`` makes one clerk token per node)."""
    rows = await conn.fetch("SELECT id FROM tokens WHERE role = 'clerk'")
    assert len(rows) == 1, rows
    return str(rows[0]["id"])


# --- 1. three states, a sending and a receiving worker killed ------------------------------------


@pytest.mark.timeout(600 if FULL else 300)
async def test_two_workers_per_state_lose_nothing_when_one_of_each_side_dies(
    tmp_path: Path,
) -> None:
    server_url()  # skip (or fail in CI) before anything starts when there is no server
    states = ["AR", "BR", "US"]
    folder = tmp_path / "net"
    net = await asyncio.to_thread(start_network, folder, states)
    databases = [net.database(s) for s in states]
    # One worker of a sending state, and the receiving worker whose endpoint senders try first.
    victims = [net.workers("AR")[1], net.workers("BR")[0]]
    pairs = [(s, r) for s in states for r in states if s != r]
    # Round by round over the six directions, each round through the other worker.
    jobs = [
        (n, *pair, n // len(pairs))
        for n, pair in zip(range(TOTAL), itertools.cycle(pairs), strict=False)
    ]
    kill_at = TOTAL // 3
    killed: dict[str, float] = {}
    conns: dict[str, Any] = {}
    figures: dict[str, Any] = {"requests": TOTAL, "workers_per_state": 2}
    try:
        try:
            conns = {s: await connect(net.database(s)) for s in states}
            timeout = aiohttp.ClientTimeout(total=30, sock_connect=5)
            async with aiohttp.ClientSession(timeout=timeout) as http:
                clerks = Clerks(http, net)

                def kill_on_cue(done: int) -> None:
                    if done == kill_at and not killed:
                        for victim in victims:
                            os.kill(victim.pid, signal.SIGKILL)
                        killed["monotonic"] = time.monotonic()
                        killed["wall_ms"] = time.time() * 1000

                started = time.monotonic()
                await submit_all(clerks, jobs, CONCURRENCY, kill_on_cue)
                submitted = time.monotonic()
                assert killed, "the kill did not happen"
                assert len(clerks.accepted) == TOTAL
                for victim in victims:
                    assert not _ours(victim.pid, net.folder.resolve()), f"{victim} survived"
                await wait_delivered(clerks, conns, DELIVERY_DEADLINE_S)
                delivered = time.monotonic()
            # When each sender recorded its receipt (the receipt's own time is the recipient's,
            # the same for an envelope sent again).
            delivered_at = [
                (int(r[0]), int(r[1]))
                for c in conns.values()
                for r in await c.fetch(
                    "SELECT e.at, m.created_at FROM evidence e JOIN messages m"
                    " ON m.id = e.message_id WHERE m.direction = 'out' AND e.event = $1",
                    Event.DELIVERED,
                )
            ]
            last_delivery_s = (max(at for at, _ in delivered_at) - killed["wall_ms"]) / 1000
            # Those held up: the envelopes the killed worker had claimed wait for its lease.
            late = sum(1 for at, created in delivered_at if at - created > 5000)
            principals = {s: await clerk_principal(c) for s, c in conns.items()}
            figures.update(
                submit_s=round(submitted - started, 1),
                submit_rate=round(TOTAL / (submitted - started), 1),
                all_delivered_s=round(delivered - started, 1),
                end_to_end_rate=round(TOTAL / (delivered - started), 1),
                posts_retried=clerks.retried,
                retried_refused=clerks.refused,
                retries_replayed=clerks.replayed,
                posts_retried_busy=clerks.busy_retries,
                kill_after_s=round(killed["monotonic"] - started, 1),
                last_delivery_after_kill_s=round(last_delivery_s, 1),
                delivered_over_5s_after_submission=late,
                killed=[f"{v.state}/{v.number}" for v in victims],
            )
        finally:
            for conn in conns.values():
                await conn.close()
            await asyncio.to_thread(stop_network, net, set())

        # Read back after the network is down.
        accepted = list(clerks.accepted.values())
        assert len({a.message_id for a in accepted}) == TOTAL, "two keys, one message"
        checked = time.monotonic()
        for state in states:
            conn = await connect(net.database(state))
            try:
                counts = await check_state(
                    state, conn, net.config(state), accepted, principals[state]
                )
            finally:
                await conn.close()
            figures[f"{state}_sent_received_log"] = [
                counts["sent"],
                counts["received"],
                counts["log"],
            ]
        figures["check_s"] = round(time.monotonic() - checked, 1)
        figures.update(lost=0, duplicated=0)
        print("\nHA figures (3 states x 2 workers, PostgreSQL): " + json.dumps(figures))
    finally:
        await drop_databases(databases)


# --- 2. the log's writer killed mid-transaction --------------------------------------------------


def socket_owner(port: int, pids: list[int]) -> int | None:
    """Which of ``pids`` owns the TCP socket bound to local port ``port`` (Linux /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return pid
    return None


WRITER_LOCK_HOLDER = """
SELECT a.pid, a.client_port, a.state
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid::bigint = $1 AND l.objid::bigint = $2
"""


async def kill_the_writer(
    conn: Any, workers: list[Worker], stopped: set[int], within_s: float
) -> tuple[Worker, int, float]:
    """SIGKILL the worker of ``workers`` that holds the write lock, while it holds it.

    The lock is held for milliseconds at a time, so: find its holder's client port in
    pg_stat_activity, map it to a worker through /proc, SIGSTOP that worker, and kill it only if
    its backend still holds the lock, idle in transaction (waiting for the stopped worker).
    Returns the worker, the newest committed seq just before the kill, and the kill's time."""
    by_pid = {w.pid: w for w in workers}
    owners: dict[int, int] = {}  # client port -> worker pid
    key = (WRITER_LOCK >> 32, WRITER_LOCK & 0xFFFF_FFFF)
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        holder = await conn.fetchrow(WRITER_LOCK_HOLDER, *key)
        if holder is None or holder["client_port"] is None:
            continue
        port = int(holder["client_port"])
        if port not in owners:
            pid = socket_owner(port, list(by_pid))
            if pid is None:
                continue
            owners[port] = pid
        pid = owners[port]
        os.kill(pid, signal.SIGSTOP)
        stopped.add(pid)
        settle = time.monotonic() + 0.5
        while time.monotonic() < settle:
            now = await conn.fetchrow(WRITER_LOCK_HOLDER, *key)
            if now is None or now["pid"] != holder["pid"]:
                break  # it committed before it stopped
            if now["state"] == "idle in transaction":
                max_seq = int(await conn.fetchval("SELECT COALESCE(MAX(seq), 0) FROM evidence"))
                os.kill(pid, signal.SIGKILL)
                return by_pid[pid], max_seq, time.monotonic()
            await asyncio.sleep(0.005)
        os.kill(pid, signal.SIGCONT)
        stopped.discard(pid)
    raise AssertionError(f"no worker caught holding the write lock in {within_s:g} s")


async def newest_checkpoint(conn: Any) -> tuple[int, bytes]:
    row = await conn.fetchrow("SELECT size, root FROM checkpoints ORDER BY size DESC LIMIT 1")
    return int(row["size"]), bytes(row["root"])


@pytest.mark.timeout(240)
async def test_the_log_writer_killed_hands_over_within_five_seconds(tmp_path: Path) -> None:
    if not Path("/proc/net/tcp").is_file():
        pytest.skip("finding the lock holder's process needs Linux /proc")
    server_url()
    states = ["AR", "BR"]
    folder = tmp_path / "net"
    net = await asyncio.to_thread(start_network, folder, states)
    databases = [net.database(s) for s in states]
    stopped: set[int] = set()
    conns: dict[str, Any] = {}
    figures: dict[str, Any] = {}
    try:
        try:
            conns = {s: await connect(net.database(s)) for s in states}
            monitor = await connect(net.database("BR"))
            conns["monitor"] = monitor
            timeout = aiohttp.ClientTimeout(total=30, sock_connect=5)
            async with aiohttp.ClientSession(timeout=timeout) as http:
                clerks = Clerks(http, net)
                stop_traffic = asyncio.Event()
                counter = itertools.count()

                async def traffic() -> None:
                    while not stop_traffic.is_set():
                        n = next(counter)
                        sender, recipient = ("AR", "BR") if n % 2 else ("BR", "AR")
                        await clerks.submit(n, sender, recipient, n // 2)

                flows = [asyncio.create_task(traffic()) for _ in range(8)]
                try:
                    await wait_until(lambda: len(clerks.accepted) >= 60, within_s=60)
                    br = net.workers("BR")
                    await clerks.checkpoint(br[0])
                    old_size, old_root = await newest_checkpoint(monitor)
                    victim, seq_at_kill, killed = await kill_the_writer(
                        monitor, br, stopped, within_s=30
                    )
                    stopped.discard(victim.pid)
                    while True:
                        seq = await monitor.fetchval("SELECT COALESCE(MAX(seq), 0) FROM evidence")
                        if seq > seq_at_kill:
                            handover = time.monotonic() - killed
                            break
                        if time.monotonic() - killed > 30:
                            raise AssertionError("no evidence committed 30 s after the kill")
                        await asyncio.sleep(SEQ_POLL_S)
                    await asyncio.sleep(3)  # traffic through the surviving worker
                finally:
                    stop_traffic.set()
                    results = await asyncio.gather(*flows, return_exceptions=True)
                for result in results:
                    if isinstance(result, BaseException):
                        raise result
                await wait_delivered(clerks, {s: conns[s] for s in states}, DELIVERY_DEADLINE_S)
                survivor = next(w for w in br if w.pid != victim.pid)
                await clerks.checkpoint(survivor)
                new_size, new_root = await newest_checkpoint(monitor)
            principals = {s: await clerk_principal(conns[s]) for s in states}
            figures.update(
                handover_s=round(handover, 3),
                killed=f"BR/{victim.number}",
                seq_at_kill=seq_at_kill,
                checkpoint_before=old_size,
                checkpoint_after=new_size,
                requests=len(clerks.accepted),
                posts_retried=clerks.retried,
            )
            print("\nHA log hand-over (AR, BR x 2 workers): " + json.dumps(figures))
        finally:
            for conn in conns.values():
                await conn.close()
            await asyncio.to_thread(stop_network, net, stopped)

        assert handover < HANDOVER_LIMIT_S, f"hand-over took {handover:.2f} s"
        assert old_size <= seq_at_kill < new_size
        conn = await connect(net.database("BR"))
        try:
            log = await read_log(conn)
            stored = [
                bytes(r[0]) for r in await conn.fetch("SELECT leaf_hash FROM evidence ORDER BY seq")
            ]
        finally:
            await conn.close()
        leaves = [leaf_hash(e.record or b"") for e in log.entries]
        assert stored == leaves
        tree = Tree(leaves)
        assert tree.size == len(log.entries) >= new_size
        assert tree.root(old_size) == old_root, "the checkpoint before the kill is not a prefix"
        assert tree.root(new_size) == new_root
        verify_consistency(
            old_size, new_size, old_root, new_root, tree.consistency_proof(old_size, new_size)
        )
        accepted = list(clerks.accepted.values())
        for state in states:
            conn = await connect(net.database(state))
            try:
                await check_state(state, conn, net.config(state), accepted, principals[state])
            finally:
                await conn.close()
    finally:
        await drop_databases(databases)
