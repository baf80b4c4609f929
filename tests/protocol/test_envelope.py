"""Envelope v1: round trips, and every envelope threat of threats.md refused with its stable code.

Each attack builds the bytes an attacker could build (mutate, re-sign with what they hold) and
asserts the exact ``code`` of the refusal, so a check that silently stops working fails a test.
Replay (the same envelope delivered twice) is the storage layer's matter: the core is stateless.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mla_node.errors import EnvelopeError
from mla_node.protocol import codec
from mla_node.protocol.envelope import (
    HEADER_FIELDS,
    MAX_ENVELOPE,
    MAX_HEADER,
    envelope_digest,
    pad,
    read_header,
    unpad,
)
from mla_node.protocol.keys import Suite, choose_suite
from tests.factory import (
    DAY,
    HOUR,
    MAX_AGE_MS,
    MAX_FUTURE_MS,
    MINUTE,
    NOW,
    TestNetwork,
    craft_envelope,
    fake_kid,
    fixed_signing_key,
    flip_bit,
    header_map,
    make_network,
    split_envelope,
    ulid,
)

H = Suite.MLKEM768_X25519
X = Suite.X25519
BODY: dict[str, Any] = {
    "form": "mla_request",
    "subject": "Solicitud de asistencia: ñandú",
    "count": 3,
    "items": [1, -2, {"blob": b"\x00\xff", "none": None, "ok": True}],
}
FUZZ_EXAMPLES = int(os.environ.get("MLA_FUZZ_EXAMPLES", "2000"))


@pytest.fixture
def net() -> TestNetwork:
    return make_network(now=NOW)


def refused(code: str, action: Callable[[], object]) -> EnvelopeError:
    with pytest.raises(EnvelopeError) as info:
        action()
    assert info.value.code == code, f"{info.value.code}: {info.value.detail}"
    return info.value


def refused_at(net: TestNetwork, me: str, data: bytes, code: str, now: int | None = None) -> None:
    refused(code, lambda: net.open(me, data, now))


# --- round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("suite", list(Suite))
def test_round_trip_in_each_suite(net: TestNetwork, suite: Suite) -> None:
    data = net.seal("AR", "BR", BODY, suite=suite, mid=ulid(NOW, 7), message_type="notice")
    opened = net.open("BR", data)
    assert opened.body == BODY
    assert opened.raw == data
    assert opened.digest == envelope_digest(data) == hashlib.sha256(data).digest()
    h = opened.header
    assert (h.version, h.suite, h.message_id, h.type) == (1, suite.value, ulid(NOW, 7), "notice")
    assert (h.sender, h.recipient, h.created_at) == ("AR", "BR", NOW)
    assert h.sender_kid == net.nodes["AR"].signing.kid
    assert h.recipient_kid == net.nodes["BR"].encryption(suite).kid


def test_strongest_shared_suite_is_chosen(net: TestNetwork) -> None:
    assert net.open("US", net.seal("AR", "US", BODY)).header.suite == H.value


def test_node_listing_only_x25519_gets_x25519() -> None:
    net = make_network(now=NOW, suites={"US": [X.value]})
    assert [k.alg for k in net.directory.nodes["US"].keys if k.use == "encrypt"] == [X.value]
    assert net.open("US", net.seal("AR", "US", BODY)).header.suite == X.value
    assert net.open("AR", net.seal("US", "AR", BODY)).header.suite == X.value
    assert net.open("BR", net.seal("AR", "BR", BODY)).header.suite == H.value


def test_choose_suite() -> None:
    assert choose_suite([X.value, H.value], [H.value, X.value]) is H
    assert choose_suite([X.value], [H.value, X.value]) is X
    assert choose_suite([H.value], [X.value]) is None
    assert choose_suite(["ROT13", X.value], ["ROT13", X.value]) is X
    assert choose_suite(["ROT13"], ["ROT13"]) is None


def test_newest_encryption_key_is_used_after_rotation(net: TestNetwork) -> None:
    new = net.rotate_encryption_key("BR", H, not_before=NOW - HOUR)
    net.resign_directory()
    old = net.seal("AR", "BR", BODY, recipient_key=net.nodes["BR"].keys[1].encryption)
    fresh = net.seal("AR", "BR", BODY)
    assert net.open("BR", fresh).header.recipient_kid == new.kid
    assert net.open("BR", old).body == BODY  # the old private key is kept for in-flight envelopes


def test_the_core_is_stateless_replay_is_for_storage(net: TestNetwork) -> None:
    data = net.seal("AR", "BR", BODY)
    first, second = net.open("BR", data), net.open("BR", data)
    assert (first.digest, first.header) == (second.digest, second.header)


def test_clear_header_holds_only_routing_and_size_is_padded(net: TestNetwork) -> None:
    small = net.seal("AR", "BR", {"s": "SENTINEL-1"})
    large = net.seal("AR", "BR", {"s": "SENTINEL-2" + "x" * 900})
    assert len(small) == len(large)
    assert header_map(small).keys() == HEADER_FIELDS
    assert b"SENTINEL" not in small
    assert b"SENTINEL" not in large


@pytest.mark.parametrize(("size", "bucket"), [(0, 1024), (1023, 1024), (1024, 2048), (5000, 8192)])
def test_padding_buckets(size: int, bucket: int) -> None:
    plain = bytes([7]) * size
    assert len(pad(plain)) == bucket
    assert unpad(pad(plain)) == plain


# --- time -----------------------------------------------------------------------------------------


def test_stale(net: TestNetwork) -> None:
    data = net.seal("AR", "BR", BODY, created=NOW - MAX_AGE_MS - 1)
    refused_at(net, "BR", data, "envelope_stale")
    assert net.open("BR", net.seal("AR", "BR", BODY, created=NOW - MAX_AGE_MS)).body == BODY


def test_from_the_future(net: TestNetwork) -> None:
    data = net.seal("AR", "BR", BODY, created=NOW + MAX_FUTURE_MS + 1)
    refused_at(net, "BR", data, "envelope_from_future")
    assert net.open("BR", net.seal("AR", "BR", BODY, created=NOW + MAX_FUTURE_MS)).body == BODY


def test_same_envelope_goes_stale_as_time_passes(net: TestNetwork) -> None:
    data = net.seal("AR", "BR", BODY)
    assert net.open("BR", data, NOW + MAX_AGE_MS).body == BODY
    refused_at(net, "BR", data, "envelope_stale", NOW + MAX_AGE_MS + 1)


# --- who sent it, to whom -------------------------------------------------------------------------


def test_reflection_back_to_the_sender(net: TestNetwork) -> None:
    refused_at(net, "AR", net.seal("AR", "BR", BODY), "envelope_wrong_recipient")


def test_wrong_recipient(net: TestNetwork) -> None:
    refused_at(net, "US", net.seal("AR", "BR", BODY), "envelope_wrong_recipient")


def test_forwarded_unchanged_by_recipient_to_third_party(net: TestNetwork) -> None:
    data = net.seal("AR", "BR", BODY)
    net.open("BR", data)
    refused_at(net, "US", data, "envelope_wrong_recipient")


def test_recipient_readdresses_header_keeping_signature(net: TestNetwork) -> None:
    data = net.seal("AR", "BR", BODY, suite=X)
    _, _, _, signature = split_envelope(data)
    new_header = {**header_map(data), "to": "US", "rkid": net.nodes["US"].encryption(X).kid}
    header_bytes = codec.pack(new_header)
    forged = craft_envelope(
        header_bytes, net.encrypt_for("US", header_bytes, BODY), None, signature=signature
    )
    refused_at(net, "US", forged, "envelope_bad_signature")


def test_recipient_reencrypts_to_third_party_but_cannot_sign_as_sender(net: TestNetwork) -> None:
    """B opened A's envelope, knows the plaintext, and builds a new one to C "from A"."""
    original = net.seal("AR", "BR", BODY)
    opened = net.open("BR", original)
    header = net.header("AR", "US", mid=opened.header.message_id, created=NOW)
    header_bytes = codec.pack(header)
    ciphertext = net.encrypt_for("US", header_bytes, opened.body)
    br = net.nodes["BR"].signing
    # 1. A's signature carried over: it covers another header and ciphertext.
    _, _, _, a_signature = split_envelope(original)
    refused_at(
        net,
        "US",
        craft_envelope(header_bytes, ciphertext, None, signature=a_signature),
        "envelope_bad_signature",
    )
    # 2. Signed by B, naming A's key: A's public key does not verify B's signature.
    refused_at(net, "US", craft_envelope(header, ciphertext, br), "envelope_bad_signature")
    # 3. Signed by B, naming B's key but from A: B's key is not one of A's keys.
    header_b = {**header, "skid": br.kid}
    refused_at(
        net,
        "US",
        craft_envelope(header_b, net.encrypt_for("US", codec.pack(header_b), BODY), br),
        "envelope_unknown_key",
    )
    # Honest: B sends it in its own name, and C sees it comes from B.
    assert net.open("US", net.seal("BR", "US", opened.body)).header.sender == "BR"


def test_ciphertext_moved_to_another_header_is_undecryptable(net: TestNetwork) -> None:
    """The header is bound into HPKE's info: a ciphertext only opens under its own header."""
    header = net.header("AR", "BR")
    other = {**header, "mid": ulid(NOW, 999_999)}
    ciphertext = net.encrypt_for("BR", codec.pack(other), BODY)
    data = craft_envelope(header, ciphertext, net.nodes["AR"].signing)
    refused_at(net, "BR", data, "envelope_undecryptable")


def test_encrypted_to_another_node_key_is_undecryptable(net: TestNetwork) -> None:
    header = net.header("AR", "BR")
    ciphertext = net.encrypt_for("US", codec.pack(header), BODY)
    refused_at(
        net,
        "BR",
        craft_envelope(header, ciphertext, net.nodes["AR"].signing),
        "envelope_undecryptable",
    )


def test_unknown_sender(net: TestNetwork) -> None:
    signer = fixed_signing_key("not-a-member")
    for sender in ("CA", "ZZ", ""):
        changes: dict[str, Any] = {"from": sender, "skid": signer.kid}
        header = net.header("AR", "BR", **changes)
        data = craft_envelope(header, net.encrypt_for("BR", codec.pack(header), BODY), signer)
        refused_at(net, "BR", data, "envelope_unknown_sender")


def test_unknown_signing_key(net: TestNetwork) -> None:
    signer = fixed_signing_key("stolen-laptop")
    header = net.header("AR", "BR", skid=signer.kid)
    data = craft_envelope(header, net.encrypt_for("BR", codec.pack(header), BODY), signer)
    refused_at(net, "BR", data, "envelope_unknown_key")
    header = net.header("AR", "BR", skid=fake_kid("x"))
    data = craft_envelope(header, net.encrypt_for("BR", codec.pack(header), BODY), signer)
    refused_at(net, "BR", data, "envelope_unknown_key")


def test_encryption_key_id_named_as_signing_key(net: TestNetwork) -> None:
    """A kid of the sender's, but of an encryption key: the use is part of the lookup."""
    signer = net.nodes["AR"].signing
    header = net.header("AR", "BR", skid=net.nodes["AR"].encryption(X).kid)
    data = craft_envelope(header, net.encrypt_for("BR", codec.pack(header), BODY), signer)
    refused_at(net, "BR", data, "envelope_unknown_key")


def test_unknown_recipient_key(net: TestNetwork) -> None:
    header = net.header("AR", "BR", rkid=fake_kid("y"))
    data = craft_envelope(
        header, net.encrypt_for("BR", codec.pack(header), BODY), net.nodes["AR"].signing
    )
    refused_at(net, "BR", data, "envelope_unknown_key")


def test_recipient_key_of_another_suite(net: TestNetwork) -> None:
    header = net.header("AR", "BR", enc_suite=X, rkid=net.nodes["BR"].encryption(H).kid)
    data = craft_envelope(
        header, net.encrypt_for("BR", codec.pack(header), BODY), net.nodes["AR"].signing
    )
    refused_at(net, "BR", data, "envelope_unknown_key")


# --- keys: revocation and validity windows --------------------------------------------------------


def test_revoked_signing_key_is_refused_live(net: TestNetwork) -> None:
    before = net.seal("AR", "BR", BODY, created=NOW - HOUR)
    assert net.open("BR", before).body == BODY
    net.resign_directory(revoked={net.nodes["AR"].signing.kid: NOW})
    # Live traffic: any revocation refuses the key, even for an envelope dated before it,
    # because a compromised key can backdate what it signs.
    refused_at(net, "BR", before, "envelope_revoked_key")
    refused_at(net, "BR", net.seal("AR", "BR", BODY), "envelope_revoked_key")


def test_revoked_recipient_encryption_key_is_not_chosen(net: TestNetwork) -> None:
    br_hybrid = net.nodes["BR"].encryption(H)
    net.resign_directory(revoked={br_hybrid.kid: NOW})
    assert net.directory.encryption_key("BR", H, NOW) is None
    assert net.directory.encryption_key("BR", X, NOW) is not None


def test_envelope_sealed_to_a_revoked_encryption_key_is_refused(net: TestNetwork) -> None:
    sealed_before = net.seal("AR", "BR", BODY, suite=H)
    net.resign_directory(revoked={net.nodes["BR"].encryption(H).kid: NOW})
    refused_at(net, "BR", sealed_before, "envelope_revoked_key")


def test_signing_key_not_yet_valid(net: TestNetwork) -> None:
    new = net.rotate_signing_key("AR", not_before=NOW + HOUR)
    net.resign_directory()
    refused_at(net, "BR", net.seal("AR", "BR", BODY, signing_key=new), "envelope_key_not_valid")
    # Inside its window it is accepted, and the old key still is during the overlap.
    later = NOW + 2 * HOUR
    assert net.open("BR", net.seal("AR", "BR", BODY, created=later), later).body == BODY
    old = net.nodes["AR"].keys[0].signing
    assert net.open("BR", net.seal("AR", "BR", BODY, signing_key=old, created=later), later)


def test_signing_key_expired(net: TestNetwork) -> None:
    old = net.nodes["AR"].signing
    net.rotate_signing_key("AR", not_before=NOW - DAY, old_not_after=NOW - MINUTE)
    net.resign_directory()
    data = net.seal("AR", "BR", BODY, signing_key=old, created=NOW - 2 * MINUTE)
    refused_at(net, "BR", data, "envelope_key_not_valid")
    assert net.open("BR", data, NOW - MINUTE).body == BODY  # at the edge of its window: valid
    assert net.open("BR", net.seal("AR", "BR", BODY)).header.sender_kid != old.kid


# --- versions and suites --------------------------------------------------------------------------


@pytest.mark.parametrize(("outer", "inner"), [(2, 1), (0, 1), (1, 2), (1, 0), (2, 2), (-1, 1)])
def test_unsupported_or_downgraded_version(net: TestNetwork, outer: int, inner: int) -> None:
    header = net.header("AR", "BR")
    header["v"] = inner
    data = craft_envelope(
        header,
        net.encrypt_for("BR", codec.pack(header), BODY),
        net.nodes["AR"].signing,
        outer_version=outer,
    )
    refused_at(net, "BR", data, "envelope_unsupported_version")


@pytest.mark.parametrize("outer", ["1", True, None, 1.0, b"\x01"])
def test_outer_version_of_wrong_type(net: TestNetwork, outer: Any) -> None:
    header = net.header("AR", "BR")
    data = craft_envelope(
        header,
        net.encrypt_for("BR", codec.pack(header), BODY),
        net.nodes["AR"].signing,
        outer_version=outer,
    )
    refused_at(net, "BR", data, "envelope_malformed")


def test_suite_not_accepted_by_recipient() -> None:
    net = make_network(now=NOW, suites={"US": [X.value]})
    data = net.seal("AR", "US", BODY, suite=H)  # to a hybrid key US holds but does not publish
    refused_at(net, "US", data, "envelope_unsupported_suite")


def test_unknown_suite_name(net: TestNetwork) -> None:
    header = net.header("AR", "BR", enc_suite=X)
    header["suite"] = "X25519-HKDFSHA256-CHACHA20POLY1305"
    data = craft_envelope(
        header, net.encrypt_for("BR", codec.pack(header), BODY), net.nodes["AR"].signing
    )
    refused_at(net, "BR", data, "envelope_unsupported_suite")


def test_suite_string_mutated_in_transit(net: TestNetwork) -> None:
    data = net.seal("AR", "BR", BODY, suite=H)
    version, _, ciphertext, signature = split_envelope(data)
    header = {**header_map(data), "suite": X.value}
    forged = craft_envelope(header, ciphertext, None, signature=signature, outer_version=version)
    refused_at(net, "BR", forged, "envelope_bad_signature")


# --- unsigned, unencrypted ------------------------------------------------------------------------


def test_signature_zeroed(net: TestNetwork) -> None:
    _, header, ciphertext, _ = split_envelope(net.seal("AR", "BR", BODY))
    forged = craft_envelope(header, ciphertext, None, signature=bytes(64))
    refused_at(net, "BR", forged, "envelope_bad_signature")


@pytest.mark.parametrize("length", [0, 1, 63, 65, 128])
def test_signature_of_wrong_length(net: TestNetwork, length: int) -> None:
    _, header, ciphertext, signature = split_envelope(net.seal("AR", "BR", BODY))
    forged = craft_envelope(header, ciphertext, None, signature=(signature * 3)[:length])
    refused_at(net, "BR", forged, "envelope_malformed")


def test_signature_of_another_envelope(net: TestNetwork) -> None:
    _, header, ciphertext, _ = split_envelope(net.seal("AR", "BR", BODY))
    _, _, _, other = split_envelope(net.seal("AR", "BR", BODY))
    forged = craft_envelope(header, ciphertext, None, signature=other)
    refused_at(net, "BR", forged, "envelope_bad_signature")


def test_signature_missing(net: TestNetwork) -> None:
    version, header, ciphertext, _ = split_envelope(net.seal("AR", "BR", BODY))
    refused_at(net, "BR", codec.pack([version, header, ciphertext]), "envelope_malformed")


def test_plaintext_in_place_of_ciphertext(net: TestNetwork) -> None:
    data = net.seal("AR", "BR", BODY)
    _, header, _, signature = split_envelope(data)
    forged = craft_envelope(header, codec.pack(BODY), None, signature=signature)
    refused_at(net, "BR", forged, "envelope_bad_signature")
    # Even signed by the real sender, plaintext is not a ciphertext: it never opens.
    signer = net.nodes["AR"].signing
    for plain in (codec.pack(BODY), pad(codec.pack(BODY)), b""):
        refused_at(net, "BR", craft_envelope(header, plain, signer), "envelope_undecryptable")


# --- malformed, truncated, oversized, hostile -----------------------------------------------------


@pytest.mark.parametrize("suite", list(Suite))
def test_truncated_at_every_offset(net: TestNetwork, suite: Suite) -> None:
    data = net.seal("AR", "BR", BODY, suite=suite)
    for cut in range(len(data)):
        refused_at(net, "BR", data[:cut], "envelope_malformed")


def test_trailing_bytes(net: TestNetwork) -> None:
    refused_at(net, "BR", net.seal("AR", "BR", BODY) + b"\x00", "envelope_malformed")


def test_oversized(net: TestNetwork) -> None:
    refused_at(net, "BR", bytes(MAX_ENVELOPE + 1), "envelope_too_large")
    # A real, signed envelope over the limit is refused before it is parsed or verified.
    header = net.header("AR", "BR")
    data = craft_envelope(header, bytes(MAX_ENVELOPE), net.nodes["AR"].signing)
    refused_at(net, "BR", data, "envelope_too_large")


def test_header_over_its_size_limit(net: TestNetwork) -> None:
    header = net.header("AR", "BR", note="x" * MAX_HEADER)
    refused_at(
        net, "BR", craft_envelope(header, b"c", net.nodes["AR"].signing), "envelope_malformed"
    )


HOSTILE: dict[str, bytes] = {
    "array claiming 2^32 items": b"\xdd\xff\xff\xff\xff",
    "map claiming 2^32 items": b"\xdf\xff\xff\xff\xff",
    "bin claiming 4 GiB": b"\xc6\xff\xff\xff\xff",
    "str claiming 4 GiB": b"\xdb\xff\xff\xff\xff",
    "10,000-deep arrays": b"\x91" * 10_000 + b"\x01",
    "10,000-deep maps": b"\x81\xa1k" * 10_000 + b"\x01",
    "ext type": msgpack.packb(msgpack.ExtType(5, b"abc")),
    "empty ext type": b"\xc7\x00\x05",
    "timestamp ext": b"\xd6\xff\x00\x00\x00\x00",
    "map with int keys": msgpack.packb({1: 2}),
    "map with bin keys": b"\x81\xc4\x01a\x01",
    "never-used byte 0xc1": b"\xc1",
    "invalid utf-8 str": b"\xa2\xff\xfe",
    "empty input": b"",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_msgpack_outer(net: TestNetwork, name: str) -> None:
    started = time.perf_counter()
    refused_at(net, "BR", HOSTILE[name], "envelope_malformed")
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_msgpack_as_header(net: TestNetwork, name: str) -> None:
    data = craft_envelope(HOSTILE[name], b"c", net.nodes["AR"].signing)
    started = time.perf_counter()
    refused_at(net, "BR", data, "envelope_malformed")
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    "plaintext",
    [
        pytest.param(pad(msgpack.packb({"a": msgpack.ExtType(1, b"x")})), id="ext in body"),
        pytest.param(pad(msgpack.packb({"a": {1: 2}})), id="int key in body"),
        pytest.param(pad(b"\x82\xa1a\x01\xa1a\x02"), id="duplicate key in body"),
        pytest.param(pad(msgpack.packb([1, 2])), id="body not a map"),
        pytest.param(pad(msgpack.packb("text")), id="body a string"),
        pytest.param(pad(b"\x91" * 13 + b"\x01"), id="body too deep"),
        pytest.param(codec.pack(BODY), id="no padding"),
        pytest.param(pad(codec.pack(BODY)) + b"\x01", id="bad padding"),
        pytest.param(b"", id="empty plaintext"),
    ],
)
def test_signed_but_bad_body_is_malformed(net: TestNetwork, plaintext: bytes) -> None:
    header = net.header("AR", "BR")
    ciphertext = net.encrypt_plaintext("BR", codec.pack(header), plaintext)
    data = craft_envelope(header, ciphertext, net.nodes["AR"].signing)
    refused_at(net, "BR", data, "envelope_malformed")


def test_body_at_max_depth_opens(net: TestNetwork) -> None:
    body: Any = 1
    for _ in range(11):
        body = [body]
    assert net.open("BR", net.seal("AR", "BR", {"deep": body})).body == {"deep": body}


@pytest.mark.parametrize(
    ("change", "value"),
    [
        ("mid", "01KDVDNA00000000000000001"),  # 25 characters
        ("mid", "01KDVDNA0000000000000000001"),  # 27
        ("mid", "01kdvdna000000000000000001"),  # lower case
        ("mid", "01KDVDNA00000000000000000U"),  # U is not Crockford
        ("mid", ""),
        ("mid", 12345),
        ("created", "1767225600000"),
        ("created", True),
        ("created", 1.5),
        ("v", True),
        ("type", "extradition"),
        ("from", "ARG"),
        ("to", "BRA"),
        ("skid", "k" * 65),
        ("suite", b"X25519"),
        ("rkid", None),
        ("skid", None),
        ("skid", msgpack.ExtType(1, b"x")),
        ("to", {"a": 1}),
        ("from", [1]),
        ("subject", "Extradition of J. Doe"),  # anything but routing in clear is refused
    ],
)
def test_malformed_header_fields(net: TestNetwork, change: str, value: Any) -> None:
    header = net.header("AR", "BR", **{change: value})
    if value is None:
        assert change not in header
    data = craft_envelope(
        header, net.encrypt_for("BR", codec.pack(header), BODY), net.nodes["AR"].signing
    )
    refused_at(net, "BR", data, "envelope_malformed")


def test_header_duplicate_key(net: TestNetwork) -> None:
    header = net.header("AR", "BR")
    packed = codec.pack(header)
    # append a second "to" by raising the map's item count from 9 to 10
    assert packed[0] == 0x89
    duplicated = b"\x8a" + packed[1:] + codec.pack("to") + codec.pack("US")
    data = craft_envelope(duplicated, b"c", net.nodes["AR"].signing)
    refused_at(net, "BR", data, "envelope_malformed")


def test_outer_not_an_array_of_four(net: TestNetwork) -> None:
    version, header, ciphertext, signature = split_envelope(net.seal("AR", "BR", BODY))
    for outer in (
        {"v": 1},
        [version, header, ciphertext, signature, b""],
        [version, "text", ciphertext, signature],
        [version, header, [ciphertext], signature],
        [version, header, ciphertext, None],
    ):
        refused_at(net, "BR", codec.pack(outer), "envelope_malformed")


def test_read_header_is_unverified_but_strict(net: TestNetwork) -> None:
    data = net.seal("AR", "BR", BODY)
    header, header_bytes, ciphertext, signature = read_header(data)
    assert (header.sender, header.recipient) == ("AR", "BR")
    assert codec.pack([1, header_bytes, ciphertext, signature]) == data


# --- any change is refused ------------------------------------------------------------------------

_FUZZ_NET = make_network(now=NOW)
_FUZZ_ENVELOPES = {suite: _FUZZ_NET.seal("AR", "BR", BODY, suite=suite) for suite in Suite}


def _regions(data: bytes) -> dict[str, tuple[int, int]]:
    _, header, ciphertext, signature = split_envelope(data)
    out = {}
    for name, part in (("header", header), ("ciphertext", ciphertext), ("signature", signature)):
        start = data.index(part)
        out[name] = (start, start + len(part))
    out["anywhere"] = (0, len(data))
    return out


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    suite=st.sampled_from(list(Suite)),
    region=st.sampled_from(["header", "ciphertext", "signature", "anywhere"]),
    flips=st.lists(st.floats(min_value=0, max_value=1, exclude_max=True), min_size=1, max_size=3),
)
def test_bit_flips_are_always_refused(suite: Suite, region: str, flips: list[float]) -> None:
    data = _FUZZ_ENVELOPES[suite]
    start, end = _regions(data)[region]
    mutated = data
    for where in flips:
        mutated = flip_bit(mutated, start * 8 + int(where * (end - start) * 8))
    if mutated == data:  # two flips of the same bit cancel out
        return
    with pytest.raises(EnvelopeError):
        _FUZZ_NET.open("BR", mutated)


def test_fuzz_fixture_envelopes_are_valid() -> None:
    for data in _FUZZ_ENVELOPES.values():
        assert _FUZZ_NET.open("BR", data).body == BODY
