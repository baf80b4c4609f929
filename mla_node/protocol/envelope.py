"""Envelope v1: a signed clear header for routing, and an HPKE-encrypted body.

Wire form (msgpack): ``[1, header, ciphertext, signature]``

- ``header``: ``bin`` holding a msgpack map of routing fields only (see ``Header``);
- ``ciphertext``: HPKE base mode ``enc || ct`` to the recipient's key named in the header, with
  ``info = pae(DOMAIN_HPKE_INFO, header)`` so sender, recipient, message id, type, version and
  suite are bound into the encryption as well as the signature;
- ``signature``: Ed25519 by the sender over ``pae(DOMAIN_ENVELOPE, header, ciphertext)``.

The clear header's ``type`` is coarse on purpose ("case" or "notice"): whether a message is a
provisional arrest is for the recipient to learn, not for whoever watches the wire. The body is
padded to a size bucket for the same reason.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from mla_node.errors import (
    EnvelopeBadSignature,
    EnvelopeError,
    EnvelopeFromFuture,
    EnvelopeKeyNotValid,
    EnvelopeMalformed,
    EnvelopeRevokedKey,
    EnvelopeStale,
    EnvelopeTooLarge,
    EnvelopeUndecryptable,
    EnvelopeUnknownKey,
    EnvelopeUnknownSender,
    EnvelopeUnsupportedSuite,
    EnvelopeUnsupportedVersion,
    EnvelopeWrongRecipient,
)
from mla_node.protocol import codec
from mla_node.protocol.directory import Directory, KeyProblem, NodeEntry
from mla_node.protocol.keys import EncryptionKey, SigningKey, Suite, hpke_seal, verify_ed25519

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = frozenset({PROTOCOL_VERSION})
MESSAGE_TYPES = frozenset({"case", "notice"})
MAX_HEADER = 2048
MAX_ENVELOPE = 1 << 20  # requests travel inline; large evidence files will stream separately
MAX_BODY_DEPTH = 12
MESSAGE_ID_LEN = 26  # a ULID in Crockford base32
HEADER_FIELDS = frozenset({"v", "suite", "mid", "from", "to", "type", "created", "skid", "rkid"})
MESSAGE_ID_ALPHABET = frozenset("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
_SUITE_VALUES = frozenset(s.value for s in Suite)  # iterating an Enum per message costs ~1 µs

_KEY_ERRORS: dict[KeyProblem, type[EnvelopeError]] = {
    KeyProblem.UNKNOWN: EnvelopeUnknownKey,
    KeyProblem.NOT_VALID: EnvelopeKeyNotValid,
    KeyProblem.REVOKED: EnvelopeRevokedKey,
}


@dataclass(frozen=True)
class Header:
    version: int
    suite: str
    message_id: str
    sender: str  # state code
    recipient: str
    type: str
    created_at: int  # ms since the epoch, UTC
    sender_kid: str
    recipient_kid: str

    def as_map(self) -> dict[str, Any]:
        return {
            "v": self.version,
            "suite": self.suite,
            "mid": self.message_id,
            "from": self.sender,
            "to": self.recipient,
            "type": self.type,
            "created": self.created_at,
            "skid": self.sender_kid,
            "rkid": self.recipient_kid,
        }


@dataclass(frozen=True)
class OpenedEnvelope:
    header: Header
    body: dict[str, Any]
    digest: bytes  # SHA-256 of the exact wire bytes: what receipts and evidence refer to
    raw: bytes
    body_bytes: bytes  # the exact msgpack body as decrypted (unpadded): what `content` covers


def pack_body(body: dict[str, Any]) -> bytes:
    """The body as ``seal_envelope`` encrypts it; ``content_digest`` of these bytes is what the
    sender's evidence commits to."""
    return codec.pack(body)


def content_digest(body_bytes: bytes) -> bytes:
    """The commitment to a message's content both nodes sign in their evidence: SHA-256 over the
    exact body bytes (which hold a random salt, so a guessable form cannot be confirmed from
    the digest alone), domain-separated."""
    return hashlib.sha256(codec.pae(codec.DOMAIN_CONTENT, body_bytes)).digest()


def envelope_digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def pad(plaintext: bytes) -> bytes:
    """ISO/IEC 7816-4 padding up to a power-of-two bucket of at least 1 KiB."""
    target = max(1024, 1 << (len(plaintext)).bit_length())
    return plaintext + b"\x80" + b"\x00" * (target - len(plaintext) - 1)


def unpad(padded: bytes) -> bytes:
    stripped = padded.rstrip(b"\x00")
    if not stripped.endswith(b"\x80"):
        raise EnvelopeMalformed("body padding is invalid")
    return stripped[:-1]


def seal_envelope(
    *,
    signing_key: SigningKey,
    sender: str,
    recipient: NodeEntry,
    recipient_kid: str,
    recipient_public: bytes,
    suite: Suite,
    message_id: str,
    message_type: str,
    created_at: int,
    body: dict[str, Any],
) -> bytes:
    """Encrypt ``body`` to the recipient and sign. The caller picked the suite and key from the
    directory (``Directory.encryption_key``) so this function stays free of policy."""
    header = Header(
        version=PROTOCOL_VERSION,
        suite=suite.value,
        message_id=message_id,
        sender=sender,
        recipient=recipient.state,
        type=message_type,
        created_at=created_at,
        sender_kid=signing_key.kid,
        recipient_kid=recipient_kid,
    )
    header_bytes = codec.pack(header.as_map())
    info = codec.pae(codec.DOMAIN_HPKE_INFO, header_bytes)
    ciphertext = hpke_seal(suite, recipient_public, pad(pack_body(body)), info)
    signature = signing_key.sign(codec.pae(codec.DOMAIN_ENVELOPE, header_bytes, ciphertext))
    return codec.pack([PROTOCOL_VERSION, header_bytes, ciphertext, signature])


def read_header(
    data: bytes, max_envelope: int = MAX_ENVELOPE
) -> tuple[Header, bytes, bytes, bytes]:
    """Decode the outer array and the clear header, unverified. Returns header, its exact bytes,
    the ciphertext and the signature."""
    if len(data) > max_envelope:
        raise EnvelopeTooLarge(f"{len(data)} bytes is more than {max_envelope}")
    outer = codec.expect_array(
        codec.unpack(data, error=EnvelopeMalformed, max_bytes=max_envelope, max_depth=2),
        4,
        EnvelopeMalformed,
        "envelope",
    )
    version, header_bytes, ciphertext, signature = outer
    if not isinstance(version, int) or isinstance(version, bool):
        raise EnvelopeMalformed("envelope version must be an integer")
    if version not in SUPPORTED_VERSIONS:
        raise EnvelopeUnsupportedVersion(f"protocol version {version} is not supported")
    if not (
        isinstance(header_bytes, bytes)
        and isinstance(ciphertext, bytes)
        and isinstance(signature, bytes)
    ):
        raise EnvelopeMalformed("header, ciphertext and signature must be bin")
    if codec.pack(outer) != data:
        # The outer array is not signed: another encoding of the same members would verify
        # too, under another digest (receipts and evidence name envelopes by digest).
        raise EnvelopeMalformed("the envelope is not in its canonical encoding")
    h = codec.Fields(
        codec.unpack(header_bytes, error=EnvelopeMalformed, max_bytes=MAX_HEADER, max_depth=1),
        EnvelopeMalformed,
        "header",
    )
    header = Header(
        version=h.integer("v"),
        suite=h.text("suite", 64),
        message_id=h.text("mid", MESSAGE_ID_LEN),
        sender=h.text("from", 2),
        recipient=h.text("to", 2),
        type=h.one_of("type", MESSAGE_TYPES),
        created_at=h.integer("created"),
        sender_kid=h.text("skid", 64),
        recipient_kid=h.text("rkid", 64),
    )
    if h.raw().keys() != HEADER_FIELDS:
        # Nothing but routing travels in clear: an extra field is refused, not ignored.
        raise EnvelopeMalformed(
            f"header fields must be exactly {sorted(HEADER_FIELDS)}", field="header"
        )
    if header.version != version:
        # The outer version is not signed; the header's is. They must agree.
        raise EnvelopeUnsupportedVersion("outer and header versions differ", field="header.v")
    if len(header.message_id) != MESSAGE_ID_LEN or not MESSAGE_ID_ALPHABET.issuperset(
        header.message_id
    ):
        raise EnvelopeMalformed("mid must be a 26-character ULID", field="header.mid")
    if len(signature) != 64:
        raise EnvelopeMalformed("signature must be 64 bytes", field="signature")
    return header, header_bytes, ciphertext, signature


def verify_envelope(
    data: bytes,
    *,
    directory: Directory,
    me: str,
    now: int,
    max_age_ms: int,
    max_future_ms: int,
) -> tuple[Header, bytes, bytes]:
    """Everything but decryption: who sent it, to whom, when, and that the signature holds.

    Order matters: nothing about the content is trusted or reported before the signature
    verified against a key from the signed directory.
    """
    header, header_bytes, ciphertext, signature = read_header(data)
    _check_signature(directory, header, header_bytes, ciphertext, signature, at=now, live=True)
    if header.recipient != me:
        raise EnvelopeWrongRecipient(
            f"addressed to {header.recipient}, this node is {me}", field="header.to"
        )
    if now - header.created_at > max_age_ms:
        raise EnvelopeStale(f"created {now - header.created_at} ms ago", field="header.created")
    if header.created_at - now > max_future_ms:
        raise EnvelopeFromFuture(
            f"created {header.created_at - now} ms in the future", field="header.created"
        )
    return header, header_bytes, ciphertext


def verify_envelope_signature(data: bytes, directory: Directory) -> Header:
    """For an audit after the fact: the sender signed this envelope with a key that was valid
    (and not yet revoked) when the envelope says it was made. Nothing is decrypted."""
    header, header_bytes, ciphertext, signature = read_header(data)
    _check_signature(
        directory, header, header_bytes, ciphertext, signature, at=header.created_at, live=False
    )
    return header


def _check_signature(
    directory: Directory,
    header: Header,
    header_bytes: bytes,
    ciphertext: bytes,
    signature: bytes,
    *,
    at: int,
    live: bool,
) -> None:
    if directory.node(header.sender) is None:
        raise EnvelopeUnknownSender(
            f"{header.sender!r} is not in the directory", field="header.from"
        )
    entry, problem = directory.check_key(header.sender, header.sender_kid, "sign", at, live=live)
    if problem is not None or entry is None:
        raise _KEY_ERRORS[problem or KeyProblem.UNKNOWN](
            f"signing key {header.sender_kid} of {header.sender}: {problem}", field="header.skid"
        )
    if not verify_ed25519(
        entry.public, signature, codec.pae(codec.DOMAIN_ENVELOPE, header_bytes, ciphertext)
    ):
        raise EnvelopeBadSignature("signature does not verify", field="signature")


def open_envelope(
    data: bytes,
    *,
    directory: Directory,
    me: str,
    my_keys: dict[str, EncryptionKey],
    now: int,
    max_age_ms: int,
    max_future_ms: int,
) -> OpenedEnvelope:
    """Verify, then decrypt. The only way from envelope bytes to a trusted body."""
    header, header_bytes, ciphertext = verify_envelope(
        data,
        directory=directory,
        me=me,
        now=now,
        max_age_ms=max_age_ms,
        max_future_ms=max_future_ms,
    )
    my_entry = directory.node(me)
    if header.suite not in _SUITE_VALUES or (
        my_entry is not None and header.suite not in my_entry.suites
    ):
        raise EnvelopeUnsupportedSuite(
            f"suite {header.suite!r} is not accepted", field="header.suite"
        )
    key = my_keys.get(header.recipient_kid)
    if key is None or key.suite.value != header.suite:
        raise EnvelopeUnknownKey(
            f"no private key {header.recipient_kid} for {header.suite}", field="header.rkid"
        )
    if header.recipient_kid in directory.revoked:
        # A revoked encryption key may be in someone else's hands: what was sealed to it is not
        # confidential any more, and accepting it would hide that from the sender.
        raise EnvelopeRevokedKey(
            f"encryption key {header.recipient_kid} has been revoked", field="header.rkid"
        )
    try:
        padded = key.decrypt(ciphertext, codec.pae(codec.DOMAIN_HPKE_INFO, header_bytes))
    except Exception as exc:  # every failure looks the same from outside, on purpose
        raise EnvelopeUndecryptable() from exc
    body_bytes = unpad(padded)
    body = codec.unpack(
        body_bytes, error=EnvelopeMalformed, max_bytes=MAX_ENVELOPE, max_depth=MAX_BODY_DEPTH
    )
    if not isinstance(body, dict):
        raise EnvelopeMalformed("body must be a map")
    return OpenedEnvelope(header, body, envelope_digest(data), data, body_bytes)
