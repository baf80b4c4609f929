"""The transport's ceiling: a plain aiohttp server that reads a POST's body and answers 201.

    python -m bench.echo_server --fd N

Started by ``bench/e2e.py`` in a process of its own, on a listening socket the parent made and
passes down (so the parent knows the port before the child starts, and no port can be taken in
between). No TLS, no authentication, no access log, no database: what a node's clerk API would
cost if it did nothing. It stops on SIGTERM (aiohttp's ``run_app`` handles it).
"""

from __future__ import annotations

import argparse
import socket

from aiohttp import web

# About the size of a node's 201 answer to a submission (the request's summary).
REPLY = {"id": "0" * 26, "status": "queued", "padding": "x" * 200}


async def accept(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response(REPLY, status=201)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fd", type=int, required=True, help="a listening TCP socket")
    args = parser.parse_args()
    sock = socket.socket(fileno=args.fd)
    app = web.Application()
    app.router.add_post("/echo", accept)
    web.run_app(app, sock=sock, print=None, access_log=None, handle_signals=True)


if __name__ == "__main__":
    main()
