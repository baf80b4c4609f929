"""Closing listening servers without leaving an accepted connection open with no owner.

asyncio accepts a connection in the listening socket's callback but attaches its transport to
the server in a task, one loop iteration later. ``Server.close()`` in between makes that task
fail on an assertion (``Server._attach``, CPython gh-109564), and the accepted socket is left
open with no owner: its client waits until it gives up, and the socket is only closed when
garbage collection finds it (an unclosed-transport ``ResourceWarning``). So the listening
sockets stop accepting first, the connections already accepted are attached and their handlers
started (an iteration each: attach, ``connection_made``, the handler's first step), and only then
do the servers close: those connections are theirs by then, and closed with the others at once
(a handler closed before its first step would wait for a request until the shutdown timeout).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from aiohttp import web

_ACCEPT_STEPS = 3  # loop iterations from an accepted socket to its handler's first step


async def _stop_accepting(servers: Iterable[asyncio.AbstractServer]) -> None:
    """Stop ``servers`` accepting and let what they accepted reach its handler; the caller
    closes them next."""
    loop = asyncio.get_running_loop()
    for server in servers:
        if isinstance(server, asyncio.Server):
            for sock in server.sockets:
                loop.remove_reader(sock.fileno())
    for _ in range(_ACCEPT_STEPS):  # each sleep(0) runs after all that was scheduled before it
        await asyncio.sleep(0)


async def close_servers(runners: Sequence[web.AppRunner]) -> None:
    """Close aiohttp servers (``runner.cleanup()``, last started first), leaving no connection
    open."""
    # the asyncio server behind each site (aiohttp's runner.addresses reads it the same way)
    await _stop_accepting(
        site._server for runner in runners for site in runner.sites if site._server is not None
    )
    for runner in reversed(runners):
        await runner.cleanup()


async def close_listening(servers: Sequence[asyncio.AbstractServer]) -> None:
    """Close plain asyncio servers the same way; the connections they accepted stay with their
    handlers, which the caller ends (``Server.close()`` leaves them open)."""
    await _stop_accepting(servers)
    for server in servers:
        server.close()
