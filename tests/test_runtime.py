"""Starting a node: clear errors for what an operator can get wrong, and nothing left behind."""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import socket
from pathlib import Path

import pytest
from aiohttp import web

from mla_node.errors import ConfigError
from mla_node.localnet import create_network
from mla_node.runtime import NodeRuntime
from mla_node.transport.listening import close_servers
from tests.netkit import bound_socket


async def test_a_port_in_use_names_the_setting(tmp_path: Path) -> None:
    taken = bound_socket()
    taken.listen()
    free = bound_socket()
    peer_port = free.getsockname()[1]
    try:
        nodes = create_network(
            tmp_path,
            ["AR"],
            peer_ports={"AR": peer_port},
            clerk_ports={"AR": taken.getsockname()[1]},
            now=dt.datetime.now(dt.UTC),
        )
        free.close()
        with pytest.raises(ConfigError) as caught:
            await NodeRuntime.start(nodes["AR"].config)
        assert caught.value.field == "clerk_api.port"
        # The peer endpoint that had started is closed again: its port can be listened on at once.
        again = socket.socket()
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", peer_port))
        again.listen()
        again.close()
    finally:
        taken.close()


def _accepted_not_attached(task: asyncio.Task[object]) -> bool:
    """asyncio's task that attaches a just-accepted connection to its server, not started yet."""
    coro = task.get_coro()
    return (
        getattr(coro, "__qualname__", "").endswith("._accept_connection2")
        and inspect.iscoroutine(coro)
        and inspect.getcoroutinestate(coro) == inspect.CORO_CREATED
    )


async def test_a_connection_accepted_as_the_servers_close_is_closed_with_them() -> None:
    """CPython gh-109564: closed between the accept and the attach, a server used to leave the
    accepted socket open with no owner (the client hung; garbage collection warned later)."""
    runner = web.AppRunner(web.Application(), handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    loop = asyncio.get_running_loop()
    # Connected at once on loopback, before the loop has run: the loop has yet to accept it.
    client = socket.create_connection((host, port))
    client.setblocking(False)
    try:
        for _ in range(100):  # until the loop has accepted it, and not attached it yet
            if any(_accepted_not_attached(t) for t in asyncio.all_tasks()):
                break
            await asyncio.sleep(0)
        else:
            pytest.fail("the connection was never seen between its accept and its attach")
        # At once, not after the shutdown timeout (60 s here) ...
        await asyncio.wait_for(close_servers([runner]), 5)
        # ... and the server's end is closed: the client reads the end of the stream.
        assert await asyncio.wait_for(loop.sock_recv(client, 1), 5) == b""
    finally:
        client.close()
        await runner.cleanup()  # nothing left to do after close_servers
