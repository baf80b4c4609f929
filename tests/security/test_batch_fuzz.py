"""Property-based fuzzing of the two batch bodies (transport/batches.py, docs/protocol.md §5.2).

The receiver decodes a batch from any peer that passed mutual TLS, and the sender decodes the
answers: whatever bytes arrive, the decoders return the documented shape or raise our own error
(``BatchMalformed`` at the receiver, ``DeliveryError`` at the sender), never anything else, and a
batch that decodes holds exactly the envelopes packed into it. CI runs a few thousand cases;
``MLA_FULL=1`` runs 100,000.
"""

from __future__ import annotations

import json
import os
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mla_node.errors import BatchMalformed, DeliveryError
from mla_node.protocol.envelope import MAX_ENVELOPE
from mla_node.transport.base import Outgoing, PeerAnswer
from mla_node.transport.batches import (
    MAX_BATCH,
    answer,
    pack_answers,
    pack_batch,
    unpack_answers,
    unpack_batch,
)
from mla_node.transport.http import single_answer
from mla_node.transport.problems import PROBLEM_JSON
from tests.factory import NOW, make_network

EXAMPLES = 100_000 if os.environ.get("MLA_FULL") else 3_000
BR = make_network(now=NOW).directory.nodes["BR"]
PACKABLE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.binary(max_size=64),
    st.text(max_size=70),
)
ENTRY = st.one_of(
    st.fixed_dictionaries({"envelope": st.binary(max_size=64), "request_id": PACKABLE}),
    st.dictionaries(st.sampled_from(["envelope", "request_id", "x"]), PACKABLE, max_size=3),
    PACKABLE,
)


def _mutate(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for at, value in flips:
        if out:
            out[at % len(out)] = value
    return bytes(out)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.lists(ENTRY, max_size=MAX_BATCH + 2),
    st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=3),
)
def test_any_batch_body_decodes_to_its_entries_or_is_malformed(
    entries: list[Any], flips: list[tuple[int, int]]
) -> None:
    data = _mutate(msgpack.packb(entries, use_bin_type=True), flips)
    try:
        batch = unpack_batch(data, MAX_ENVELOPE)
    except BatchMalformed:
        return
    assert 1 <= len(batch) <= MAX_BATCH
    assert all(isinstance(o.envelope, bytes) for o in batch)
    decoded = msgpack.unpackb(data, raw=False)  # nothing was dropped, added or changed
    assert [(e["envelope"], e["request_id"]) for e in decoded] == [
        (o.envelope, o.request_id) for o in batch
    ]


@settings(max_examples=EXAMPLES // 3, deadline=None, derandomize=True)
@given(st.binary(max_size=2048), st.integers(1, MAX_BATCH))
def test_any_answer_body_gives_one_answer_per_envelope_or_a_delivery_error(
    body: bytes, count: int
) -> None:
    try:
        answers = unpack_answers(BR, body, count, 64 << 10)
    except DeliveryError:
        return
    assert len(answers) == count
    assert all(isinstance(a, (PeerAnswer, DeliveryError)) for a in answers)


def test_answers_read_as_the_single_endpoint_reads_them() -> None:
    body = pack_answers(
        [
            answer(200, receipt=b"r1"),
            answer(400, "envelope_stale", b"r2"),
            answer(403, "envelope_sender_mismatch"),
            answer(503, "storage_unavailable"),
            answer(200),  # a 200 without a receipt is no answer
        ]
    )
    got = unpack_answers(BR, body, 5, 1 << 16)
    assert got[:3] == [
        PeerAnswer(b"r1"),
        PeerAnswer(b"r2", "envelope_stale"),
        PeerAnswer(None, "envelope_sender_mismatch"),
    ]
    assert all(isinstance(a, DeliveryError) for a in got[3:])


def test_a_refusal_without_a_usable_code_reads_alike_on_both_endpoints() -> None:
    """A 4xx whose code is missing or not a string still refuses the envelope, as ``unknown``,
    whether it came alone (problem+json) or in a batch."""
    for code in (None, 7):
        single = single_answer(BR, 403, PROBLEM_JSON, json.dumps({"code": code}).encode())
        batched = unpack_answers(BR, pack_answers([answer(403, code)]), 1, 1 << 16)  # type: ignore[arg-type]
        assert single == batched[0] == PeerAnswer(None, "unknown")


def test_a_batch_round_trips() -> None:
    batch = [Outgoing(b"\x94one", "req-00000001"), Outgoing(b"\x94two", None)]
    assert unpack_batch(pack_batch(batch), MAX_ENVELOPE) == batch
