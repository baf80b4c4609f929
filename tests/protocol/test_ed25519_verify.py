"""``verify_ed25519`` (libsodium) on good and hostile input: a bool, never an exception."""

from __future__ import annotations

import pytest

from mla_node.protocol.keys import verify_ed25519
from tests.factory import fixed_signing_key

KEY = fixed_signing_key("ed25519-test")
MESSAGE = b"the exact signed bytes"
SIGNATURE = KEY.sign(MESSAGE)
# The group order: S and S + L are the same scalar, but only S < L is a canonical signature.
L = 2**252 + 27742317777372353535851937790883648493
# The identity point: a small-order key. With R = identity and S = 0 the verification equation
# holds for every message; OpenSSL accepts that signature, libsodium refuses the key.
IDENTITY = b"\x01" + bytes(31)


def test_a_good_signature_verifies() -> None:
    assert verify_ed25519(KEY.public, SIGNATURE, MESSAGE)
    assert not verify_ed25519(KEY.public, SIGNATURE, MESSAGE + b"!")


@pytest.mark.parametrize(
    ("public", "signature"),
    [
        (KEY.public[:31], SIGNATURE),
        (KEY.public + b"\x00", SIGNATURE),
        (b"", SIGNATURE),
        (KEY.public, SIGNATURE[:63]),
        (KEY.public, SIGNATURE + b"\x00"),
        (KEY.public, b""),
        (b"\xff" * 32, SIGNATURE),  # not a point on the curve
        (IDENTITY, IDENTITY + bytes(32)),
        (
            KEY.public,
            SIGNATURE[:32] + (int.from_bytes(SIGNATURE[32:], "little") + L).to_bytes(32, "little"),
        ),
    ],
    ids=[
        "short key",
        "long key",
        "no key",
        "short signature",
        "long signature",
        "no signature",
        "key off the curve",
        "small-order key",
        "non-canonical S",
    ],
)
def test_bad_keys_and_signatures_are_refused(public: bytes, signature: bytes) -> None:
    assert verify_ed25519(public, signature, MESSAGE) is False
