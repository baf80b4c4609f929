"""Several envelopes to one peer in one HTTP exchange: the wire format (docs/protocol.md §5.2).

Under load a sender often has several envelopes due to the same peer at once. Each in its own POST
costs both nodes a whole HTTP request with its TLS records: batches took 20-29 % off the CPU per
envelope on both nodes in the runs of docs/performance.md. A batch carries up to ``MAX_BATCH``
envelopes and is answered with one answer per envelope, in order, each saying what the
single-envelope endpoint would have said: a receipt (200), a refusal with its code and signed
rejection receipt (4xx), or a failure worth retrying (5xx). Nothing a receipt proves changes: every
envelope is verified, stored, receipted and evidenced on its own, and a batch answered in part is
retried in part.

Both bodies are msgpack, decoded with the codec's limits:

    request: [{"envelope": bin, "request_id": str | nil}, ...]      1 to MAX_BATCH entries
    answer:  [{"status": int, "code": str | nil, "receipt": bin | nil}, ...]   as many, in order
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mla_node.errors import BatchMalformed, DeliveryError
from mla_node.protocol import codec
from mla_node.protocol.directory import NodeEntry
from mla_node.transport.base import BatchAnswer, Outgoing, PeerAnswer

BATCH_PATH = "/peer/v1/envelope-batches"
BATCH_TYPE = "application/vnd.mla-node.envelope-batch+msgpack"
ANSWERS_TYPE = "application/vnd.mla-node.answer-batch+msgpack"
MAX_BATCH = 64
# msgpack framing per entry: the map, its keys, the bin header, a request id of up to 64 chars
ENTRY_OVERHEAD = 96
_MAX_REQUEST_ID = 64


def pack_batch(batch: Sequence[Outgoing]) -> bytes:
    return codec.pack([{"envelope": o.envelope, "request_id": o.request_id} for o in batch])


def unpack_batch(data: bytes, max_bytes: int) -> list[Outgoing]:
    """The envelopes of a batch; ``BatchMalformed`` for anything but the shape above (each
    envelope is then judged on its own, as if it had come alone)."""
    entries = codec.unpack(
        data, error=BatchMalformed, max_bytes=max_bytes, max_items=MAX_BATCH, max_depth=2
    )
    if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_BATCH:
        raise BatchMalformed(f"a batch is an array of 1 to {MAX_BATCH} entries")
    batch = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) != {"envelope", "request_id"}:
            raise BatchMalformed("an entry is a map of envelope and request_id", field=f"[{i}]")
        envelope, request_id = entry["envelope"], entry["request_id"]
        if not isinstance(envelope, bytes):
            raise BatchMalformed("envelope must be bin", field=f"[{i}].envelope")
        if request_id is not None and not (
            isinstance(request_id, str) and len(request_id) <= _MAX_REQUEST_ID
        ):
            raise BatchMalformed(
                f"request_id must be nil or a str of at most {_MAX_REQUEST_ID}",
                field=f"[{i}].request_id",
            )
        batch.append(Outgoing(envelope, request_id))
    return batch


def answer(status: int, code: str | None = None, receipt: bytes | None = None) -> dict[str, Any]:
    return {"status": status, "code": code, "receipt": receipt}


def pack_answers(answers: Sequence[dict[str, Any]]) -> bytes:
    return codec.pack(list(answers))


def unpack_answers(peer: NodeEntry, body: bytes, count: int, max_bytes: int) -> list[BatchAnswer]:
    """One answer per envelope sent, read as the single endpoint's answers are read
    (``transport/http.py``); DeliveryError when the body is not ``count`` of them."""
    entries = codec.unpack(
        body, error=DeliveryError, max_bytes=max_bytes, max_items=MAX_BATCH, max_depth=2
    )
    if not isinstance(entries, list) or len(entries) != count:
        raise DeliveryError(f"{peer.state} answered a batch of {count} with another shape")
    return [_one(peer, entry) for entry in entries]


def _one(peer: NodeEntry, entry: Any) -> BatchAnswer:
    if not isinstance(entry, dict):
        return DeliveryError(f"{peer.state} answered an envelope with no answer map")
    status, code, receipt = entry.get("status"), entry.get("code"), entry.get("receipt")
    receipt = receipt if isinstance(receipt, bytes) else None
    if status == 200 and receipt is not None:
        return PeerAnswer(receipt)
    if isinstance(status, int) and 400 <= status < 500:
        return PeerAnswer.refusal(code, receipt)
    return DeliveryError(f"{peer.state} answered {status} ({code}) for an envelope of a batch")
