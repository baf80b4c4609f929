"""Backups of a real node process under load, their restore, ``db check``, and the refusal of a
database newer than the program (issue 8, item 6)."""

from __future__ import annotations

import http.client
import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from mla_node import supervisor
from mla_node.localnet import NodeRecord
from mla_node.protocol import forms

pytestmark = pytest.mark.slow


def cli(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mla_node", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Clerk(threading.Thread):
    """Submits requests one after the other until stopped; remembers when each 201 came."""

    def __init__(self, node: NodeRecord, to: str) -> None:
        super().__init__(daemon=True)
        self.url = urlsplit(node.clerk_url)
        self.token = node.token
        self.body = json.dumps(
            {"type": "mla_request", "to": to, "form": forms.example("mla_request")}
        )
        self.acked: list[tuple[float, str]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection(self.url.hostname or "", self.url.port, timeout=30)
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        while not self.halt.is_set():
            conn.request("POST", "/api/v1/requests", body=self.body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            if resp.status == 201:
                self.acked.append((time.monotonic(), json.loads(data)["id"]))
        conn.close()


def ids_in(database: Path) -> set[str]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
        return {r[0] for r in conn.execute("SELECT id FROM messages WHERE direction = 'out'")}


def test_backup_under_load_then_restore_loses_nothing(tmp_path: Path) -> None:
    manifest, procs = supervisor.network_up(tmp_path / "net", ["AR", "BR"], timeout=60)
    ar = manifest.nodes["AR"]
    out = tmp_path / "ar-backup.db"
    clerk = Clerk(ar, "BR")
    try:
        clerk.start()
        while len(clerk.acked) < 50:  # the node is busy before the backup starts
            time.sleep(0.05)
        started = time.monotonic()
        done = cli("backup", "--config", ar.config, "-o", out)
        finished = time.monotonic()
        assert done.returncode == 0, done.stderr
        print(done.stdout.strip(), f"(wall {finished - started:.2f} s, under load)")
        time.sleep(0.5)  # the node keeps taking requests after the backup
        clerk.halt.set()
        clerk.join(30)
        assert out.stat().st_mode & 0o077 == 0
        acked_before = {mid for at, mid in clerk.acked if at < started}
        acked_after = {mid for at, mid in clerk.acked if at > finished}
        assert len(acked_before) >= 50 and acked_after

        # A running node's database is not replaced.
        refused = cli("restore", out, "--config", ar.config)
        assert refused.returncode == 2 and "database_in_use" in refused.stderr

        supervisor.stop_node(tmp_path / "net", "AR")
        restored = cli("restore", out, "--config", ar.config)
        assert restored.returncode == 0, restored.stderr
        assert "Log verified" in restored.stdout
        # Nothing acknowledged before the backup point is lost; what came after it is not
        # in the restored database (it was taken at one instant).
        present = ids_in(Path(ar.database))
        assert acked_before <= present
        assert not acked_after & present
        assert list(ar.folder.glob("node.db.before-restore-*"))

        checked = cli("db", "check", "--config", ar.config)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "evidence log  ok" in checked.stdout
        # The restored node runs, and delivers what the backup still had queued.
        started_again = cli("network", "start-node", "AR", "--dir", tmp_path / "net")
        assert started_again.returncode == 0, started_again.stderr
    finally:
        clerk.halt.set()
        supervisor.network_down(tmp_path / "net", procs=procs)


def test_a_database_newer_than_the_program_is_refused(tmp_path: Path) -> None:
    manifest, procs = supervisor.network_up(tmp_path / "net", ["AR", "BR"], timeout=60)
    supervisor.network_down(tmp_path / "net", procs=procs)
    br = manifest.nodes["BR"]
    with sqlite3.connect(br.database) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (999, 'a newer mla_node')")
    for args in (("db", "check"), ("run",)):
        done = cli(*args, "--config", br.config, timeout=60)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "error [database_too_new]" in done.stderr
        assert "version 999" in done.stderr
