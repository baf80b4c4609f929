"""Part ``codec``: the sign+encrypt → decrypt+verify → signed receipt → verify cycle in one
process, mla_node against Peppol AS4 (``as4``) and AS2 (``pyas2lib``), side by side.

Every (contender, size) runs in a fresh subprocess (``bench/cycle.py``), one after the other, so
that each peak RSS is its own and no two contenders compete for the two cores. The competitors
cannot be installed next to mla_node (``as4`` pins ``cryptography<47``, mla_node needs ``>=48``),
so they live in a virtual environment of their own, ``.venv/bench-competitors`` (inside
``.venv/``, so git ignores it and it goes when ``.venv`` goes), made by
``python -m bench --setup-competitors``. Without it, their rows say "skipped" and why.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import KIB, MIB, ROOT, load_label, size_label, table
from bench.cycle import MLA_CONTENDERS, PEER_CONTENDERS

COMPETITORS_VENV = ROOT / ".venv" / "bench-competitors"
# Pinned: a figure compared with another run must come from the same code.
COMPETITOR_PACKAGES = ("as4==0.2.0", "pyas2lib==1.4.4")
FULL_SIZES = (KIB, 64 * KIB, MIB, 16 * MIB)
QUICK_SIZES = (KIB, 64 * KIB, MIB)
ALL_CONTENDERS = (*MLA_CONTENDERS, *PEER_CONTENDERS)
# A subprocess is given its measuring time plus this much for start-up, key generation and the
# warm-up cycle (pyas2lib needs about 4 s for one 16 MiB cycle on a busy 2-core machine).
_STARTUP_ALLOWANCE_S = 120.0

LABELS = {
    "mla_node": "mla_node (envelope)",
    "mla_node_attachment": "mla_node (attachment)",
    "mla_node_primitives": "mla_node primitives*",
    "as4": "as4 (Peppol AS4)",
    "pyas2lib": "pyas2lib (AS2)",
}
FOOTNOTE = (
    "* mla_node primitives: HPKE seal/open of the payload itself + Ed25519 over pae(header, "
    "ciphertext) + the signed receipt, with no envelope framing, padding or size limit: the cost "
    "floor of the primitives. A node sends large evidence as streamed attachments instead "
    "(bench/transfer.py), not inline: the attachment row is that way, in memory."
)


@dataclass(frozen=True)
class CodecSettings:
    sizes: Sequence[int]
    contenders: Sequence[str]
    max_seconds: float  # per (contender, size)
    max_count: int
    competitors_python: Path


def python_for(contender: str, competitors_python: Path) -> Path | None:
    if contender in MLA_CONTENDERS:
        return Path(sys.executable)
    return competitors_python if competitors_python.exists() else None


def setup_competitors(venv: Path = COMPETITORS_VENV) -> Path:
    """Create the competitors' virtual environment (with this Python) and install them."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *COMPETITOR_PACKAGES], check=True, timeout=900
    )
    return python


def run_one(contender: str, size: int, settings: CodecSettings) -> dict[str, Any]:
    python = python_for(contender, settings.competitors_python)
    if python is None:
        return {
            "contender": contender,
            "size": size,
            "status": "skipped",
            "note": f"{settings.competitors_python} not found: python -m bench --setup-competitors",
        }
    command = [
        str(python), "-m", "bench.cycle",
        "--contender", contender,
        "--size", str(size),
        "--max-seconds", str(settings.max_seconds),
        "--max-count", str(settings.max_count),
    ]  # fmt: skip
    try:
        done = subprocess.run(
            command,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=settings.max_seconds + _STARTUP_ALLOWANCE_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"contender": contender, "size": size, "status": "error", "note": "timed out"}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"contender": contender, "size": size, "status": "error", "note": last[:300]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def ratios(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each of mla_node's ways that ran against each competitor at each size, on wall-clock and
    on CPU-time rates; each row names the way (the envelope carries at most 1 MiB, so at larger
    sizes only the attachment and the primitives have rows)."""
    ok = {(r["contender"], r["size"]): r for r in rows if r.get("status") == "ok"}
    out = []
    for size in sorted({r["size"] for r in rows}):
        for mine in MLA_CONTENDERS:
            for peer in PEER_CONTENDERS:
                ours, theirs = ok.get((mine, size)), ok.get((peer, size))
                if ours is None or theirs is None:
                    continue
                out.append(
                    {
                        "size": size,
                        "ours": mine,
                        "theirs": peer,
                        "wall_ratio": round(ours["msg_per_s"] / theirs["msg_per_s"], 2),
                        "cpu_ratio": round(ours["msg_per_cpu_s"] / theirs["msg_per_cpu_s"], 2),
                    }
                )
    return out


def run(settings: CodecSettings, progress: Callable[[str], None] = print) -> dict[str, Any]:
    rows = []
    for size in settings.sizes:
        for contender in settings.contenders:
            row = run_one(contender, size, settings)
            rows.append(row)
            progress(f"  codec {size_label(size):>7} {contender:<20} {row['status']}")
    return {
        "settings": {
            "sizes": list(settings.sizes),
            "contenders": list(settings.contenders),
            "max_seconds": settings.max_seconds,
            "max_count": settings.max_count,
            "payload": "well-formed XML, base64 of random bytes in 48 KiB elements",
            "suite": "MLKEM768X25519-HKDFSHA256-AES256GCM (mla_node's default)",
        },
        "rows": rows,
        "ratios": ratios(rows),
        "footnote": FOOTNOTE,
    }


def render(result: dict[str, Any]) -> str:
    header = ["size", "contender", "msg/s", "MB/s", "msg/CPU-s", "peak RSS MiB", "cycles", "load"]
    lines: list[list[Any]] = []
    notes: list[str] = []  # long reasons go under the table, numbered, once each
    for r in result["rows"]:
        label = LABELS.get(r["contender"], r["contender"])
        if r.get("status") != "ok":
            note = r.get("note", "")
            if note not in notes:
                notes.append(note)
            status = f"{r['status']} [{notes.index(note) + 1}]"
            lines.append([size_label(r["size"]), label, status, *[None] * 5])
            continue
        lines.append(
            [
                size_label(r["size"]),
                label,
                r["msg_per_s"],
                r["mb_per_s"],
                r["msg_per_cpu_s"],
                r["peak_rss_mib"],
                r["cycles"],
                load_label(r["load_before"]),
            ]
        )
    ratio_rows = [
        [
            size_label(q["size"]),
            f"{LABELS[q['ours']]} / {LABELS[q['theirs']]}",
            f"{q['wall_ratio']:.1f}x",
            f"{q['cpu_ratio']:.1f}x",
        ]
        for q in result["ratios"]
    ]
    footnotes = [f"[{i}] {note}" for i, note in enumerate(notes, 1)]
    return "\n".join(
        [
            table(header, lines),
            *footnotes,
            FOOTNOTE,
            "",
            table(
                ["size", "ratio (higher: mla_node faster)", "wall clock", "CPU time"], ratio_rows
            ),
        ]
    )
