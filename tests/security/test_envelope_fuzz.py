"""Property-based fuzzing of the receiving path: decode → verify → decrypt (issue 5, item 2).

Hypothesis mutates real envelopes (bit flips, byte changes, cuts, insertions, splices of two
envelopes, msgpack re-packing of the outer array with changed members) and also feeds arbitrary
bytes. Whatever it sends, ``open_envelope`` either returns the one untouched envelope or raises
our own ``EnvelopeError`` (a stable code), never anything else, and never allocates more than a
fixed bound. CI runs a few thousand cases; ``MLA_FULL=1`` runs 100,000.
"""

from __future__ import annotations

import os
import tracemalloc
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mla_node.errors import EnvelopeError, ReceiptError
from mla_node.protocol import forms
from mla_node.protocol.receipts import DELIVERED, sign_receipt, verify_receipt
from tests.factory import NOW, TestNetwork, make_network

EXAMPLES = 100_000 if os.environ.get("MLA_FULL") else 3_000
MAX_PEAK_BYTES = 8 << 20  # an envelope is at most 1 MiB; decoding it may not cost 8 times that

NET: TestNetwork = make_network(now=NOW)
BODY: dict[str, Any] = {
    "type": "mla_request",
    "version": 1,
    "form": forms.example("mla_request"),
    "case": "",
    "reply_to": None,
}
GOOD = NET.seal("AR", "BR", BODY)
OTHER = NET.seal("US", "BR", BODY)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from([GOOD, OTHER])))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "cut", "insert", "splice", "repack"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            data = data[:at]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "splice":
            other = OTHER if bytes(data[:8]) == GOOD[:8] else GOOD
            data = data[:at] + other[at:]
        elif kind == "repack":
            data = bytearray(_repack(bytes(data), draw))
    return bytes(data)


def _repack(data: bytes, draw: st.DrawFn) -> bytes:
    """Decode the outer array and put it back with one member replaced: the shapes a careless
    peer (or an attacker) produces that a byte mutation rarely reaches."""
    try:
        outer = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception:  # the bytes were broken by an earlier mutation: leave them
        return data
    if not isinstance(outer, list) or not outer:
        return data
    i = draw(st.integers(0, len(outer) - 1))
    packable = st.integers(-(2**63), 2**64 - 1)  # what msgpack can carry
    outer[i] = draw(
        st.one_of(
            st.none(),
            st.booleans(),
            packable,
            st.binary(max_size=128),
            st.text(max_size=32),
            st.lists(packable, max_size=4),
            st.dictionaries(st.text(max_size=4), packable, max_size=4),
        )
    )
    packed: bytes = msgpack.packb(outer, use_bin_type=True)
    return packed


def _open_bounded(data: bytes) -> bool:
    """True when it opened; an EnvelopeError is a refusal; anything else fails the test."""
    tracemalloc.start()
    try:
        NET.open("BR", data)
        return True
    except EnvelopeError:
        return False
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < MAX_PEAK_BYTES, f"{peak} bytes to refuse {len(data)} bytes"


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated())
def test_a_mutated_envelope_is_refused_with_our_own_error(data: bytes) -> None:
    opened = _open_bounded(data)
    # Only the two untouched envelopes may open (a mutation can undo an earlier one).
    assert not opened or data in (GOOD, OTHER)


@settings(max_examples=EXAMPLES // 3, deadline=None, derandomize=True)
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_are_refused_with_our_own_error(data: bytes) -> None:
    assert not _open_bounded(data)


def test_the_untouched_envelopes_open() -> None:
    assert _open_bounded(GOOD) and _open_bounded(OTHER)


def test_another_encoding_of_the_same_envelope_is_refused() -> None:
    """Found by this fuzzer at full size: the outer array is not signed, so ``[1, ...]`` with the
    1 as a one-byte uint (0xcc 0x01) verified too — the same signed content under another
    digest. Only the canonical encoding is taken now (and likewise for signed containers)."""
    assert GOOD[:2] == b"\x94\x01"
    longer = b"\x94\xcc\x01" + GOOD[2:]
    assert not _open_bounded(longer)

    opened = NET.open("BR", GOOD)
    receipt = sign_receipt(
        NET.nodes["BR"].signing,
        message_id=opened.header.message_id,
        sender="AR",
        recipient="BR",
        envelope_digest=opened.digest,
        status=DELIVERED,
        code=None,
        at=NOW,
    )
    verify_receipt(receipt, NET.directory)
    assert receipt[:2] == b"\x94\x01"
    with pytest.raises(ReceiptError, match="canonical"):
        verify_receipt(b"\x94\xcc\x01" + receipt[2:], NET.directory)
