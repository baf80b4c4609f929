"""The benchmark runs and writes results of the documented shape (bench/README.md).

Only mla_node's codec part, at tiny sizes and for a fraction of a second: the competitors live in
an optional venv of their own, and the figures of a CI machine mean nothing. What must hold is
that ``python -m bench`` still works end to end (argument parsing, a worker subprocess per cell,
the table, the JSON file) and that an envelope too large for ``MAX_ENVELOPE`` is reported as not
applicable rather than measured. The scale part runs at its smallest (three nodes, twenty
requests; marked slow): every request delivered with a verified receipt, no node left running.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import ROOT, xml_payload

ROW_KEYS = {
    "contender",
    "size",
    "status",
    "cycles",
    "wall_s",
    "cpu_s",
    "msg_per_s",
    "mb_per_s",
    "msg_per_cpu_s",
    "base_rss_mib",
    "peak_rss_mib",
    "load_before",
    "load_after",
}


def test_quick_codec_part_of_mla_node_writes_the_documented_json(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    command = [
        sys.executable, "-m", "bench", "--quick", "--only", "codec",
        "--contenders", "mla_node,mla_node_attachment,mla_node_primitives",
        "--sizes", "1024,2097152",
        "--seconds", "0.2",
        "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "mla_node (envelope)" in done.stdout and "msg/CPU-s" in done.stdout

    results = json.loads(out.read_text())
    assert results["format"] == "mla-node-bench/1"
    assert results["quick"] is True
    assert len(results["load_at_start"]) == 3
    assert set(results["parts"]) == {"codec"}
    codec = results["parts"]["codec"]
    rows = {(r["contender"], r["size"]): r for r in codec["rows"]}
    assert set(rows) == {
        (contender, size)
        for contender in ("mla_node", "mla_node_attachment", "mla_node_primitives")
        for size in (1024, 2097152)
    }
    for key in [
        ("mla_node", 1024),
        ("mla_node_attachment", 1024),
        ("mla_node_primitives", 1024),
        ("mla_node_attachment", 2097152),
        ("mla_node_primitives", 2097152),
    ]:
        row = rows[key]
        assert row["status"] == "ok", row
        assert ROW_KEYS.issubset(row)
        assert row["cycles"] >= 1 and row["msg_per_s"] > 0 and row["peak_rss_mib"] > 0
    too_big = rows[("mla_node", 2097152)]
    assert too_big["status"] == "n/a" and "MAX_ENVELOPE" in too_big["note"]
    # No competitor ran, so there is nothing to compare with.
    assert codec["ratios"] == []


def test_every_contender_gets_the_same_well_formed_payload() -> None:
    for size in (100, 1024, 49_200, 1 << 20):
        data = xml_payload(size)
        assert len(data) == size
        assert data.startswith(b"<Evidence") and data.endswith(b"</Evidence>")
    assert xml_payload(4096) == xml_payload(4096)  # seeded: every run carries the same bytes


@pytest.mark.slow
def test_scale_part_on_three_nodes_delivers_every_request(tmp_path: Path) -> None:
    """The scale part at its smallest: three node processes, twenty requests across them."""
    out = tmp_path / "results.json"
    command = [
        sys.executable, "-m", "bench", "--quick", "--only", "scale",
        "--scale-states", "AR,BR,US", "--scale-requests", "20",
        "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "idle RSS per node" in done.stdout

    scale = json.loads(out.read_text())["parts"]["scale"]
    assert scale["settings"]["states"] == ["AR", "BR", "US"]
    assert scale["startup_s"] > 0 and len(scale["load_at_startup"]) == 3
    for spread in (scale["idle"]["rss_mib"], scale["after_load"]["rss_mib"]):
        assert set(spread) == {"min", "median", "max"}
        assert 0 < spread["min"] <= spread["median"] <= spread["max"]
    assert set(scale["idle"]["rss_mib_by_state"]) == {"AR", "BR", "US"}
    load, checks = scale["load"], scale["checks"]
    assert load["requests"] == load["completed"] == 20 and load["errors"] == 0
    assert load["per_s"] > 0
    assert checks["outbox_delivered"] == checks["inbox_received"] == 20
    assert checks["receipts_verified"] == checks["receipts_checked"] == 20
    assert checks["rejected_or_undeliverable"] == 0
    assert scale["all_delivered"] is True and scale["left_running"] == []
