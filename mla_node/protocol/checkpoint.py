"""Checkpoints: a node's signed tree head over its evidence log (RFC 9162 §4.10, in our container).

A checkpoint says "the first ``size`` records of my log hash to ``root``", signed by the node at
``at``. Any two checkpoints of one node must be consistent (the smaller tree a prefix of the
larger); two that are not prove the node showed two histories.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from mla_node.errors import CheckpointInvalid
from mla_node.protocol import codec
from mla_node.protocol.directory import Directory
from mla_node.protocol.keys import SigningKey
from mla_node.protocol.merkle import HASH_LEN
from mla_node.protocol.signed import open_signed, peek_kid, peek_signed, sign_object

CHECKPOINT_VERSION = 1
MAX_CHECKPOINT = 1024  # a checkpoint is ~150 bytes


@dataclass(frozen=True)
class Checkpoint:
    node: str
    size: int
    root: bytes
    at: int
    kid: str
    raw: bytes

    def as_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "size": self.size,
            "root": self.root.hex(),
            "at": self.at,
            "kid": self.kid,
        }


def sign_checkpoint(key: SigningKey, *, node: str, size: int, root: bytes, at: int) -> bytes:
    if size < 0 or len(root) != HASH_LEN:
        raise ValueError("a checkpoint needs a size ≥ 0 and a 32-byte root")
    return sign_object(
        codec.DOMAIN_CHECKPOINT,
        key,
        {
            "v": CHECKPOINT_VERSION,
            "kind": "checkpoint",
            "node": node,
            "size": size,
            "root": root,
            "at": at,
        },
    )


def verify_checkpoint(data: bytes, directory: Directory, *, node: str) -> Checkpoint:
    """Verify a checkpoint ``node`` signed, with that node's key valid at the checkpoint's time."""
    key_for = directory.signing_key_lookup(node, CheckpointInvalid, "checkpoint")
    public = key_for(peek_kid(data, CheckpointInvalid, MAX_CHECKPOINT))
    _signature_holds(data, public)
    # Decoded only now, and these exact bytes verified under this exact key (now or before).
    signed = peek_signed(data, CheckpointInvalid, "checkpoint", MAX_CHECKPOINT)
    b = signed.body
    if b.integer("v") != CHECKPOINT_VERSION or b.text("kind") != "checkpoint":
        raise CheckpointInvalid("not a version 1 checkpoint")
    checkpoint = Checkpoint(
        node=b.text("node", 2),
        size=b.integer("size"),
        root=b.blob("root", HASH_LEN),
        at=b.integer("at"),
        kid=signed.kid,
        raw=data,
    )
    if checkpoint.node != node:
        raise CheckpointInvalid(f"checkpoint names node {checkpoint.node}, expected {node}")
    if checkpoint.size < 0:
        raise CheckpointInvalid("checkpoint size is negative")
    _, problem = directory.check_key(node, signed.kid, "sign", checkpoint.at, live=False)
    if problem is not None:
        raise CheckpointInvalid(f"checkpoint key {signed.kid} was {problem} at signing time")
    return checkpoint


@functools.lru_cache(maxsize=1024)
def _signature_holds(data: bytes, public: bytes) -> bool:
    """Raises CheckpointInvalid unless the signature in ``data`` verifies under ``public``.

    A node signs a checkpoint only now and then, so most receipts carry the same head bytes; this
    spares re-checking Ed25519 for them. Whether the signature holds depends on nothing but these
    two byte strings; everything that depends on a directory (is ``public`` the node's key, was
    it valid at the checkpoint's time) the caller checks on every call. A failure raises and so
    is never kept."""
    open_signed(
        codec.DOMAIN_CHECKPOINT,
        data,
        lambda _kid: public,
        CheckpointInvalid,
        "checkpoint",
        MAX_CHECKPOINT,
    )
    return True


def peek_head(data: bytes) -> tuple[str, int]:
    """(node, size) a checkpoint claims, unverified: only to choose whom to verify as, and
    which size an export's proofs are for."""
    outer = codec.expect_array(
        codec.unpack(data, error=CheckpointInvalid, max_bytes=MAX_CHECKPOINT, max_depth=2),
        4,
        CheckpointInvalid,
        "checkpoint",
    )
    if not isinstance(outer[2], bytes):
        raise CheckpointInvalid("checkpoint: body must be bytes")
    body = codec.Fields(
        codec.unpack(outer[2], error=CheckpointInvalid, max_bytes=MAX_CHECKPOINT),
        CheckpointInvalid,
        "checkpoint",
    )
    return body.text("node", 2), body.integer("size")
