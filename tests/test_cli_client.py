"""``mla-node client submit --attach`` and ``client download`` against two real nodes."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from click.testing import CliRunner

from mla_node.cli import cli
from mla_node.protocol import forms
from tests.netkit import running_network, wait_for


async def test_submit_with_files_and_download_them(tmp_path: Path) -> None:
    form = tmp_path / "form.json"
    form.write_text(json.dumps(forms.example("mla_request")))
    files = {"Extrato bancário.pdf": os.urandom(3 << 20), "notes.txt": b"page 2 of 2\n"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    runner = CliRunner()
    async with running_network(tmp_path / "net", ("AR", "BR")) as net:
        ar, br = net["AR"], net["BR"]
        submit = await asyncio.to_thread(
            runner.invoke,
            cli,
            ["client", "submit", "--url", ar.runtime.clerk_url, "--token-env", "CLERK"]
            + ["--type", "mla_request", "--to", "BR", "--form", str(form)]
            + [arg for name in files for arg in ("--attach", str(tmp_path / name))],
            env={"CLERK": ar.tokens["clerk"]},
        )
        assert submit.exit_code == 0, submit.output
        message_id = submit.stdout.strip().splitlines()[-1]

        async def delivered() -> bool:
            _, view = await ar.call("GET", f"/api/v1/requests/{message_id}", role="auditor")
            return bool(view["status"] == "delivered")

        await wait_for(delivered)
        out = tmp_path / "out"
        args = ["client", "download", "--url", br.runtime.clerk_url, "--token-env", "CLERK"]
        args += ["--id", message_id, "--out", str(out)]
        for _ in range(2):
            result = await asyncio.to_thread(
                runner.invoke, cli, args, env={"CLERK": br.tokens["clerk"]}
            )
            assert result.exit_code == 0, result.output
        assert {p.name: p.read_bytes() for p in out.iterdir()} == {
            **files,
            "Extrato bancário (1).pdf": files["Extrato bancário.pdf"],
            "notes (1).txt": files["notes.txt"],
        }
        # A wrong token or id is a clear error and exit code 2, not a traceback.
        bad = await asyncio.to_thread(
            runner.invoke, cli, [*args[:-4], "--id", "nope", "--out", str(out)], env={"CLERK": "x"}
        )
        assert bad.exit_code == 2 and "unauthenticated" in bad.output
