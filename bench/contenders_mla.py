"""mla_node's codec cycle, as a node runs it, in one process: no network, no disk.

Sender AR seals (sign + encrypt) → receiver BR opens (verify + decrypt) and signs a ``delivered``
receipt carrying its log head, as ``service/inbound.py`` does → AR verifies the receipt against
the directory and the digest of what it sent, as ``service/delivery.py`` does.

Keys and the signed directory come from ``tests/factory.py``: real Ed25519, ML-KEM-768 + X25519
and X25519 keys, derived from fixed labels (test keys), and a directory signed by a root key.

Two contenders:

- ``mla_node``: the protocol's own ``seal_envelope`` / ``open_envelope`` / ``sign_receipt`` /
  ``verify_receipt``. An envelope carries its body inline, padded to a power of two, and is at
  most ``MAX_ENVELOPE`` (1 MiB) long, so a payload that does not fit is reported as not
  applicable instead of being measured with the limit lifted.
- ``mla_node_attachment``: what a node does with a file of any size, in memory: the payload
  encrypted chunk by chunk (``protocol/stream.py``, 1 MiB chunks) with the SHA-256 of its
  plaintext and of its ciphertext each on a thread of their own (as a clerk's upload,
  ``service/attachments.py``); a small envelope naming it (digests, size, key); the receiver
  checks the ciphertext's digest (as the peer endpoint does before a file enters its store),
  opens the envelope, decrypts and checks every chunk and the plaintext digest
  (``service/blob_transfer.verified_plaintext``, decryption and hash on two threads), and signs
  the same receipt. Only the disk and the network are left out (part ``transfer`` has them).
- ``mla_node_primitives``: the same cryptography with no envelope around it, for payloads of any
  size: HPKE seal and open of the payload itself, Ed25519 over ``pae(header, ciphertext)``, a
  SHA-256 digest, and the same signed receipt. No msgpack framing, no padding, no size limit:
  the cost floor of our primitives. It is not what a node does with a large payload, and the
  tables say so: large evidence travels as streamed attachments (``protocol/stream.py``,
  ``bench/transfer.py``), not inline; the envelope signs each file's digest, size and key
  (``protocol/attachments.py``).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable

from bench.common import NotApplicable
from mla_node.protocol import codec, stream
from mla_node.protocol.attachments import AttachmentRef, parse_refs
from mla_node.protocol.checkpoint import sign_checkpoint
from mla_node.protocol.envelope import (
    MAX_ENVELOPE,
    PROTOCOL_VERSION,
    Header,
    OpenedEnvelope,
    envelope_digest,
    open_envelope,
)
from mla_node.protocol.keys import EncryptionKey, Suite, hpke_seal, verify_ed25519
from mla_node.protocol.receipts import DELIVERED, sign_receipt, verify_receipt
from mla_node.service.blob_transfer import verified_plaintext
from mla_node.storage.blobs import BackgroundHash
from tests.factory import MAX_AGE_MS, MAX_FUTURE_MS, NOW, TestNetwork, make_network

SENDER, RECIPIENT = "AR", "BR"
SUITE = Suite.MLKEM768_X25519  # the default suite: what two current nodes agree on

Cycle = Callable[[], bytes]


def _network() -> tuple[TestNetwork, bytes]:
    """The test network and BR's log head: receipts carry the receiver's newest checkpoint, so
    verifying one also verifies a checkpoint signature, as at a real sender."""
    net = make_network((SENDER, RECIPIENT), now=NOW)
    head = sign_checkpoint(
        net.nodes[RECIPIENT].signing,
        node=RECIPIENT,
        size=1000,
        root=hashlib.sha256(b"bench log").digest(),
        at=NOW,
    )
    return net, head


def _receipt_round(
    net: TestNetwork, head: bytes, message_id: str, digest_at_receiver: bytes, sent_digest: bytes
) -> None:
    """BR signs the receipt for the envelope it opened; AR verifies it against what it sent."""
    receipt = sign_receipt(
        net.nodes[RECIPIENT].signing,
        message_id=message_id,
        sender=SENDER,
        recipient=RECIPIENT,
        envelope_digest=digest_at_receiver,
        status=DELIVERED,
        code=None,
        at=net.now,
        head=head,
    )
    verify_receipt(
        receipt,
        net.directory,
        expect_message_id=message_id,
        expect_envelope_digest=sent_digest,
        expect_signer=RECIPIENT,
    )


def _opened_at_receiver(
    net: TestNetwork, data: bytes, my_keys: dict[str, EncryptionKey]
) -> OpenedEnvelope:
    return open_envelope(
        data,
        directory=net.directory,
        me=RECIPIENT,
        my_keys=my_keys,
        now=net.now,
        max_age_ms=MAX_AGE_MS,
        max_future_ms=MAX_FUTURE_MS,
    )


def envelope_cycle(payload: bytes) -> Cycle:
    net, head = _network()
    body = {"form": "bench/1", "payload": payload}
    probe = net.seal(SENDER, RECIPIENT, body, suite=SUITE)
    if len(probe) > MAX_ENVELOPE:
        raise NotApplicable(
            f"the body pads to a {len(probe) / (1 << 20):.0f} MiB envelope; envelopes carry at "
            f"most {MAX_ENVELOPE >> 20} MiB inline (MAX_ENVELOPE); large evidence travels as "
            "streamed attachments (protocol/stream.py, bench/transfer.py), not inline"
        )

    # Loaded once, as a node loads its keys at start (TestNode.my_keys derives them per call).
    my_keys = net.nodes[RECIPIENT].my_keys

    def cycle() -> bytes:
        message_id = net.ids.next(net.now)
        data = net.seal(SENDER, RECIPIENT, body, mid=message_id, suite=SUITE)
        sent_digest = envelope_digest(data)  # the sender keeps it in its outbox row
        opened = _opened_at_receiver(net, data, my_keys)
        _receipt_round(net, head, message_id, opened.digest, sent_digest)
        received: bytes = opened.body["payload"]
        return received

    return cycle


def attachment_cycle(payload: bytes) -> Cycle:
    net, head = _network()
    my_keys = net.nodes[RECIPIENT].my_keys
    chunk = stream.DEFAULT_CHUNK
    count = stream.chunk_count(len(payload), chunk)

    def cycle() -> bytes:
        key = os.urandom(stream.KEY_LEN)
        sealer = stream.StreamSealer(
            key, os.urandom(stream.NONCE_PREFIX_LEN), os.urandom(stream.FILE_ID_LEN), chunk
        )
        plain, cipher = BackgroundHash(), BackgroundHash()
        pieces = [sealer.header]
        cipher.update(sealer.header)
        for i in range(count):
            part = payload[i * chunk : (i + 1) * chunk]  # a node reads the file in such pieces
            plain.update(part)
            pieces.append(sealer.seal(part, last=i == count - 1))
            cipher.update(pieces[-1])
        blob = b"".join(pieces)  # where a node writes the file
        ref = AttachmentRef(
            name="evidence.xml",
            size=len(payload),
            sha256=plain.digest(),
            blob=cipher.digest(),
            blob_size=len(blob),
            chunk=chunk,
            key=key,
        )
        message_id = net.ids.next(net.now)
        body = {"form": "bench/1", "attachments": [ref.as_map()]}
        data = net.seal(SENDER, RECIPIENT, body, mid=message_id, suite=SUITE)
        sent_digest = envelope_digest(data)
        # The receiver: the file comes first and is stored only if its bytes hash to its name.
        if hashlib.sha256(blob).digest() != ref.blob:
            raise AssertionError("the file does not hash to its name")
        opened = _opened_at_receiver(net, data, my_keys)
        (named,) = parse_refs(opened.body["attachments"])
        received = b"".join(verified_plaintext(io.BytesIO(blob), named))
        _receipt_round(net, head, message_id, opened.digest, sent_digest)
        return received

    return cycle


def primitives_cycle(payload: bytes) -> Cycle:
    net, head = _network()
    sender = net.nodes[SENDER].signing
    sender_public = sender.public
    key = net.nodes[RECIPIENT].encryption(SUITE)
    published = net.directory.encryption_key(RECIPIENT, SUITE, net.now)
    assert published is not None and published.kid == key.kid

    def cycle() -> bytes:
        message_id = net.ids.next(net.now)
        header = Header(
            version=PROTOCOL_VERSION,
            suite=SUITE.value,
            message_id=message_id,
            sender=SENDER,
            recipient=RECIPIENT,
            type="case",
            created_at=net.now,
            sender_kid=sender.kid,
            recipient_kid=published.kid,  # as a sender does: the kid the directory lists
        )
        header_bytes = codec.pack(header.as_map())
        info = codec.pae(codec.DOMAIN_HPKE_INFO, header_bytes)
        ciphertext = hpke_seal(SUITE, published.public, payload, info)
        signature = sender.sign(codec.pae(codec.DOMAIN_ENVELOPE, header_bytes, ciphertext))
        sent_digest = _digest(header_bytes, ciphertext, signature)
        # The receiver: signature first, then decryption, as open_envelope orders them.
        if not verify_ed25519(
            sender_public, signature, codec.pae(codec.DOMAIN_ENVELOPE, header_bytes, ciphertext)
        ):
            raise AssertionError("signature does not verify")
        received = key.decrypt(ciphertext, codec.pae(codec.DOMAIN_HPKE_INFO, header_bytes))
        receiver_digest = _digest(header_bytes, ciphertext, signature)
        _receipt_round(net, head, message_id, receiver_digest, sent_digest)
        return received

    return cycle


def _digest(*parts: bytes) -> bytes:
    """What the receipt names: here a SHA-256 over the three parts, as there is no wire form."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.digest()


CONTENDERS: dict[str, Callable[[bytes], Cycle]] = {
    "mla_node": envelope_cycle,
    "mla_node_attachment": attachment_cycle,
    "mla_node_primitives": primitives_cycle,
}
