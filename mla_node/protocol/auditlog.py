"""Offline verification of a node's whole evidence log: records, tree and checkpoints. Pure.

The log of a node is its evidence records in seq order (the record with seq s is leaf s - 1 of an
RFC 9162 tree) and the checkpoints it signed over it. The verifier checks, with nothing but the
directory: every record's signature (``verify_evidence``); that seqs run 1, 2, 3... without a gap;
every checkpoint's signature (``verify_checkpoint``), their sizes increasing; that the root of the
first ``size`` records is each checkpoint's root; a consistency proof between successive
checkpoints; and, when the log comes with inclusion proofs (an export), each record's proof
against the newest checkpoint. The last is what names the exact record a rewritten history
changed: a root mismatch alone only says "somewhere among these records".

Every problem found is a :class:`Finding`; the report names the first: the smallest seq among
problems of entries, else the first bad checkpoint.

Signatures are most of the work, and independent of each other: ``record_problems`` takes any
chunk of the records, so the shell can run it in other processes while ``verify_log`` does the
rest, and hand the results to :meth:`LogReport.add_record_problems`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import TypeVar

from mla_node.errors import MlaError
from mla_node.protocol.checkpoint import Checkpoint, verify_checkpoint
from mla_node.protocol.directory import Directory
from mla_node.protocol.evidence import verify_evidence
from mla_node.protocol.merkle import Tree, leaf_hash, verify_consistency, verify_inclusion


@dataclass(frozen=True)
class Entry:
    """One leaf as read from an export or a database, before any check."""

    seq: int | None  # None when its line could not be read
    record: bytes | None
    proof: list[bytes] | None = None  # inclusion proof against the newest checkpoint
    problem: str | None = None  # why its line could not be read


@dataclass(frozen=True, order=True)
class Finding:
    key: float  # log order: entry s at s, checkpoint of size K after entry K
    seq: int | None  # the first bad entry, or None for a checkpoint's own problem
    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class LogReport:
    node: str
    entries: int
    checkpoints: list[Checkpoint] = field(default_factory=list)
    root: bytes = b""
    proofs_checked: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def first_bad(self) -> Finding | None:
        return min(self.findings, default=None)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def uncovered(self) -> int:
        """Records after the newest checkpoint: signed, but not yet committed to by a head."""
        return self.entries - (self.checkpoints[-1].size if self.checkpoints else 0)

    def add_record_problems(self, problems: Mapping[int, str]) -> None:
        """What ``record_problems`` found, for a report made with ``check_records=False``.
        Records after the first unreadable or missing entry are not part of the log verified."""
        self.findings.extend(
            _entry(seq, why) for seq, why in problems.items() if seq <= self.entries
        )


def record_problems(
    records: Sequence[tuple[int, bytes]], directory: Directory, node: str
) -> dict[int, str]:
    """seq -> why its record does not verify, for the records that do not (chunkable)."""
    problems: dict[int, str] = {}
    for seq, record in records:
        try:
            verify_evidence(record, directory, node=node)
        except MlaError as exc:
            problems[seq] = f"[{exc.code}] {exc.detail}"
    return problems


def verify_log(
    entries: Sequence[Entry],
    checkpoints: Sequence[bytes],
    directory: Directory,
    node: str,
    *,
    proof_size: int | None = None,
    check_records: bool = True,
) -> LogReport:
    """Check a whole log. With ``check_records=False`` the records' signatures are left to the
    caller: ``record_problems`` over them, then :meth:`LogReport.add_record_problems`."""
    report = LogReport(node=node, entries=0)
    found = report.findings
    heads = _checkpoints(checkpoints, directory, node, found)
    report.checkpoints = heads

    leaves: list[bytes] = []
    records: list[tuple[int, bytes]] = []
    for entry in entries:
        expected = len(leaves) + 1
        if entry.problem is not None or entry.record is None or entry.seq is None:
            found.append(_entry(expected, entry.problem or "unreadable"))
            break
        if entry.seq != expected:
            found.append(_entry(expected, f"missing: the next entry has seq {entry.seq}"))
            break
        leaves.append(leaf_hash(entry.record))
        records.append((entry.seq, entry.record))
    report.entries = len(leaves)
    if check_records:
        report.add_record_problems(record_problems(records, directory, node))

    tree = Tree(leaves)
    report.root = tree.root()
    previous: Checkpoint | None = None
    for head in heads:
        where = f"checkpoint of size {head.size}"
        if head.size > tree.size:
            found.append(
                _entry(tree.size + 1, f"missing: the {where} covers up to seq {head.size}")
            )
            break
        first = previous.size + 1 if previous else 1
        if tree.root(head.size) != head.root:
            found.append(
                Finding(
                    head.size + 0.5,
                    first,
                    f"seq {first}..{head.size}",
                    f"the records differ from what the {where} signed (a rewritten history)",
                )
            )
        elif previous is not None:
            try:
                proof = tree.consistency_proof(previous.size, head.size)
                verify_consistency(previous.size, head.size, previous.root, head.root, proof)
            except MlaError as exc:
                found.append(Finding(head.size + 0.5, first, where, exc.detail))
        previous = head

    if proof_size is not None:
        report.proofs_checked = _inclusion(entries, tree, heads, proof_size, found)
    return report


def _entry(seq: int, reason: str) -> Finding:
    return Finding(seq, seq, f"seq {seq}", reason)


def _checkpoints(
    checkpoints: Sequence[bytes], directory: Directory, node: str, found: list[Finding]
) -> list[Checkpoint]:
    heads: list[Checkpoint] = []
    for i, raw in enumerate(checkpoints):
        where = f"checkpoint #{i + 1}"
        try:
            head = verify_checkpoint(raw, directory, node=node)
        except MlaError as exc:
            found.append(Finding(float("inf"), None, where, f"[{exc.code}] {exc.detail}"))
            continue
        if heads and (head.size <= heads[-1].size or head.at < heads[-1].at):
            found.append(
                Finding(float("inf"), None, where, "size or time does not follow the previous")
            )
            continue
        heads.append(head)
    return heads


def _inclusion(
    entries: Sequence[Entry],
    tree: Tree,
    heads: Sequence[Checkpoint],
    proof_size: int,
    found: list[Finding],
) -> int:
    head = next((h for h in heads if h.size == proof_size), None)
    if head is None:
        where = f"proofs for size {proof_size}"
        found.append(Finding(float("inf"), None, where, "no valid checkpoint of that size"))
        return 0
    # When our tree is the one the checkpoint signed, its own audit path of a leaf verifies by
    # construction: a proof equal to it is accepted without re-hashing (17 hashes a leaf at
    # 100,000). Every other proof is verified, so the verdicts and reasons stay verify_inclusion's.
    ours: Iterator[list[bytes] | None] = repeat(None)  # endless: nothing to compare with
    if head.size <= tree.size and tree.root(head.size) == head.root:
        ours = inclusion_proofs(tree, head.size, _as_is)
    checked = 0
    covered = entries[: min(proof_size, tree.size)]
    for i, (entry, expected) in enumerate(zip(covered, ours, strict=False)):
        seq = i + 1
        if entry.proof is None:
            found.append(_entry(seq, f"no inclusion proof for the checkpoint of size {head.size}"))
            continue
        checked += 1
        if entry.proof == expected:
            continue
        try:
            verify_inclusion(tree.levels[0][i], i, head.size, entry.proof, head.root)
        except MlaError as exc:
            found.append(_entry(seq, f"not in the checkpoint of size {head.size}: {exc.detail}"))
    return checked


T = TypeVar("T")


def _as_is(value: bytes) -> bytes:
    return value


def inclusion_proofs(tree: Tree, size: int, encode: Callable[[bytes], T]) -> Iterator[list[T]]:
    """PATH(i, D[size]) for every leaf i < size in order, each hash passed through ``encode``
    once however many proofs it is in (an export writes them as base64).

    ``tree.inclusion_proof`` leaf by leaf recurses for every item (2.4 s for 100,000 leaves);
    this is one list lookup per item. The RFC's tree of ``size`` leaves is made of one perfect,
    aligned subtree per bit of ``size``, largest first. Within one of height h, a leaf's first h
    path items are its siblings at levels 0..h-1 (kept in ``tree.levels``); the items above are
    the same for every leaf of that subtree: those of its first leaf.
    """
    levels: list[list[T]] = []
    start = 0
    for height in reversed(range(size.bit_length())):
        if not size >> height & 1:
            continue
        levels += ([encode(h) for h in tree.levels[n]] for n in range(len(levels), height))
        above = [encode(h) for h in tree.inclusion_proof(start, size)[height:]]
        for i in range(start, start + (1 << height)):
            yield [levels[n][(i >> n) ^ 1] for n in range(height)] + above
        start += 1 << height
