"""A checkpoint over a long evidence log: the node's time and memory, as the log grows.

    .venv/bin/python -m bench.log_head                    # 1,000,000 records
    .venv/bin/python -m bench.log_head --records 100000   # quick

Builds a SQLite evidence log of N records (random leaf hashes, written directly), then signs
what a checkpoint needs (the root, the root at the previous checkpoint's size, and the
consistency proof a peer asks for), each way in a fresh process so that its peak RSS is its own:

- ``whole tree``: the leaf hashes read at once and the full tree built in memory, as the node
  did until 2026-11-28 (``Tree(repo.log_leaf_hashes(db))``);
- ``one pass``: what the node does now (``service/audit_log.over_log``): a page of leaf hashes
  at a time, keeping only the subtrees the answers need.

Both answers must be equal; the table shows the seconds and the growth of peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, load_average, load_label, peak_rss_mib, table
from mla_node.protocol.merkle import Proofs, Tree
from mla_node.service.audit_log import over_log
from mla_node.storage import repo
from mla_node.storage.db import open_database

FULL_RECORDS = 1_000_000
QUICK_RECORDS = 100_000
WAYS = ("whole tree", "one pass")


def build(path: Path, records: int) -> None:
    """The node's schema (its migrations), then ``records`` evidence rows in one transaction."""

    async def migrate() -> None:
        await (await open_database(path)).close()

    asyncio.run(migrate())
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO evidence (seq, message_id, case_id, event, record, sha256, at, "
            "leaf_hash) VALUES (?, 'm', 'c', 'submitted', x'00', x'00', 0, ?)",
            ((seq, os.urandom(32)) for seq in range(1, records + 1)),
        )


def questions(size: int) -> Any:
    old = size * 3 // 4  # the previous checkpoint

    def ask(tree: Proofs) -> tuple[str, str, list[str]]:
        proof = tree.consistency_proof(old, size)
        return tree.root(size).hex(), tree.root(old).hex(), [h.hex() for h in proof]

    return ask


async def measure(way: str, path: Path) -> dict[str, Any]:
    db = await open_database(path)
    try:
        size = await repo.log_size(db)
        ask = questions(size)
        before = peak_rss_mib()
        started = time.perf_counter()
        if way == "whole tree":
            answer = ask(await asyncio.to_thread(Tree, await repo.log_leaf_hashes(db)))
        else:
            answer = await over_log(db, size, ask)
        seconds = time.perf_counter() - started
        return {
            "seconds": round(seconds, 2),
            "rss_before_mib": before,
            "rss_peak_mib": peak_rss_mib(),
            "answer": answer,
        }
    finally:
        await db.close()


def run(records: int) -> dict[str, Any]:
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="mla-bench-log-") as tmp:
        path = Path(tmp) / "node.db"
        started = time.perf_counter()
        build(path, records)
        build_s = time.perf_counter() - started
        ways = {}
        for way in WAYS:
            done = subprocess.run(
                [sys.executable, "-m", "bench.log_head", "--measure", way, "--db", str(path)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            )
            ways[way] = json.loads(done.stdout)
    answers = {json.dumps(w.pop("answer")) for w in ways.values()}
    return {
        "records": records,
        "build_s": round(build_s, 1),
        "ways": ways,
        "same_answer": len(answers) == 1,
        "load_before": load_before,
    }


def render(result: dict[str, Any]) -> str:
    lines = []
    for way, w in result["ways"].items():
        grown = round(w["rss_peak_mib"] - w["rss_before_mib"], 1)
        lines.append([way, w["seconds"], grown, round(w["rss_peak_mib"], 1)])
    header = ["checkpoint + consistency proof", "s", "peak RSS growth MiB", "peak RSS MiB"]
    notes = [
        f"{result['records']:,} records (built in {result['build_s']} s); "
        f"same answer both ways: {result['same_answer']}; "
        f"load before {load_label(result['load_before'])}",
    ]
    return "\n".join([table(header, lines), *notes])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=FULL_RECORDS)
    parser.add_argument("--measure", choices=WAYS, help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(asyncio.run(measure(args.measure, args.db))))
        return
    result = run(args.records)
    print(render(result))
    if not result["same_answer"]:
        sys.exit("the two ways gave different answers")


if __name__ == "__main__":
    main()
