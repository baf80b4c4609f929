"""The chaos harness: a real network of node processes, clerks submitting in every direction,
nodes killed with SIGKILL at random moments or made to die at named crash points, then restarted;
at the end the checker compares the clerks' history with every node's database.

Bounded in time and count, loopback only. One command::

    python -m chaos run --dir /tmp/chaos --requests 2000 --kills 5
    python -m chaos crash-points --dir /tmp/chaos --cycles 20

Clerks behave as real ones do: a submission whose answer never came (the node died) is retried
with the same Idempotency-Key until it gets its 201, so every operation ends with exactly one
message id and any duplicate is the node's fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from chaos.checker import Operation, Verdict, check
from mla_node import authority, supervisor
from mla_node.crashpoints import ENV_VAR, POINTS
from mla_node.errors import ConfigError
from mla_node.localnet import Manifest, read_manifest
from mla_node.protocol import forms

FORM_TYPES = ("mla_request", "extradition_request", "provisional_arrest")
CLERKS = 12  # concurrent clerks across the network
SUBMIT_TIMEOUT_S = 10.0

# Which node a crash point must be armed on to be reached: the sender or the receiver.
RECEIVER_POINTS = frozenset(
    {"inbound.before_commit", "inbound.after_commit", "inbound.after_response"}
)


@dataclass
class Run:
    folder: Path
    seed: int
    deadline: float
    history: list[Operation] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    kills: int = 0
    crashes: dict[str, int] = field(default_factory=dict)  # point → deaths observed
    missed: dict[str, int] = field(default_factory=dict)  # point → cycles it was not reached

    def log(self, text: str) -> None:
        self.events.append(f"{time.monotonic():.3f} {text}")


def _manifest(folder: Path) -> Manifest:
    manifest = read_manifest(folder)
    assert manifest is not None
    return manifest


class Clerks:
    """Submits operations through the real clerk API, retrying until each has its 201."""

    def __init__(self, run: Run, http: aiohttp.ClientSession) -> None:
        self.run = run
        self.http = http

    async def submit(self, op: Operation) -> None:
        form_type = FORM_TYPES[int(op.key.rsplit("-", 1)[1]) % len(FORM_TYPES)]
        form = forms.example(form_type)
        form["case_reference"] = op.key
        body = {"type": form_type, "to": op.recipient, "form": form}
        while time.monotonic() < self.run.deadline:
            op.attempts += 1
            node = _manifest(self.run.folder).nodes[op.sender]
            try:
                async with self.http.post(
                    node.clerk_url + "/api/v1/requests",
                    json=body,
                    headers={"Authorization": f"Bearer {node.token}", "Idempotency-Key": op.key},
                    timeout=aiohttp.ClientTimeout(total=SUBMIT_TIMEOUT_S),
                ) as resp:
                    answer: dict[str, Any] = await resp.json(content_type=None)
                    if resp.status == 201:
                        op.message_id = str(answer["id"])
                        op.outcome = "created"
                        return
                    if resp.status < 500:
                        op.outcome = f"refused:{answer.get('code')}"
                        return
            except (aiohttp.ClientError, TimeoutError, ValueError):
                pass  # the node is down or died mid-answer: a clerk tries again
            await asyncio.sleep(0.2)
        op.outcome = "gave_up"

    async def work(self, queue: asyncio.Queue[Operation]) -> None:
        while True:
            try:
                op = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await self.submit(op)


def plan(run: Run, states: list[str], count: int) -> list[Operation]:
    rng = random.Random(run.seed)
    pairs = [(s, r) for s in states for r in states if s != r]
    ops = []
    for n in range(count):
        sender, recipient = rng.choice(pairs)
        ops.append(Operation(key=f"chaos-{run.seed}-{n}", sender=sender, recipient=recipient))
    run.history.extend(ops)
    return ops


async def _kill_and_restart(run: Run, state: str, down_s: float) -> None:
    await asyncio.to_thread(supervisor.stop_node, run.folder, state, kill=True)
    run.kills += 1
    run.log(f"SIGKILL {state}, down {down_s:.1f} s")
    await asyncio.sleep(down_s)
    await asyncio.to_thread(supervisor.start_node, run.folder, state)
    run.log(f"restarted {state}")


async def killer(run: Run, states: list[str], kills: int, progress: Callable[[], float]) -> None:
    """Kill ``kills`` times, spread over the submissions: the i-th kill once i/(kills+1) of the
    operations are done, at a random node, for a random 0.3–3 s."""
    rng = random.Random(run.seed + 1)
    for i in range(kills):
        while progress() < (i + 1) / (kills + 1) and time.monotonic() < run.deadline:  # noqa: ASYNC110 (polling counters the clerks update)
            await asyncio.sleep(0.05)
        await _kill_and_restart(run, rng.choice(states), rng.uniform(0.3, 3.0))


async def drain(run: Run, http: aiohttp.ClientSession, timeout_s: float) -> float:
    """Wait until no outbox holds anything; return how long it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        queued = 0
        for node in _manifest(run.folder).nodes.values():
            async with http.get(
                node.clerk_url + "/api/v1/peers", headers={"Authorization": f"Bearer {node.token}"}
            ) as resp:
                queued += sum(p["queued"] for p in (await resp.json())["peers"])
        if queued == 0:
            break
        await asyncio.sleep(0.25)
    return time.monotonic() - started


async def traffic(run: Run, ops: list[Operation]) -> None:
    queue: asyncio.Queue[Operation] = asyncio.Queue()
    for op in ops:
        queue.put_nowait(op)
    async with aiohttp.ClientSession() as http:
        clerks = Clerks(run, http)
        await asyncio.gather(*(clerks.work(queue) for _ in range(CLERKS)))


def finish(run: Run, drain_timeout_s: float = 120.0) -> tuple[Verdict, float]:
    """Wait for the outboxes to drain, stop the network, and check."""

    async def wait() -> float:
        async with aiohttp.ClientSession() as http:
            return await drain(run, http, drain_timeout_s)

    drained = asyncio.run(wait())
    manifest = _manifest(run.folder)
    supervisor.network_down(run.folder)
    databases = {s: Path(n.database) for s, n in manifest.nodes.items()}
    return check(run.history, databases), drained


def _run_and_check(
    run: Run, scenario: Callable[[], Coroutine[Any, Any, None]]
) -> tuple[Run, Verdict, float]:
    """Run the scenario, drain, stop the network and check; never leave a node running."""
    try:
        asyncio.run(scenario())
        verdict, drained = finish(run)
    finally:
        with contextlib.suppress(Exception):
            supervisor.network_down(run.folder)
    return run, verdict, drained


def random_kills(
    folder: Path, *, states: list[str], requests: int, kills: int, seed: int, max_s: float
) -> tuple[Run, Verdict, float]:
    """``requests`` submissions in all directions with ``kills`` random SIGKILLs."""
    run = Run(folder, seed, time.monotonic() + max_s)
    supervisor.network_up(folder, states)
    ops = plan(run, states, requests)

    async def main() -> None:
        def progress() -> float:
            return sum(op.outcome != "pending" for op in ops) / len(ops)

        await asyncio.gather(traffic(run, ops), killer(run, states, kills, progress))

    return _run_and_check(run, main)


async def _crash_cycle(
    run: Run, point: str, victim: str, others: list[str], rng: random.Random, ops_per_cycle: int
) -> None:
    """Restart ``victim`` armed at ``point`` (on a random 1st–3rd passage), drive traffic through
    it until it dies there (bounded), then restart it clean."""
    # A directory update happens once per cycle, so that point can only be armed for the first.
    nth = 1 if point == "directory.before_accept" else rng.randint(1, 3)
    await asyncio.to_thread(supervisor.stop_node, run.folder, victim, kill=True)
    died = False
    try:
        await asyncio.to_thread(
            supervisor.start_node, run.folder, victim, extra_env={ENV_VAR: f"{point}:{nth}"}
        )
    except ConfigError as exc:
        # Work queued for it (its own outbox, peers' retries) can reach the point before the
        # readiness check is done; a SIGKILL is the point firing, anything else a real failure.
        if "code -9" not in exc.detail:
            raise
        died = True
    node = _manifest(run.folder).nodes[victim]
    if point == "directory.before_accept":
        # The point is on the path of a directory update: publish one for the victim to pick up.
        auth = run.folder / "authority"
        await asyncio.to_thread(authority.publish, auth, now=dt.datetime.now(dt.UTC))
        await asyncio.to_thread(
            authority.install_directory, auth, node.config.parent / "directory.bin"
        )
    states = [victim, *others]
    pairs = [(s, r) for s in states for r in states if s != r]
    unreachable = None
    if point == "deliver.before_reschedule":
        # A retry is scheduled only after a failed attempt: take the recipient away first.
        unreachable = others[0]
        await asyncio.to_thread(supervisor.stop_node, run.folder, unreachable, kill=True)
        pairs = [(victim, unreachable)]
    elif point in RECEIVER_POINTS:
        pairs = [(s, r) for s, r in pairs if r == victim]
    elif point != "db.mid_batch" and point != "directory.before_accept":
        pairs = [(s, r) for s, r in pairs if s == victim]
    ops = [
        Operation(key=f"chaos-{run.seed}-{len(run.history) + i}", sender=s, recipient=r)
        for i, (s, r) in enumerate(rng.choice(pairs) for _ in range(ops_per_cycle))
    ]
    run.history.extend(ops)
    sending = asyncio.create_task(traffic(run, ops))
    deadline = time.monotonic() + 15
    while not died and time.monotonic() < deadline:
        if not supervisor.is_running(node):
            died = True
            break
        if sending.done() and point != "directory.before_accept":
            # Everything went through without reaching the point often enough: one more burst.
            more = [
                Operation(key=f"chaos-{run.seed}-{len(run.history) + i}", sender=s, recipient=r)
                for i, (s, r) in enumerate(pairs)
            ]
            run.history.extend(more)
            await sending
            sending = asyncio.create_task(traffic(run, more))
        await asyncio.sleep(0.05)
    if died:
        run.crashes[point] = run.crashes.get(point, 0) + 1
        run.log(f"{victim} died at {point}:{nth}")
    else:
        run.missed[point] = run.missed.get(point, 0) + 1
        run.log(f"{victim} did not reach {point}:{nth}")
    await asyncio.to_thread(supervisor.stop_node, run.folder, victim, kill=True)
    await asyncio.to_thread(supervisor.start_node, run.folder, victim)
    if unreachable is not None:
        await asyncio.to_thread(supervisor.start_node, run.folder, unreachable)
    await sending


def crash_points(
    folder: Path,
    *,
    points: list[str],
    cycles: int,
    seed: int,
    max_s: float,
    states: tuple[str, str, str] = ("AR", "BR", "US"),
    ops_per_cycle: int = 6,
) -> tuple[Run, Verdict, float]:
    """Every point × ``cycles``: die there, restart, and in the end the same invariants."""
    run = Run(folder, seed, time.monotonic() + max_s)
    rng = random.Random(seed)
    supervisor.network_up(folder, list(states))

    async def main() -> None:
        for point in points:
            for _ in range(cycles):
                if time.monotonic() > run.deadline:
                    return
                victim = rng.choice(states)
                others = [s for s in states if s != victim]
                await _crash_cycle(run, point, victim, others, rng, ops_per_cycle)

    return _run_and_check(run, main)


def all_points() -> list[str]:
    return list(POINTS)


def default_seed() -> int:
    return int(os.environ.get("MLA_CHAOS_SEED", "1"))
