"""Receipt v1: the receiving node's signed statement about one envelope.

A receipt is signed over the envelope's SHA-256 digest, the message id, both parties, the time and
a status (``delivered``, or ``rejected`` with a stable error code). A ``delivered`` receipt is only
ever signed for an envelope already committed to the receiver's database.

A receipt may also carry ``head``: the receiver's newest signed checkpoint (its evidence log's
tree head) at signing time, nested as its exact bytes. The sender keeps the heads its peers show
it and checks each new one against the last (protocol/witness.py), so a node that shows two
histories is caught; and the receipt a court sees pins the receiver's log as it stood.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mla_node.errors import CheckpointInvalid, ReceiptError
from mla_node.protocol import codec
from mla_node.protocol.checkpoint import MAX_CHECKPOINT, Checkpoint, verify_checkpoint
from mla_node.protocol.directory import Directory
from mla_node.protocol.keys import SigningKey
from mla_node.protocol.signed import open_signed, sign_object

RECEIPT_VERSION = 1
DELIVERED = "delivered"
REJECTED = "rejected"
RECEIPT_STATUSES = frozenset({DELIVERED, REJECTED})


@dataclass(frozen=True)
class Receipt:
    message_id: str
    sender: str  # the envelope's sender, to whom the receipt is addressed
    recipient: str  # the envelope's recipient, who signed the receipt
    envelope_digest: bytes
    status: str
    code: str | None  # the stable error code of a rejection
    at: int
    kid: str
    digest: bytes
    raw: bytes
    head: Checkpoint | None = None  # the recipient's log head, verified as the recipient's


def sign_receipt(
    key: SigningKey,
    *,
    message_id: str,
    sender: str,
    recipient: str,
    envelope_digest: bytes,
    status: str,
    code: str | None,
    at: int,
    head: bytes | None = None,
) -> bytes:
    """``head``: the recipient's newest signed checkpoint; left out of the body when None, so a
    receipt without one is byte for byte what it was before heads existed."""
    if status not in RECEIPT_STATUSES:
        raise ValueError(f"unknown receipt status {status!r}")
    body: dict[str, Any] = {
        "v": RECEIPT_VERSION,
        "kind": "receipt",
        "mid": message_id,
        "from": sender,
        "to": recipient,
        "envelope": envelope_digest,
        "status": status,
        "code": code,
        "at": at,
    }
    if head is not None:
        body["head"] = head
    return sign_object(codec.DOMAIN_RECEIPT, key, body)


def verify_receipt(
    data: bytes,
    directory: Directory,
    *,
    expect_message_id: str | None = None,
    expect_envelope_digest: bytes | None = None,
    expect_signer: str | None = None,
) -> Receipt:
    """Verify a receipt against the directory, at the time it says it was signed.

    The key must be the recipient's and valid (and not yet revoked) at that time, so receipts
    stay verifiable after their key is rotated out. A ``head`` must be a checkpoint the recipient
    signed (with a key valid at the checkpoint's own time); one that does not verify makes the
    whole receipt invalid, since the recipient signed it.
    """
    signer_state: list[str] = []

    def key_for(kid: str) -> bytes:
        # Which state signed is only known after decoding, so accept a sign key of any node here
        # and check below that it belongs to the state the receipt names as recipient.
        for node in directory.nodes.values():
            for k in node.keys:
                if k.kid == kid and k.use == "sign":
                    signer_state.append(node.state)
                    return k.public
        raise ReceiptError(f"receipt signed by unknown key {kid}", field="receipt.kid")

    signed = open_signed(codec.DOMAIN_RECEIPT, data, key_for, ReceiptError, "receipt")
    b = signed.body
    if b.integer("v") != RECEIPT_VERSION or b.text("kind") != "receipt":
        raise ReceiptError("not a version 1 receipt")
    # Read in this order so a receipt with several faults names the same one as always; the
    # Receipt is made once, at the end, rather than copied again to add its head.
    message_id = b.text("mid", 64)
    sender = b.text("from", 2)
    recipient = b.text("to", 2)
    envelope_digest = b.blob("envelope", 32)
    status = b.one_of("status", RECEIPT_STATUSES)
    code = b.opt_text("code", 64)
    at = b.integer("at")
    if signer_state != [recipient]:
        raise ReceiptError("receipt not signed by the envelope's recipient", field="receipt.kid")
    _, problem = directory.check_key(recipient, signed.kid, "sign", at, live=False)
    if problem is not None:
        raise ReceiptError(f"receipt key {signed.kid} was {problem} at signing time")
    for expected, actual, name in (
        (expect_message_id, message_id, "mid"),
        (expect_envelope_digest, envelope_digest, "envelope"),
        (expect_signer, recipient, "to"),
    ):
        if expected is not None and expected != actual:
            raise ReceiptError(f"receipt is for another {name}", field=f"receipt.{name}")
    head = b.raw().get("head")
    checkpoint: Checkpoint | None = None
    if head is not None:
        if not isinstance(head, bytes) or len(head) > MAX_CHECKPOINT:
            raise ReceiptError("receipt.head must be a checkpoint's bytes", field="receipt.head")
        try:
            checkpoint = verify_checkpoint(head, directory, node=recipient)
        except CheckpointInvalid as exc:
            raise ReceiptError(f"receipt head: {exc.detail}", field="receipt.head") from exc
    return Receipt(
        message_id=message_id,
        sender=sender,
        recipient=recipient,
        envelope_digest=envelope_digest,
        status=status,
        code=code,
        at=at,
        kid=signed.kid,
        digest=signed.digest,
        raw=data,
        head=checkpoint,
    )
