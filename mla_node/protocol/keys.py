"""Key material of the protocol: signing keys, encryption suites, key ids.

Public keys travel as raw bytes in the signed directory; private keys as raw bytes in 0600 files.
Generating keys needs randomness, so the ``generate_*`` functions are the only impure ones here and
are called by the CLI, never by the protocol's open/verify paths.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from enum import StrEnum

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from nacl.bindings import (
    crypto_sign,
    crypto_sign_BYTES,
    crypto_sign_open,
    crypto_sign_PUBLICKEYBYTES,
    crypto_sign_seed_keypair,
)
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

# Below about 8 KiB libsodium signs faster than OpenSSL here (by ~40 % at 200 bytes, ~20 % at
# 4 KiB, even at 8 KiB); above it OpenSSL's faster SHA-512 wins (1.6× at 1 MiB). Receipts,
# checkpoints, evidence and small envelopes fall below, large envelopes above.
_SODIUM_SIGN_MAX = 8 << 10


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

    @functools.cached_property
    def public(self) -> bytes:
        return public_bytes_ed25519(self.private.public_key())

    @functools.cached_property
    def _sodium_secret(self) -> bytes:
        """libsodium's 64-byte secret key (seed || public), derived once per key."""
        _, secret = crypto_sign_seed_keypair(self.private.private_bytes_raw())
        return bytes(secret)

    def private_bytes(self) -> bytes:
        return self.private.private_bytes_raw()

    def sign(self, message: bytes) -> bytes:
        # Ed25519 is deterministic: both libraries give the same signature bytes, so the choice
        # between them is speed alone (see _SODIUM_SIGN_MAX).
        if len(message) <= _SODIUM_SIGN_MAX:
            signed: bytes = crypto_sign(message, self._sodium_secret)
            return signed[:crypto_sign_BYTES]
        return self.private.sign(message)


def public_bytes_ed25519(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes_raw()


def verify_ed25519(public: bytes, signature: bytes, message: bytes) -> bool:
    """Ed25519 through libsodium, which verifies about twice as fast as OpenSSL on this CPU: a
    whole-log audit spends most of its time here. libsodium is also stricter (it refuses
    small-order and non-canonical public keys and R points, which OpenSSL accepts), so the
    difference can only turn an accepted signature into a refused one. Signing picks whichever
    library is faster for the message's size: the signatures are the same bytes either way."""
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
    """A node's private HPKE key for one suite. ``private_raw`` is what is stored and compared;
    the parsed key and what derives from it are computed on first use and kept, because parsing
    (ML-KEM-768 expands its seed) costs more than the HPKE decryption it serves."""

    suite: Suite
    private_raw: bytes

    @functools.cached_property
    def _private(self) -> hpke.MLKEM768X25519PrivateKey | x25519.X25519PrivateKey:
        if self.suite is Suite.MLKEM768_X25519:
            return hpke.MLKEM768X25519PrivateKey(
                mlkem.MLKEM768PrivateKey.from_seed_bytes(self.private_raw[:_MLKEM_SEED_LEN]),
                x25519.X25519PrivateKey.from_private_bytes(self.private_raw[_MLKEM_SEED_LEN:]),
            )
        return x25519.X25519PrivateKey.from_private_bytes(self.private_raw)

    @functools.cached_property
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

    @functools.cached_property
    def kid(self) -> str:
        return key_id(self.suite.value, self.public)

    def decrypt(self, ciphertext: bytes, info: bytes) -> bytes:
        """Raises whatever cryptography raises; the caller collapses it into one opaque error."""
        return _HPKE_SUITES[self.suite].decrypt(ciphertext, self._private, info=info)


def hpke_seal(suite: Suite, recipient_public: bytes, plaintext: bytes, info: bytes) -> bytes:
    """HPKE base-mode single-shot encryption: ``enc || ciphertext``.

    The ephemeral key is drawn inside cryptography's HPKE (it offers no way to pass it in); that is
    the one source of randomness on the sealing path and the reason sealed vectors are not
    byte-reproducible, while opening them is.
    """
    public = _recipient_key(suite, recipient_public)
    return _HPKE_SUITES[suite].encrypt(plaintext, public, info=info)


@functools.lru_cache(maxsize=256)
def _recipient_key(
    suite: Suite, public: bytes
) -> hpke.MLKEM768X25519PublicKey | x25519.X25519PublicKey:
    """The parsed public key, kept: parsing an ML-KEM-768 key costs a fifth of a seal, and a node
    seals to at most ~35 peers × 2 suites. A key that does not parse raises and is not kept."""
    if suite is Suite.MLKEM768_X25519:
        if len(public) != _MLKEM768_PUBLIC_LEN + _X25519_LEN:
            raise ValueError("hybrid public key has the wrong length")
        return hpke.MLKEM768X25519PublicKey(
            mlkem.MLKEM768PublicKey.from_public_bytes(public[:_MLKEM768_PUBLIC_LEN]),
            x25519.X25519PublicKey.from_public_bytes(public[_MLKEM768_PUBLIC_LEN:]),
        )
    return x25519.X25519PublicKey.from_public_bytes(public)


def generate_signing_key() -> SigningKey:
    private = Ed25519PrivateKey.generate()
    return SigningKey.from_private_bytes(private.private_bytes_raw())


def generate_encryption_key(suite: Suite) -> EncryptionKey:
    x_raw = x25519.X25519PrivateKey.generate().private_bytes_raw()
    if suite is Suite.MLKEM768_X25519:
        return EncryptionKey(suite, mlkem.MLKEM768PrivateKey.generate().private_bytes_raw() + x_raw)
    return EncryptionKey(suite, x_raw)
