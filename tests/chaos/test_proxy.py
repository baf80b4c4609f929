"""The fault proxy against a tiny echo server on 127.0.0.1:0: each fault does what it says,
switches on and off on open connections, stays within its bounds and is deterministic."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from chaos.proxy import (
    Bandwidth,
    BlackHole,
    CutMidBody,
    FaultProxy,
    Latency,
    Link,
    Loss,
    Refuse,
    Reset,
    heal,
    partition,
)
from mla_node.transport.listening import close_listening

pytestmark = pytest.mark.timeout(30)


@dataclass
class Echo:
    port: int = 0
    connections: int = 0
    received: bytearray = field(default_factory=bytearray)


@asynccontextmanager
async def proxied(seed: int = 0) -> AsyncIterator[tuple[Echo, FaultProxy]]:
    """An echo server and a proxy in front of it."""
    echo = Echo()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        echo.connections += 1
        try:
            while data := await reader.read(65536):
                echo.received += data
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    echo.port = server.sockets[0].getsockname()[1]
    proxy = await FaultProxy("127.0.0.1", echo.port, seed=seed).start()
    try:
        yield echo, proxy
    finally:
        await proxy.close()
        await close_listening([server])


async def connect(
    proxy: FaultProxy, source: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proxy.port, local_addr=(source, 0))


async def echo_once(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
) -> float:
    """Send ``data``, read it back; the seconds it took."""
    started = time.monotonic()
    writer.write(data)
    await writer.drain()
    assert await asyncio.wait_for(reader.readexactly(len(data)), 10) == data
    return time.monotonic() - started


async def read_to_end(reader: asyncio.StreamReader, within_s: float = 5) -> bytes:
    """Everything until EOF (a reset counts as an end)."""
    got = bytearray()
    async with asyncio.timeout(within_s):
        try:
            while data := await reader.read(65536):
                got += data
        except ConnectionResetError:
            pass
    return bytes(got)


async def drain_reader(reader: asyncio.StreamReader) -> None:
    async with asyncio.timeout(5):
        while await reader.read(65536):
            pass


async def silent_for(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        await asyncio.wait_for(reader.read(1), seconds)
    except TimeoutError:
        return True
    return False


async def test_without_a_fault_bytes_pass_untouched() -> None:
    async with proxied() as (echo, proxy):
        reader, writer = await connect(proxy)
        data = bytes(range(256)) * 400
        await echo_once(reader, writer, data)
        writer.close()
        assert bytes(echo.received) == data
        assert proxy.stats.bytes_up == proxy.stats.bytes_down == len(data)


async def test_latency_holds_each_chunk_and_switches_on_an_open_connection() -> None:
    async with proxied() as (_, proxy):
        reader, writer = await connect(proxy)
        assert await echo_once(reader, writer, b"fast") < 0.15
        proxy.set_fault(Latency(0.2, 0.05))
        slow = await echo_once(reader, writer, b"slow")
        assert 0.3 <= slow < 1.5  # 0.15..0.25 s each way
        proxy.heal()
        assert await echo_once(reader, writer, b"fast again") < 0.15
        writer.close()


async def test_loss_drops_a_connection_after_the_bytes_its_seed_decides() -> None:
    forwarded = []
    for seed in (7, 7, 8):
        async with proxied(seed) as (_, proxy):
            proxy.set_fault(Loss(p=1.0, within=3000))
            reader, writer = await connect(proxy)
            writer.write(b"x" * 5000)
            assert len(await read_to_end(reader)) < 3000
            writer.close()
            assert proxy.stats.dropped == 1
            forwarded.append(proxy.stats.bytes_up + proxy.stats.bytes_down)
    assert forwarded[0] == forwarded[1] != forwarded[2]
    assert all(n < 3000 for n in forwarded)


async def test_loss_hits_each_connection_with_its_probability() -> None:
    async def dropped(p: float, seed: int) -> int:
        async with proxied(seed) as (_, proxy):
            proxy.set_fault(Loss(p=p, within=50))
            for _ in range(40):
                reader, writer = await connect(proxy)
                writer.write(b"y" * 100)
                writer.write_eof()
                await read_to_end(reader)
                writer.close()
            return proxy.stats.dropped

    half = await dropped(0.5, seed=3)
    assert 8 <= half <= 32
    assert await dropped(0.5, seed=3) == half
    assert await dropped(0.0, seed=3) == 0


async def test_reset_sends_an_rst() -> None:
    async with proxied() as (_, proxy):
        proxy.set_fault(Reset(p=1.0, within=10))
        reader, writer = await connect(proxy)
        writer.write(b"z" * 100)
        with pytest.raises(ConnectionResetError):
            await drain_reader(reader)
        writer.close()
        assert proxy.stats.reset == 1


async def test_black_hole_reads_and_never_answers_then_resets_when_lifted() -> None:
    async with proxied() as (echo, proxy):
        before_r, before_w = await connect(proxy)
        await echo_once(before_r, before_w, b"ping")
        proxy.set_fault(BlackHole())
        new_r, new_w = await connect(proxy)
        for writer in (before_w, new_w):
            writer.write(b"into the void" * 100)
        assert await silent_for(before_r, 0.3)
        assert await silent_for(new_r, 0.1)
        assert echo.connections == 1
        assert bytes(echo.received) == b"ping"
        assert proxy.stats.black_holed == 2
        proxy.heal()
        assert await read_to_end(before_r) == b""
        assert await read_to_end(new_r) == b""
        reader, writer = await connect(proxy)
        await echo_once(reader, writer, b"back")
        for w in (before_w, new_w, writer):
            w.close()


async def test_bandwidth_throttles_both_ways() -> None:
    async with proxied() as (_, proxy):
        proxy.set_fault(Bandwidth(20_000))
        reader, writer = await connect(proxy)
        took = await echo_once(reader, writer, b"b" * 20_000)
        assert 0.9 <= took < 5  # 1 s each way, overlapping
        writer.close()


async def test_cut_mid_body_forwards_the_first_bytes_then_closes_both_sides() -> None:
    async with proxied() as (echo, proxy):
        proxy.set_fault(CutMidBody(after_bytes=100))
        reader, writer = await connect(proxy)
        writer.write(b"c" * 1000)
        assert len(await read_to_end(reader)) <= 100
        writer.close()
        assert bytes(echo.received) == b"c" * 100
        assert proxy.stats.cut == 1

    async with proxied(seed=5) as (echo, proxy):
        proxy.set_fault(CutMidBody(after_bytes=100, spread=50))
        reader, writer = await connect(proxy)
        writer.write(b"c" * 1000)
        await read_to_end(reader)
        writer.close()
        assert 100 <= len(echo.received) <= 150


async def test_refuse_closes_new_and_open_connections_at_once() -> None:
    async with proxied() as (echo, proxy):
        open_r, open_w = await connect(proxy)
        await echo_once(open_r, open_w, b"hello")
        proxy.set_fault(Refuse())
        assert await read_to_end(open_r, 1) == b""
        reader, writer = await connect(proxy)
        writer.write(b"knock")
        assert await read_to_end(reader, 1) == b""
        assert echo.connections == 1
        assert proxy.stats.refused == 2
        for w in (open_w, writer):
            w.close()


async def test_a_fault_for_one_source_spares_the_others() -> None:
    async with proxied() as (_, proxy):
        link = Link(proxy, "127.0.0.2")
        link.set_fault(BlackHole())
        cut_r, cut_w = await connect(proxy, "127.0.0.2")
        cut_w.write(b"hello?")
        assert await silent_for(cut_r, 0.3)
        ok_r, ok_w = await connect(proxy, "127.0.0.3")
        await echo_once(ok_r, ok_w, b"fine")
        link.heal()
        assert proxy.fault("127.0.0.2") is None
        again_r, again_w = await connect(proxy, "127.0.0.2")
        await echo_once(again_r, again_w, b"back")
        for w in (cut_w, ok_w, again_w):
            w.close()


async def test_a_split_cuts_several_links_at_once() -> None:
    async with proxied() as (_, one), proxied() as (_, two):
        links = [Link(one, "127.0.0.2"), Link(two, "127.0.0.3")]
        partition(links, Refuse())
        assert one.fault("127.0.0.2") == two.fault("127.0.0.3") == Refuse()
        assert one.fault("127.0.0.3") is None
        heal(links)
        assert one.fault("127.0.0.2") is None
        assert two.fault("127.0.0.3") is None


async def test_close_ends_every_connection() -> None:
    async with proxied() as (_, proxy):
        proxy.set_fault(BlackHole())
        reader, writer = await connect(proxy)
        writer.write(b"...")
        await asyncio.sleep(0.05)
        await asyncio.wait_for(proxy.close(), 2)
        assert await read_to_end(reader, 2) == b""
        writer.close()


@pytest.mark.parametrize(
    "make",
    [
        lambda: Latency(-0.1),
        lambda: Latency(0.1, 0.2),
        lambda: Latency(20.0),
        lambda: Loss(1.5),
        lambda: Reset(0.5, within=0),
        lambda: Bandwidth(10),
        lambda: CutMidBody(-1),
    ],
)
def test_faults_are_bounded(make: object) -> None:
    assert callable(make)
    with pytest.raises(ValueError, match="out of bounds"):
        make()
