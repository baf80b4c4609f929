"""The operator's commands on a node whose database is PostgreSQL (issue 9): they open the
shared database, not a SQLite file."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from click.testing import CliRunner

from mla_node.cli import cli
from mla_node.localnet import create_network
from mla_node.storage.db import open_database
from tests import pgkit


async def test_token_create_and_purge_work_on_a_postgresql_node(tmp_path: Path) -> None:
    async with pgkit.fresh_database() as url:
        [ar] = create_network(
            tmp_path,
            ["AR"],
            peer_ports={"AR": 20001},
            clerk_ports={"AR": 20002},
            now=dt.datetime.now(dt.UTC),
            databases={"AR": url},
        ).values()
        assert not (ar.folder / "node.db").exists()

        def run(*args: str) -> str:
            result = CliRunner().invoke(cli, [*args, "--config", str(ar.config_path)])
            assert result.exit_code == 0, result.output
            return result.output

        out = await asyncio.to_thread(run, "token", "create", "--role", "clerk", "--name", "ana")
        purge = await asyncio.to_thread(run, "db", "purge", "--older-than", "30", "--dry-run")
        assert purge.startswith("Would purge 0 case thread(s)")
        db = await open_database(url)
        try:
            rows = await db.fetchall("SELECT role, name FROM tokens")
            events = await db.fetchall("SELECT event FROM evidence")
        finally:
            await db.close()
        assert [(r[0], r[1]) for r in rows] == [("clerk", "ana")]
        assert [r[0] for r in events] == ["token_created"]  # signed into the shared log
        assert out.strip().splitlines()[-1]  # the secret, printed once
        assert not (ar.folder / "node.db").exists()  # no SQLite file was made on the side
