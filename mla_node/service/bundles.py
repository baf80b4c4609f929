"""Writing a case's evidence bundle from a node's database (protocol/bundle.py says what is in it).

Works on any ``Reader``: the running node's database (the auditor API, which first signs a fresh
checkpoint so the whole case is covered) or a database file opened read-only (``mla-node audit
bundle``, which works while the node runs, on a copy, or on a backup).
"""

from __future__ import annotations

from dataclasses import dataclass

from mla_node.errors import InvalidStateForAction, LogProofInvalid, NotFound
from mla_node.protocol.bundle import BundleMessage, BundleRecord, encode_bundle
from mla_node.protocol.checkpoint import peek_head
from mla_node.service.audit_log import over_log
from mla_node.storage import repo


@dataclass(frozen=True)
class WrittenBundle:
    data: bytes
    node: str
    case_id: str
    messages: int
    records: int
    checkpoint_size: int
    left_out: int  # records of the case newer than the checkpoint: not provable yet


async def build_bundle(
    db: repo.Reader, message_id: str, *, with_content: bool = False
) -> WrittenBundle:
    """The bundle of the case ``message_id`` belongs to, against the newest checkpoint; with
    each message's content (its exact body bytes) only when ``with_content``."""
    message = await repo.get_message(db, message_id)
    if message is None:
        raise NotFound(f"no request or message {message_id!r}", field="id")
    case_id = message.case_id
    head = await repo.latest_checkpoint(db)
    if head is None:
        raise InvalidStateForAction(
            "the node has not signed a checkpoint of its log yet; it does at start and every "
            "audit.checkpoint_interval_s"
        )
    node = peek_head(head.checkpoint)[0]
    directory = await repo.accepted_directory(db)
    if directory is None:
        raise InvalidStateForAction("the node has not accepted a directory yet")
    # Read after the head: the log only grows, so everything the head covers is here.
    if (size := await repo.log_size(db)) < head.size:
        raise LogProofInvalid(f"the log has {size} records, its checkpoint {head.size}")
    all_records = await repo.case_evidence(db, case_id)
    covered = [(seq, mid, record) for seq, mid, record in all_records if seq <= head.size]
    root, paths = await over_log(
        db, head.size, lambda t: (t.root(), [t.inclusion_proof(seq - 1) for seq, _, _ in covered])
    )
    if root != head.root:
        raise LogProofInvalid(f"the log is not the one its checkpoint of size {head.size} signed")
    records = [
        BundleRecord(seq, record, path)
        for (seq, _, record), path in zip(covered, paths, strict=True)
    ]
    mentioned = {mid for _, mid, _ in covered}
    messages: list[BundleMessage] = []
    for m in await repo.case_messages(db, case_id):
        if m.id not in mentioned:
            continue
        if m.purged_at is not None:
            raise InvalidStateForAction(
                f"the case was purged (message {m.id}): its envelopes are gone, only the log's "
                "records and receipts remain (mla-node audit export)"
            )
        receipt = await repo.get_receipt(db, m.id)
        content = await repo.message_body(db, m.id) if with_content else None
        messages.append(BundleMessage(m.envelope, receipt.receipt if receipt else None, content))
    data = encode_bundle(
        node=node,
        case=case_id,
        directory=directory[2],
        checkpoint=head.checkpoint,
        messages=messages,
        evidence=records,
    )
    return WrittenBundle(
        data, node, case_id, len(messages), len(records), head.size, len(all_records) - len(records)
    )
