"""Signed receipts and evidence records: round trips, forgeries, and verification after rotation
and revocation (old evidence stays verifiable; what a revoked key signed later does not)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from mla_node.errors import EvidenceInvalid, ReceiptError
from mla_node.protocol import codec
from mla_node.protocol.envelope import envelope_digest
from mla_node.protocol.evidence import EVENTS, Event, sign_evidence, verify_evidence
from mla_node.protocol.receipts import DELIVERED, REJECTED, sign_receipt, verify_receipt
from mla_node.protocol.signed import peek_kid, sign_object
from tests.factory import DAY, HOUR, NOW, TestNetwork, fixed_signing_key, make_network

DIGEST = envelope_digest(b"an envelope")
MID = "01KDVDNA000000000000000001"


@pytest.fixture
def net() -> TestNetwork:
    return make_network(now=NOW)


def receipt(net: TestNetwork, signer: str = "BR", **changes: Any) -> bytes:
    args: dict[str, Any] = {
        "message_id": MID,
        "sender": "AR",
        "recipient": "BR",
        "envelope_digest": DIGEST,
        "status": DELIVERED,
        "code": None,
        "at": NOW,
    }
    key = changes.pop("key", None) or net.nodes[signer].signing
    args.update(changes)
    return sign_receipt(key, **args)


def bad_receipt(action: Callable[[], object]) -> ReceiptError:
    with pytest.raises(ReceiptError) as info:
        action()
    assert info.value.code == "receipt_invalid"
    return info.value


def bad_evidence(action: Callable[[], object]) -> EvidenceInvalid:
    with pytest.raises(EvidenceInvalid) as info:
        action()
    assert info.value.code == "evidence_invalid"
    return info.value


# --- receipts -------------------------------------------------------------------------------------


def test_receipt_round_trip(net: TestNetwork) -> None:
    data = receipt(net)
    r = verify_receipt(
        data,
        net.directory,
        expect_message_id=MID,
        expect_envelope_digest=DIGEST,
        expect_signer="BR",
    )
    assert (r.message_id, r.sender, r.recipient, r.status, r.code, r.at) == (
        MID,
        "AR",
        "BR",
        DELIVERED,
        None,
        NOW,
    )
    assert r.envelope_digest == DIGEST
    assert r.kid == net.nodes["BR"].signing.kid == peek_kid(data, ReceiptError)
    assert r.raw == data
    assert r.digest == envelope_digest(data)


def test_rejection_receipt_carries_its_code(net: TestNetwork) -> None:
    r = verify_receipt(receipt(net, status=REJECTED, code="envelope_stale"), net.directory)
    assert (r.status, r.code) == (REJECTED, "envelope_stale")


def test_receipt_for_a_real_envelope(net: TestNetwork) -> None:
    opened = net.open("BR", net.seal("AR", "BR", {"x": 1}))
    data = receipt(net, message_id=opened.header.message_id, envelope_digest=opened.digest)
    r = verify_receipt(
        data,
        net.directory,
        expect_message_id=opened.header.message_id,
        expect_envelope_digest=opened.digest,
    )
    assert r.envelope_digest == opened.digest


def test_unknown_status_is_not_signed(net: TestNetwork) -> None:
    with pytest.raises(ValueError, match="status"):
        receipt(net, status="maybe")


def test_receipt_wrong_signer(net: TestNetwork) -> None:
    """US signs a receipt claiming BR received the envelope."""
    bad_receipt(lambda: verify_receipt(receipt(net, signer="US"), net.directory))
    # and the honest receipt of US is not BR's
    data = receipt(net, signer="US", recipient="US")
    assert verify_receipt(data, net.directory).recipient == "US"
    bad_receipt(lambda: verify_receipt(data, net.directory, expect_signer="BR"))


def test_receipt_signed_by_key_outside_directory(net: TestNetwork) -> None:
    bad_receipt(lambda: verify_receipt(receipt(net, key=fixed_signing_key("x")), net.directory))


def test_receipt_signed_by_encryption_kid(net: TestNetwork) -> None:
    """Only sign keys sign: a body signed with a kid of an encrypt key is refused at lookup."""
    body: dict[str, Any] = {"v": 1, "kind": "receipt"}
    key = net.nodes["BR"].signing
    body_bytes = codec.pack(body)
    enc_entry = net.directory.nodes["BR"].keys[1]
    assert enc_entry.use == "encrypt"
    enc_kid = enc_entry.kid
    signature = key.sign(codec.pae(codec.DOMAIN_RECEIPT, enc_kid.encode(), body_bytes))
    data = codec.pack([1, enc_kid, body_bytes, signature])
    bad_receipt(lambda: verify_receipt(data, net.directory))


def test_receipt_wrong_digest_or_message(net: TestNetwork) -> None:
    data = receipt(net)
    bad_receipt(
        lambda: verify_receipt(data, net.directory, expect_envelope_digest=envelope_digest(b"x"))
    )
    bad_receipt(
        lambda: verify_receipt(data, net.directory, expect_message_id="01KDVDNA000000000000000002")
    )


def test_receipt_tampered_at_every_byte(net: TestNetwork) -> None:
    data = receipt(net)
    for i in range(len(data)):
        tampered = bytearray(data)
        tampered[i] ^= 0x01
        bad_receipt(partial(verify_receipt, bytes(tampered), net.directory))


def test_receipt_truncated(net: TestNetwork) -> None:
    data = receipt(net)
    for cut in range(len(data)):
        bad_receipt(partial(verify_receipt, data[:cut], net.directory))


@pytest.mark.parametrize(
    "change",
    [
        {"v": 2},
        {"kind": "evidence"},
        {"envelope": b"short"},
        {"status": "maybe"},
        {"at": True},
        {"from": "ARG"},
        {"code": 5},
    ],
)
def test_well_signed_malformed_receipt(net: TestNetwork, change: dict[str, Any]) -> None:
    body: dict[str, Any] = {
        "v": 1,
        "kind": "receipt",
        "mid": MID,
        "from": "AR",
        "to": "BR",
        "envelope": DIGEST,
        "status": DELIVERED,
        "code": None,
        "at": NOW,
        **change,
    }
    data = sign_object(codec.DOMAIN_RECEIPT, net.nodes["BR"].signing, body)
    bad_receipt(lambda: verify_receipt(data, net.directory))


def test_receipt_before_revocation_verifies_after_does_not(net: TestNetwork) -> None:
    kid = net.nodes["BR"].signing.kid
    before = receipt(net, at=NOW - HOUR)
    after = receipt(net, at=NOW)
    net.resign_directory(revoked={kid: NOW - 1})
    assert verify_receipt(before, net.directory).at == NOW - HOUR
    bad_receipt(lambda: verify_receipt(after, net.directory))


def test_receipt_outside_key_window(net: TestNetwork) -> None:
    bad_receipt(lambda: verify_receipt(receipt(net, at=NOW - 2 * DAY), net.directory))
    bad_receipt(lambda: verify_receipt(receipt(net, at=NOW + 400 * DAY), net.directory))


def test_receipt_by_rotated_out_key_still_verifies(net: TestNetwork) -> None:
    old = net.nodes["BR"].signing
    data = receipt(net, at=NOW - HOUR)
    net.rotate_signing_key("BR", not_before=NOW - 2 * HOUR, old_not_after=NOW - HOUR)
    net.resign_directory()
    assert verify_receipt(data, net.directory).kid == old.kid
    bad_receipt(lambda: verify_receipt(receipt(net, key=old, at=NOW), net.directory))
    assert verify_receipt(receipt(net, at=NOW), net.directory).kid != old.kid


def test_evidence_is_not_a_receipt(net: TestNetwork) -> None:
    """Same key, same container, other domain: a signature never crosses kinds."""
    data = sign_evidence(
        net.nodes["BR"].signing,
        event=Event.DELIVERED,
        node="BR",
        message_id=MID,
        case_id="c",
        at=NOW,
    )
    bad_receipt(lambda: verify_receipt(data, net.directory))


# --- evidence -------------------------------------------------------------------------------------


def evidence(net: TestNetwork, node: str = "AR", **changes: Any) -> bytes:
    args: dict[str, Any] = {
        "event": Event.SUBMITTED,
        "node": node,
        "message_id": MID,
        "case_id": "AR-2026-0001",
        "at": NOW,
    }
    key = changes.pop("key", None) or net.nodes[node].signing
    args.update(changes)
    return sign_evidence(key, **args)


def test_evidence_round_trip_minimal(net: TestNetwork) -> None:
    data = evidence(net)
    e = verify_evidence(data, net.directory, node="AR")
    assert (e.event, e.node, e.message_id, e.case_id, e.at) == (
        Event.SUBMITTED,
        "AR",
        MID,
        "AR-2026-0001",
        NOW,
    )
    assert (e.envelope_digest, e.peer, e.detail, e.receipt_digest) == (None, None, None, None)
    assert e.as_json()["sha256"] == envelope_digest(data).hex()


def test_evidence_round_trip_full(net: TestNetwork) -> None:
    r = receipt(net)
    data = evidence(
        net,
        event=Event.DELIVERED,
        envelope_digest=DIGEST,
        peer="BR",
        detail="ok",
        receipt_digest=envelope_digest(r),
    )
    e = verify_evidence(data, net.directory, node="AR")
    assert e.envelope_digest == DIGEST
    assert e.receipt_digest == envelope_digest(r)
    assert (e.peer, e.detail) == ("BR", "ok")
    j = e.as_json()
    assert j["envelope_sha256"] == DIGEST.hex()
    assert j["kid"] == net.nodes["AR"].signing.kid


@pytest.mark.parametrize("event", sorted(EVENTS))
def test_every_event(net: TestNetwork, event: str) -> None:
    assert verify_evidence(evidence(net, event=event), net.directory, node="AR").event == event


def test_unknown_event_is_not_signed(net: TestNetwork) -> None:
    with pytest.raises(ValueError, match="event"):
        evidence(net, event="lost")


def test_evidence_of_another_node(net: TestNetwork) -> None:
    data = evidence(net)
    bad_evidence(lambda: verify_evidence(data, net.directory, node="BR"))
    bad_evidence(lambda: verify_evidence(data, net.directory, node="ZZ"))
    # signed by BR's key but naming AR as the observer
    forged = evidence(net, key=net.nodes["BR"].signing)
    bad_evidence(lambda: verify_evidence(forged, net.directory, node="AR"))
    # signed by BR, honestly naming BR, presented as AR's
    bad_evidence(lambda: verify_evidence(evidence(net, "BR"), net.directory, node="AR"))


def test_evidence_tampered_at_every_byte(net: TestNetwork) -> None:
    data = evidence(net, envelope_digest=DIGEST)
    for i in range(len(data)):
        tampered = bytearray(data)
        tampered[i] ^= 0x80
        bad_evidence(partial(verify_evidence, bytes(tampered), net.directory, node="AR"))


def test_evidence_historical_keys(net: TestNetwork) -> None:
    kid = net.nodes["AR"].signing.kid
    before = evidence(net, at=NOW - HOUR)
    after = evidence(net, at=NOW)
    net.resign_directory(revoked={kid: NOW - 1})
    assert verify_evidence(before, net.directory, node="AR").at == NOW - HOUR
    bad_evidence(lambda: verify_evidence(after, net.directory, node="AR"))
    bad_evidence(lambda: verify_evidence(evidence(net, at=NOW - 2 * DAY), net.directory, node="AR"))


@pytest.mark.parametrize(
    "change",
    [{"v": 2}, {"kind": "receipt"}, {"envelope": b"short"}, {"receipt": "text"}, {"at": None}],
)
def test_well_signed_malformed_evidence(net: TestNetwork, change: dict[str, Any]) -> None:
    body: dict[str, Any] = {
        "v": 1,
        "kind": "evidence",
        "event": Event.SUBMITTED,
        "node": "AR",
        "mid": MID,
        "case": "c",
        "envelope": None,
        "peer": None,
        "at": NOW,
        "detail": None,
        "receipt": None,
        **change,
    }
    data = sign_object(codec.DOMAIN_EVIDENCE, net.nodes["AR"].signing, body)
    bad_evidence(lambda: verify_evidence(data, net.directory, node="AR"))


def test_receipt_is_not_evidence(net: TestNetwork) -> None:
    bad_evidence(
        lambda: verify_evidence(receipt(net, signer="AR", recipient="AR"), net.directory, node="AR")
    )
