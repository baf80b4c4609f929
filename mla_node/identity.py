"""A node's own key material on disk, and the registration it sends to the network authority.

Layout of a node's keys folder::

    keys/
      signing.key               Ed25519 private key, raw 32 bytes              0600
      enc-mlkem768x25519.key    HPKE private key (EncryptionKey.private_raw)   0600
      enc-x25519.key            HPKE private key (EncryptionKey.private_raw)   0600
      tls.key                   ECDSA P-256 private key, PKCS#8 PEM            0600
      tls.pem                   TLS certificate issued by the authority        0644, after admission
      registration.json         what the authority needs to admit the node     0644
      retired/<kind>-<kid>.key  keys replaced by a rotation                    0600

Every private key file may instead be sealed with the node's passphrase (``passphrase.py``: scrypt
and AES-256-GCM around the same contents); ``node init --passphrase-env`` seals them all, and a
folder may mix sealed and plain files.

There is one ``enc-*.key`` per suite the node accepts. ``<kind>`` is the name of the current file
without ``.key`` (``signing``, ``enc-mlkem768x25519``, ``enc-x25519``). Retired encryption keys are
kept because envelopes sealed to them may still be in flight or stored unopened; retired signing
keys are kept so an operator can prove, later, which key the node held.

``registration.json`` carries the node's public keys (with their ids and validity windows), its
endpoint, accepted suites and TLS hostnames, a CSR for ``tls.key``, and an Ed25519 signature by
``signing.key`` over all of it. The signature and the CSR prove possession of the private keys,
not identity: the authority must still confirm out of band (for example by reading the signing key
id over the telephone) that the file really comes from that state's central authority.
"""

from __future__ import annotations

import base64
import ipaddress
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from mla_node import passphrase as sealing
from mla_node import pki
from mla_node.errors import ConfigError, KeyFileError
from mla_node.protocol import codec
from mla_node.protocol.directory import (
    MAX_AUTHORITY_NAME,
    MAX_ENDPOINT,
    MAX_ENDPOINTS,
    OAS_STATES,
)
from mla_node.protocol.keys import (
    SIGNING_ALG,
    EncryptionKey,
    SigningKey,
    Suite,
    generate_encryption_key,
    generate_signing_key,
)

__all__ = [
    "DOMAIN_REGISTRATION",
    "ENCRYPTION_KEY_FILES",
    "REGISTRATION_FILE",
    "REGISTRATION_FORMAT",
    "RETIRED_DIR",
    "SIGNING_KEY_FILE",
    "TLS_CERT_FILE",
    "TLS_KEY_FILE",
    "NodeIdentity",
    "Rotation",
    "check_endpoints",
    "check_node_fields",
    "init_node",
    "load_identity",
    "registration_signing_bytes",
    "retired_key_path",
    "rotate_keys",
]

SIGNING_KEY_FILE = "signing.key"
ENCRYPTION_KEY_FILES: dict[Suite, str] = {
    Suite.MLKEM768_X25519: "enc-mlkem768x25519.key",
    Suite.X25519: "enc-x25519.key",
}
TLS_KEY_FILE = "tls.key"
TLS_CERT_FILE = "tls.pem"
RETIRED_DIR = "retired"
REGISTRATION_FILE = "registration.json"

REGISTRATION_FORMAT = "mla-node-registration/1"
# Domain-separated like every other signature of the protocol, so a registration signature can
# never be replayed as an envelope, receipt or directory signature, nor the other way round.
DOMAIN_REGISTRATION = b"mla-node/v1/registration"

_SIGNING_KIND = SIGNING_KEY_FILE.removesuffix(".key")
_ENCRYPTION_KINDS: dict[str, Suite] = {
    name.removesuffix(".key"): suite for suite, name in ENCRYPTION_KEY_FILES.items()
}
_MS_PER_DAY = 86_400_000
_MAX_ENDPOINT = MAX_ENDPOINT  # the directory refuses longer endpoints


@dataclass(frozen=True)
class NodeIdentity:
    signing_key: SigningKey
    encryption_keys: dict[str, EncryptionKey]  # kid -> key, current and retired
    tls_cert_path: Path
    tls_key_path: Path  # of a sealed tls.key: an in-memory copy OpenSSL can read
    # What the keys were unsealed with, to reload the folder after a rotation.
    passphrase: bytes | None = field(default=None, repr=False)
    # Signing keys a rotation replaced, kid -> key: signed with again only while the directory
    # does not list the new one yet (NodeContext.refresh_identity).
    retired_signing_keys: dict[str, SigningKey] = field(default_factory=dict, repr=False)


def retired_key_path(keys_dir: Path, kind: str, kid: str) -> Path:
    """Where a rotation moves a replaced key: ``retired/<kind>-<kid>.key``."""
    if kind != _SIGNING_KIND and kind not in _ENCRYPTION_KINDS:
        raise ValueError(f"unknown key kind {kind!r}")
    return keys_dir / RETIRED_DIR / f"{kind}-{kid}.key"


# --- registration format, shared with the authority --------------------------------------------


def registration_signing_bytes(body: dict[str, Any]) -> bytes:
    """The bytes the registration signature covers: every field but ``signature``.

    Canonical JSON (sorted keys, no spaces, ASCII) so that the pretty-printed file can be read,
    copied and re-indented by people without breaking the signature. The verifier canonicalises
    the very object it goes on to use, so what is checked is exactly what is admitted.
    """
    rest = {k: v for k, v in body.items() if k != "signature"}
    canonical = json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return codec.pae(DOMAIN_REGISTRATION, canonical.encode("ascii"))


def check_node_fields(
    *, state: str, authority_name: str, endpoint: str, hostnames: list[str]
) -> None:
    """Refuse, with the field at fault, what the directory or the TLS handshake would refuse later.

    Run by the node at ``init`` and again by the authority at admission, so a mistake surfaces at
    the operator who made it rather than as a failed delivery weeks later.
    """
    if state not in OAS_STATES:
        raise ConfigError(f"{state!r} is not the code of an OAS member state", field="state")
    if not authority_name.strip() or len(authority_name) > MAX_AUTHORITY_NAME:
        raise ConfigError(
            f"the authority name must be 1 to {MAX_AUTHORITY_NAME} characters",
            field="authority_name",
        )
    host = _endpoint_host(endpoint, "endpoint")
    if not hostnames or not all(isinstance(h, str) and h.strip() for h in hostnames):
        raise ConfigError("at least one TLS hostname or IP address is needed", field="hostnames")
    _check_host(host, hostnames)


def check_endpoints(endpoint: str, endpoints: list[str] | None, hostnames: list[str]) -> list[str]:
    """The node's peer endpoints, the primary first: ``endpoints`` when given (its first must be
    ``endpoint``), else ``[endpoint]``.

    Each is checked as ``check_node_fields`` checks the endpoint (an https URL whose host is
    among ``hostnames``: every worker of the node presents the same certificate); none twice,
    at most the directory's bound.
    """
    if endpoints is None:
        return [endpoint]
    if not isinstance(endpoints, list) or not all(isinstance(e, str) for e in endpoints):
        raise ConfigError("endpoints must be a list of URLs", field="endpoints")
    if not 1 <= len(endpoints) <= MAX_ENDPOINTS:
        raise ConfigError(f"a node has 1 to {MAX_ENDPOINTS} endpoints", field="endpoints")
    if endpoints[0] != endpoint:
        raise ConfigError(
            f"the first of the endpoints must be the endpoint {endpoint!r}", field="endpoints"
        )
    if len(set(endpoints)) != len(endpoints):
        raise ConfigError("an endpoint is listed twice", field="endpoints")
    for url in endpoints:
        _check_host(_endpoint_host(url, "endpoints"), hostnames)
    return list(endpoints)


def _endpoint_host(endpoint: str, field: str) -> str:
    """The host of an https endpoint URL, or ConfigError naming ``field``."""
    try:
        url = urlsplit(endpoint)
        _ = url.port  # parsed lazily: reading it is what refuses a bad port
    except ValueError as exc:
        raise ConfigError(f"endpoint {endpoint!r} is not a URL: {exc}", field=field) from exc
    if url.scheme != "https" or not url.hostname or url.username or url.password:
        raise ConfigError(
            f"endpoint {endpoint!r} must be an https:// URL with a host and no user or password",
            field=field,
        )
    if len(endpoint) > _MAX_ENDPOINT:
        raise ConfigError(f"endpoint is longer than {_MAX_ENDPOINT} characters", field=field)
    return url.hostname


def _check_host(host: str, hostnames: list[str]) -> None:
    # Peers connect with check_hostname on, so a certificate that does not name the endpoint's
    # host would fail every delivery to this node.
    if _host_key(host) not in {_host_key(h) for h in hostnames}:
        raise ConfigError(
            f"the endpoint's host {host!r} is not among the hostnames {hostnames}",
            field="hostnames",
        )


def _host_key(host: str) -> str:
    # The same normalisation pki applies before writing a name into the certificate.
    host = host.strip().rstrip(".").lower().strip("[]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


# --- creating a node's keys ---------------------------------------------------------------------


def init_node(
    keys_dir: Path,
    *,
    state: str,
    authority_name: str,
    endpoint: str,
    hostnames: list[str],
    suites: list[Suite],
    now_ms: int,
    key_valid_days: int = 730,
    passphrase: bytes | None = None,
    endpoints: list[str] | None = None,
) -> Path:
    """Generate a node's keys in ``keys_dir`` and write ``registration.json``; return its path.

    Never overwrites a key: losing an encryption key loses every envelope sealed to it. With a
    ``passphrase`` every private key file is sealed with it. ``endpoints`` lists every peer
    endpoint of a node that runs several workers, ``endpoint`` first; the registration carries
    them only when there is more than one.
    """
    check_node_fields(
        state=state, authority_name=authority_name, endpoint=endpoint, hostnames=hostnames
    )
    all_endpoints = check_endpoints(endpoint, endpoints, hostnames)
    try:
        suites = list(dict.fromkeys(Suite(s) for s in suites))
    except ValueError as exc:
        raise ConfigError(f"unknown suite: {exc}", field="suites") from exc
    if not suites:
        raise ConfigError("the node must accept at least one encryption suite", field="suites")
    _check_valid_days(key_valid_days)
    existing = [
        name
        for name in (SIGNING_KEY_FILE, TLS_KEY_FILE, *ENCRYPTION_KEY_FILES.values())
        if (keys_dir / name).exists()
    ]
    if existing:
        raise ConfigError(
            f"{keys_dir} already holds keys ({', '.join(existing)}); they are never overwritten. "
            "Use another folder, or move this one away if its keys are really to be discarded",
            field=str(keys_dir / existing[0]),
        )

    signing, encryption = _new_message_keys(suites)
    tls_key = pki.new_tls_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"mla-node {state}")]))
        .sign(tls_key, hashes.SHA256())
    )
    body: dict[str, Any] = {
        "format": REGISTRATION_FORMAT,
        "state": state,
        "authority_name": authority_name,
        "endpoint": endpoint,
        "suites": [s.value for s in suites],
        "hostnames": list(hostnames),
        "tls_csr_pem": csr.public_bytes(Encoding.PEM).decode("ascii"),
    }
    if len(all_endpoints) > 1:
        body["endpoints"] = all_endpoints
    _write_message_keys(keys_dir, signing, encryption, passphrase)
    sealing.write_key(keys_dir / TLS_KEY_FILE, pki.private_key_pem(tls_key), passphrase)
    # Last, so that a registration on disk always has its private keys beside it.
    return _write_registration(
        keys_dir, body, signing, encryption, now_ms, now_ms + key_valid_days * _MS_PER_DAY
    )


@dataclass(frozen=True)
class Rotation:
    registration: Path
    retired: dict[str, Path]  # kid -> the retired file now holding it
    signing_kid: str  # the new one


def rotate_keys(
    keys_dir: Path, *, now_ms: int, passphrase: bytes | None = None, key_valid_days: int = 730
) -> Rotation:
    """Replace the node's signing and encryption keys; write the registration of the new ones.

    The current keys move to ``retired/`` (the node keeps opening envelopes sealed to them and
    can still prove what it signed); the TLS key stays, so the authority can keep the node's
    certificate and no peer's pinned connection breaks. New files are sealed when there is a
    ``passphrase``, which must also open the current keys: they are checked first, so a wrong
    one changes nothing. Each current key is copied to ``retired/`` before its file is replaced,
    so a crash at any point leaves every key in the folder.
    """
    _check_valid_days(key_valid_days)
    current = load_identity(keys_dir, passphrase)
    try:
        old = json.loads((keys_dir / REGISTRATION_FILE).read_bytes())
        body = {k: old[k] for k in _REGISTRATION_NODE_FIELDS}
        body.update({k: old[k] for k in _REGISTRATION_OPTIONAL_FIELDS if k in old})
        suites = [Suite(s) for s in old["suites"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KeyFileError(
            f"{keys_dir / REGISTRATION_FILE} cannot be read as this node's registration: {exc}",
            field=str(keys_dir / REGISTRATION_FILE),
        ) from exc
    signing, encryption = _new_message_keys(suites)
    retired: dict[str, Path] = {}
    kinds = {_SIGNING_KIND: current.signing_key.kid}
    for suite in suites:
        name = ENCRYPTION_KEY_FILES[suite]
        kinds[name.removesuffix(".key")] = _load_encryption_key(
            keys_dir / name, suite, passphrase
        ).kid
    for kind, kid in kinds.items():
        target = retired_key_path(keys_dir, kind, kid)
        # The bytes as they are: a sealed key stays sealed, a plain one stays readable without
        # the passphrase it never had.
        pki.write_private_file(target, pki.read_private_file(keys_dir / f"{kind}.key"))
        retired[kid] = target
    _write_message_keys(keys_dir, signing, encryption, passphrase)
    registration = _write_registration(
        keys_dir, body, signing, encryption, now_ms, now_ms + key_valid_days * _MS_PER_DAY
    )
    return Rotation(registration, retired, signing.kid)


# What a rotation carries over from the registration it replaces (the keys are new).
_REGISTRATION_NODE_FIELDS = (
    "format",
    "state",
    "authority_name",
    "endpoint",
    "suites",
    "hostnames",
    "tls_csr_pem",
)
_REGISTRATION_OPTIONAL_FIELDS = ("endpoints",)


def _check_valid_days(key_valid_days: int) -> None:
    if key_valid_days < 1:
        raise ConfigError("keys must be valid for at least one day", field="key_valid_days")


def _new_message_keys(suites: list[Suite]) -> tuple[SigningKey, list[EncryptionKey]]:
    return generate_signing_key(), [generate_encryption_key(suite) for suite in suites]


def _write_message_keys(
    keys_dir: Path,
    signing: SigningKey,
    encryption: list[EncryptionKey],
    passphrase: bytes | None,
) -> None:
    sealing.write_key(keys_dir / SIGNING_KEY_FILE, signing.private_bytes(), passphrase)
    for key in encryption:
        sealing.write_key(keys_dir / ENCRYPTION_KEY_FILES[key.suite], key.private_raw, passphrase)


def _write_registration(
    keys_dir: Path,
    node_fields: dict[str, Any],
    signing: SigningKey,
    encryption: list[EncryptionKey],
    not_before: int,
    not_after: int,
) -> Path:
    """Sign ``node_fields`` plus the keys' public halves with ``signing``; write the file."""

    def entry(kid: str, use: str, alg: str, public: bytes) -> dict[str, Any]:
        return {
            "kid": kid,
            "use": use,
            "alg": alg,
            "public": base64.b64encode(public).decode("ascii"),
            "not_before": not_before,
            "not_after": not_after,
        }

    body = {
        **node_fields,
        "keys": [
            entry(signing.kid, "sign", SIGNING_ALG, signing.public),
            *(entry(k.kid, "encrypt", k.suite.value, k.public) for k in encryption),
        ],
    }
    body["signature"] = base64.b64encode(signing.sign(registration_signing_bytes(body))).decode(
        "ascii"
    )
    registration = keys_dir / REGISTRATION_FILE
    pki.write_public_file(registration, json.dumps(body, indent=2).encode("ascii") + b"\n")
    return registration


# --- loading a node's keys ----------------------------------------------------------------------


def load_identity(keys_dir: Path, passphrase: bytes | None = None) -> NodeIdentity:
    """Load and cross-check the keys a node needs to run; any problem names the file at fault.

    Sealed key files are opened with ``passphrase``; plain ones are read as they are.
    """
    if not keys_dir.is_dir():
        raise KeyFileError(
            f"keys folder {keys_dir} does not exist; create the node's keys first",
            field=str(keys_dir),
        )
    signing = _load_signing_key(keys_dir / SIGNING_KEY_FILE, passphrase)
    encryption: dict[str, EncryptionKey] = {}
    for suite, name in ENCRYPTION_KEY_FILES.items():
        if (keys_dir / name).exists():
            key = _load_encryption_key(keys_dir / name, suite, passphrase)
            encryption[key.kid] = key
    if not encryption:
        raise KeyFileError(
            f"{keys_dir} holds no encryption key ({', '.join(ENCRYPTION_KEY_FILES.values())})",
            field=str(keys_dir),
        )
    retired_encryption, retired_signing = _load_retired(keys_dir / RETIRED_DIR, passphrase)
    encryption.update(retired_encryption)

    tls_key_path, tls_cert_path = keys_dir / TLS_KEY_FILE, keys_dir / TLS_CERT_FILE
    tls_key_file = pki.read_private_file(tls_key_path)
    tls_key_pem = sealing.unseal(tls_key_file, passphrase, tls_key_path)
    try:
        tls_key = pki.load_ec_private_key_pem(tls_key_pem)
    except KeyFileError as exc:
        raise KeyFileError(f"{tls_key_path}: {exc.detail}", field=str(tls_key_path)) from exc
    try:
        cert_pem = tls_cert_path.read_bytes()
    except FileNotFoundError as exc:
        raise KeyFileError(
            f"{tls_cert_path} does not exist: the node has not been admitted yet. Send "
            f"{keys_dir / REGISTRATION_FILE} to the network authority and place the tls.pem it "
            f"returns in {keys_dir}",
            field=str(tls_cert_path),
        ) from exc
    except OSError as exc:
        raise KeyFileError(
            f"cannot read {tls_cert_path}: {exc.strerror or exc}", field=str(tls_cert_path)
        ) from exc
    try:
        cert = pki.load_certificate_pem(cert_pem)
    except KeyFileError as exc:
        raise KeyFileError(f"{tls_cert_path}: {exc.detail}", field=str(tls_cert_path)) from exc
    # Caught here, a certificate issued for an older registration is a clear message; caught by
    # OpenSSL when the TLS context is built, it is an opaque "key values mismatch".
    if cert.public_key() != tls_key.public_key():
        raise KeyFileError(
            f"{tls_cert_path} was issued for another key than {tls_key_path}; have the node "
            "admitted again with its current registration.json",
            field=str(tls_cert_path),
        )
    if sealing.is_sealed(tls_key_file):
        # OpenSSL reads the key from a path and knows nothing of our sealing.
        tls_key_path = sealing.memory_file(tls_key_pem, TLS_KEY_FILE)
    return NodeIdentity(
        signing, encryption, tls_cert_path, tls_key_path, passphrase, retired_signing
    )


def _load_signing_key(path: Path, passphrase: bytes | None) -> SigningKey:
    raw = sealing.read_key(path, passphrase)
    try:
        return SigningKey.from_private_bytes(raw)
    except ValueError as exc:
        raise KeyFileError(
            f"{path} is not a raw 32-byte Ed25519 private key", field=str(path)
        ) from exc


def _load_encryption_key(path: Path, suite: Suite, passphrase: bytes | None) -> EncryptionKey:
    key = EncryptionKey(suite, sealing.read_key(path, passphrase))
    try:
        _ = key.kid  # deriving the public key is what validates the private bytes
    except ValueError as exc:
        raise KeyFileError(f"{path} is not a {suite.value} private key", field=str(path)) from exc
    return key


def _load_retired(
    retired_dir: Path, passphrase: bytes | None
) -> tuple[dict[str, EncryptionKey], dict[str, SigningKey]]:
    if not retired_dir.is_dir():
        return {}, {}
    keys: dict[str, EncryptionKey] = {}
    signing: dict[str, SigningKey] = {}
    for path in sorted(retired_dir.glob("*.key")):
        kind, _, kid = path.stem.rpartition("-")
        # The kid in the name is checked against the key, so a misnamed or swapped file is found
        # now rather than when an old envelope fails to open.
        if kind == _SIGNING_KIND:
            signing_key = _load_signing_key(path, passphrase)
            signing[signing_key.kid] = signing_key
            found = signing_key.kid
        elif kind in _ENCRYPTION_KINDS:
            key = _load_encryption_key(path, _ENCRYPTION_KINDS[kind], passphrase)
            keys[key.kid] = key
            found = key.kid
        else:
            raise KeyFileError(
                f"{path} is not named <kind>-<kid>.key with a kind among "
                f"{sorted([_SIGNING_KIND, *_ENCRYPTION_KINDS])}",
                field=str(path),
            )
        if found != kid:
            raise KeyFileError(f"{path} holds the key {found}, not {kid}", field=str(path))
    return keys, signing


def load_signing_key(keys_dir: Path, passphrase: bytes | None = None) -> SigningKey:
    """The node's signing key alone: enough to sign log entries before the node is admitted."""
    return _load_signing_key(keys_dir / SIGNING_KEY_FILE, passphrase)
