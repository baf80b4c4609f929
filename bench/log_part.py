"""Part ``log``: the existing offline log verification benchmark (``bench/log_verify.py``).

Run as its own process, as one would run it by hand, with its table read back into the results:
it spreads the signature checks over one worker process per CPU, and its figures must not
include this process's memory or the other parts' leftovers.
"""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

from bench.common import ROOT, load_average, load_label, table

FULL_ENTRIES = 100_000
QUICK_ENTRIES = 10_000
TIMEOUT_S = 600.0
_ROW = re.compile(r"^(\s*\S.*?)\s{2,}(\S.*)$")  # "name  value", two spaces or more between
_SECONDS = re.compile(r"^([\d.]+) s \(CPU ([\d.]+) s\)")


def run(entries: int) -> dict[str, Any]:
    load_before = load_average()
    done = subprocess.run(
        [sys.executable, "-m", "bench.log_verify", "--entries", str(entries)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"entries": entries, "status": "error", "note": last[:300]}
    rows = {m[1]: m[2] for line in done.stdout.splitlines() if (m := _ROW.match(line))}
    verify = _SECONDS.match(rows.get("verify: signatures + tree + checkpoints", ""))
    return {
        "entries": entries,
        "status": "ok",
        "rows": rows,
        "verify_wall_s": float(verify[1]) if verify else None,
        "verify_cpu_s": float(verify[2]) if verify else None,
        "load_before": load_before,
        "load_after": load_average(),
    }


def render(result: dict[str, Any]) -> str:
    if result["status"] != "ok":
        return f"log: {result['status']}: {result.get('note')}"
    lines = [[name, value] for name, value in result["rows"].items()]
    lines.append(["load before (1/5/15 min)", load_label(result["load_before"])])
    return table(["offline log verification", "figure"], lines)
