"""Peer-witnessed log heads: keep the checkpoints a peer shows, catch it showing two histories.

Each receipt carries its signer's newest checkpoint (``head``, protocol/receipts.py). The sender
keeps the heads each peer showed it and checks every new one against them. The rules, first
match wins (``decide``), for a verified head H of peer P, N being P's newest stored head:

=====================================================  ==========  ================================
situation                                              verdict     what the caller does
=====================================================  ==========  ================================
nothing of P stored yet                                FIRST       store H (trust on first use)
a stored head of H's size has another root             SPLIT_VIEW  evidence: the two signed heads
a stored head of H's size has H's root                 SAME        nothing
H smaller than N (no stored head of its size)          OLDER       nothing: no proof can be asked
H larger than N, no proof from N's size to H's size    UNPROVEN    keep N; asked again next time
H larger than N, the proof verifies                    NEWER       store H
H larger than N, the proof fails                       SPLIT_VIEW  evidence: both heads + the proof
=====================================================  ==========  ================================

Two signed heads of one size with different roots are irrefutable: one node signed two
histories. A failing proof between two signed heads of different sizes shifts the burden: if the
two were consistent, the accused could produce the valid proof (RFC 9162 §2.1.4) at any time, and
cannot. Only proven heads are stored, so every stored head of P is consistent with every other.

The proof travels beside the receipt, not in it (it depends on what the sender already holds); on
HTTP as ``Mla-Consistency-Proof: <old size> <new size> <base64 hash>,<base64 hash>,...``
(docs/protocol.md §5.1). Pure: bytes and verified objects in, a decision or a typed error out.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mla_node.errors import CheckpointInvalid, ClientError, LogProofInvalid
from mla_node.protocol.checkpoint import Checkpoint, verify_checkpoint
from mla_node.protocol.directory import Directory
from mla_node.protocol.merkle import HASH_LEN, verify_consistency

SPLIT_VIEW_FORMAT = "mla-node-split-view/1"
# A consistency proof has at most about 2·log2(size) hashes: 64 covers logs of 2**32 records.
MAX_PROOF_HASHES = 64
MAX_SPLIT_VIEW_FILE = 64 << 10


class Verdict(StrEnum):
    FIRST = "first"
    SAME = "same"
    OLDER = "older"
    UNPROVEN = "unproven"
    NEWER = "newer"
    SPLIT_VIEW = "split_view"


class SplitReason(StrEnum):
    SAME_SIZE = "same_size_different_root"
    PROOF_FAILED = "consistency_proof_failed"


@dataclass(frozen=True)
class ConsistencyProof:
    """RFC 9162 PROOF(old_size, D[new_size]), as a peer offered it (unsigned: it proves itself)."""

    old_size: int
    new_size: int
    path: tuple[bytes, ...]

    def header_value(self) -> str:
        hashes = ",".join(base64.b64encode(h).decode() for h in self.path)
        return f"{self.old_size} {self.new_size} {hashes}".rstrip()

    @classmethod
    def from_header(cls, value: str) -> ConsistencyProof:
        """Parse :meth:`header_value`; LogProofInvalid when it is not of that shape."""
        parts = value.strip().split(" ")
        if len(parts) not in (2, 3):
            raise LogProofInvalid("consistency proof: expected '<old> <new> <hashes>'")
        old, new = _size(parts[0]), _size(parts[1])
        items = parts[2].split(",") if len(parts) == 3 else []
        if len(items) > MAX_PROOF_HASHES:
            raise LogProofInvalid(f"consistency proof: more than {MAX_PROOF_HASHES} hashes")
        return cls(old, new, tuple(_hash(item) for item in items))

    def as_json(self) -> dict[str, Any]:
        return {
            "old_size": self.old_size,
            "new_size": self.new_size,
            "path": [base64.b64encode(h).decode() for h in self.path],
        }

    @classmethod
    def from_json(cls, obj: Any) -> ConsistencyProof:
        if not isinstance(obj, dict) or set(obj) != {"old_size", "new_size", "path"}:
            raise ClientError("proof must be {old_size, new_size, path}")
        path = obj["path"]
        if not isinstance(path, list) or len(path) > MAX_PROOF_HASHES:
            raise ClientError(f"proof.path must be a list of at most {MAX_PROOF_HASHES} hashes")
        try:
            return cls(
                _size(obj["old_size"]), _size(obj["new_size"]), tuple(_hash(h) for h in path)
            )
        except LogProofInvalid as exc:
            raise ClientError(f"proof: {exc.detail}") from exc

    def check(self, old: Checkpoint, new: Checkpoint) -> None:
        """LogProofInvalid unless this proves ``old``'s tree a prefix of ``new``'s."""
        if (self.old_size, self.new_size) != (old.size, new.size):
            raise LogProofInvalid(
                f"the proof is for sizes {self.old_size} → {self.new_size}, "
                f"not {old.size} → {new.size}"
            )
        verify_consistency(old.size, new.size, old.root, new.root, self.path)


def _size(value: Any) -> int:
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise LogProofInvalid(f"consistency proof: {value!r} is not a size")


def _hash(value: Any) -> bytes:
    try:
        decoded = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
    except binascii.Error:
        decoded = b""
    if len(decoded) != HASH_LEN:
        raise LogProofInvalid("consistency proof: a hash is not 32 bytes of base64")
    return decoded


@dataclass(frozen=True)
class SplitView:
    """Proof that ``node`` signed two histories: ``first`` (the head kept before, or the smaller)
    and ``second`` cannot both be heads of one append-only log."""

    node: str
    first: Checkpoint
    second: Checkpoint
    reason: SplitReason
    proof: ConsistencyProof | None
    detail: str


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    split_view: SplitView | None = None

    @property
    def store(self) -> bool:
        """Whether the new head joins the peer's stored heads."""
        return self.verdict in (Verdict.FIRST, Verdict.NEWER)


def decide(
    head: Checkpoint,
    *,
    newest: Checkpoint | None,
    same_size: Checkpoint | None,
    proof: ConsistencyProof | None,
) -> Decision:
    """Judge ``head`` (verified as its node's) against what is stored of that node: ``newest``,
    its newest stored head, and ``same_size``, the stored head of ``head``'s size if any."""
    for stored in (newest, same_size):
        if stored is not None and stored.node != head.node:
            raise ValueError(f"a stored head of {stored.node} given for {head.node}")
    if same_size is not None and same_size.size != head.size:
        raise ValueError("same_size is not of the head's size")
    if newest is None:
        return Decision(Verdict.FIRST)
    if same_size is None and newest.size == head.size:
        same_size = newest
    if same_size is not None:
        if same_size.root == head.root:
            return Decision(Verdict.SAME)
        return Decision(
            Verdict.SPLIT_VIEW,
            SplitView(
                head.node,
                same_size,
                head,
                SplitReason.SAME_SIZE,
                None,
                f"two signed heads of size {head.size} with different roots",
            ),
        )
    if head.size < newest.size:
        return Decision(Verdict.OLDER)
    if newest.size == 0:  # every log extends the empty one: nothing to prove
        proof = ConsistencyProof(0, head.size, ())
    if proof is None or (proof.old_size, proof.new_size) != (newest.size, head.size):
        return Decision(Verdict.UNPROVEN)
    try:
        proof.check(newest, head)
    except LogProofInvalid as exc:
        return Decision(
            Verdict.SPLIT_VIEW,
            SplitView(head.node, newest, head, SplitReason.PROOF_FAILED, proof, exc.detail),
        )
    return Decision(Verdict.NEWER)


# --- the evidence file ---------------------------------------------------------------------------


def split_view_document(view: SplitView, *, witness: str, detected_at: int) -> bytes:
    """The evidence file (``mla-node-split-view/1``, JSON): what :func:`verify_split_view` reads.

    Only the two signed checkpoints and the proof are evidence; ``heads``, ``detail`` and the
    rest are there for the human reading the file, and the verifier recomputes them.
    """
    doc = {
        "format": SPLIT_VIEW_FORMAT,
        "node": view.node,
        "reason": view.reason.value,
        "checkpoints": [base64.b64encode(c.raw).decode() for c in (view.first, view.second)],
        "proof": view.proof.as_json() if view.proof is not None else None,
        "witness": witness,
        "detected_at": detected_at,
        "detail": view.detail,
        "heads": [c.as_json() for c in (view.first, view.second)],
    }
    return (json.dumps(doc, indent=2) + "\n").encode()


def verify_split_view(data: bytes, directory: Directory) -> SplitView:
    """Check an evidence file offline: both checkpoints signed by the node it names, with keys
    valid at their times, and either of one size with different roots, or of two sizes with a
    proof between them that fails.

    Raises ClientError (not such a file), CheckpointInvalid (a checkpoint does not verify) or
    LogProofInvalid (it does not show a split view: the heads agree, the proof holds, or there is
    none), each naming why.
    """
    if len(data) > MAX_SPLIT_VIEW_FILE:
        raise ClientError(f"a split-view file is at most {MAX_SPLIT_VIEW_FILE} bytes")
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise ClientError(f"not a {SPLIT_VIEW_FORMAT} file: not JSON") from exc
    if not isinstance(doc, dict) or doc.get("format") != SPLIT_VIEW_FORMAT:
        raise ClientError(f"not a {SPLIT_VIEW_FORMAT} file")
    node, reason, raw = doc.get("node"), doc.get("reason"), doc.get("checkpoints")
    if not isinstance(node, str) or not isinstance(raw, list) or len(raw) != 2:
        raise ClientError("the file needs a node and two checkpoints")
    if reason not in {r.value for r in SplitReason}:
        raise ClientError(f"unknown reason {reason!r}")
    blobs = []
    for item in raw:
        try:
            blobs.append(base64.b64decode(item, validate=True) if isinstance(item, str) else None)
        except binascii.Error:
            blobs.append(None)
    heads = []
    for i, blob in enumerate(blobs):
        if blob is None:
            raise ClientError(f"checkpoint {i + 1} is not base64")
        try:
            heads.append(verify_checkpoint(blob, directory, node=node))
        except CheckpointInvalid as exc:
            raise CheckpointInvalid(f"checkpoint {i + 1}: {exc.detail}") from exc
    first, second = sorted(heads, key=lambda c: c.size)
    proof = ConsistencyProof.from_json(doc["proof"]) if doc.get("proof") is not None else None
    view = _split_between(first, second, proof)
    if view.reason != reason:
        raise LogProofInvalid(f"the file says {reason} but its checkpoints show {view.reason}")
    return view


def _split_between(
    first: Checkpoint, second: Checkpoint, proof: ConsistencyProof | None
) -> SplitView:
    if first.size == second.size:
        if first.root == second.root:
            raise LogProofInvalid(f"both checkpoints are the same head of size {first.size}")
        detail = f"two signed heads of size {first.size} with different roots"
        return SplitView(first.node, first, second, SplitReason.SAME_SIZE, None, detail)
    if first.size == 0:
        raise LogProofInvalid(
            "every log extends the empty one: a head of size 0 conflicts with none"
        )
    if proof is None or (proof.old_size, proof.new_size) != (first.size, second.size):
        # A proof for other sizes shows nothing about these two heads, failing or not.
        raise LogProofInvalid(
            f"no proof between the heads of sizes {first.size} and {second.size}: nothing is shown"
        )
    try:
        proof.check(first, second)
    except LogProofInvalid as exc:
        return SplitView(first.node, first, second, SplitReason.PROOF_FAILED, proof, exc.detail)
    raise LogProofInvalid(
        f"the proof shows the head of size {first.size} is a prefix of the head of size "
        f"{second.size}: one history, no split view"
    )
