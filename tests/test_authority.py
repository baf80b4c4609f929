"""Trust set-up on real files: the authority's folder, nodes' keys folders, admission."""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mla_node import authority, identity, pki
from mla_node.errors import ConfigError, DirectoryBadSignature, DirectoryRollback, KeyFileError
from mla_node.protocol.directory import Directory, KeyProblem, TrustRoot, verify_directory
from mla_node.protocol.keys import (
    EncryptionKey,
    SigningKey,
    Suite,
    generate_encryption_key,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
STATES = ("AR", "BR", "US")
ALL_SUITES = [Suite.MLKEM768_X25519, Suite.X25519]


def ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def endpoint(state: str) -> str:
    return f"https://mla.{state.lower()}.example:8443/"


@dataclass
class Network:
    authority: Path
    trust: TrustRoot
    keys: dict[str, Path]
    root: Path

    def new_node(self, state: str, folder: str, **overrides: Any) -> Path:
        """A keys folder with its registration, not yet admitted."""
        args: dict[str, Any] = {
            "state": state,
            "authority_name": f"Central authority of {state}",
            "endpoint": endpoint(state),
            "hostnames": [f"mla.{state.lower()}.example", "127.0.0.1"],
            "suites": ALL_SUITES,
            "now_ms": ms(NOW),
        }
        args.update(overrides)
        return identity.init_node(self.root / folder, **args)

    def directory(self, now: datetime = NOW) -> Directory:
        data = (self.authority / "directory.bin").read_bytes()
        return verify_directory(data, self.trust, now=ms(now))

    def registry(self) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads((self.authority / "registry.json").read_bytes())
        return obj


@pytest.fixture
def net(tmp_path: Path) -> Network:
    auth = tmp_path / "authority"
    trust = authority.init_authority(auth, now=NOW - timedelta(days=1))
    network = Network(auth, trust, {}, tmp_path)
    for state in STATES:
        registration = network.new_node(state, f"node-{state}")
        authority.admit(auth, registration, now=NOW)
        network.keys[state] = registration.parent
    return network


def edit_registration(keys_dir: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    """Change a registration and sign it again with the node's own key, as an attacker holding
    that key (or a careless operator) could: only the authority's checks stand in the way."""
    path = keys_dir / identity.REGISTRATION_FILE
    body = json.loads(path.read_bytes())
    change(body)
    key = SigningKey.from_private_bytes((keys_dir / identity.SIGNING_KEY_FILE).read_bytes())
    body["signature"] = base64.b64encode(
        key.sign(identity.registration_signing_bytes(body))
    ).decode()
    path.write_text(json.dumps(body))
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- the published directory --------------------------------------------------------------------


def test_directory_lists_every_admitted_node_with_its_keys(net: Network) -> None:
    directory = net.directory()
    assert directory.version == 3
    assert directory.network == "remja"
    assert directory.expires_at == ms(NOW + timedelta(days=30))
    assert sorted(directory.nodes) == list(STATES)
    for state in STATES:
        node = directory.nodes[state]
        registration = json.loads((net.keys[state] / "registration.json").read_bytes())
        assert node.endpoint == endpoint(state)
        assert node.authority == f"Central authority of {state}"
        assert list(node.suites) == [s.value for s in ALL_SUITES]
        assert [(k.kid, k.use, k.alg) for k in node.keys] == [
            (k["kid"], k["use"], k["alg"]) for k in registration["keys"]
        ]
        ident = identity.load_identity(net.keys[state])
        assert {k.kid for k in node.keys} == {ident.signing_key.kid, *ident.encryption_keys}
        for suite in ALL_SUITES:
            entry = directory.encryption_key(state, suite, ms(NOW))
            assert entry is not None
            assert entry.public == ident.encryption_keys[entry.kid].public
        sign_entry, problem = directory.check_key(
            state, ident.signing_key.kid, "sign", ms(NOW), live=True
        )
        assert problem is None
        assert sign_entry is not None
        assert sign_entry.public == ident.signing_key.public


def test_directory_pins_the_certificate_each_node_was_issued(net: Network) -> None:
    directory = net.directory()
    for state in STATES:
        node_cert = (net.keys[state] / "tls.pem").read_bytes()
        assert node_cert == (net.authority / "issued" / f"{state}.pem").read_bytes()
        der = pki.load_certificate_pem(node_cert).public_bytes(Encoding.DER)
        assert directory.nodes[state].tls_cert_der == der
        assert directory.nodes[state].tls_cert_sha256 == pki.certificate_fingerprint(der)


def test_issued_certificate_chains_to_the_ca_and_names_the_state(net: Network) -> None:
    ca = pki.load_certificate_pem((net.authority / "ca.pem").read_bytes())
    assert pki.certificate_pem(ca) == net.trust.tls_ca_pem
    for state in STATES:
        cert = pki.load_certificate_pem((net.keys[state] / "tls.pem").read_bytes())
        cert.verify_directly_issued_by(ca)  # raises if the signature does not verify
        assert pki.state_of_certificate(cert) == state
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert f"mla.{state.lower()}.example" in san.get_values_for_type(x509.DNSName)
        tls_key = pki.load_ec_private_key_pem((net.keys[state] / "tls.key").read_bytes())
        assert cert.public_key() == tls_key.public_key()


def test_identity_can_build_real_tls_contexts(net: Network) -> None:
    ident = identity.load_identity(net.keys["AR"])
    pki.server_ssl_context(ident.tls_cert_path, ident.tls_key_path, net.authority / "ca.pem")
    pki.client_ssl_context(ident.tls_cert_path, ident.tls_key_path, net.authority / "ca.pem")


def test_directory_signed_by_another_root_is_refused(net: Network, tmp_path: Path) -> None:
    rogue = authority.init_authority(tmp_path / "rogue", now=NOW)
    with pytest.raises(DirectoryBadSignature, match="unknown root key"):
        verify_directory((net.authority / "directory.bin").read_bytes(), rogue, now=ms(NOW))


def test_key_files_are_private_and_public_files_readable(net: Network) -> None:
    for name in ("root.key", "ca.key"):
        assert mode(net.authority / name) == 0o600
    for name in ("ca.pem", "trust-root.json", "registry.json", "directory.bin", "issued/AR.pem"):
        assert mode(net.authority / name) == 0o644
    keys = net.keys["AR"]
    for name in ("signing.key", "enc-mlkem768x25519.key", "enc-x25519.key", "tls.key"):
        assert mode(keys / name) == 0o600
    for name in ("tls.pem", "registration.json"):
        assert mode(keys / name) == 0o644


def test_trust_root_file_round_trips(net: Network) -> None:
    assert authority.load_trust_root(net.authority / "trust-root.json") == net.trust


def test_install_directory_copies_the_latest_directory(net: Network, tmp_path: Path) -> None:
    target = tmp_path / "node-AR-data" / "directory.bin"
    authority.install_directory(net.authority, target)
    assert target.read_bytes() == (net.authority / "directory.bin").read_bytes()
    authority.publish(net.authority, now=NOW)
    authority.install_directory(net.authority, target)
    assert verify_directory(target.read_bytes(), net.trust, now=ms(NOW)).version == 4
    assert [p.name for p in target.parent.iterdir()] == ["directory.bin"]  # no temp file left


# --- refused registrations ----------------------------------------------------------------------


def test_registration_changed_after_signing_is_refused(net: Network) -> None:
    path = net.new_node("MX", "node-MX")
    body = json.loads(path.read_bytes())
    body["endpoint"] = "https://attacker.example/"
    path.write_text(json.dumps(body))
    with pytest.raises(ConfigError) as info:
        authority.admit(net.authority, path, now=NOW)
    assert info.value.field == "signature"
    assert net.directory().version == 3
    assert not (net.authority / "issued" / "MX.pem").exists()
    assert not (path.parent / "tls.pem").exists()


def test_registration_for_a_state_outside_the_oas_is_refused(net: Network, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as at_init:
        net.new_node("FR", "node-FR")
    assert at_init.value.field == "state"
    assert not (tmp_path / "node-FR").exists()

    # The authority checks again: a registration may come from another implementation.
    path = edit_registration(net.new_node("MX", "node-MX").parent, lambda b: b.update(state="FR"))
    with pytest.raises(ConfigError) as at_admit:
        authority.admit(net.authority, path, now=NOW)
    assert at_admit.value.field == "state"
    assert net.directory().version == 3


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda b: b["keys"][1].update(kid=b["keys"][2]["kid"]), "keys[1].kid"),
        (lambda b: b["keys"][0].update(alg="X25519-HKDFSHA256-AES256GCM"), "keys[0].alg"),
        (lambda b: b.update(endpoint="http://mla.mx.example/"), "endpoint"),
        (lambda b: b.update(endpoint="https://elsewhere.example/"), "hostnames"),
        (lambda b: b.update(suites=["ROT13"]), "suites"),
        (lambda b: b.update(keys=b["keys"][:2]), "suites"),  # no key for the X25519 suite
        (lambda b: b.update(tls_csr_pem="not a CSR"), "tls_csr_pem"),
        (lambda b: b.update(hostnames=[]), "hostnames"),
    ],
)
def test_inconsistent_registration_is_refused_naming_the_field(
    net: Network, change: Callable[[dict[str, Any]], None], field: str
) -> None:
    path = edit_registration(net.new_node("MX", "node-MX").parent, change)
    with pytest.raises(ConfigError) as info:
        authority.admit(net.authority, path, now=NOW)
    assert info.value.field == field


def test_csr_whose_signature_does_not_verify_is_refused(net: Network) -> None:
    keys = net.new_node("MX", "node-MX").parent
    csr_pem = json.loads((keys / "registration.json").read_bytes())["tls_csr_pem"]
    # One bit flipped in the signature: the CSR still parses but proves possession of nothing.
    der = bytearray(x509.load_pem_x509_csr(csr_pem.encode()).public_bytes(Encoding.DER))
    der[-5] ^= 0x01
    broken = x509.load_der_x509_csr(bytes(der)).public_bytes(Encoding.PEM).decode()
    path = edit_registration(keys, lambda b: b.update(tls_csr_pem=broken))
    with pytest.raises(ConfigError, match="CSR's signature does not verify") as info:
        authority.admit(net.authority, path, now=NOW)
    assert info.value.field == "tls_csr_pem"


# --- changes to the network ---------------------------------------------------------------------


def test_readmitting_replaces_the_entry_and_bumps_the_version(net: Network) -> None:
    before = net.directory().nodes["BR"]
    later = NOW + timedelta(days=1)
    registration = net.new_node(
        "BR",
        "node-BR-new",
        endpoint="https://mla2.br.example/",
        hostnames=["mla2.br.example"],
        suites=[Suite.MLKEM768_X25519],
        now_ms=ms(later),
    )
    result = authority.admit(net.authority, registration, now=later)
    assert (result.state, result.version) == ("BR", 4)
    assert result.cert_path == registration.parent / "tls.pem"

    directory = net.directory(later)
    after = directory.nodes["BR"]
    assert directory.version == 4
    assert sorted(directory.nodes) == list(STATES)
    assert after.endpoint == "https://mla2.br.example/"
    assert after.suites == (Suite.MLKEM768_X25519.value,)
    assert after.tls_cert_der != before.tls_cert_der
    assert after.tls_cert_der == pki.load_certificate_pem(
        (net.authority / "issued" / "BR.pem").read_bytes()
    ).public_bytes(Encoding.DER)
    new_ident = identity.load_identity(registration.parent)
    assert directory.encryption_key("BR", Suite.MLKEM768_X25519, ms(later)) is not None
    assert directory.encryption_key("BR", Suite.X25519, ms(later)) is None

    # The old keys stay listed, closed at re-admission: past signatures still verify, new ones not.
    old_sign = next(k for k in before.keys if k.use == "sign")
    assert old_sign.kid != new_ident.signing_key.kid
    _, problem = directory.check_key("BR", old_sign.kid, "sign", ms(NOW), live=False)
    assert problem is None
    _, problem = directory.check_key("BR", old_sign.kid, "sign", ms(later), live=True)
    assert problem is KeyProblem.NOT_VALID
    _, problem = directory.check_key("BR", new_ident.signing_key.kid, "sign", ms(later), live=True)
    assert problem is None


def test_revoke_key_lists_the_kid_as_revoked(net: Network) -> None:
    kid = identity.load_identity(net.keys["US"]).signing_key.kid
    later = NOW + timedelta(hours=2)
    authority.revoke_key(net.authority, kid, now=later)
    directory = net.directory(later)
    assert directory.version == 4
    assert directory.revoked == {kid: ms(later)}
    _, problem = directory.check_key("US", kid, "sign", ms(NOW), live=True)
    assert problem is KeyProblem.REVOKED

    # Revoking again keeps the first time, so nothing signed in between becomes valid again.
    authority.revoke_key(net.authority, kid, now=later + timedelta(days=1))
    assert net.directory(later).revoked == {kid: ms(later)}


def test_revoking_an_unknown_kid_is_refused(net: Network) -> None:
    with pytest.raises(ConfigError) as info:
        authority.revoke_key(net.authority, "0" * 24, now=NOW)
    assert info.value.field == "kid"
    assert net.directory().version == 3


def test_remove_node_drops_it_and_keeps_revocations(net: Network) -> None:
    kid = identity.load_identity(net.keys["AR"]).signing_key.kid
    authority.revoke_key(net.authority, kid, now=NOW)
    authority.remove_node(net.authority, "AR", now=NOW)
    directory = net.directory()
    assert sorted(directory.nodes) == ["BR", "US"]
    assert kid in directory.revoked
    assert directory.version == 5
    with pytest.raises(ConfigError):
        authority.remove_node(net.authority, "AR", now=NOW)


def test_registry_survives_a_reload_and_publish_bumps_the_version(net: Network) -> None:
    first = net.directory()
    authority.publish(net.authority, now=NOW + timedelta(days=1), directory_valid_days=7)
    second = net.directory(NOW + timedelta(days=1))
    assert second.version == first.version + 1 == net.registry()["version"]
    assert second.nodes == first.nodes
    assert second.expires_at == ms(NOW + timedelta(days=8))
    # Nodes that accepted version 3 accept 4 and refuse going back to 3.
    verify_directory(second.raw, net.trust, now=ms(NOW), current_version=3)
    with pytest.raises(DirectoryRollback):
        verify_directory(first.raw, net.trust, now=ms(NOW), current_version=4)


def test_publish_refuses_a_root_key_that_does_not_match_the_trust_root(net: Network) -> None:
    root = net.authority / "root.key"
    root.unlink()
    pki.write_private_file(root, os.urandom(32))
    with pytest.raises(ConfigError, match="refused by the nodes"):
        authority.publish(net.authority, now=NOW)
    assert net.directory().version == 3


# --- the authority and node folders are never overwritten ---------------------------------------


def test_init_authority_refuses_to_overwrite(net: Network) -> None:
    before = (net.authority / "root.key").read_bytes()
    with pytest.raises(ConfigError, match="never overwritten"):
        authority.init_authority(net.authority, now=NOW)
    assert (net.authority / "root.key").read_bytes() == before


def test_init_node_refuses_to_overwrite_existing_keys(net: Network) -> None:
    keys = net.keys["AR"]
    before = {p.name: p.read_bytes() for p in keys.iterdir() if p.is_file()}
    with pytest.raises(ConfigError, match="never overwritten"):
        net.new_node("AR", "node-AR")
    assert {p.name: p.read_bytes() for p in keys.iterdir() if p.is_file()} == before


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"endpoint": "http://mla.mx.example/"}, "endpoint"),
        ({"endpoint": "https://other.example/"}, "hostnames"),
        ({"hostnames": []}, "hostnames"),
        ({"authority_name": " "}, "authority_name"),
        ({"suites": []}, "suites"),
        ({"suites": ["ROT13"]}, "suites"),
    ],
)
def test_init_node_refuses_bad_settings(
    net: Network, overrides: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigError) as info:
        net.new_node("MX", "node-MX", **overrides)
    assert info.value.field == field
    assert not (net.root / "node-MX" / "signing.key").exists()


# --- loading a node's identity ------------------------------------------------------------------


def test_load_identity_refuses_a_key_readable_by_others(net: Network) -> None:
    for name in ("signing.key", "enc-x25519.key", "tls.key"):
        path = net.keys["AR"] / name
        path.chmod(0o644)
        with pytest.raises(KeyFileError, match=name) as info:
            identity.load_identity(net.keys["AR"])
        assert info.value.field == str(path)
        path.chmod(0o600)
    identity.load_identity(net.keys["AR"])


def test_load_identity_before_admission_says_so(net: Network) -> None:
    keys = net.new_node("MX", "node-MX").parent
    with pytest.raises(KeyFileError, match="not been admitted") as info:
        identity.load_identity(keys)
    assert info.value.field == str(keys / "tls.pem")


def test_load_identity_refuses_a_certificate_for_another_key(net: Network) -> None:
    (net.keys["AR"] / "tls.pem").write_bytes((net.keys["BR"] / "tls.pem").read_bytes())
    with pytest.raises(KeyFileError, match="another key"):
        identity.load_identity(net.keys["AR"])


def test_load_identity_includes_retired_encryption_keys(net: Network) -> None:
    keys = net.keys["US"]
    old = generate_encryption_key(Suite.X25519)
    pki.write_private_file(identity.retired_key_path(keys, "enc-x25519", old.kid), old.private_raw)
    ident = identity.load_identity(keys)
    assert ident.encryption_keys[old.kid] == EncryptionKey(Suite.X25519, old.private_raw)
    assert len(ident.encryption_keys) == 3


def test_load_identity_refuses_a_misnamed_retired_key(net: Network) -> None:
    keys = net.keys["US"]
    old = generate_encryption_key(Suite.X25519)
    path = keys / "retired" / f"enc-x25519-{'0' * 24}.key"
    pki.write_private_file(path, old.private_raw)
    with pytest.raises(KeyFileError, match=old.kid) as info:
        identity.load_identity(keys)
    assert info.value.field == str(path)
