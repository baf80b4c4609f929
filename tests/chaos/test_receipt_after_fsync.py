"""Acknowledge after fsync: the receiver is killed right after each of 100 receipts it sends.

Each time, BR runs armed with ``MLA_CRASH_AT=inbound.after_response`` (SIGKILL the moment a
receipt has been written to the socket), AR's clerk sends one request, AR records the receipt,
BR dies. After the 100th, BR restarts clean: all 100 envelopes are in its database, each with
the receipt AR holds, byte for byte.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

from mla_node import supervisor
from mla_node.crashpoints import ENV_VAR
from mla_node.localnet import NodeRecord, read_manifest
from mla_node.protocol import forms
from tests.chaos.http import clerk_call

pytestmark = pytest.mark.slow
RECEIPTS = int(os.environ.get("MLA_RECEIPT_KILLS", "100"))


def wait_until_dead(node: NodeRecord, within_s: float = 15.0) -> None:
    deadline = time.monotonic() + within_s
    while supervisor.is_running(node):
        assert time.monotonic() < deadline, "the receiver did not die at its crash point"
        time.sleep(0.02)


@pytest.mark.timeout(900)
def test_every_receipt_sent_is_backed_by_a_stored_envelope(tmp_path: Path) -> None:
    folder = tmp_path / "net"
    supervisor.network_up(folder, ["AR", "BR"])
    try:
        manifest = read_manifest(folder)
        assert manifest is not None
        ar = manifest.nodes["AR"]
        sent: list[str] = []
        body = {"type": "mla_request", "to": "BR", "form": forms.example("mla_request")}
        for n in range(RECEIPTS):
            supervisor.stop_node(folder, "BR", kill=True)
            br, _ = supervisor.start_node(
                folder, "BR", extra_env={ENV_VAR: "inbound.after_response"}
            )
            status, created = clerk_call(ar, "POST", "/api/v1/requests", body, key=f"k{n}")
            assert status == 201, created
            sent.append(created["id"])
            wait_until_dead(br)
        supervisor.start_node(folder, "BR")
        deadline = time.monotonic() + 60
        while True:
            _, peers = clerk_call(ar, "GET", "/api/v1/peers")
            if sum(p["queued"] for p in peers["peers"]) == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        supervisor.network_down(folder)

    with sqlite3.connect(f"file:{manifest.nodes['BR'].database}?mode=ro", uri=True) as conn:
        stored = dict(conn.execute("SELECT message_id, receipt FROM receipts").fetchall())
    with sqlite3.connect(f"file:{ar.database}?mode=ro", uri=True) as conn:
        recorded = dict(conn.execute("SELECT message_id, receipt FROM receipts").fetchall())
    assert sorted(stored) == sorted(sent)
    assert recorded == {m: stored[m] for m in sent}, json.dumps(sorted(set(sent) - set(recorded)))
