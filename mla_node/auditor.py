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

Speed (bench/log_verify.py): the signature checks start in worker processes first and the tree,
checkpoints and proofs are checked here meanwhile; an export's proofs come from the tree in one
pass, each hash encoded once.
"""

from __future__ import annotations

import base64
import binascii
import csv
import datetime as dt
import gc
import hashlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mla_node.errors import ClientError, MlaError
from mla_node.protocol.auditlog import (
    Entry,
    LogReport,
    inclusion_proofs,
    record_problems,
    verify_log,
)
from mla_node.protocol.checkpoint import peek_head
from mla_node.protocol.directory import Directory
from mla_node.protocol.evidence import peek_evidence
from mla_node.protocol.merkle import Tree, leaf_hash

EXPORT_FORMAT = "mla-node-log/1"
PARALLEL_FROM = 2000  # fewer records than this are checked in-process
# Several chunks per process, handed out as processes free up, so that one slowed by other
# work on the machine does not hold up the end.
CHUNKS_PER_WORKER = 4


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
    node = log_owner(heads)
    return NodeLog(node, [Entry(seq, record) for seq, record in rows], heads)


def log_owner(heads: list[bytes]) -> str | None:
    """Whose log this is: the node named by its newest readable checkpoint."""
    for raw in reversed(heads):
        try:
            return peek_head(raw)[0]
        except MlaError:
            continue
    return None


def export_lines(log: NodeLog) -> list[str]:
    """The export of a log read from a database, with every inclusion proof."""
    records = [(e.seq, e.record) for e in log.entries if e.seq is not None and e.record is not None]
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
    # Formatted by hand: the same text json.dumps writes (base64 and ints need no escaping), at a
    # fraction of the cost for 17 proof hashes a line.
    proofs = inclusion_proofs(tree, proof_size or 0, _b64)
    for i, (seq, record) in enumerate(records):
        line = f'{{"seq": {seq}, "record": "{_b64(record)}"'
        if proof_size is not None and i < proof_size:
            line += f', "proof": {_json_strings(next(proofs))}'
        lines.append(line + "}")
    return lines


def _json_strings(items: list[str]) -> str:
    return '["' + '", "'.join(items) + '"]' if items else "[]"


def write_export(log: NodeLog, out: Path) -> int:
    """Write the export; the number of lines written."""
    lines = export_lines(log)
    with out.open("w", encoding="utf-8") as f:
        f.writelines(f"{line}\n" for line in lines)
    return len(lines)


CSV_COLUMNS = (
    "seq",
    "event",
    "node",
    "message_id",
    "case_id",
    "envelope_sha256",
    "peer",
    "at",
    "at_iso",
    "detail",
    "receipt_sha256",
    "actor",
    "content_sha256",
    "kid",
    "sha256",
)


def write_csv(log: NodeLog, out: Path) -> int:
    """Write the log's records as CSV, one row each, decoded as they claim to be: a reading aid,
    their signatures NOT checked (``audit verify`` is the check). A record that cannot be
    decoded gets a row with only its seq and sha256. Text that a spreadsheet would run as a
    formula (starting with = + - @, a tab or a CR) is written with a leading ', as OWASP advises:
    case ids and details come from users. Returns the number of records written."""
    rows = 0
    with out.open("w", encoding="utf-8", newline="") as f:
        # A field the records gain and this list lacks raises, rather than vanishing from view.
        writer = csv.DictWriter(f, CSV_COLUMNS)
        writer.writeheader()
        for entry in log.entries:
            if entry.record is None:
                continue
            writer.writerow({"seq": entry.seq, **_csv_fields(entry.record)})
            rows += 1
    return rows


def _csv_fields(record: bytes) -> dict[str, Any]:
    try:
        fields = peek_evidence(record).as_json()
    except MlaError:
        return {"sha256": hashlib.sha256(record).hexdigest()}
    try:
        at = dt.datetime.fromtimestamp(fields["at"] / 1000, dt.UTC)
        fields["at_iso"] = at.isoformat(timespec="milliseconds")
    except (OverflowError, ValueError, OSError):
        fields["at_iso"] = None  # unverified: any integer, also one no calendar has
    return {k: _cell(v) for k, v in fields.items()}


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(("=", "+", "-", "@", "\t", "\r")):
        return "'" + value
    return value


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
    with _gc_paused():
        return _parse_export(text, name)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Reading 100,000 lines makes a few hundred thousand lists and dicts, none in a cycle: the
    cycle collector would walk them all, again and again as they pile up, for nothing."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _parse_export(text: bytes, name: str) -> NodeLog:
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
        return _strict_b64(value)
    except ValueError:
        return None


def _strict_b64(value: str) -> bytes:
    """``base64.b64decode(value, validate=True)`` without its wrapper, which costs more than the
    decoding for a 32-byte hash. Raises ValueError, or TypeError for what is not a str."""
    return binascii.a2b_base64(value, strict_mode=True)


_ENTRY_KEYS = {"seq", "record"}
_ENTRY_KEYS_WITH_PROOF = {"seq", "record", "proof"}


def _entry(obj: Any, number: int) -> Entry:
    if isinstance(obj, dict) and obj.keys() in (_ENTRY_KEYS, _ENTRY_KEYS_WITH_PROOF):
        seq, record, proof = obj["seq"], _unb64(obj["record"]), obj.get("proof")
        if isinstance(seq, int) and not isinstance(seq, bool) and record is not None:
            if "proof" not in obj:
                return Entry(seq, record)
            if isinstance(proof, list):
                try:
                    return Entry(seq, record, [_strict_b64(h) for h in proof])
                except (ValueError, TypeError):
                    pass
    return Entry(None, None, problem=f"line {number} is not a readable log entry")


def verify(
    log: NodeLog, directory: Directory, *, node: str | None = None, workers: int | None = None
) -> LogReport:
    """Verify a log offline; ``node`` (a state code) pins whose log it must be."""
    who = node or log.node
    if who is None:
        raise ClientError("cannot tell whose log this is: give --node")
    if node is not None and log.node not in (None, node):
        raise ClientError(f"this is the log of {log.node}, not of {node}")
    records = [(e.seq, e.record) for e in log.entries if e.seq is not None and e.record is not None]
    with _checking_signatures(records, directory, who, workers) as problems:
        report = verify_log(
            log.entries,
            log.checkpoints,
            directory,
            who,
            proof_size=log.proof_size,
            check_records=False,
        )
        report.add_record_problems(problems())
    return report


def check_signatures(
    records: list[tuple[int, bytes]], directory: Directory, node: str, workers: int | None
) -> dict[int, str]:
    """``record_problems`` over several processes (one per CPU by default)."""
    with _checking_signatures(records, directory, node, workers) as problems:
        return problems()


@contextmanager
def _checking_signatures(
    records: list[tuple[int, bytes]], directory: Directory, node: str, workers: int | None
) -> Iterator[Callable[[], dict[int, str]]]:
    """Start ``record_problems`` over ``records`` and give the function that waits for it: the
    caller works in between. In worker processes (one per CPU by default) when there are
    enough records to pay for starting them; the directory goes to each process once."""
    n = workers or os.cpu_count() or 1
    if n == 1 or len(records) < PARALLEL_FROM:
        yield lambda: record_problems(records, directory, node)
        return
    size = -(-len(records) // (n * CHUNKS_PER_WORKER))
    with ProcessPoolExecutor(n, initializer=_start_worker, initargs=(directory, node)) as pool:
        parts: list[Future[dict[int, str]]] = [
            pool.submit(_worker_problems, records[i : i + size])
            for i in range(0, len(records), size)
        ]
        try:
            yield lambda: {seq: why for part in parts for seq, why in part.result().items()}
        finally:
            for part in parts:
                part.cancel()


_worker_directory: tuple[Directory, str] | None = None


def _start_worker(directory: Directory, node: str) -> None:
    global _worker_directory
    _worker_directory = (directory, node)


def _worker_problems(records: list[tuple[int, bytes]]) -> dict[int, str]:
    assert _worker_directory is not None, "started without _start_worker"
    return record_problems(records, *_worker_directory)
