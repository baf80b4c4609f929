"""Reconciling two nodes' logs: does what one says it sent match what the other says it received?

Input: the verified evidence records of node A and of node B (each log verified on its own first,
auditlog.py). For every message between the two, in both directions, the sender's log says
``submitted``, then ``delivered`` with the receipt's digest (or ``not_delivered``); the
receiver's log says ``delivered`` with the envelope's digest and the digest of the receipt it
issued. Reconciling checks, message by message:

- every receipt the sender holds is one the receiver's log records issuing, for the same
  envelope (else the receiver's log lacks a delivery it signed for, or the sender's log names
  a receipt the receiver never issued);
- both logs commit to the same content (the digest of the body the sender sealed and the
  receiver opened), where both records carry one;
- every envelope the receiver records is one the sender's log records sending;
- nothing is both delivered (at the receiver) and given up as refused (at the sender).

Messages the sender still has in flight (submitted, no outcome yet) are counted, not faulted: the
receipt may be on its way. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from mla_node.protocol.evidence import Event, Evidence


@dataclass
class _Sent:
    envelope: bytes | None = None
    content: bytes | None = None
    receipt: bytes | None = None
    refused: str | None = None  # the refusal's code, or deadline_passed


@dataclass
class _Received:
    envelope: bytes | None
    receipt: bytes | None
    content: bytes | None


@dataclass(frozen=True)
class Mismatch:
    message_id: str
    sender: str
    recipient: str
    reason: str

    def __str__(self) -> str:
        return f"{self.message_id} ({self.sender} → {self.recipient}): {self.reason}"


@dataclass
class Reconciliation:
    a: str
    b: str
    matched: int = 0  # delivered, and both logs agree on the envelope and the receipt
    in_flight: int = 0  # sent, no outcome at the sender yet, not at the receiver either
    refused: int = 0  # refused or given up, and the receiver did not store it
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


def reconcile(
    a: str, a_log: Iterable[Evidence], b: str, b_log: Iterable[Evidence]
) -> Reconciliation:
    """Compare the logs of nodes ``a`` and ``b`` (each already verified) in both directions."""
    a_records, b_records = list(a_log), list(b_log)
    result = Reconciliation(a, b)
    for sender, sender_log, recipient, recipient_log in (
        (a, a_records, b, b_records),
        (b, b_records, a, a_records),
    ):
        _one_way(
            result,
            sender,
            _sent(sender_log, recipient),
            recipient,
            _received(recipient_log, sender),
        )
    result.mismatches.sort(key=lambda m: m.message_id)
    return result


def _sent(log: list[Evidence], to: str) -> dict[str, _Sent]:
    sent: dict[str, _Sent] = {}
    for e in log:
        if e.peer != to:
            continue
        if e.event == Event.SUBMITTED:
            entry = sent.setdefault(e.message_id, _Sent())
            entry.envelope, entry.content = e.envelope_digest, e.content_digest
        elif e.message_id in sent and e.event == Event.DELIVERED:
            sent[e.message_id].receipt = e.receipt_digest
            sent[e.message_id].refused = None
        elif e.message_id in sent and e.event == Event.NOT_DELIVERED:
            sent[e.message_id].refused = e.detail or "not_delivered"
        elif e.message_id in sent and e.event == Event.RESENT:
            # queued again, or re-sealed as a new message that now carries it
            replaced = e.detail is not None and e.detail != e.message_id
            sent[e.message_id].refused = f"replaced by {e.detail}" if replaced else None
    return sent


def _received(log: list[Evidence], sender: str) -> dict[str, _Received]:
    """Messages from ``sender`` that this log records storing: a ``delivered`` record with no
    ``submitted`` before it (on the sender's side of a message the node sent, ``delivered`` is
    the receipt coming back)."""
    submitted = {e.message_id for e in log if e.event == Event.SUBMITTED}
    return {
        e.message_id: _Received(e.envelope_digest, e.receipt_digest, e.content_digest)
        for e in log
        if e.event == Event.DELIVERED and e.peer == sender and e.message_id not in submitted
    }


def _one_way(
    result: Reconciliation,
    sender: str,
    sent: dict[str, _Sent],
    recipient: str,
    received: dict[str, _Received],
) -> None:
    def mismatch(message_id: str, reason: str) -> None:
        result.mismatches.append(Mismatch(message_id, sender, recipient, reason))

    for message_id, s in sent.items():
        r = received.get(message_id)
        if s.receipt is not None:
            if r is None:
                mismatch(
                    message_id,
                    f"{sender} holds {recipient}'s receipt, but {recipient}'s log records no "
                    "delivery of it",
                )
            elif r.envelope != s.envelope:
                mismatch(message_id, "the two logs name different envelopes")
            elif None not in (r.content, s.content) and r.content != s.content:
                mismatch(message_id, "the two logs commit to different contents")
            elif r.receipt != s.receipt:
                mismatch(
                    message_id,
                    f"the receipt {sender} recorded is not the one {recipient} recorded issuing",
                )
            else:
                result.matched += 1
        elif r is not None:
            if s.refused is not None:
                mismatch(
                    message_id,
                    f"{recipient} stored it, but {sender} recorded it as not delivered "
                    f"({s.refused})",
                )
            elif r.envelope != s.envelope:
                mismatch(message_id, "the two logs name different envelopes")
            else:
                result.in_flight += 1  # stored; the receipt is on its way back
        elif s.refused is not None:
            result.refused += 1
        else:
            result.in_flight += 1
    for message_id in received.keys() - sent.keys():
        mismatch(
            message_id,
            f"{recipient} recorded receiving it from {sender}, but {sender}'s log records no "
            "such message",
        )
