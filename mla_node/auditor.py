"""The auditor's side of the transparency log: export a node's log, verify one offline.

Reads a node database read-only (plain sqlite3, ``mode=ro``, like chaos/checker.py: it works
while the node runs and cannot change it) or a JSON Lines export, and hands the bytes to the pure
verifier (protocol/auditlog.py). Signature checks, the bulk of the work, are spread over
processes.

Export format ``mla-node-log/1``, one JSON object per line, binary as base64:

    {"format": "mla-node-log/1", "node": "AR", "entries": N, "checkpoints": M, "proof_size": K}
    {"checkpoint": "<signed checkpoint>"}                          M lines, by size
    {"seq": 1, "record": "<signed evidence record>", "proof": ["<hash>", ...]}   N lines

``proof`` is the record's inclusion proof against the newest checkpoint (size K); records after
it have none. The header is not signed: it only says what to expect.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mla_node.errors import ClientError, MlaError
from mla_node.protocol.auditlog import Entry, LogReport, record_problems, verify_log
from mla_node.protocol.checkpoint import peek_head
from mla_node.protocol.directory import Directory
from mla_node.protocol.merkle import Tree, leaf_hash

EXPORT_FORMAT = "mla-node-log/1"
PARALLEL_FROM = 2000  # fewer records than this are checked in-process


@dataclass
class NodeLog:
    """A log as read, before verification."""

    node: str | None
    entries: list[Entry]
    checkpoints: list[bytes]
    proof_size: int | None = None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def read_database(path: Path) -> NodeLog:
    """The log of a node database, opened read-only."""
    if not path.is_file():
        raise ClientError(f"no database at {path}")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise ClientError(f"cannot open {path}: {exc}") from exc
    try:
        rows = conn.execute("SELECT seq, record FROM evidence ORDER BY seq").fetchall()
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        heads = (
            [r[0] for r in conn.execute("SELECT checkpoint FROM checkpoints ORDER BY size")]
            if "checkpoints" in tables
            else []
        )
    except sqlite3.Error as exc:
        raise ClientError(f"{path} is not a node database: {exc}") from exc
    finally:
        conn.close()
    node = _node_of(heads)
    return NodeLog(node, [Entry(seq, record) for seq, record in rows], heads)


def _node_of(heads: list[bytes]) -> str | None:
    for raw in reversed(heads):
        try:
            return peek_head(raw)[0]
        except MlaError:
            continue
    return None


def export_lines(log: NodeLog) -> list[str]:
    """The export of a log read from a database, with every inclusion proof."""
    records = [(e.seq, e.record) for e in log.entries if e.record is not None]
    tree = Tree([leaf_hash(r) for _, r in records])
    proof_size = None
    if log.checkpoints:
        try:
            proof_size = min(peek_head(log.checkpoints[-1])[1], tree.size)
        except MlaError:
            proof_size = None  # the verifier will name the bad checkpoint
    header = {
        "format": EXPORT_FORMAT,
        "node": log.node,
        "entries": len(records),
        "checkpoints": len(log.checkpoints),
        "proof_size": proof_size,
    }
    lines = [json.dumps(header)]
    lines += [json.dumps({"checkpoint": _b64(c)}) for c in log.checkpoints]
    for i, (seq, record) in enumerate(records):
        line: dict[str, Any] = {"seq": seq, "record": _b64(record)}
        if proof_size is not None and i < proof_size:
            line["proof"] = [_b64(h) for h in tree.inclusion_proof(i, proof_size)]
        lines.append(json.dumps(line))
    return lines


def write_export(log: NodeLog, out: Path) -> int:
    """Write the export; the number of lines written."""
    lines = export_lines(log)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


def read_export(path: Path) -> NodeLog:
    """Parse an export. A line that cannot be read becomes an entry with its problem, so the
    verifier names the seq where the file went wrong; reading stops there."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ClientError(f"cannot read {path}: {exc.strerror}") from exc
    return parse_export(text, str(path))


def parse_export(text: bytes, name: str = "the export") -> NodeLog:
    """The bytes of an export, parsed as :func:`read_export` does."""
    lines = text.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    try:
        header = json.loads(lines[0]) if lines else None
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
        raise ClientError(f"{name} is not an {EXPORT_FORMAT} export (bad first line)")
    node = header.get("node")
    proof_size = header.get("proof_size")
    log = NodeLog(
        node if isinstance(node, str) else None,
        [],
        [],
        proof_size if isinstance(proof_size, int) and not isinstance(proof_size, bool) else None,
    )
    for number, raw in enumerate(lines[1:], start=2):
        obj = _json_line(raw)
        if isinstance(obj, dict) and set(obj) == {"checkpoint"} and not log.entries:
            blob = _unb64(obj["checkpoint"])
            if blob is not None:
                log.checkpoints.append(blob)
                continue
        entry = _entry(obj, number)
        log.entries.append(entry)
        if entry.problem is not None:
            break
    return log


def _json_line(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _unb64(value: Any) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        return None


def _entry(obj: Any, number: int) -> Entry:
    bad = Entry(None, None, problem=f"line {number} is not a readable log entry")
    if not isinstance(obj, dict) or not {"seq", "record"} <= set(obj) <= {"seq", "record", "proof"}:
        return bad
    seq, record = obj["seq"], _unb64(obj["record"])
    if not isinstance(seq, int) or isinstance(seq, bool) or record is None:
        return bad
    proof: list[bytes] | None = None
    if "proof" in obj:
        items = obj["proof"] if isinstance(obj["proof"], list) else [None]
        decoded = [_unb64(h) for h in items]
        if any(h is None for h in decoded):
            return bad
        proof = [h for h in decoded if h is not None]
    return Entry(seq, record, proof)


def verify(
    log: NodeLog, directory: Directory, *, node: str | None = None, workers: int | None = None
) -> LogReport:
    """Verify a log offline; ``node`` (a state code) pins whose log it must be."""
    who = node or log.node
    if who is None:
        raise ClientError("cannot tell whose log this is: give --node")
    if node is not None and log.node not in (None, node):
        raise ClientError(f"this is the log of {log.node}, not of {node}")
    records = [(e.seq, e.record) for e in log.entries if e.seq is not None and e.record]
    problems = check_signatures(records, directory, who, workers)
    return verify_log(
        log.entries,
        log.checkpoints,
        directory,
        who,
        proof_size=log.proof_size,
        signature_problems=problems,
    )


def check_signatures(
    records: list[tuple[int, bytes]], directory: Directory, node: str, workers: int | None
) -> dict[int, str]:
    """``record_problems`` over several processes (one per CPU by default)."""
    n = workers or os.cpu_count() or 1
    if n == 1 or len(records) < PARALLEL_FROM:
        return record_problems(records, directory, node)
    size = -(-len(records) // n)
    chunks = [records[i : i + size] for i in range(0, len(records), size)]
    problems: dict[int, str] = {}
    with ProcessPoolExecutor(max_workers=n) as pool:
        for part in pool.map(
            record_problems, chunks, [directory] * len(chunks), [node] * len(chunks)
        ):
            problems.update(part)
    return problems
