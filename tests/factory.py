"""A pure, in-memory test network: deterministic keys, a signed directory, seal and open.

Nothing here touches a socket, a file or the clock. Every key is derived from a fixed label (state,
use, generation), so the same network is built on every run and the committed test vectors can be
checked against it. These are TEST KEYS: never use them outside tests.

    net = make_network(now=NOW)
    data = net.seal("AR", "BR", {"hello": "world"})
    opened = net.open("BR", data)

``craft_envelope`` builds arbitrary (including wrong) envelopes for attack tests: any header map,
any ciphertext, signed by any key, or not at all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from mla_node.errors import MlaError
from mla_node.protocol import codec
from mla_node.protocol.directory import (
    Directory,
    KeyEntry,
    NodeEntry,
    TrustRoot,
    directory_body,
    sign_directory,
    verify_directory,
)
from mla_node.protocol.envelope import (
    PROTOCOL_VERSION,
    OpenedEnvelope,
    open_envelope,
    pad,
    seal_envelope,
)
from mla_node.protocol.keys import (
    SIGNING_ALG,
    EncryptionKey,
    SigningKey,
    Suite,
    choose_suite,
    hpke_seal,
    key_id,
)

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR

# 2026-01-01T00:00:00Z in ms: a fixed "now" for tests that do not care which.
NOW = 1_767_225_600_000
NETWORK = "oas-remja-test"
MAX_AGE_MS = 7 * DAY
MAX_FUTURE_MS = 5 * MINUTE
ALL_SUITES: tuple[str, ...] = (Suite.MLKEM768_X25519.value, Suite.X25519.value)
FAKE_CA_PEM = (
    b"-----BEGIN CERTIFICATE-----\n"
    b"TEST PLACEHOLDER, NO TLS AT THIS LAYER\n"
    b"-----END CERTIFICATE-----\n"
)

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


# --- deterministic material ---------------------------------------------------------------------


def seed(label: str, length: int = 32) -> bytes:
    """Fixed bytes for a label: SHA-512 based, so any length up to 64."""
    assert length <= 64
    return hashlib.sha512(b"mla-node test seed\x00" + label.encode()).digest()[:length]


def fixed_signing_key(label: str) -> SigningKey:
    return SigningKey.from_private_bytes(seed(f"{label}/ed25519"))


def fixed_encryption_key(label: str, suite: Suite) -> EncryptionKey:
    x_raw = seed(f"{label}/x25519")
    if suite is Suite.MLKEM768_X25519:
        return EncryptionKey(suite, seed(f"{label}/mlkem768", 64) + x_raw)
    return EncryptionKey(suite, x_raw)


def ulid(ms: int, n: int) -> str:
    """A ULID-shaped id: 48-bit time then 80 bits from ``n``, in Crockford base32 (26 chars)."""
    value = ((ms & ((1 << 48) - 1)) << 80) | (n & ((1 << 80) - 1))
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


@dataclass
class MessageIds:
    """Deterministic message ids: strictly increasing within one network."""

    __test__ = False
    counter: int = 0

    def next(self, ms: int) -> str:
        self.counter += 1
        return ulid(ms, self.counter)


# --- nodes and network --------------------------------------------------------------------------


@dataclass
class TestKey:
    """One key of a node with its directory entry (the window and kid the network publishes)."""

    __test__ = False
    entry: KeyEntry
    signing: SigningKey | None = None
    encryption: EncryptionKey | None = None


@dataclass
class TestNode:
    __test__ = False
    state: str
    port: int
    suites: tuple[str, ...]
    keys: list[TestKey]
    endpoint: str
    tls_cert_der: bytes

    @property
    def signing(self) -> SigningKey:
        """The newest signing key."""
        return [k.signing for k in self.keys if k.signing is not None][-1]

    def encryption(self, suite: Suite) -> EncryptionKey:
        """The newest private encryption key for ``suite`` (published or not)."""
        keys = [k.encryption for k in self.keys if k.encryption and k.encryption.suite is suite]
        if not keys:
            # Not in the directory: a private key the node has but never published, for tests of
            # a sender that encrypts with a suite the recipient does not accept.
            return fixed_encryption_key(f"{self.state}/unpublished", suite)
        return keys[-1]

    @property
    def my_keys(self) -> dict[str, EncryptionKey]:
        """Every private encryption key of the node, by kid, as open_envelope takes them."""
        out = {k.entry.kid: k.encryption for k in self.keys if k.encryption is not None}
        for suite in Suite:
            extra = self.encryption(suite)
            out.setdefault(extra.kid, extra)
        return out

    def entry(self) -> NodeEntry:
        return NodeEntry(
            state=self.state,
            authority=f"Central authority of {self.state} (test)",
            endpoint=self.endpoint,
            suites=self.suites,
            tls_cert_sha256="sha256:" + hashlib.sha256(self.tls_cert_der).hexdigest(),
            tls_cert_der=self.tls_cert_der,
            keys=tuple(k.entry for k in self.keys),
        )


def _sign_key(label: str, not_before: int, not_after: int) -> TestKey:
    key = fixed_signing_key(label)
    return TestKey(KeyEntry(key.kid, "sign", SIGNING_ALG, key.public, not_before, not_after), key)


def _enc_key(label: str, suite: Suite, not_before: int, not_after: int) -> TestKey:
    key = fixed_encryption_key(label, suite)
    return TestKey(
        KeyEntry(key.kid, "encrypt", suite.value, key.public, not_before, not_after),
        encryption=key,
    )


@dataclass
class TestNetwork:
    """A network of test nodes and the authority that signs their directory."""

    __test__ = False
    network: str
    now: int
    root: SigningKey
    trust: TrustRoot
    nodes: dict[str, TestNode]
    directory_bytes: bytes
    directory: Directory
    expires_at: int
    revoked: dict[str, int] = field(default_factory=dict)
    ids: MessageIds = field(default_factory=MessageIds)

    # --- envelopes ---

    def seal(
        self,
        sender: str,
        recipient: str,
        body: dict[str, Any],
        *,
        mid: str | None = None,
        created: int | None = None,
        suite: Suite | None = None,
        message_type: str = "case",
        signing_key: SigningKey | None = None,
        recipient_key: EncryptionKey | None = None,
    ) -> bytes:
        """Seal like a node does: the strongest shared suite, the recipient's newest key for it
        from the directory. ``suite``, ``signing_key`` and ``recipient_key`` override that, for
        attack tests (a key not in the directory, a suite the recipient does not accept)."""
        created = self.now if created is None else created
        me = self.directory.node(sender) or self.nodes[sender].entry()
        them = self.directory.node(recipient) or self.nodes[recipient].entry()
        if suite is None:
            suite = choose_suite(list(me.suites), list(them.suites))
            if suite is None:
                raise ValueError(f"{sender} and {recipient} share no suite")
        if recipient_key is not None:
            rkid, rpub = recipient_key.kid, recipient_key.public
        else:
            published = self.directory.encryption_key(recipient, suite, created)
            if published is not None:
                rkid, rpub = published.kid, published.public
            else:
                unpublished = self.nodes[recipient].encryption(suite)
                rkid, rpub = unpublished.kid, unpublished.public
        return seal_envelope(
            signing_key=signing_key or self.nodes[sender].signing,
            sender=sender,
            recipient=them,
            recipient_kid=rkid,
            recipient_public=rpub,
            suite=suite,
            message_id=mid or self.ids.next(created),
            message_type=message_type,
            created_at=created,
            body=body,
        )

    def open(
        self,
        recipient: str,
        data: bytes,
        now: int | None = None,
        *,
        directory: Directory | None = None,
    ) -> OpenedEnvelope:
        return open_envelope(
            data,
            directory=directory or self.directory,
            me=recipient,
            my_keys=self.nodes[recipient].my_keys,
            now=self.now if now is None else now,
            max_age_ms=MAX_AGE_MS,
            max_future_ms=MAX_FUTURE_MS,
        )

    def header(
        self, sender: str, recipient: str, *, enc_suite: Suite = Suite.X25519, **changes: Any
    ) -> dict[str, Any]:
        """A correct header map for ``craft_envelope``; ``changes`` replace or add fields
        (``None`` removes one)."""
        suite = enc_suite
        key = self.nodes[recipient].encryption(suite)
        published = self.directory.encryption_key(recipient, suite, self.now)
        header: dict[str, Any] = {
            "v": PROTOCOL_VERSION,
            "suite": suite.value,
            "mid": self.ids.next(self.now),
            "from": sender,
            "to": recipient,
            "type": "case",
            "created": self.now,
            "skid": self.nodes[sender].signing.kid,
            "rkid": published.kid if published else key.kid,
        }
        for name, value in changes.items():
            if value is None:
                header.pop(name, None)
            else:
                header[name] = value
        return header

    def encrypt_for(
        self, recipient: str, header_bytes: bytes, body: Any, *, suite: Suite = Suite.X25519
    ) -> bytes:
        """HPKE-encrypt ``body`` (msgpack, padded) to ``recipient`` bound to ``header_bytes``."""
        return self.encrypt_plaintext(recipient, header_bytes, pad(codec.pack(body)), suite=suite)

    def encrypt_plaintext(
        self, recipient: str, header_bytes: bytes, plaintext: bytes, *, suite: Suite = Suite.X25519
    ) -> bytes:
        """HPKE-encrypt exact ``plaintext`` bytes (no packing, no padding) to ``recipient``."""
        key = self.nodes[recipient].encryption(suite)
        info = codec.pae(codec.DOMAIN_HPKE_INFO, header_bytes)
        return hpke_seal(suite, key.public, plaintext, info)

    # --- directory ---

    def rotate_signing_key(
        self, state: str, *, not_before: int, old_not_after: int | None = None
    ) -> SigningKey:
        """Add a new signing key generation to ``state`` (published at the next re-signing);
        optionally end the previous key's window."""
        node = self.nodes[state]
        generation = sum(1 for k in node.keys if k.signing is not None)
        if old_not_after is not None:
            for k in node.keys:
                if k.signing is not None and k.signing.kid == node.signing.kid:
                    k.entry = replace(k.entry, not_after=old_not_after)
        new = _sign_key(f"{state}/sign/{generation}", not_before, not_before + 365 * DAY)
        node.keys.append(new)
        assert new.signing is not None
        return new.signing

    def rotate_encryption_key(self, state: str, suite: Suite, *, not_before: int) -> EncryptionKey:
        node = self.nodes[state]
        generation = sum(1 for k in node.keys if k.encryption is not None)
        new = _enc_key(f"{state}/enc/{generation}", suite, not_before, not_before + 365 * DAY)
        node.keys.append(new)
        assert new.encryption is not None
        return new.encryption

    def directory_map(
        self,
        *,
        version: int | None = None,
        issued_at: int | None = None,
        expires_at: int | None = None,
        network: str | None = None,
    ) -> dict[str, Any]:
        return directory_body(
            network=network or self.network,
            version=self.directory.version + 1 if version is None else version,
            issued_at=self.now if issued_at is None else issued_at,
            expires_at=self.expires_at if expires_at is None else expires_at,
            nodes=[n.entry() for n in self.nodes.values()],
            revoked=self.revoked,
        )

    def resign_directory(
        self,
        *,
        version: int | None = None,
        revoked: Mapping[str, int] | None = None,
        issued_at: int | None = None,
        expires_at: int | None = None,
        network: str | None = None,
        root: SigningKey | None = None,
        mutate: Callable[[dict[str, Any]], None] | None = None,
        install: bool = True,
    ) -> bytes:
        """Sign a new directory version (the current one + 1 unless ``version``) from the nodes'
        current keys, adding ``revoked`` (kid -> revoked_at ms). ``mutate`` edits the body map
        before signing, for mutate-and-re-sign attack tests. With ``install``, the result is
        verified as a node would (no rollback, not expired) and becomes the current directory."""
        if revoked:
            self.revoked.update(revoked)
        if expires_at is not None and install:
            self.expires_at = expires_at
        body = self.directory_map(
            version=version, issued_at=issued_at, expires_at=expires_at, network=network
        )
        if mutate is not None:
            mutate(body)
        data = sign_directory(root or self.root, body)
        if install:
            self.directory = verify_directory(
                data,
                self.trust,
                now=self.now,
                current_version=self.directory.version,
                current_digest=hashlib.sha256(self.directory_bytes).digest(),
            )
            self.directory_bytes = data
        return data


def make_network(
    states: Sequence[str] = ("AR", "BR", "US"),
    *,
    now: int,
    suites: Mapping[str, Sequence[str]] | None = None,
    version: int = 1,
    valid_ms: int = 30 * DAY,
    key_valid_ms: int = 365 * DAY,
    network: str = NETWORK,
) -> TestNetwork:
    """Build a network of ``states`` at time ``now`` (ms).

    Every node accepts both suites unless ``suites`` says otherwise for it, and publishes one
    encryption key per accepted suite and one signing key, valid from a day before ``now`` for
    ``key_valid_ms``. The directory (``version``) is issued at ``now`` and expires ``valid_ms``
    later.
    """
    suites = suites or {}
    root = fixed_signing_key(f"{network}/root")
    trust = TrustRoot(network, {root.kid: root.public}, FAKE_CA_PEM)
    start, end = now - DAY, now - DAY + key_valid_ms
    nodes: dict[str, TestNode] = {}
    for i, state in enumerate(states):
        accepted = tuple(suites.get(state, ALL_SUITES))
        keys = [_sign_key(f"{state}/sign/0", start, end)]
        keys += [_enc_key(f"{state}/enc/0", Suite(s), start, end) for s in accepted]
        port = 18443 + i
        nodes[state] = TestNode(
            state=state,
            port=port,
            suites=accepted,
            keys=keys,
            endpoint=f"https://127.0.0.1:{port}",
            tls_cert_der=b"TEST CERTIFICATE PLACEHOLDER " + state.encode(),
        )
    body = directory_body(
        network=network,
        version=version,
        issued_at=now,
        expires_at=now + valid_ms,
        nodes=[n.entry() for n in nodes.values()],
        revoked={},
    )
    data = sign_directory(root, body)
    return TestNetwork(
        network=network,
        now=now,
        root=root,
        trust=trust,
        nodes=nodes,
        directory_bytes=data,
        directory=verify_directory(data, trust, now=now),
        expires_at=now + valid_ms,
    )


def craft_envelope(
    header: Mapping[str, Any] | bytes,
    ciphertext: bytes,
    signing_key: SigningKey | None,
    *,
    outer_version: Any = PROTOCOL_VERSION,
    signature: bytes | None = None,
) -> bytes:
    """Any envelope, right or wrong: the header (a map, or exact bytes), the ciphertext, signed
    by ``signing_key`` as a sender would (or carrying ``signature`` as given)."""
    header_bytes = header if isinstance(header, bytes) else codec.pack(dict(header))
    if signature is None:
        assert signing_key is not None
        signature = signing_key.sign(codec.pae(codec.DOMAIN_ENVELOPE, header_bytes, ciphertext))
    return codec.pack([outer_version, header_bytes, ciphertext, signature])


def split_envelope(data: bytes) -> tuple[Any, bytes, bytes, bytes]:
    """The four outer items of a well-formed envelope (unverified), for tests that edit one."""
    outer = codec.unpack(data, error=MlaError, max_bytes=1 << 21)
    version, header, ciphertext, signature = outer
    return version, header, ciphertext, signature


def header_map(data: bytes) -> dict[str, Any]:
    header: dict[str, Any] = codec.unpack(split_envelope(data)[1], error=MlaError, max_bytes=4096)
    return header


def flip_bit(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def fake_kid(label: str) -> str:
    """A well-formed key id that no directory lists."""
    return key_id(SIGNING_ALG, seed(f"{label}/not-listed"))
