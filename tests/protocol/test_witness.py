"""Peer-witnessed heads: the decision table, the proof framing, receipts carrying a head, and the
offline check of a split-view evidence file (forged, misattributed and non-proving files)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mla_node.errors import CheckpointInvalid, ClientError, LogProofInvalid, ReceiptError
from mla_node.protocol.checkpoint import Checkpoint, sign_checkpoint, verify_checkpoint
from mla_node.protocol.envelope import envelope_digest
from mla_node.protocol.keys import SigningKey
from mla_node.protocol.merkle import Tree, leaf_hash
from mla_node.protocol.receipts import DELIVERED, REJECTED, sign_receipt, verify_receipt
from mla_node.protocol.witness import (
    ConsistencyProof,
    SplitReason,
    SplitView,
    Verdict,
    decide,
    split_view_document,
    verify_split_view,
)
from tests.factory import DAY, NOW, TestNetwork, fixed_signing_key, make_network

NET = make_network(now=NOW)
MID = "01KDVDNA000000000000000001"


def tree(size: int, fork_at: int | None = None) -> Tree:
    """A log of ``size`` records; with ``fork_at`` its records from there on differ (a fork)."""
    return Tree(
        [
            leaf_hash(f"{'fork' if fork_at is not None and i >= fork_at else 'main'} {i}".encode())
            for i in range(size)
        ]
    )


MAIN = tree(40)
FORK = tree(40, fork_at=12)  # the same first 12 records, then another history


def head(
    log: Tree,
    size: int,
    *,
    node: str = "BR",
    at: int = NOW,
    key: SigningKey | None = None,
    net: TestNetwork = NET,
) -> Checkpoint:
    data = sign_checkpoint(
        key or net.nodes[node].signing, node=node, size=size, root=log.root(size), at=at
    )
    return verify_checkpoint(data, net.directory, node=node)


def proof(log: Tree, old: int, new: int) -> ConsistencyProof:
    return ConsistencyProof(old, new, tuple(log.consistency_proof(old, new)))


# --- the decision table ----------------------------------------------------------------------


def test_the_first_head_of_a_peer_is_stored_on_trust() -> None:
    decision = decide(head(MAIN, 10), newest=None, same_size=None, proof=None)
    assert decision.verdict is Verdict.FIRST and decision.store and decision.split_view is None


def test_the_same_head_again_changes_nothing() -> None:
    stored = head(MAIN, 10)
    again = head(MAIN, 10, at=NOW + 1000)  # signed again later: same tree, same verdict
    decision = decide(again, newest=stored, same_size=None, proof=None)
    assert decision.verdict is Verdict.SAME and not decision.store


def test_a_newer_head_with_a_valid_proof_is_stored() -> None:
    decision = decide(
        head(MAIN, 30), newest=head(MAIN, 10), same_size=None, proof=proof(MAIN, 10, 30)
    )
    assert decision.verdict is Verdict.NEWER and decision.store


def test_after_an_empty_head_no_proof_is_needed() -> None:
    decision = decide(head(MAIN, 30), newest=head(MAIN, 0), same_size=None, proof=None)
    assert decision.verdict is Verdict.NEWER


def test_an_older_head_is_ignored_unless_it_contradicts_one_of_its_size() -> None:
    newest = head(MAIN, 30)
    assert decide(head(MAIN, 10), newest=newest, same_size=None, proof=None).verdict is (
        Verdict.OLDER
    )
    kept = head(MAIN, 20)
    assert decide(head(MAIN, 20), newest=newest, same_size=kept, proof=None).verdict is (
        Verdict.SAME
    )
    decision = decide(head(FORK, 20), newest=newest, same_size=kept, proof=None)
    assert decision.verdict is Verdict.SPLIT_VIEW and not decision.store
    view = decision.split_view
    assert view is not None and view.reason is SplitReason.SAME_SIZE
    assert (view.first, view.second) == (kept, head(FORK, 20))


def test_the_same_size_with_another_root_is_a_split_view() -> None:
    stored = head(MAIN, 20)
    decision = decide(head(FORK, 20), newest=stored, same_size=None, proof=None)
    view = decision.split_view
    assert decision.verdict is Verdict.SPLIT_VIEW and view is not None
    assert view.reason is SplitReason.SAME_SIZE and view.proof is None
    assert view.first == stored and view.second.root == FORK.root(20)


def test_a_newer_head_whose_proof_fails_is_a_split_view() -> None:
    stored = head(MAIN, 20)
    shown = head(FORK, 30)
    # The forked node proves its own history: valid for its tree, not for the head we hold.
    offered = proof(FORK, 20, 30)
    decision = decide(shown, newest=stored, same_size=None, proof=offered)
    view = decision.split_view
    assert decision.verdict is Verdict.SPLIT_VIEW and view is not None
    assert view.reason is SplitReason.PROOF_FAILED and view.proof == offered
    assert (view.first, view.second) == (stored, shown)


def test_a_garbage_proof_is_a_split_view_too() -> None:
    offered = ConsistencyProof(20, 30, (b"\x00" * 32, b"\x01" * 32))
    decision = decide(head(MAIN, 30), newest=head(MAIN, 20), same_size=None, proof=offered)
    assert decision.verdict is Verdict.SPLIT_VIEW


@pytest.mark.parametrize(
    "offered",
    [None, proof(MAIN, 10, 30), proof(MAIN, 20, 25)],
    ids=["missing", "from-another-size", "to-another-size"],
)
def test_a_newer_head_without_a_usable_proof_is_kept_for_later(
    offered: ConsistencyProof | None,
) -> None:
    decision = decide(head(MAIN, 30), newest=head(MAIN, 20), same_size=None, proof=offered)
    assert decision.verdict is Verdict.UNPROVEN and not decision.store


def test_heads_of_another_node_are_a_caller_error() -> None:
    with pytest.raises(ValueError, match="stored head of US"):
        decide(head(MAIN, 30), newest=head(MAIN, 20, node="US"), same_size=None, proof=None)
    with pytest.raises(ValueError, match="size"):
        decide(head(MAIN, 30), newest=head(MAIN, 40), same_size=head(MAIN, 20), proof=None)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=1, max_value=39).flatmap(
        lambda old: st.tuples(
            st.just(old),
            st.integers(min_value=old + 1, max_value=40),
            st.integers(min_value=0, max_value=40),
        )
    )
)
def test_any_fork_before_the_stored_head_is_caught_and_any_after_it_is_not(
    sizes: tuple[int, int, int],
) -> None:
    old, new, fork_at = sizes
    other = tree(new, fork_at=fork_at)
    stored = head(MAIN, old)
    decision = decide(head(other, new), newest=stored, same_size=None, proof=proof(other, old, new))
    # Forked at or after the stored head's size, the other history still extends it.
    expected = Verdict.NEWER if fork_at >= old else Verdict.SPLIT_VIEW
    assert decision.verdict is expected


# --- the proof's framing --------------------------------------------------------------------------


def test_the_proof_header_round_trips() -> None:
    offered = proof(MAIN, 13, 37)
    value = offered.header_value()
    assert value.startswith("13 37 ") and value.count(",") == len(offered.path) - 1
    assert ConsistencyProof.from_header(value) == offered
    assert ConsistencyProof.from_header("0 5") == ConsistencyProof(0, 5, ())
    assert ConsistencyProof.from_json(offered.as_json()) == offered


HASH = base64.b64encode(b"\x07" * 32).decode()


@pytest.mark.parametrize(
    "value",
    [
        "",
        "13",
        "13 x " + HASH,
        "-1 37 " + HASH,
        "13 37 " + HASH + ",",
        "13 37 " + base64.b64encode(b"short").decode(),
        "13 37 " + HASH + " extra",
        "13 37 " + ",".join([HASH] * 65),
        "1٣ 37 " + HASH,  # a non-ASCII digit
    ],
)
def test_a_malformed_proof_header_is_refused(value: str) -> None:
    with pytest.raises(LogProofInvalid):
        ConsistencyProof.from_header(value)


# --- receipts carrying a head ---------------------------------------------------------------------


def receipt(**changes: Any) -> bytes:
    args: dict[str, Any] = {
        "message_id": MID,
        "sender": "AR",
        "recipient": "BR",
        "envelope_digest": envelope_digest(b"an envelope"),
        "status": DELIVERED,
        "code": None,
        "at": NOW,
    }
    args.update(changes)
    return sign_receipt(NET.nodes["BR"].signing, **args)


def test_a_receipt_returns_its_head_verified() -> None:
    shown = head(MAIN, 25)
    verified = verify_receipt(receipt(head=shown.raw), NET.directory, expect_signer="BR")
    assert verified.head == shown
    rejection = verify_receipt(
        receipt(head=shown.raw, status=REJECTED, code="envelope_stale"), NET.directory
    )
    assert rejection.head == shown


def test_a_receipt_without_a_head_is_as_before() -> None:
    plain = receipt()
    assert verify_receipt(plain, NET.directory).head is None
    assert receipt(head=None) == plain  # no "head" key at all: the same bytes as before


@pytest.mark.parametrize(
    "bad_head",
    [
        sign_checkpoint(NET.nodes["US"].signing, node="US", size=3, root=MAIN.root(3), at=NOW),
        sign_checkpoint(NET.nodes["US"].signing, node="BR", size=3, root=MAIN.root(3), at=NOW),
        sign_checkpoint(fixed_signing_key("x"), node="BR", size=3, root=MAIN.root(3), at=NOW),
        sign_checkpoint(
            NET.nodes["BR"].signing, node="BR", size=3, root=MAIN.root(3), at=NOW + 400 * DAY
        ),
        b"not a checkpoint",
        b"\x00" * 2000,
    ],
    ids=["other-node", "signed-by-other", "unknown-key", "key-not-valid-then", "garbage", "big"],
)
def test_a_receipt_whose_head_does_not_verify_is_a_bad_receipt(bad_head: bytes) -> None:
    with pytest.raises(ReceiptError) as info:
        verify_receipt(receipt(head=bad_head), NET.directory)
    assert info.value.field == "receipt.head"


def test_a_forged_head_signature_makes_a_bad_receipt() -> None:
    raw = bytearray(head(MAIN, 25).raw)
    raw[-1] ^= 1
    with pytest.raises(ReceiptError):
        verify_receipt(receipt(head=bytes(raw)), NET.directory)


# --- the evidence file --------------------------------------------------------------------------


def document(view: SplitView) -> bytes:
    return split_view_document(view, witness="AR", detected_at=NOW)


def split(
    first: Checkpoint, second: Checkpoint, offered: ConsistencyProof | None = None
) -> SplitView:
    decision = decide(second, newest=first, same_size=None, proof=offered)
    assert decision.split_view is not None
    return decision.split_view


def edit(data: bytes, **changes: Any) -> bytes:
    doc = json.loads(data)
    doc.update(changes)
    return json.dumps(doc).encode()


def test_a_split_view_file_verifies_offline() -> None:
    same = split(head(MAIN, 20), head(FORK, 20))
    failed = split(head(MAIN, 20), head(FORK, 30), proof(FORK, 20, 30))
    for view in (same, failed):
        checked = verify_split_view(document(view), NET.directory)
        assert (checked.node, checked.reason, checked.proof) == (view.node, view.reason, view.proof)
        assert {checked.first.raw, checked.second.raw} == {view.first.raw, view.second.raw}
    doc = json.loads(document(failed))
    assert doc["format"] == "mla-node-split-view/1" and doc["witness"] == "AR"
    assert doc["reason"] == "consistency_proof_failed" and doc["proof"]["old_size"] == 20
    # The order of the two checkpoints does not matter.
    swapped = edit(document(same), checkpoints=json.loads(document(same))["checkpoints"][::-1])
    assert verify_split_view(swapped, NET.directory).reason is SplitReason.SAME_SIZE


def test_a_file_with_a_forged_checkpoint_is_refused() -> None:
    data = document(split(head(MAIN, 20), head(FORK, 20)))
    raw = bytearray(base64.b64decode(json.loads(data)["checkpoints"][1]))
    raw[-1] ^= 1
    first = json.loads(data)["checkpoints"][0]
    forged = edit(data, checkpoints=[first, base64.b64encode(bytes(raw)).decode()])
    with pytest.raises(CheckpointInvalid, match="checkpoint 2"):
        verify_split_view(forged, NET.directory)


def test_a_file_blaming_the_wrong_node_is_refused() -> None:
    data = document(split(head(MAIN, 20), head(FORK, 20)))
    with pytest.raises(CheckpointInvalid):
        verify_split_view(edit(data, node="US"), NET.directory)
    # US's own heads, each signed by US, cannot be passed off as BR's either.
    us = document(split(head(MAIN, 20, node="US"), head(FORK, 20, node="US")))
    with pytest.raises(CheckpointInvalid):
        verify_split_view(edit(us, node="BR"), NET.directory)


def test_a_head_signed_with_a_key_not_valid_at_its_time_is_refused() -> None:
    late = sign_checkpoint(
        NET.nodes["BR"].signing, node="BR", size=20, root=FORK.root(20), at=NOW + 400 * DAY
    )
    data = document(split(head(MAIN, 20), head(FORK, 20)))
    first = json.loads(data)["checkpoints"][0]
    with pytest.raises(CheckpointInvalid):
        verify_split_view(
            edit(data, checkpoints=[first, base64.b64encode(late).decode()]), NET.directory
        )


def test_a_file_that_shows_no_split_view_is_refused() -> None:
    data = document(split(head(MAIN, 20), head(FORK, 30), proof(FORK, 20, 30)))
    one_history = [base64.b64encode(head(MAIN, n).raw).decode() for n in (20, 30)]
    # Consistent heads with a valid proof: one history.
    with pytest.raises(LogProofInvalid, match="one history"):
        verify_split_view(
            edit(data, checkpoints=one_history, proof=proof(MAIN, 20, 30).as_json()),
            NET.directory,
        )
    # The same head twice.
    twice = [one_history[0], one_history[0]]
    with pytest.raises(LogProofInvalid, match="same head"):
        verify_split_view(
            edit(data, checkpoints=twice, reason="same_size_different_root"), NET.directory
        )
    # Heads of two sizes and no proof, or a proof for other sizes: nothing is shown.
    with pytest.raises(LogProofInvalid, match="no proof"):
        verify_split_view(edit(data, proof=None), NET.directory)
    with pytest.raises(LogProofInvalid, match="no proof"):
        verify_split_view(edit(data, proof=proof(FORK, 10, 30).as_json()), NET.directory)
    # A head of size 0 conflicts with nothing.
    empty = [base64.b64encode(head(MAIN, 0).raw).decode(), one_history[1]]
    with pytest.raises(LogProofInvalid, match="empty"):
        verify_split_view(
            edit(data, checkpoints=empty, proof={"old_size": 0, "new_size": 30, "path": [HASH]}),
            NET.directory,
        )
    # A reason the checkpoints do not show.
    with pytest.raises(LogProofInvalid, match="says"):
        verify_split_view(edit(data, reason="same_size_different_root"), NET.directory)


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        json.dumps({"format": "something-else"}).encode(),
        json.dumps({"format": "mla-node-split-view/1", "node": "BR"}).encode(),
        json.dumps(
            {
                "format": "mla-node-split-view/1",
                "node": "BR",
                "reason": "consistency_proof_failed",
                "checkpoints": ["!!", "!!"],
            }
        ).encode(),
        json.dumps(
            {
                "format": "mla-node-split-view/1",
                "node": "BR",
                "reason": "because",
                "checkpoints": ["", ""],
            }
        ).encode(),
        b" " * (65 << 10),
    ],
)
def test_a_file_that_is_not_a_split_view_file_is_refused(data: bytes) -> None:
    with pytest.raises(ClientError):
        verify_split_view(data, NET.directory)


def test_a_malformed_proof_in_a_file_is_refused() -> None:
    data = document(split(head(MAIN, 20), head(FORK, 30), proof(FORK, 20, 30)))
    with pytest.raises(ClientError, match="proof"):
        verify_split_view(edit(data, proof={"old_size": 20, "new_size": 30}), NET.directory)
    with pytest.raises(ClientError, match="proof"):
        verify_split_view(
            edit(data, proof={"old_size": 20, "new_size": 30, "path": ["short"]}), NET.directory
        )
