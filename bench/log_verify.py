"""Offline verification of a 100,000-entry evidence log: every signature, the tree, checkpoints.

Builds the log directly with the protocol functions (no database: quick), one checkpoint every
1,000 records, then times what `mla-node audit verify` does: every record's signature spread over
one process per CPU, the RFC 9162 tree, every checkpoint's signature, root and consistency; then
the same from an export with an inclusion proof per record. Target (issue 4): ≤ 10 s on a 2-core
machine.

Each step shows its wall time and the CPU time it used in this process and its workers: the CPU
time hardly depends on what else runs on the machine, the wall time does (hence the load average).

    .venv/bin/python -m bench.log_verify [--entries 100000] [--workers N]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import time
from collections.abc import Callable
from typing import TypeVar

from mla_node import auditor
from mla_node.protocol.auditlog import Entry
from mla_node.protocol.checkpoint import sign_checkpoint
from mla_node.protocol.directory import (
    KeyEntry,
    NodeEntry,
    TrustRoot,
    directory_body,
    sign_directory,
    verify_directory,
)
from mla_node.protocol.evidence import EVENTS, sign_evidence
from mla_node.protocol.keys import SIGNING_ALG, SigningKey
from mla_node.protocol.merkle import Tree, leaf_hash

NOW = 1_767_225_600_000  # 2026-01-01, ms
YEAR = 365 * 24 * 3600 * 1000
T = TypeVar("T")


def _cpu() -> float:
    """CPU seconds of this process and of its children that have ended (the workers, once their
    pool is shut down, which each step does)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(step: Callable[[], T]) -> tuple[T, tuple[float, float]]:
    """The step's result and its (wall, CPU) seconds."""
    wall, cpu = time.perf_counter(), _cpu()
    result = step()
    return result, (time.perf_counter() - wall, _cpu() - cpu)


def seconds(*steps: tuple[float, float]) -> str:
    return f"{sum(w for w, _ in steps):.2f} s (CPU {sum(c for _, c in steps):.2f} s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--every", type=int, default=1000, help="records per checkpoint")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    root_key = SigningKey.from_private_bytes(b"\x01" * 32)
    node_key = SigningKey.from_private_bytes(b"\x02" * 32)
    entry = NodeEntry(
        state="AR",
        authority="bench",
        endpoint="https://127.0.0.1:1",
        suites=(),
        tls_cert_sha256="sha256:" + hashlib.sha256(b"").hexdigest(),
        tls_cert_der=b"",
        keys=(
            KeyEntry(node_key.kid, "sign", SIGNING_ALG, node_key.public, NOW - YEAR, NOW + YEAR),
        ),
    )
    trust = TrustRoot("bench", {root_key.kid: root_key.public}, b"")
    body = directory_body(
        network="bench", version=1, issued_at=NOW, expires_at=NOW + YEAR, nodes=[entry], revoked={}
    )
    directory = verify_directory(sign_directory(root_key, body), trust, now=NOW)

    t0 = time.perf_counter()
    events = sorted(EVENTS)
    records = [
        sign_evidence(
            node_key,
            event=events[i % len(events)],
            node="AR",
            message_id=f"01J{i:023d}",
            case_id=f"01K{i // 3:023d}",
            at=NOW + i,
            envelope_digest=hashlib.sha256(i.to_bytes(8, "big")).digest(),
            peer="BR",
        )
        for i in range(args.entries)
    ]
    tree = Tree([leaf_hash(r) for r in records])
    sizes = [*range(args.every, args.entries + 1, args.every)]
    if not sizes or sizes[-1] != args.entries:
        sizes.append(args.entries)
    heads = [
        sign_checkpoint(node_key, node="AR", size=n, root=tree.root(n), at=NOW + n) for n in sizes
    ]
    build_s = time.perf_counter() - t0
    entries = [Entry(i + 1, r) for i, r in enumerate(records)]

    load_before = os.getloadavg()[0]
    log = auditor.NodeLog("AR", entries, heads)
    report, verify_t = timed(lambda: auditor.verify(log, directory, workers=args.workers))
    assert report.ok, report.first_bad

    export, export_t = timed(lambda: ("\n".join(auditor.export_lines(log)) + "\n").encode())
    parsed, parse_t = timed(lambda: auditor.parse_export(export))
    report2, verify_export_t = timed(
        lambda: auditor.verify(parsed, directory, workers=args.workers)
    )
    assert report2.ok and report2.proofs_checked == args.entries, report2.first_bad

    rows = [
        ("entries", f"{args.entries:,}"),
        ("checkpoints", f"{len(heads):,}"),
        ("workers", str(args.workers)),
        ("load average (1 min) before, after", f"{load_before:.2f}, {os.getloadavg()[0]:.2f}"),
        ("build (sign all, not timed)", f"{build_s:.2f} s"),
        ("verify: signatures + tree + checkpoints", seconds(verify_t)),
        ("export with inclusion proofs", f"{seconds(export_t)}, {len(export) / 1e6:.1f} MB"),
        ("verify the export (+ every proof)", seconds(parse_t, verify_export_t)),
        ("  of which reading it", seconds(parse_t)),
        ("target", "≤ 10 s for verify"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
