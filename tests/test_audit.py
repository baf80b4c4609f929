"""The transparency log end to end: a real node database with traffic, exported and verified
offline, then tampered with in every way the acceptance lists; each tampering must be caught and
the report must name the first entry that was changed."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from mla_node import auditor
from mla_node.cli import cli
from mla_node.errors import LogProofInvalid, StorageError
from mla_node.identity import load_identity
from mla_node.protocol.auditlog import LogReport
from mla_node.protocol.checkpoint import verify_checkpoint
from mla_node.protocol.directory import Directory, TrustRoot, verify_directory
from mla_node.protocol.evidence import Event, sign_evidence
from mla_node.protocol.keys import SigningKey
from mla_node.protocol.merkle import leaf_hash
from mla_node.service import audit_log
from mla_node.storage import repo
from mla_node.storage.db import Transaction, open_database
from tests.service.memnet import memory_network, settle, submit

TAMPERINGS = int(os.environ.get("MLA_TAMPERINGS", "1000"))


@dataclass(frozen=True)
class NodeFiles:
    db: Path
    trust: Path
    directory: Path
    key: SigningKey


async def _traffic(folder: Path) -> NodeFiles:
    async with memory_network(folder) as (nodes, _):
        ar, br = nodes["AR"], nodes["BR"]
        for _ in range(3):  # three rounds, a checkpoint after each: heads at three sizes
            await submit(ar, "BR", 4)
            await submit(br, "AR", 3)
            await settle(nodes)
            await audit_log.checkpoint(ar.ctx)
        config = ar.ctx.config
        return NodeFiles(
            config.database_path,
            config.trust_root_path,
            config.directory_path,
            load_identity(config.keys_dir).signing_key,
        )


@pytest.fixture(scope="module")
def node_files(tmp_path_factory: pytest.TempPathFactory) -> NodeFiles:
    return asyncio.run(_traffic(tmp_path_factory.mktemp("audit")))


@pytest.fixture(scope="module")
def directory(node_files: NodeFiles) -> Directory:
    trust = TrustRoot.from_json(node_files.trust.read_bytes())
    return verify_directory(node_files.directory.read_bytes(), trust, now=0)


@pytest.fixture(scope="module")
def export(node_files: NodeFiles) -> bytes:
    lines = auditor.export_lines(auditor.read_database(node_files.db))
    return ("\n".join(lines) + "\n").encode()


def _verify(data: bytes, directory: Directory) -> LogReport:
    return auditor.verify(auditor.parse_export(data), directory, workers=1)


def test_the_log_of_a_real_node_verifies(node_files: NodeFiles, directory: Directory) -> None:
    log = auditor.read_database(node_files.db)
    assert log.node == "AR"
    assert len(log.entries) >= 30 and len(log.checkpoints) == 3
    report = auditor.verify(log, directory, workers=1)
    assert report.ok, report.first_bad
    assert [h.size for h in report.checkpoints][-1] == report.entries
    assert report.uncovered == 0


def test_cli_export_and_verify(node_files: NodeFiles, tmp_path: Path) -> None:
    out = tmp_path / "log.jsonl"
    runner = CliRunner()
    result = runner.invoke(cli, ["audit", "export", "--db", str(node_files.db), "-o", str(out)])
    assert result.exit_code == 0, result.output
    trust = ["--trust", str(node_files.trust), "--directory", str(node_files.directory)]
    for source in (["--db", str(node_files.db)], ["--export", str(out)]):
        result = runner.invoke(cli, ["audit", "verify", *source, *trust])
        assert result.exit_code == 0, result.output
        assert "Log verified" in result.output
        assert "entries" in result.output and "checkpoints" in result.output
    lines = out.read_bytes().splitlines()
    first_entry = next(i for i, line in enumerate(lines) if b'"seq"' in line)
    del lines[first_entry + 4]  # seq 5
    out.write_bytes(b"\n".join(lines) + b"\n")
    result = runner.invoke(cli, ["audit", "verify", "--export", str(out), *trust])
    assert result.exit_code == 1
    assert "FAILED: seq 5: missing" in result.output
    result = runner.invoke(cli, ["audit", "verify", "--export", str(out), *trust, "--node", "BR"])
    assert result.exit_code == 2
    assert "error [bad_request]" in result.output


def test_a_rewritten_record_in_the_database_is_caught(
    node_files: NodeFiles, directory: Directory, tmp_path: Path
) -> None:
    copy = tmp_path / "node.db"
    copy.write_bytes(node_files.db.read_bytes())
    forged = sign_evidence(
        node_files.key,
        event=Event.RETRIEVED,
        node="AR",
        message_id="forged",
        case_id="x",
        at=_now(),
    )
    with sqlite3.connect(copy) as conn:
        conn.execute("UPDATE evidence SET record = ? WHERE seq = 7", (forged,))
    report = auditor.verify(auditor.read_database(copy), directory, workers=1)
    bad = report.first_bad
    assert bad is not None and bad.seq is not None
    # Without inclusion proofs the database's tree only says which checkpoint's range is bad.
    assert bad.seq <= 7 and "rewritten history" in bad.reason
    # An export carries a proof per record: it names the record exactly.
    data = ("\n".join(auditor.export_lines(auditor.read_database(node_files.db))) + "\n").encode()
    lines = data.split(b"\n")
    i = next(i for i, line in enumerate(lines) if line.startswith(b'{"seq": 7,'))
    obj = json.loads(lines[i])
    obj["record"] = base64.b64encode(forged).decode()
    lines[i] = json.dumps(obj).encode()
    bad = _verify(b"\n".join(lines), directory).first_bad
    assert bad is not None and bad.seq == 7


async def test_the_node_refuses_to_sign_over_a_rewritten_history(tmp_path: Path) -> None:
    async with memory_network(tmp_path) as (nodes, _):
        ar = nodes["AR"]
        await submit(ar, "BR", 2)
        await settle(nodes)
        first = await audit_log.checkpoint(ar.ctx)
        assert await audit_log.checkpoint(ar.ctx) == first  # the log did not grow: same head
        head = verify_checkpoint(first, ar.ctx.directory(), node="AR")
        assert head.size >= 4
        proof = await audit_log.inclusion_proof(ar.ctx, 1, head.size)
        assert proof
        with sqlite3.connect(ar.ctx.config.database_path) as conn:
            conn.execute("UPDATE evidence SET leaf_hash = ? WHERE seq = 1", (b"\x00" * 32,))
        await submit(ar, "BR", 1)
        await settle(nodes)
        with pytest.raises(LogProofInvalid):
            await audit_log.checkpoint(ar.ctx)


def test_a_tampered_checkpoint_is_named(export: bytes, directory: Directory) -> None:
    lines = export.split(b"\n")
    obj = json.loads(lines[2])
    raw = bytearray(base64.b64decode(obj["checkpoint"]))
    raw[-5] ^= 0x10
    lines[2] = json.dumps({"checkpoint": base64.b64encode(bytes(raw)).decode()}).encode()
    report = _verify(b"\n".join(lines), directory)
    bad = report.first_bad
    assert bad is not None and bad.seq is None and bad.where == "checkpoint #2"


# --- 1,000 random tamperings ---------------------------------------------------------------


def _entry_lines(lines: list[bytes]) -> list[int]:
    return [i for i, line in enumerate(lines) if line.startswith(b'{"seq"')]


def _seq(line: bytes) -> int:
    seq = json.loads(line)["seq"]
    assert isinstance(seq, int)
    return seq


def _tamper(rng: random.Random, export: bytes, key: SigningKey) -> tuple[str, bytes, int]:
    """One random tampering: (kind, the tampered export, the first seq it changed)."""
    lines = export.rstrip(b"\n").split(b"\n")
    entries = _entry_lines(lines)
    kind = rng.choice(["bit flip", "deleted", "swapped", "truncated", "re-signed fork"])
    if kind == "bit flip":
        i = rng.choice(entries)
        obj = json.loads(lines[i])
        record = bytearray(base64.b64decode(obj["record"]))
        bit = rng.randrange(len(record) * 8)
        record[bit // 8] ^= 1 << (bit % 8)
        obj["record"] = base64.b64encode(bytes(record)).decode()
        lines[i] = json.dumps(obj).encode()
        return kind, b"\n".join(lines) + b"\n", _seq(lines[i])
    if kind == "deleted":
        i = rng.choice(entries)
        seq = _seq(lines[i])
        del lines[i]
        return kind, b"\n".join(lines) + b"\n", seq
    if kind == "swapped":
        i, j = sorted(rng.sample(entries, 2))
        seq = _seq(lines[i])
        lines[i], lines[j] = lines[j], lines[i]
        return kind, b"\n".join(lines) + b"\n", seq
    if kind == "truncated":
        start = sum(len(line) + 1 for line in lines[: entries[0]])
        cut = rng.randrange(start, len(export) - 1)  # removes at least the last "}"
        line_index = export[:cut].count(b"\n")
        if export[cut : cut + 1] == b"\n":  # only the newline went: that line is whole
            line_index += 1
        return kind, export[:cut], _seq(lines[line_index])
    i = rng.choice(entries)  # a record replaced by another, validly signed by the node's key
    obj = json.loads(lines[i])
    obj["record"] = base64.b64encode(
        sign_evidence(
            key,
            event=rng.choice(sorted([Event.SUBMITTED, Event.DELIVERED, Event.RETRIEVED])),
            node="AR",
            message_id=f"forged-{rng.randrange(10**6)}",
            case_id="forged",
            at=int(time.time() * 1000),
        )
    ).decode()
    lines[i] = json.dumps(obj).encode()
    return kind, b"\n".join(lines) + b"\n", _seq(lines[i])


def test_random_tamperings_are_all_caught_and_named(
    export: bytes, directory: Directory, node_files: NodeFiles
) -> None:
    assert _verify(export, directory).ok
    rng = random.Random(20240604)
    kinds: dict[str, int] = {}
    missed: list[str] = []
    for n in range(TAMPERINGS):
        kind, data, first = _tamper(rng, export, node_files.key)
        kinds[kind] = kinds.get(kind, 0) + 1
        bad = _verify(data, directory).first_bad
        if bad is None or bad.seq != first:
            missed.append(f"#{n} {kind}: changed seq {first}, reported {bad}")
    assert not missed, missed[:10]
    assert set(kinds) == {"bit flip", "deleted", "swapped", "truncated", "re-signed fork"}


def _now() -> int:
    return int(time.time() * 1000)


async def test_the_log_is_read_a_page_at_a_time_and_a_removed_record_is_noticed(
    tmp_path: Path,
) -> None:
    """The node goes through its log a page at a time (memory flat, however long it grows):
    the pages join up to the log, an old row without a stored hash is hashed, and a row removed
    under the node, in a page or at its end, is refused, not skipped."""
    db = await open_database(tmp_path / "node.db")
    try:
        records = [f"record {i}".encode() for i in range(1, 8)]
        for seq, record in enumerate(records, start=1):
            await db.write(_evidence_row(seq, record, hashed=seq != 4))  # 4: before migration 3
        pages = [p async for p in repo.log_leaf_hash_pages(db, 7, page=3)]
        assert [len(p) for p in pages] == [3, 3, 1]
        assert [h for p in pages for h in p] == [leaf_hash(r) for r in records]
        assert await repo.log_leaf_hashes(db) == [leaf_hash(r) for r in records]
        await db.write(lambda tx: tx.execute("DELETE FROM evidence WHERE seq IN (5, 7)"))
        for page in (3, 4):  # the gap inside a page, and at the start of one
            with pytest.raises(StorageError, match="no record with seq 5"):
                [p async for p in repo.log_leaf_hash_pages(db, 7, page=page)]
        await db.write(_evidence_row(5, records[4]))
        with pytest.raises(StorageError, match="no record with seq 7"):  # at the end
            [p async for p in repo.log_leaf_hash_pages(db, 7, page=3)]
    finally:
        await db.close()


def _evidence_row(
    seq: int, record: bytes, *, hashed: bool = True
) -> Callable[[Transaction], Awaitable[int]]:
    return lambda tx: tx.execute(
        "INSERT INTO evidence (seq, message_id, case_id, event, record, sha256, at, leaf_hash)"
        " VALUES (?, 'm', 'c', 'submitted', ?, ?, 0, ?)",
        (seq, record, b"\0" * 32, leaf_hash(record) if hashed else None),
    )
