"""The fast paths of a whole-log audit give the same answers as the plain ones: every proof of a
tree at once, the export written by hand, the export read leanly, signatures in processes."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from mla_node import auditor
from mla_node.protocol.auditlog import Entry, LogReport, inclusion_proofs
from mla_node.protocol.checkpoint import sign_checkpoint
from mla_node.protocol.evidence import Event, sign_evidence
from mla_node.protocol.merkle import Tree, leaf_hash
from tests.factory import NOW, TestNetwork, make_network


@pytest.fixture(scope="module")
def net() -> TestNetwork:
    return make_network(now=NOW)


def _records(net: TestNetwork, n: int) -> list[bytes]:
    key = net.nodes["AR"].signing
    return [
        sign_evidence(
            key, event=Event.SUBMITTED, node="AR", message_id=f"m{i}", case_id="c", at=NOW + i
        )
        for i in range(n)
    ]


def _log(net: TestNetwork, records: list[bytes], *sizes: int) -> auditor.NodeLog:
    tree = Tree([leaf_hash(r) for r in records])
    key = net.nodes["AR"].signing
    heads = [sign_checkpoint(key, node="AR", size=n, root=tree.root(n), at=NOW + n) for n in sizes]
    return auditor.NodeLog("AR", [Entry(i + 1, r) for i, r in enumerate(records)], heads)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize("extra", [0, 3])
def test_all_proofs_at_once_are_the_trees_paths(extra: int) -> None:
    leaves = [leaf_hash(i.to_bytes(2, "big")) for i in range(70 + extra)]
    tree = Tree(leaves)
    for size in range(71):
        expected = [tree.inclusion_proof(i, size) for i in range(size)]
        assert list(inclusion_proofs(tree, size, lambda h: h)) == expected
        assert list(inclusion_proofs(tree, size, bytes.hex)) == [
            [h.hex() for h in proof] for proof in expected
        ]


@pytest.mark.parametrize("sizes", [(), (1,), (2, 5), (3,)])
def test_the_export_is_what_json_dumps_writes(net: TestNetwork, sizes: tuple[int, ...]) -> None:
    log = _log(net, _records(net, 5), *sizes)
    lines = auditor.export_lines(log)
    tree = Tree([leaf_hash(e.record) for e in log.entries if e.record is not None])
    proof_size = sizes[-1] if sizes else None
    for i, entry in enumerate(log.entries):
        assert entry.record is not None
        obj: dict[str, Any] = {"seq": entry.seq, "record": _b64(entry.record)}
        if proof_size is not None and i < proof_size:
            obj["proof"] = [_b64(h) for h in tree.inclusion_proof(i, proof_size)]
        assert lines[1 + len(sizes) + i] == json.dumps(obj)
    parsed = auditor.parse_export(("\n".join(lines) + "\n").encode())
    assert [(e.seq, e.record) for e in parsed.entries] == [(e.seq, e.record) for e in log.entries]
    assert parsed.checkpoints == log.checkpoints and parsed.proof_size == proof_size


GOOD_HASH = _b64(b"\x07" * 32)


@pytest.mark.parametrize(
    "line",
    [
        {"seq": 1, "record": "QUJD", "proof": None},
        {"seq": 1, "record": "QUJD", "proof": GOOD_HASH},
        {"seq": 1, "record": "QUJD", "proof": [GOOD_HASH, 1]},
        {"seq": 1, "record": "QUJD", "proof": [True]},
        {"seq": 1, "record": "QUJD", "proof": ["ä"]},
        {"seq": 1, "record": "QUJD", "proof": ["QQ=x"]},
        {"seq": 1, "record": "QUJD", "proof": ["QQ"]},
        {"seq": 1, "record": "QUJD", "proof": [[GOOD_HASH]]},
        {"seq": 1, "record": 5},
        {"seq": 1, "record": "QUJ"},
        {"seq": True, "record": "QUJD"},
        {"seq": "1", "record": "QUJD"},
        {"seq": 1},
        {"seq": 1, "record": "QUJD", "more": 1},
        [1, "QUJD"],
    ],
)
def test_an_unreadable_entry_line_is_named(line: Any) -> None:
    header = {"format": auditor.EXPORT_FORMAT, "node": "AR", "proof_size": None}
    text = f"{json.dumps(header)}\n{json.dumps(line)}\n".encode()
    (entry,) = auditor.parse_export(text).entries
    assert entry.problem == "line 2 is not a readable log entry"


def test_a_readable_entry_line(net: TestNetwork) -> None:
    header = {"format": auditor.EXPORT_FORMAT, "node": "AR", "proof_size": 1}
    lines = [{"seq": 1, "record": "QUJD", "proof": []}, {"seq": 2, "record": "QUJD"}]
    text = "\n".join(json.dumps(x) for x in [header, *lines]).encode()
    assert auditor.parse_export(text).entries == [Entry(1, b"ABC", []), Entry(2, b"ABC")]


def _findings(report: LogReport) -> list[tuple[int | None, str]]:
    return sorted((f.seq, str(f)) for f in report.findings)


def test_processes_find_what_one_process_finds(net: TestNetwork) -> None:
    n = auditor.PARALLEL_FROM + 100
    records = _records(net, n)
    export = "\n".join(auditor.export_lines(_log(net, records, n // 2, n))) + "\n"
    lines = export.split("\n")
    first = next(i for i, line in enumerate(lines) if line.startswith('{"seq"'))
    forged = _records(net, n + 1)[-1]  # validly signed, but not what the checkpoints cover
    bad_signature = bytearray(records[1699])
    bad_signature[-1] ^= 1
    for seq, record in [(1500, forged), (1700, bytes(bad_signature))]:
        obj = json.loads(lines[first + seq - 1])
        obj["record"] = _b64(record)
        lines[first + seq - 1] = json.dumps(obj)
    log = auditor.parse_export("\n".join(lines).encode())

    one = auditor.verify(log, net.directory, workers=1)
    two = auditor.verify(log, net.directory, workers=2)

    assert _findings(one) == _findings(two)
    assert one.first_bad is not None and one.first_bad.seq == 1500
    assert any(f.seq == 1700 and "signature" in f.reason for f in two.findings)


def test_an_empty_record_is_checked_too(net: TestNetwork) -> None:
    records = _records(net, 3)
    log = _log(net, records, 1)
    log.entries[2] = Entry(3, b"")  # after the newest checkpoint: no root or proof covers it
    bad = auditor.verify(log, net.directory, workers=1).first_bad
    assert bad is not None and bad.seq == 3
