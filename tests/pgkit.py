"""A real PostgreSQL server for the tests (issue 9): a fresh database per test, dropped after.

The server is the one ``scripts/postgres.sh start`` runs on loopback (scripts/test.sh and .ci/run
start it and export ``MLA_TEST_POSTGRES``). Outside CI the PostgreSQL tests skip, saying why,
when there is none; in CI (``CI=true``) they fail: .ci/run installs and starts it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import pytest

ENV_VAR = "MLA_TEST_POSTGRES"


def server_url() -> str:
    """The test server's URL (its maintenance database); skip or fail when there is none."""
    url = os.environ.get(ENV_VAR)
    if url:
        return url
    why = f"{ENV_VAR} is not set: start a server with `bash scripts/postgres.sh start`"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why} (.ci/run does)")
    pytest.skip(why)


def database_url(server: str, name: str) -> str:
    parts = urlsplit(server)
    return urlunsplit(parts._replace(path="/" + name))


@asynccontextmanager
async def fresh_database(prefix: str = "mla_test") -> AsyncIterator[str]:
    """A new, empty database on the test server; its URL. Dropped afterwards, connections too."""
    import asyncpg

    server = server_url()
    name = f"{prefix}_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield database_url(server, name)
    finally:
        admin = await asyncpg.connect(server)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
