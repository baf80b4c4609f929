"""Evidence records: each step of a request's life, signed by the node that observed it.

Modelled on the ETSI registered-electronic-mail evidence set used by e-CODEX. The record refers to
the envelope and, where there is one, the peer's receipt by digest, so an auditor can tie the chain
together without any plaintext.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mla_node.errors import EvidenceInvalid
from mla_node.protocol import codec
from mla_node.protocol.directory import Directory
from mla_node.protocol.keys import SigningKey
from mla_node.protocol.signed import SignedObject, open_signed, peek_signed, sign_object

EVIDENCE_VERSION = 1
MAX_ACTOR = 128
MAX_DETAIL = 128


class Event:
    SUBMITTED = "submitted"  # the local node accepted a clerk's submission
    REJECTED = "rejected"  # the local node refused it (validation), or the peer refused it
    DELIVERED = "delivered"  # recipient stored it (at the recipient), or its receipt arrived
    # the recipient refused it with a signed rejection (detail: its code), or the sender gave
    # up at the delivery deadline (detail: "deadline_passed")
    NOT_DELIVERED = "not_delivered"
    RETRIEVED = "retrieved"  # a clerk at the recipient opened it
    ACKNOWLEDGED = "acknowledged"  # the central authority acknowledged it
    ANSWERED = "answered"  # a follow-up answering it was sent
    # an admin sent it again after its deadline passed (detail: the id of the message now
    # carrying it: its own when the original envelope is sent again, else the re-sealed one's)
    RESENT = "resent"
    # user actions that matter to an auditor (issue 4); ``actor`` names who, "role:name"
    VIEWED = "viewed"  # a user read a message's content (after the recipient's first retrieval)
    EXPORTED = "exported"  # a user exported a case's evidence bundle (detail: what was exported)
    # an admin created an API token; ``mid`` is the token's id and ``case`` is empty, because
    # the action is about the node, not a case
    TOKEN_CREATED = "token_created"  # noqa: S105 (an event name, not a secret)


EVENTS = frozenset(v for k, v in vars(Event).items() if k.isupper())
# Events that record what a user did rather than a step of the message's life: the audit log
# shows them, a request's timeline does not.
USER_ACTIONS = frozenset({Event.VIEWED, Event.EXPORTED, Event.TOKEN_CREATED})


@dataclass(frozen=True)
class Evidence:
    event: str
    node: str  # the state whose node observed and signed it
    message_id: str
    case_id: str
    envelope_digest: bytes | None
    peer: str | None
    at: int
    detail: str | None  # a stable code, or the id of the message that answered
    receipt_digest: bytes | None
    actor: str | None  # the user whose action this was ("clerk:Ana Silva"); None for the node's own
    content_digest: bytes | None  # envelope.content_digest of the body sent / received
    kid: str
    digest: bytes
    raw: bytes

    def as_json(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "node": self.node,
            "message_id": self.message_id,
            "case_id": self.case_id,
            "envelope_sha256": self.envelope_digest.hex() if self.envelope_digest else None,
            "peer": self.peer,
            "at": self.at,
            "detail": self.detail,
            "receipt_sha256": self.receipt_digest.hex() if self.receipt_digest else None,
            "actor": self.actor,
            "content_sha256": self.content_digest.hex() if self.content_digest else None,
            "kid": self.kid,
            "sha256": self.digest.hex(),
        }


def sign_evidence(
    key: SigningKey,
    *,
    event: str,
    node: str,
    message_id: str,
    case_id: str,
    at: int,
    envelope_digest: bytes | None = None,
    peer: str | None = None,
    detail: str | None = None,
    receipt_digest: bytes | None = None,
    actor: str | None = None,
    content_digest: bytes | None = None,
) -> bytes:
    if event not in EVENTS:
        raise ValueError(f"unknown evidence event {event!r}")
    return sign_object(
        codec.DOMAIN_EVIDENCE,
        key,
        {
            "v": EVIDENCE_VERSION,
            "kind": "evidence",
            "event": event,
            "node": node,
            "mid": message_id,
            "case": case_id,
            "envelope": envelope_digest,
            "peer": peer,
            "at": at,
            "detail": detail,
            "receipt": receipt_digest,
            "actor": actor,
            "content": content_digest,
        },
    )


def verify_evidence(data: bytes, directory: Directory, *, node: str) -> Evidence:
    """Verify a record that ``node`` signed, with that node's key valid at the record's time."""
    key_for = directory.signing_key_lookup(node, EvidenceInvalid, "evidence")
    record = _evidence(
        open_signed(codec.DOMAIN_EVIDENCE, data, key_for, EvidenceInvalid, "evidence")
    )
    if record.node != node:
        raise EvidenceInvalid(f"evidence names node {record.node}, expected {node}")
    _, problem = directory.check_key(node, record.kid, "sign", record.at, live=False)
    if problem is not None:
        raise EvidenceInvalid(f"evidence key {record.kid} was {problem} at signing time")
    return record


def peek_evidence(data: bytes) -> Evidence:
    """A record as it says it is, neither its signature nor its key checked: a reading aid (a
    log as CSV); ``verify_evidence`` is the check."""
    return _evidence(peek_signed(data, EvidenceInvalid, "evidence"))


def _evidence(signed: SignedObject) -> Evidence:
    b = signed.body
    if b.integer("v") != EVIDENCE_VERSION or b.text("kind") != "evidence":
        raise EvidenceInvalid("not a version 1 evidence record")
    envelope = b.raw().get("envelope")
    receipt = b.raw().get("receipt")
    return Evidence(
        event=b.one_of("event", EVENTS),
        node=b.text("node", 2),
        message_id=b.text("mid", 64),
        case_id=b.text("case", 64),
        envelope_digest=b.blob("envelope", 32) if envelope is not None else None,
        peer=b.opt_text("peer", 2),
        at=b.integer("at"),
        detail=b.opt_text("detail", MAX_DETAIL),
        receipt_digest=b.blob("receipt", 32) if receipt is not None else None,
        actor=b.opt_text("actor", MAX_ACTOR),
        content_digest=b.blob("content", 32) if b.raw().get("content") is not None else None,
        kid=signed.kid,
        digest=signed.digest,
        raw=signed.raw,
    )
