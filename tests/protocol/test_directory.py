"""The signed directory and the trust root: every way a directory can be wrong is refused.

Attacks follow python-tuf's mutate-and-re-sign pattern: change the body, sign it again with the
real root key (what a buggy authority could publish) or with another key (what an attacker can).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest

from mla_node.errors import MlaError, TrustError
from mla_node.protocol import codec
from mla_node.protocol.directory import (
    Directory,
    KeyProblem,
    TrustRoot,
    sign_directory,
    verify_directory,
)
from mla_node.protocol.keys import Suite, key_id
from tests.factory import (
    DAY,
    HOUR,
    NOW,
    TestNetwork,
    fixed_encryption_key,
    fixed_signing_key,
    make_network,
)


@pytest.fixture
def net() -> TestNetwork:
    return make_network(now=NOW)


def refused(code: str, action: Callable[[], object]) -> TrustError:
    with pytest.raises(TrustError) as info:
        action()
    assert info.value.code == code, f"{info.value.code}: {info.value.detail}"
    return info.value


def verify(net: TestNetwork, data: bytes, **kw: Any) -> Directory:
    return verify_directory(data, net.trust, now=kw.pop("now", NOW), **kw)


def resigned(net: TestNetwork, mutate: Callable[[dict[str, Any]], None]) -> bytes:
    return net.resign_directory(mutate=mutate, install=False)


# --- the good case --------------------------------------------------------------------------------


def test_verified_directory_has_what_was_signed(net: TestNetwork) -> None:
    d = net.directory
    assert (d.version, d.network, d.issued_at, d.expires_at) == (
        1,
        net.network,
        NOW,
        NOW + 30 * DAY,
    )
    assert set(d.nodes) == {"AR", "BR", "US"}
    assert d.raw == net.directory_bytes
    ar = d.nodes["AR"]
    assert ar.endpoint.startswith("https://127.0.0.1:")
    assert ar.suites == (Suite.MLKEM768_X25519.value, Suite.X25519.value)
    assert ar.tls_cert_sha256 == "sha256:" + hashlib.sha256(ar.tls_cert_der).hexdigest()
    assert [k.use for k in ar.keys] == ["sign", "encrypt", "encrypt"]
    assert ar.keys[0].kid == net.nodes["AR"].signing.kid
    assert d.revoked == {}


def test_signing_is_deterministic(net: TestNetwork) -> None:
    assert make_network(now=NOW).directory_bytes == net.directory_bytes


def test_newer_version_accepted(net: TestNetwork) -> None:
    v1 = net.directory
    data = net.resign_directory()
    assert net.directory.version == 2
    assert verify(net, data, current_version=v1.version).version == 2
    # the same directory again (a re-fetch) is fine
    digest = hashlib.sha256(data).digest()
    assert verify(net, data, current_version=2, current_digest=digest)


def test_second_root_key_in_trust_root(net: TestNetwork) -> None:
    new_root = fixed_signing_key("root-2")
    trust = TrustRoot(net.network, {**net.trust.root_keys, new_root.kid: new_root.public}, b"")
    data = sign_directory(new_root, net.directory_map())
    assert verify_directory(data, trust, now=NOW).version == 2


# --- forged or tampered ---------------------------------------------------------------------------


def test_tampered_byte(net: TestNetwork) -> None:
    data = bytearray(net.directory_bytes)
    i = data.index(b"https://127.0.0.1") + 8
    data[i] ^= 1
    refused("directory_bad_signature", lambda: verify(net, bytes(data)))


def test_signed_by_unknown_root_key(net: TestNetwork) -> None:
    data = net.resign_directory(root=fixed_signing_key("attacker"), install=False)
    refused("directory_bad_signature", lambda: verify(net, data))


def test_signed_by_other_key_claiming_the_root_kid(net: TestNetwork) -> None:
    attacker = fixed_signing_key("attacker")
    body = codec.pack(net.directory_map())
    signature = attacker.sign(codec.pae(codec.DOMAIN_DIRECTORY, net.root.kid.encode(), body))
    data = codec.pack([1, net.root.kid, body, signature])
    refused("directory_bad_signature", lambda: verify(net, data))


def test_signature_of_another_kind_of_object(net: TestNetwork) -> None:
    """The root's signature over the same body under the receipt domain is no directory."""
    body = codec.pack(net.directory_map())
    signature = net.root.sign(codec.pae(codec.DOMAIN_RECEIPT, net.root.kid.encode(), body))
    data = codec.pack([1, net.root.kid, body, signature])
    refused("directory_bad_signature", lambda: verify(net, data))


@pytest.mark.parametrize(
    "outer",
    [
        [2, "kid", b"body", bytes(64)],
        [True, "kid", b"body", bytes(64)],
        [1, b"kid", b"body", bytes(64)],
        [1, "kid", "body", bytes(64)],
        [1, "kid", b"body"],
        {"kid": "x"},
    ],
)
def test_container_malformed(net: TestNetwork, outer: Any) -> None:
    refused("directory_bad_signature", lambda: verify(net, codec.pack(outer)))


def test_truncated_or_garbage(net: TestNetwork) -> None:
    for cut in range(0, len(net.directory_bytes), 97):
        with pytest.raises(TrustError):
            verify(net, net.directory_bytes[:cut])
    with pytest.raises(TrustError):
        verify(net, b"\xdd\xff\xff\xff\xff")


# --- rollback, freeze, expiry ---------------------------------------------------------------------


def test_rollback_to_lower_version(net: TestNetwork) -> None:
    old = net.directory_bytes
    net.resign_directory()
    net.resign_directory()
    refused("directory_rollback", lambda: verify(net, old, current_version=net.directory.version))


def test_same_version_different_content(net: TestNetwork) -> None:
    current = hashlib.sha256(net.directory_bytes).digest()
    other = net.resign_directory(version=1, issued_at=NOW + 1, install=False)
    refused(
        "directory_rollback",
        lambda: verify(net, other, current_version=1, current_digest=current),
    )


def test_expired(net: TestNetwork) -> None:
    refused("directory_expired", lambda: verify(net, net.directory_bytes, now=NOW + 30 * DAY))
    assert verify(net, net.directory_bytes, now=NOW + 30 * DAY - 1)


def test_signed_already_expired(net: TestNetwork) -> None:
    data = net.resign_directory(expires_at=NOW - HOUR, install=False)
    refused("directory_expired", lambda: verify(net, data))


def test_rollback_checked_before_expiry(net: TestNetwork) -> None:
    """An old directory that is also expired is reported as the rollback it is."""
    old = net.directory_bytes
    net.resign_directory()
    refused("directory_rollback", lambda: verify(net, old, current_version=2, now=NOW + 31 * DAY))


# --- well signed, ill formed ----------------------------------------------------------------------


def _node(body: dict[str, Any], state: str) -> dict[str, Any]:
    node: dict[str, Any] = next(n for n in body["nodes"] if n["state"] == state)
    return node


def _set(path: Callable[[dict[str, Any]], dict[str, Any]], key: str, value: Any) -> Any:
    def mutate(body: dict[str, Any]) -> None:
        path(body)[key] = value

    return mutate


def _top(body: dict[str, Any]) -> dict[str, Any]:
    return body


def _ar(body: dict[str, Any]) -> dict[str, Any]:
    return _node(body, "AR")


def _ar_key(body: dict[str, Any]) -> dict[str, Any]:
    key: dict[str, Any] = _node(body, "AR")["keys"][0]
    return key


def _ar_enc_key(body: dict[str, Any]) -> dict[str, Any]:
    key: dict[str, Any] = _node(body, "AR")["keys"][2]
    return key


MALFORMED: dict[str, Any] = {
    "endpoint http": _set(_ar, "endpoint", "http://127.0.0.1:1"),
    "endpoint ftp": _set(_ar, "endpoint", "ftp://x"),
    "endpoint upper-case scheme trick": _set(_ar, "endpoint", "HTTPS://x"),
    "endpoint too long": _set(_ar, "endpoint", "https://" + "a" * 600),
    "kid not matching key": _set(_ar_key, "kid", "0" * 24),
    "key swapped under kid": _set(_ar_key, "public", fixed_signing_key("other").public),
    "encryption kid not matching": _set(_ar_enc_key, "public", bytes(32)),
    "unknown key use": _set(_ar_key, "use", "auth"),
    "not_before as text": _set(_ar_key, "not_before", "0"),
    "not_after as bool": _set(_ar_key, "not_after", True),
    "tls hash not matching cert": _set(_ar, "tls_cert_sha256", "sha256:" + "0" * 64),
    "tls cert as text": _set(_ar, "tls_cert", "cert"),
    "state not an OAS member": _set(_ar, "state", "FR"),
    "state lower case": _set(_ar, "state", "ar"),
    "suites not strings": _set(_ar, "suites", [1]),
    "nodes not a list": _set(_top, "nodes", {"AR": {}}),
    "version as text": _set(_top, "version", "2"),
    "expires_at missing": lambda body: body.pop("expires_at"),
    "kind not directory": _set(_top, "kind", "receipt"),
    "format version 2": _set(_top, "v", 2),
    "revoked_at as text": _set(_top, "revoked", [{"kid": "a", "revoked_at": "now"}]),
    "repeated state": lambda body: body["nodes"].append(dict(body["nodes"][0])),
    "wrong network": _set(_top, "network", "another-network"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_well_signed_but_malformed(net: TestNetwork, name: str) -> None:
    data = resigned(net, MALFORMED[name])
    refused("directory_malformed", lambda: verify(net, data))


@pytest.mark.parametrize(
    ("alg", "public"),
    [
        ("ed25519", bytes(33)),
        ("ed25519", b""),
        (Suite.X25519.value, bytes(32)),
        ("ecdsa-p256", bytes(32)),
    ],
)
def test_sign_key_must_be_raw_ed25519(net: TestNetwork, alg: str, public: bytes) -> None:
    """A key listed for signing is an Ed25519 key of 32 bytes, whatever kid it comes with."""

    def mutate(body: dict[str, Any]) -> None:
        key = _ar_key(body)
        key.update(alg=alg, public=public, kid=key_id(alg, public))

    refused("directory_malformed", lambda: verify(net, resigned(net, mutate)))


# --- keys in the directory ------------------------------------------------------------------------


def test_check_key_live_and_historical(net: TestNetwork) -> None:
    kid = net.nodes["AR"].signing.kid
    d = net.directory
    assert d.check_key("AR", kid, "sign", NOW, live=True)[1] is None
    assert d.check_key("BR", kid, "sign", NOW, live=True)[1] is KeyProblem.UNKNOWN
    assert d.check_key("ZZ", kid, "sign", NOW, live=True)[1] is KeyProblem.UNKNOWN
    assert d.check_key("AR", kid, "encrypt", NOW, live=True)[1] is KeyProblem.UNKNOWN
    assert d.check_key("AR", kid, "sign", NOW - 2 * DAY, live=False)[1] is KeyProblem.NOT_VALID
    net.resign_directory(revoked={kid: NOW})
    d = net.directory
    assert d.revoked == {kid: NOW}
    assert d.check_key("AR", kid, "sign", NOW - 1, live=True)[1] is KeyProblem.REVOKED
    assert d.check_key("AR", kid, "sign", NOW - 1, live=False)[1] is None
    assert d.check_key("AR", kid, "sign", NOW, live=False)[1] is KeyProblem.REVOKED


def test_encryption_key_picks_newest_valid_unrevoked(net: TestNetwork) -> None:
    h = Suite.MLKEM768_X25519
    first = net.nodes["BR"].encryption(h)
    later = net.rotate_encryption_key("BR", h, not_before=NOW + DAY)
    net.resign_directory()
    d = net.directory

    def chosen(d: Directory, at: int) -> str | None:
        entry = d.encryption_key("BR", h, at)
        return entry.kid if entry else None

    assert chosen(d, NOW) == first.kid
    assert chosen(d, NOW + DAY) == later.kid
    assert d.encryption_key("ZZ", h, NOW) is None
    net.resign_directory(revoked={later.kid: NOW})
    assert chosen(net.directory, NOW + DAY) == first.kid


def test_unknown_suites_are_carried_not_used() -> None:
    net = make_network(now=NOW, suites={"US": [Suite.X25519.value]})

    def mutate(body: dict[str, Any]) -> None:
        _node(body, "US")["suites"].append("FUTURE-KEM")

    d = verify_directory(resigned(net, mutate), net.trust, now=NOW)
    assert d.nodes["US"].suites == (Suite.X25519.value, "FUTURE-KEM")


# --- trust root JSON ------------------------------------------------------------------------------


def test_trust_root_json_round_trip(net: TestNetwork) -> None:
    text = net.trust.to_json()
    obj = json.loads(text)
    assert obj["format"] == "mla-node-trust-root/1"
    assert TrustRoot.from_json(text) == net.trust


@pytest.mark.parametrize(
    "change",
    [
        {"format": "mla-node-trust-root/2"},
        {"root_keys": [{"kid": "0" * 24, "alg": "ed25519", "public": "AAAA"}]},
        {"root_keys": [{"kid": "x", "alg": "ed25519", "public": "not base64!"}]},
        {"root_keys": "nope"},
        {"network": None, "root_keys": [{"alg": "ed25519"}]},
    ],
)
def test_trust_root_json_refused(net: TestNetwork, change: dict[str, Any]) -> None:
    obj = {**json.loads(net.trust.to_json()), **change}
    refused("directory_malformed", lambda: TrustRoot.from_json(json.dumps(obj).encode()))


def test_trust_root_key_alg_must_be_ed25519(net: TestNetwork) -> None:
    obj = json.loads(net.trust.to_json())
    obj["root_keys"][0]["alg"] = "x25519"
    refused("directory_malformed", lambda: TrustRoot.from_json(json.dumps(obj).encode()))
    with pytest.raises(MlaError):
        TrustRoot.from_json(b"not json")


def test_fixed_keys_are_fixed() -> None:
    assert fixed_signing_key("a").kid == fixed_signing_key("a").kid != fixed_signing_key("b").kid
    x = fixed_encryption_key("a", Suite.X25519)
    assert x.public == fixed_encryption_key("a", Suite.X25519).public


def test_factory_parameters() -> None:
    net = make_network(("AR", "MX"), now=NOW, version=7, valid_ms=DAY, key_valid_ms=2 * DAY)
    assert (net.directory.version, net.directory.expires_at) == (7, NOW + DAY)
    assert set(net.directory.nodes) == {"AR", "MX"}
    assert {k.not_after for k in net.directory.nodes["MX"].keys} == {NOW + DAY}
    assert net.nodes["AR"].endpoint != net.nodes["MX"].endpoint
    ids = [net.ids.next(NOW) for _ in range(3)]
    assert ids == sorted(ids)
    assert all(len(i) == 26 for i in ids)
    assert len(set(ids)) == 3
