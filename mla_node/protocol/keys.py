"""Key material of the protocol: signing keys, encryption suites, key ids.

Public keys travel as raw bytes in the signed directory; private keys as raw bytes in 0600 files.
Generating keys needs randomness, so the ``generate_*`` functions are the only impure ones here and
are called by the CLI, never by the protocol's open/verify paths.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from nacl.bindings import crypto_sign_BYTES, crypto_sign_open, crypto_sign_PUBLICKEYBYTES
from nacl.exceptions import CryptoError

SIGNING_ALG = "ed25519"


class Suite(StrEnum):
    """HPKE suites, strongest first. The suite travels in the signed header, so it is not
    downgradable in transit; each node lists in the directory the suites it accepts."""

    MLKEM768_X25519 = "MLKEM768X25519-HKDFSHA256-AES256GCM"
    X25519 = "X25519-HKDFSHA256-AES256GCM"


SUITE_STRENGTH: dict[Suite, int] = {Suite.MLKEM768_X25519: 2, Suite.X25519: 1}

_HPKE_SUITES: dict[Suite, hpke.Suite] = {
    Suite.MLKEM768_X25519: hpke.Suite(
        hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM
    ),
    Suite.X25519: hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM),
}

_MLKEM768_PUBLIC_LEN = 1184
_MLKEM_SEED_LEN = 64
_X25519_LEN = 32


def key_id(alg: str, public: bytes) -> str:
    """A key id names one public key of one algorithm: 96 bits of SHA-256 over both."""
    return hashlib.sha256(b"mla-node/v1/kid\x00" + alg.encode() + b"\x00" + public).hexdigest()[:24]


def choose_suite(ours: list[str], theirs: list[str]) -> Suite | None:
    """The strongest suite both sides accept, or None when they share none."""
    shared = [Suite(s) for s in ours if s in theirs and s in Suite.__members__.values()]
    return max(shared, key=SUITE_STRENGTH.__getitem__, default=None)


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private: Ed25519PrivateKey

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> SigningKey:
        private = Ed25519PrivateKey.from_private_bytes(raw)
        return cls(key_id(SIGNING_ALG, public_bytes_ed25519(private.public_key())), private)

    @property
    def public(self) -> bytes:
        return public_bytes_ed25519(self.private.public_key())

    def private_bytes(self) -> bytes:
        return self.private.private_bytes_raw()

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)


def public_bytes_ed25519(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes_raw()


def verify_ed25519(public: bytes, signature: bytes, message: bytes) -> bool:
    """Ed25519 through libsodium, which verifies about twice as fast as OpenSSL on this CPU: a
    whole-log audit spends most of its time here. libsodium is also stricter (it refuses
    small-order and non-canonical public keys and R points, which OpenSSL accepts), so the
    difference can only turn an accepted signature into a refused one. Signing stays with
    ``cryptography``: the signatures are the same bytes either way."""
    # PyNaCl hands the key pointer to libsodium unchecked, which reads 32 bytes from it.
    if len(public) != crypto_sign_PUBLICKEYBYTES or len(signature) != crypto_sign_BYTES:
        return False
    try:
        crypto_sign_open(signature + message, public)
    except CryptoError:
        return False
    return True


@dataclass(frozen=True)
class EncryptionKey:
    """A node's private HPKE key for one suite, held as raw bytes and parsed on use."""

    suite: Suite
    private_raw: bytes

    @property
    def public(self) -> bytes:
        if self.suite is Suite.MLKEM768_X25519:
            seed, x_raw = self.private_raw[:_MLKEM_SEED_LEN], self.private_raw[_MLKEM_SEED_LEN:]
            ml = mlkem.MLKEM768PrivateKey.from_seed_bytes(seed).public_key().public_bytes_raw()
            xp = x25519.X25519PrivateKey.from_private_bytes(x_raw).public_key().public_bytes_raw()
            return ml + xp
        return (
            x25519.X25519PrivateKey.from_private_bytes(self.private_raw)
            .public_key()
            .public_bytes_raw()
        )

    @property
    def kid(self) -> str:
        return key_id(self.suite.value, self.public)

    def decrypt(self, ciphertext: bytes, info: bytes) -> bytes:
        """Raises whatever cryptography raises; the caller collapses it into one opaque error."""
        suite = _HPKE_SUITES[self.suite]
        if self.suite is Suite.MLKEM768_X25519:
            hybrid = hpke.MLKEM768X25519PrivateKey(
                mlkem.MLKEM768PrivateKey.from_seed_bytes(self.private_raw[:_MLKEM_SEED_LEN]),
                x25519.X25519PrivateKey.from_private_bytes(self.private_raw[_MLKEM_SEED_LEN:]),
            )
            return suite.decrypt(ciphertext, hybrid, info=info)
        return suite.decrypt(
            ciphertext, x25519.X25519PrivateKey.from_private_bytes(self.private_raw), info=info
        )


def hpke_seal(suite: Suite, recipient_public: bytes, plaintext: bytes, info: bytes) -> bytes:
    """HPKE base-mode single-shot encryption: ``enc || ciphertext``.

    The ephemeral key is drawn inside cryptography's HPKE (it offers no way to pass it in); that is
    the one source of randomness on the sealing path and the reason sealed vectors are not
    byte-reproducible, while opening them is.
    """
    hpke_suite = _HPKE_SUITES[suite]
    if suite is Suite.MLKEM768_X25519:
        if len(recipient_public) != _MLKEM768_PUBLIC_LEN + _X25519_LEN:
            raise ValueError("hybrid public key has the wrong length")
        public = hpke.MLKEM768X25519PublicKey(
            mlkem.MLKEM768PublicKey.from_public_bytes(recipient_public[:_MLKEM768_PUBLIC_LEN]),
            x25519.X25519PublicKey.from_public_bytes(recipient_public[_MLKEM768_PUBLIC_LEN:]),
        )
        return hpke_suite.encrypt(plaintext, public, info=info)
    return hpke_suite.encrypt(
        plaintext, x25519.X25519PublicKey.from_public_bytes(recipient_public), info=info
    )


def generate_signing_key() -> SigningKey:
    private = Ed25519PrivateKey.generate()
    return SigningKey.from_private_bytes(private.private_bytes_raw())


def generate_encryption_key(suite: Suite) -> EncryptionKey:
    x_raw = x25519.X25519PrivateKey.generate().private_bytes_raw()
    if suite is Suite.MLKEM768_X25519:
        return EncryptionKey(suite, mlkem.MLKEM768PrivateKey.generate().private_bytes_raw() + x_raw)
    return EncryptionKey(suite, x_raw)
