"""A fault-injecting TCP proxy: one listening port in front of one target, faults switched live.

It works on bytes, below TLS: the mutual-TLS handshake and the envelopes pass through untouched,
so the nodes at both ends see only what a bad network would do to them. Faults apply to new and
to open connections alike (a keep-alive connection gets no shelter), and each is bounded and,
given the proxy's ``seed``, deterministic: connection number ``i`` draws its fate from its own
``Random(seed, i)``, whatever the interleaving of the others.

- :class:`Latency`: each chunk, each way, is held ``delay_s ± jitter_s`` before it is forwarded.
- :class:`Loss`: each connection, with probability ``p``, is dropped (closed both ways) after a
  random number of bytes (both ways counted) below ``within``.
- :class:`Reset`: the same, but with an RST (``SO_LINGER`` 0, then close) to both ends.
- :class:`BlackHole`: connections are accepted and read, nothing is forwarded nor answered.
  Their byte streams can never be whole again, so they are reset when the black hole lifts.
- :class:`Refuse`: connections are closed at once, open ones included.
- :class:`Bandwidth`: the link carries ``bytes_per_s`` each way, shared by its connections.
- :class:`CutMidBody`: the first ``after_bytes`` (``+ randint(0, spread)``) bytes of each
  connection's client→server stream are forwarded, then both sides are closed.

A fault can be set for every sender or for one sender address (``source``), which is how links
are told apart behind one endpoint: each node sends from its own loopback address (127.0.0.2,
127.0.0.3, ...). A partition is a :class:`BlackHole` or :class:`Refuse` on a :class:`Link`; a
split is several links partitioned at once (:func:`partition`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass

from mla_node.transport.listening import close_listening

MAX_DELAY_S = 10.0
MIN_BYTES_PER_S = 1024
CHUNK = 16384


def _require(ok: bool, fault: object) -> None:
    if not ok:
        raise ValueError(f"fault out of bounds: {fault!r}")


@dataclass(frozen=True)
class Latency:
    delay_s: float
    jitter_s: float = 0.0

    def __post_init__(self) -> None:
        _require(0 <= self.jitter_s <= self.delay_s <= MAX_DELAY_S - self.jitter_s, self)


@dataclass(frozen=True)
class Loss:
    p: float
    within: int = 16384

    def __post_init__(self) -> None:
        _require(0 <= self.p <= 1 and self.within >= 1, self)


@dataclass(frozen=True)
class Reset:
    p: float = 1.0
    within: int = 16384

    def __post_init__(self) -> None:
        _require(0 <= self.p <= 1 and self.within >= 1, self)


@dataclass(frozen=True)
class BlackHole:
    pass


@dataclass(frozen=True)
class Refuse:
    pass


@dataclass(frozen=True)
class Bandwidth:
    bytes_per_s: int

    def __post_init__(self) -> None:
        _require(self.bytes_per_s >= MIN_BYTES_PER_S, self)


@dataclass(frozen=True)
class CutMidBody:
    after_bytes: int
    spread: int = 0

    def __post_init__(self) -> None:
        _require(self.after_bytes >= 0 and self.spread >= 0, self)


Fault = Latency | Loss | Reset | BlackHole | Refuse | Bandwidth | CutMidBody


@dataclass
class Stats:
    """What the proxy did, for reports and for tests that must see a fault fire."""

    connections: int = 0
    refused: int = 0
    dropped: int = 0
    reset: int = 0
    cut: int = 0
    black_holed: int = 0  # connections that lost bytes (or their opening) in a black hole
    bytes_up: int = 0  # client → target, forwarded
    bytes_down: int = 0


@dataclass(eq=False)
class _Conn:
    rng: random.Random
    source: str
    down: asyncio.StreamWriter
    up: asyncio.StreamWriter | None = None
    armed: Fault | None = None  # the fault this connection last drew its fate for
    budget: int | None = None  # bytes left before ``doom`` strikes
    doom: str = ""  # "dropped", "reset" or "cut"
    sunk: bool = False  # lost bytes in a black hole
    ended: bool = False

    def arm(self, fault: Fault | None) -> None:
        if fault is self.armed:
            return
        self.armed, self.budget, self.doom = fault, None, ""
        if isinstance(fault, Loss | Reset) and self.rng.random() < fault.p:
            self.budget = self.rng.randrange(fault.within)
            self.doom = "dropped" if isinstance(fault, Loss) else "reset"
        elif isinstance(fault, CutMidBody):
            self.budget = fault.after_bytes + self.rng.randint(0, fault.spread)
            self.doom = "cut"

    def spend(self, data: bytes, up: bool) -> tuple[bytes, str]:
        """The part of ``data`` to forward, and the doom to apply after it (or "")."""
        if self.budget is None or (self.doom == "cut" and not up):
            return data, ""
        if len(data) < self.budget:
            self.budget -= len(data)
            return data, ""
        return data[: self.budget], self.doom


class FaultProxy:
    """Forwards connections on a listening port to ``target_host:target_port``, with faults."""

    def __init__(self, target_host: str, target_port: int, *, seed: int = 0) -> None:
        self.target = (target_host, target_port)
        self.seed = seed
        self.stats = Stats()
        self._faults: dict[str | None, Fault] = {}  # None: every sender
        self._conns: set[_Conn] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._count = 0
        self._free_at = {True: 0.0, False: 0.0}  # bandwidth: when each direction is free
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, *, sock: socket.socket | None = None
    ) -> FaultProxy:
        """Listen on ``host:port``, or on an already bound ``sock``."""
        if sock is not None:
            self._server = await asyncio.start_server(self._handle, sock=sock)
        else:
            self._server = await asyncio.start_server(self._handle, host, port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def close(self) -> None:
        if self._server is not None:
            await close_listening([self._server])  # else one accepted now is left ownerless
        for conn in list(self._conns):
            self._end(conn, "")
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def fault(self, source: str | None = None) -> Fault | None:
        """The fault that applies now to connections from ``source``."""
        return self._faults.get(source, self._faults.get(None))

    def set_fault(self, fault: Fault, *, source: str | None = None) -> None:
        """Apply ``fault`` from now on, to every sender or to those from address ``source``."""
        self._faults[source] = fault
        self._changed()

    def heal(self, source: str | None = None) -> None:
        """Lift every fault, or only the one set for ``source``."""
        if source is None:
            self._faults.clear()
        else:
            self._faults.pop(source, None)
        self._changed()

    def _changed(self) -> None:
        for conn in list(self._conns):
            fault = self.fault(conn.source)
            if isinstance(fault, Refuse):
                self._end(conn, "refused")
            elif conn.sunk and not isinstance(fault, BlackHole):
                self._end(conn, "reset")

    def _end(self, conn: _Conn, how: str) -> None:
        """Close both sides of ``conn``: with an RST for "reset", else a plain close."""
        if conn.ended:
            return
        conn.ended = True
        if how:
            setattr(self.stats, how, getattr(self.stats, how) + 1)
        for writer in (conn.down, conn.up):
            if writer is None:
                continue
            if how == "reset":
                with contextlib.suppress(OSError):
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
            else:
                writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        conn = _Conn(random.Random(self.seed * 1_000_003 + self._count), str(peer[0]), writer)
        self._count += 1
        self.stats.connections += 1
        self._conns.add(conn)
        try:
            fault = self.fault(conn.source)
            if isinstance(fault, Refuse):
                self._end(conn, "refused")
                return
            if isinstance(fault, BlackHole):
                conn.sunk = True
                self.stats.black_holed += 1
                await self._pump(conn, reader, None, up=True)
                return
            try:
                up_reader, conn.up = await asyncio.open_connection(*self.target)
            except OSError:
                return
            await asyncio.gather(
                self._pump(conn, reader, conn.up, up=True),
                self._pump(conn, up_reader, writer, up=False),
            )
        finally:
            self._end(conn, "")
            self._conns.discard(conn)
            self._tasks.discard(task)

    async def _pump(
        self,
        conn: _Conn,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter | None,
        *,
        up: bool,
    ) -> None:
        """Copy ``src`` to ``dst`` chunk by chunk, applying whatever fault holds at each chunk."""
        try:
            while not conn.ended:
                fault = self.fault(conn.source)
                size = CHUNK
                if isinstance(fault, Bandwidth):
                    size = max(1, min(CHUNK, fault.bytes_per_s // 10))
                data = await src.read(size)
                if not data:
                    if dst is not None and not conn.ended and dst.can_write_eof():
                        dst.write_eof()
                    return
                fault = self.fault(conn.source)
                if isinstance(fault, BlackHole) or dst is None:
                    if not conn.sunk:
                        conn.sunk = True
                        self.stats.black_holed += 1
                    continue
                if isinstance(fault, Latency):
                    low, high = fault.delay_s - fault.jitter_s, fault.delay_s + fault.jitter_s
                    await asyncio.sleep(conn.rng.uniform(low, high))
                elif isinstance(fault, Bandwidth):
                    await self._pace(up, len(data), fault.bytes_per_s)
                conn.arm(fault)
                data, doom = conn.spend(data, up)
                if conn.ended:
                    return
                if data:
                    dst.write(data)
                    if up:
                        self.stats.bytes_up += len(data)
                    else:
                        self.stats.bytes_down += len(data)
                    await dst.drain()
                if doom:
                    self._end(conn, doom)
        except OSError:
            self._end(conn, "")

    async def _pace(self, up: bool, size: int, bytes_per_s: int) -> None:
        """Hold a chunk until the link, shared by every connection, has carried it."""
        now = time.monotonic()
        done = max(now, self._free_at[up]) + size / bytes_per_s
        self._free_at[up] = done
        await asyncio.sleep(done - now)


@dataclass(frozen=True)
class Link:
    """The way from one sender (its address; None: every sender) through a proxy to a node."""

    proxy: FaultProxy
    source: str | None = None

    def set_fault(self, fault: Fault) -> None:
        self.proxy.set_fault(fault, source=self.source)

    def heal(self) -> None:
        self.proxy.heal(self.source)


def partition(links: Iterable[Link], how: BlackHole | Refuse | None = None) -> None:
    """Cut every one of ``links`` at once (a black hole unless told to refuse)."""
    for link in links:
        link.set_fault(how or BlackHole())


def heal(links: Iterable[Link]) -> None:
    for link in links:
        link.heal()
