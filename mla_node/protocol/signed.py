"""The signed container shared by receipts, evidence records and the directory.

Wire form: msgpack array ``[1, kid, body, signature]`` where ``body`` is a ``bin`` holding the
msgpack map of the object and ``signature`` is Ed25519 over ``pae(domain, kid, body)``.
Verifying is the only way to a body anything is decided on: ``open_signed`` decodes the body only
after the signature verified against a key the caller's lookup returned. ``peek_signed`` decodes
without verifying, for showing a reader what an object claims and nothing else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mla_node.errors import MlaError
from mla_node.protocol import codec
from mla_node.protocol.keys import SigningKey, verify_ed25519

CONTAINER_FORMAT = 1
MAX_SIGNED_OBJECT = 4 << 20  # the directory of 35 states with hybrid keys is ~100 KiB


@dataclass(frozen=True)
class SignedObject:
    kid: str
    body: codec.Fields
    raw: bytes

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.raw).digest()


def sign_object(domain: bytes, key: SigningKey, body: dict[str, Any]) -> bytes:
    body_bytes = codec.pack(body)
    signature = key.sign(codec.pae(domain, key.kid.encode(), body_bytes))
    return codec.pack([CONTAINER_FORMAT, key.kid, body_bytes, signature])


def open_signed(
    domain: bytes,
    data: bytes,
    public_key_for: Callable[[str], bytes],
    error: type[MlaError],
    where: str,
    max_bytes: int = MAX_SIGNED_OBJECT,
) -> SignedObject:
    """Verify and decode. ``public_key_for(kid)`` raises when the kid is not acceptable."""
    kid, body_bytes, signature = _container(data, error, where, max_bytes)
    public = public_key_for(kid)
    if not verify_ed25519(public, signature, codec.pae(domain, kid.encode(), body_bytes)):
        raise error(f"{where}: signature does not verify", field=f"{where}.signature")
    return _decoded(kid, body_bytes, data, error, where, max_bytes)


def peek_signed(
    data: bytes, error: type[MlaError], where: str, max_bytes: int = MAX_SIGNED_OBJECT
) -> SignedObject:
    """The object as it says it is, its signature NOT checked: only to show a reader what it
    claims (e.g. a log as CSV), never to decide anything."""
    kid, body_bytes, _ = _container(data, error, where, max_bytes)
    return _decoded(kid, body_bytes, data, error, where, max_bytes)


def _container(
    data: bytes, error: type[MlaError], where: str, max_bytes: int
) -> tuple[str, bytes, bytes]:
    outer = codec.expect_array(
        codec.unpack(data, error=error, max_bytes=max_bytes, max_depth=2), 4, error, where
    )
    fmt, kid, body_bytes, signature = outer
    # Exactly the integer 1: 1.0 (a float64) equals it too, and would re-encode as itself, so
    # the canonical check below would take the same container under a second digest.
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt != CONTAINER_FORMAT:
        raise error(f"{where}: unsupported container format {fmt!r}")
    if (
        not isinstance(kid, str)
        or not isinstance(body_bytes, bytes)
        or not isinstance(signature, bytes)
    ):
        raise error(f"{where}: container fields have the wrong types")
    if codec.pack(outer) != data:
        # The container itself is not signed: another encoding of the same members (a longer
        # integer or length prefix) would verify too, under another digest. Only ours is taken.
        raise error(f"{where}: not in its canonical encoding")
    return kid, body_bytes, signature


def _decoded(
    kid: str, body_bytes: bytes, data: bytes, error: type[MlaError], where: str, max_bytes: int
) -> SignedObject:
    body = codec.unpack(body_bytes, error=error, max_bytes=max_bytes)
    return SignedObject(kid, codec.Fields(body, error, where), data)


def peek_kid(data: bytes, error: type[MlaError], max_bytes: int = MAX_SIGNED_OBJECT) -> str:
    """The signer's key id, unverified: only to decide which key to verify with."""
    outer = codec.expect_array(
        codec.unpack(data, error=error, max_bytes=max_bytes, max_depth=2), 4, error, "object"
    )
    if not isinstance(outer[1], str):
        raise error("object: kid must be a string")
    return outer[1]
