"""What the protocol keeps between calls to save work: parsed HPKE keys, libsodium's signing key,
and checkpoint signatures already verified. Each must give exactly what the uncached path gives,
and a checkpoint whose signature was verified once must still meet every other check."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mla_node.errors import CheckpointInvalid, ReceiptError
from mla_node.protocol import signed
from mla_node.protocol.checkpoint import sign_checkpoint, verify_checkpoint
from mla_node.protocol.keys import EncryptionKey, Suite, hpke_seal, verify_ed25519
from mla_node.protocol.receipts import DELIVERED, sign_receipt, verify_receipt
from tests.factory import (
    HOUR,
    NOW,
    TestNetwork,
    fixed_encryption_key,
    fixed_signing_key,
    make_network,
)

# Both sides of the size at which SigningKey.sign changes library, and the extremes.
MESSAGE_SIZES = (0, 1, 64, 1000, 4096, 8191, 8192, 8193, 20_000, 1 << 20)


@pytest.fixture
def net() -> TestNetwork:
    return make_network(now=NOW)


@pytest.fixture
def ed25519_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The public keys ``open_signed`` verifies under, in order, while still verifying."""
    calls: list[bytes] = []

    def counting(public: bytes, signature: bytes, message: bytes) -> bool:
        calls.append(public)
        return verify_ed25519(public, signature, message)

    monkeypatch.setattr(signed, "verify_ed25519", counting)
    return calls


def checkpoint(net: TestNetwork, label: str, *, at: int = NOW, node: str = "BR") -> bytes:
    """A checkpoint no other test signs, so what an earlier test cached does not count here."""
    root = hashlib.sha256(f"test_key_caches {label}".encode()).digest()
    return sign_checkpoint(net.nodes[node].signing, node=node, size=7, root=root, at=at)


# --- signing --------------------------------------------------------------------------------------


@pytest.mark.parametrize("label", ["a", "b", "c", "root", "AR/sign/0"])
@pytest.mark.parametrize("size", MESSAGE_SIZES)
def test_signatures_are_those_of_cryptography(label: str, size: int) -> None:
    key = fixed_signing_key(label)
    reference = Ed25519PrivateKey.from_private_bytes(key.private_bytes())
    message = hashlib.shake_256(f"{label} {size}".encode()).digest(size) if size else b""
    signature = key.sign(message)
    assert signature == reference.sign(message)
    assert key.sign(message) == signature  # the cached libsodium key gives the same again
    assert verify_ed25519(key.public, signature, message)


def test_public_key_is_the_private_keys() -> None:
    key = fixed_signing_key("public")
    assert key.public == key.private.public_key().public_bytes_raw()
    assert key.public is key.public


# --- encryption keys ------------------------------------------------------------------------------


@pytest.mark.parametrize("suite", list(Suite))
def test_encryption_key_derivations_match_a_fresh_key(suite: Suite) -> None:
    key = fixed_encryption_key("caches", suite)
    first = (key.public, key.kid)
    fresh = EncryptionKey(suite, key.private_raw)
    assert (fresh.public, fresh.kid) == first
    assert fresh == key and hash(fresh) == hash(key)  # caching adds no field


@pytest.mark.parametrize("suite", list(Suite))
def test_one_key_opens_many_seals(suite: Suite) -> None:
    key = fixed_encryption_key("open many", suite)
    for i in range(3):
        info = f"info {i}".encode()
        ciphertext = hpke_seal(suite, key.public, f"message {i}".encode(), info)
        assert key.decrypt(ciphertext, info) == f"message {i}".encode()
        with pytest.raises(InvalidTag):
            key.decrypt(ciphertext, info + b"!")
    other = fixed_encryption_key("someone else", suite)
    with pytest.raises(InvalidTag):
        other.decrypt(hpke_seal(suite, key.public, b"not for other", b""), b"")


def test_a_key_that_does_not_parse_fails_every_time() -> None:
    broken = EncryptionKey(Suite.MLKEM768_X25519, b"\x01" * 10)
    for _ in range(2):
        with pytest.raises(ValueError):
            broken.decrypt(b"ciphertext", b"")


def test_a_public_key_that_does_not_parse_fails_every_time() -> None:
    good = fixed_encryption_key("seal", Suite.MLKEM768_X25519).public
    for bad, suite in ((good[:-1], Suite.MLKEM768_X25519), (good[:31], Suite.X25519)):
        for _ in range(2):
            with pytest.raises(ValueError):
                hpke_seal(suite, bad, b"x", b"")


# --- checkpoint signatures ------------------------------------------------------------------------


def test_the_same_checkpoint_twice_verifies_once(
    net: TestNetwork, ed25519_calls: list[bytes]
) -> None:
    data = checkpoint(net, "twice")
    first = verify_checkpoint(data, net.directory, node="BR")
    second = verify_checkpoint(bytes(data), net.directory, node="BR")
    assert first == second
    assert (second.node, second.size, second.at, second.raw) == ("BR", 7, NOW, data)
    assert ed25519_calls.count(net.nodes["BR"].signing.public) == 1


def test_a_tampered_copy_is_refused_after_the_genuine_one_verified(
    net: TestNetwork, ed25519_calls: list[bytes]
) -> None:
    data = checkpoint(net, "tampered")
    verify_checkpoint(data, net.directory, node="BR")
    for i in range(len(data)):
        tampered = bytearray(data)
        tampered[i] ^= 0x01
        with pytest.raises(CheckpointInvalid):
            verify_checkpoint(bytes(tampered), net.directory, node="BR")
    # The genuine bytes still verify without a new check; a forged signature is checked again.
    calls = len(ed25519_calls)
    verify_checkpoint(data, net.directory, node="BR")
    assert len(ed25519_calls) == calls
    with pytest.raises(CheckpointInvalid):
        verify_checkpoint(data[:-1] + bytes([data[-1] ^ 1]), net.directory, node="BR")
    assert len(ed25519_calls) == calls + 1


def test_a_failed_signature_is_not_remembered(net: TestNetwork, ed25519_calls: list[bytes]) -> None:
    data = checkpoint(net, "failed")
    forged = data[:-1] + bytes([data[-1] ^ 1])
    for _ in range(2):
        with pytest.raises(CheckpointInvalid):
            verify_checkpoint(forged, net.directory, node="BR")
    assert ed25519_calls.count(net.nodes["BR"].signing.public) == 2


def test_a_revoked_key_is_refused_though_its_signature_was_remembered(
    net: TestNetwork, ed25519_calls: list[bytes]
) -> None:
    kid = net.nodes["BR"].signing.kid
    data = checkpoint(net, "revoked")
    assert verify_checkpoint(data, net.directory, node="BR").kid == kid
    net.resign_directory(revoked={kid: NOW - 1})
    with pytest.raises(CheckpointInvalid, match="revoked"):
        verify_checkpoint(data, net.directory, node="BR")
    # Refused by the directory, without a new check of the checkpoint (the other check is of
    # the new directory's signature, by the root key).
    assert ed25519_calls.count(net.nodes["BR"].signing.public) == 1


def test_a_key_out_of_its_window_is_refused_though_its_signature_was_remembered(
    net: TestNetwork,
) -> None:
    data = checkpoint(net, "window")
    verify_checkpoint(data, net.directory, node="BR")
    net.rotate_signing_key("BR", not_before=NOW - 2 * HOUR, old_not_after=NOW - HOUR)
    net.resign_directory()
    with pytest.raises(CheckpointInvalid, match="not_valid"):
        verify_checkpoint(data, net.directory, node="BR")


def test_a_remembered_signature_is_no_key_of_another_node_or_directory(net: TestNetwork) -> None:
    data = checkpoint(net, "other node")
    verify_checkpoint(data, net.directory, node="BR")
    with pytest.raises(CheckpointInvalid):
        verify_checkpoint(data, net.directory, node="AR")  # BR's key is not AR's
    without_br = make_network(("AR", "US"), now=NOW)
    with pytest.raises(CheckpointInvalid):
        verify_checkpoint(data, without_br.directory, node="BR")
    # A directory that no longer lists the key that signed at all.
    net.rotate_signing_key("BR", not_before=NOW - HOUR)
    net.nodes["BR"].keys.pop(0)  # BR/sign/0, make_network's first key
    net.resign_directory()
    with pytest.raises(CheckpointInvalid, match="unknown key"):
        verify_checkpoint(data, net.directory, node="BR")


def test_a_receipt_head_by_a_revoked_key_is_refused_though_remembered(net: TestNetwork) -> None:
    br = net.nodes["BR"].signing
    head = checkpoint(net, "receipt head")
    data = sign_receipt(
        br,
        message_id="01KDVDNA000000000000000001",
        sender="AR",
        recipient="BR",
        envelope_digest=hashlib.sha256(b"an envelope").digest(),
        status=DELIVERED,
        code=None,
        at=NOW - HOUR,
        head=head,
    )
    verified = verify_receipt(data, net.directory)
    assert verified.head is not None and verified.head.raw == head
    assert verify_receipt(data, net.directory) == verified
    # Revoked after the receipt but before the head's time: the receipt's own signature stays
    # good, the head's does not, and the whole receipt is refused.
    net.resign_directory(revoked={br.kid: NOW - 1})
    with pytest.raises(ReceiptError, match="receipt head"):
        verify_receipt(data, net.directory)
