"""Does a peer's node fail closed? ``mla-node conformance`` and the round trip of ``doctor``.

The negative test vectors (tests/vectors/envelope, written by scripts/make_vectors.py) are
signed with published TEST keys that no live node trusts, so sending them as they are would only
test ``envelope_unknown_sender``. Instead each case is **built again at run time the way the
vector generator builds it, from this node's own keys and the directory** (the peer's endpoint,
keys and suites): the signature verifies wherever the case needs it to, so the peer has to reach
the check the case is about. Every case must be refused with the vector's code; when the clear
header can be read (this node's own ``read_header`` tells), the refusal must carry a rejection
receipt that verifies as the peer's signature over exactly the bytes sent. An envelope the peer
accepts (HTTP 200) fails the run.

No case leaves a message at the peer: none is a valid envelope, so each is refused before
anything is stored, and each has a fresh message id. The peer's log shows one refusal per case
(``envelope ... refused: <code>``), and ``mla-node doctor``'s probe as one
``envelope_undecryptable``. Then the cases that fit go once more in one batch (docs/protocol.md
§5.2), where each must be refused exactly as when it came alone.

Codes assume the peer runs with the default limits (``delivery.max_age_s`` below a year,
``delivery.max_future_skew_s`` below a day).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import msgpack

from mla_node.errors import DeliveryError, MlaError
from mla_node.ids import new_ulid
from mla_node.protocol import codec
from mla_node.protocol.directory import OAS_STATES, Directory, NodeEntry
from mla_node.protocol.envelope import MAX_ENVELOPE, PROTOCOL_VERSION, pad, read_header
from mla_node.protocol.keys import SigningKey, Suite, choose_suite, generate_signing_key, hpke_seal
from mla_node.protocol.receipts import REJECTED, verify_receipt
from mla_node.transport.base import BatchAnswer, BatchTransport, Outgoing, Transport
from mla_node.transport.batches import ENTRY_OVERHEAD, MAX_BATCH

DAY_MS = 86_400_000
YEAR_MS = 365 * DAY_MS
PROBE = "signed_plaintext"  # the case doctor sends: signed by us, undecryptable by design


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    data: bytes
    expect: str  # the code the peer must refuse it with


@dataclass(frozen=True)
class Outcome:
    case: Case
    ok: bool
    got: str  # the peer's code, "accepted", or "no answer"
    signed: str  # "verified", "not expected", or what is wrong with the receipt
    ms: float


class _Builder:
    """Builds envelopes from ``me`` to ``peer`` as scripts/make_vectors.py does, with this node's
    keys and the real directory."""

    def __init__(self, directory: Directory, me: str, peer: NodeEntry, key: SigningKey, now: int):
        self.directory, self.me, self.peer, self.key, self.now = directory, me, peer, key, now
        mine = directory.node(me)
        ours = list(mine.suites) if mine else [s.value for s in Suite]
        self.suite = choose_suite(ours, list(peer.suites)) or Suite(peer.suites[0])
        self._last = now

    def mid(self) -> str:
        self._last += 1  # distinct, increasing ids, each case fresh at the peer
        return new_ulid(self._last)

    def header(self, **changes: Any) -> dict[str, Any]:
        suite = Suite(changes.get("suite", self.suite.value))
        published = self.directory.encryption_key(self.peer.state, suite, self.now)
        header: dict[str, Any] = {
            "v": PROTOCOL_VERSION,
            "suite": suite.value,
            "mid": self.mid(),
            "from": self.me,
            "to": self.peer.state,
            "type": "case",
            "created": self.now,
            "skid": self.key.kid,
            "rkid": published.kid if published else "0" * 24,
        }
        header.update(changes)
        return header

    def encrypt(
        self, header: dict[str, Any], plaintext: bytes, *, bound_to: bytes | None = None
    ) -> bytes:
        suite = Suite(header["suite"])
        published = self.directory.encryption_key(self.peer.state, suite, self.now)
        if published is None:
            return os.urandom(len(plaintext) + 32)  # nothing to encrypt to: fails all the same
        info = codec.pae(codec.DOMAIN_HPKE_INFO, bound_to or codec.pack(header))
        return hpke_seal(suite, published.public, plaintext, info)

    def sealed(
        self, header: dict[str, Any], body: Any = None, *, key: SigningKey | None = None
    ) -> bytes:
        """Signed, and encrypted to the peer: ``body`` as msgpack, padded."""
        plaintext = pad(codec.pack({"probe": "conformance"} if body is None else body))
        return craft(header, self.encrypt(header, plaintext), key or self.key)


def craft(
    header: dict[str, Any] | bytes,
    ciphertext: bytes,
    key: SigningKey | None,
    *,
    outer_version: Any = PROTOCOL_VERSION,
    signature: bytes | None = None,
) -> bytes:
    """Any envelope, right or wrong: signed by ``key`` over the exact bytes, or carrying
    ``signature`` as given (as tests/factory.py's ``craft_envelope``)."""
    header_bytes = header if isinstance(header, bytes) else codec.pack(header)
    if signature is None:
        assert key is not None
        signature = key.sign(codec.pae(codec.DOMAIN_ENVELOPE, header_bytes, ciphertext))
    return codec.pack([outer_version, header_bytes, ciphertext, signature])


def negative_cases(
    directory: Directory, me: str, peer: NodeEntry, key: SigningKey, now: int
) -> list[Case]:
    """The envelope vectors that a live peer can judge, re-sealed with this node's keys."""
    b = _Builder(directory, me, peer, key, now)
    good_h = b.header()
    good = b.sealed(good_h)
    outer = msgpack.unpackb(good)
    header_bytes, ciphertext, signature = outer[1], outer[2], outer[3]
    stranger = generate_signing_key()
    cases = [
        Case(
            "truncated", "a good envelope cut in half", good[: len(good) // 2], "envelope_malformed"
        ),
        Case(
            "hostile_array_header",
            "an array claiming 2^32 - 1 items",
            b"\xdd\xff\xff\xff\xff",
            "envelope_malformed",
        ),
        Case(
            "hostile_deep_nesting",
            "10,000 nested arrays",
            b"\x91" * 10_000 + b"\x01",
            "envelope_malformed",
        ),
        Case(
            "hostile_ext_type",
            "a msgpack ext type as the envelope",
            msgpack.packb(msgpack.ExtType(1, b"x")),
            "envelope_malformed",
        ),
        Case(
            "hostile_int_map_keys",
            "a header map with integer keys",
            craft(msgpack.packb({1: 1}), b"c", key),
            "envelope_malformed",
        ),
        Case(
            "signature_wrong_length",
            "a 63-byte signature",
            craft(header_bytes, ciphertext, None, signature=signature[:63]),
            "envelope_malformed",
        ),
        Case(
            "extra_header_field",
            "a signed header with a field beyond routing",
            b.sealed({**b.header(), "subject": "Extradition of J. Doe"}),
            "envelope_malformed",
        ),
        Case(
            "bad_message_id",
            "a mid that is not a ULID",
            b.sealed(b.header(mid="01kdvdna000000000000000001")),
            "envelope_malformed",
        ),
        Case(
            "body_with_ext_type",
            "signed and decryptable, a msgpack ext type in the body",
            _ext_body(b),
            "envelope_malformed",
        ),
        Case(
            "body_not_a_form",
            "signed and decryptable, the body is no treaty form",
            b.sealed(b.header(), {"type": "mla_request"}),
            "envelope_malformed",
        ),
        Case(
            "too_large",
            f"{MAX_ENVELOPE + 1} zero bytes",
            bytes(MAX_ENVELOPE + 1),
            "envelope_too_large",
        ),
        Case(
            "outer_version_2",
            "outer version 2",
            craft(header_bytes, ciphertext, None, signature=signature, outer_version=2),
            "envelope_unsupported_version",
        ),
        Case(
            "header_version_2",
            "signed header version 2",
            b.sealed(b.header(v=2)),
            "envelope_unsupported_version",
        ),
        Case(
            "unknown_sender",
            "from a state with no node, signed by an unknown key",
            b.sealed(
                b.header(**{"from": _absent_state(directory), "skid": stranger.kid}), key=stranger
            ),
            "envelope_unknown_sender",
        ),
        Case(
            "unknown_key",
            f"from {me}, signed by a key {me} never published",
            b.sealed(b.header(skid=stranger.kid), key=stranger),
            "envelope_unknown_key",
        ),
        Case(
            "unknown_recipient_key",
            "encrypted to a key id the peer does not hold",
            b.sealed(b.header(rkid="0" * 24)),
            "envelope_unknown_key",
        ),
        Case(
            "signature_zeroed",
            "64 zero bytes as signature",
            craft(header_bytes, ciphertext, None, signature=bytes(64)),
            "envelope_bad_signature",
        ),
        Case(
            "suite_mutated",
            "the header's suite rewritten after signing",
            craft(
                {**good_h, "suite": _other_suite(good_h["suite"])},
                ciphertext,
                None,
                signature=signature,
            ),
            "envelope_bad_signature",
        ),
        Case(
            "plaintext_for_ciphertext",
            "the body in clear where the ciphertext was, signature kept",
            craft(header_bytes, codec.pack({"probe": 1}), None, signature=signature),
            "envelope_bad_signature",
        ),
        Case(
            "reflection",
            f"addressed to {me}, sent to the peer",
            b.sealed(b.header(to=me)),
            "envelope_wrong_recipient",
        ),
        Case(
            "stale",
            "created a year ago",
            b.sealed(b.header(created=now - YEAR_MS)),
            "envelope_stale",
        ),
        Case(
            "from_future",
            "created a day ahead",
            b.sealed(b.header(created=now + DAY_MS)),
            "envelope_from_future",
        ),
        Case(
            "ciphertext_bound_to_other_header",
            "encrypted under another header's HPKE info",
            _rebound(b),
            "envelope_undecryptable",
        ),
        Case(
            PROBE,
            "signed, with the padded plaintext where the ciphertext goes",
            _signed_plaintext(b),
            "envelope_undecryptable",
        ),
    ]
    third = sorted(s for s in directory.nodes if s not in (me, peer.state))
    if third:
        # Our TLS certificate, another member's name: the certificate must match the sender.
        cases.append(
            Case(
                "sender_mismatch",
                f"signed by {me}, claiming to come from {third[0]}",
                b.sealed(b.header(**{"from": third[0]})),
                "envelope_sender_mismatch",
            )
        )
    unaccepted = [s for s in Suite if s.value not in peer.suites]
    if unaccepted:
        header = b.header(suite=unaccepted[0].value, rkid="0" * 24)
        cases.append(
            Case(
                "suite_not_accepted",
                f"in {unaccepted[0].value}, which the peer does not accept",
                craft(header, os.urandom(1100), key),
                "envelope_unsupported_suite",
            )
        )
    return cases


def _ext_body(b: _Builder) -> bytes:
    header = b.header()
    plaintext = pad(msgpack.packb({"a": msgpack.ExtType(1, b"x")}))
    return craft(header, b.encrypt(header, plaintext), b.key)


def _rebound(b: _Builder) -> bytes:
    header = b.header()
    other = codec.pack({**header, "mid": b.mid()})
    return craft(header, b.encrypt(header, pad(codec.pack({"probe": 1})), bound_to=other), b.key)


def _signed_plaintext(b: _Builder) -> bytes:
    return craft(b.header(), pad(codec.pack({"probe": "doctor"})), b.key)


def _absent_state(directory: Directory) -> str:
    return next(s for s in sorted(OAS_STATES) if s not in directory.nodes)


def _other_suite(suite: str) -> str:
    return next(s.value for s in Suite if s.value != suite)


def probe_case(directory: Directory, me: str, peer: NodeEntry, key: SigningKey, now: int) -> Case:
    """doctor's signed round trip: the one case that needs our signature to be verified by the
    peer, and its signature on the refusal verified by us."""
    b = _Builder(directory, me, peer, key, now)
    return Case(PROBE, "signed round trip", _signed_plaintext(b), "envelope_undecryptable")


async def run_case(
    transport: Transport, peer: NodeEntry, directory: Directory, case: Case
) -> Outcome:
    started = time.perf_counter()
    try:
        answer: BatchAnswer = await transport.send(peer, case.data)
    except DeliveryError as exc:
        answer = exc
    return _judge(case, peer, directory, answer, _ms(started))


async def run_batch(
    transport: BatchTransport, peer: NodeEntry, directory: Directory, cases: list[Case]
) -> list[Outcome]:
    """The cases that fit in one batch (docs/protocol.md §5.2), sent in one: each envelope of a
    batch must be refused exactly as when it comes alone. Their names end in "(batch)"."""
    fitting: list[Case] = []
    size = 0
    for case in cases:
        if len(fitting) < MAX_BATCH and size + len(case.data) + ENTRY_OVERHEAD <= MAX_ENVELOPE:
            fitting.append(replace(case, name=f"{case.name} (batch)"))
            size += len(case.data) + ENTRY_OVERHEAD
    started = time.perf_counter()
    try:
        answers = await transport.send_batch(peer, [Outgoing(c.data) for c in fitting])
    except DeliveryError as exc:
        answers = [exc] * len(fitting)
    ms = _ms(started)
    return [
        _judge(case, peer, directory, answer, ms)
        for case, answer in zip(fitting, answers, strict=True)
    ]


def _judge(
    case: Case, peer: NodeEntry, directory: Directory, answer: BatchAnswer, ms: float
) -> Outcome:
    if isinstance(answer, DeliveryError):
        return Outcome(case, False, "no answer", answer.detail, ms)
    if answer.refused_code is None:
        return Outcome(case, False, "accepted", "the peer took a bad envelope", ms)
    signed = _judge_receipt(case, peer, directory, answer.receipt)
    ok = answer.refused_code == case.expect and signed in ("verified", "not expected")
    return Outcome(case, ok, answer.refused_code, signed, ms)


def _judge_receipt(case: Case, peer: NodeEntry, directory: Directory, receipt: bytes | None) -> str:
    try:
        header = read_header(case.data)[0]
    except MlaError:
        return "not expected"  # nothing addressable: a receiver cannot sign about it
    if receipt is None:
        return "missing: a refusal of a readable envelope must be signed"
    try:
        verified = verify_receipt(
            receipt,
            directory,
            expect_message_id=header.message_id,
            expect_envelope_digest=hashlib.sha256(case.data).digest(),
            expect_signer=peer.state,
        )
    except MlaError as exc:
        return f"does not verify: {exc.code}"
    if verified.status != REJECTED or verified.code != case.expect:
        return f"says {verified.status} {verified.code}"
    return "verified"


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


async def run_all(
    transport: Transport,
    peer: NodeEntry,
    directory: Directory,
    cases: list[Case],
    on_outcome: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Send the cases one after the other (a peer may limit concurrent connections), then, when
    the transport carries batches, those that fit in one batch."""
    outcomes = []
    for case in cases:
        outcome = await run_case(transport, peer, directory, case)
        if on_outcome is not None:
            on_outcome(outcome)
        outcomes.append(outcome)
        await asyncio.sleep(0)
    if isinstance(transport, BatchTransport):
        batched = await run_batch(transport, peer, directory, cases)
        for outcome in batched:
            if on_outcome is not None:
                on_outcome(outcome)
        outcomes += batched
    return outcomes
