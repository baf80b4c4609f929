"""The network authority's folder: root key, TLS CA, registry of admitted nodes, signed directory.

Layout::

    authority/
      root.key            Ed25519 root private key, raw 32 bytes                      0600
      ca.key              P-256 CA private key, PKCS#8 PEM                            0600
      ca.pem              the network CA certificate                                  0644
      trust-root.json     root public keys and CA (TrustRoot.to_json), for every node 0644
      registry.json       network, directory version, admitted nodes, revocations     0644
      directory.bin       the latest signed directory                                 0644
      issued/<STATE>.pem  the certificate last issued to each node                    0644
      serve-tls.key       TLS key of the directory service (mla-node authority serve)  0600
      serve-tls.pem       its certificate, issued by the network CA                    0644
      .lock               serialises the authority's commands                         0600

``registry.json`` is the source of truth; ``directory.bin`` is derived from it and signed by
``publish``, which every change ends with. Times are datetimes here (the operator's world) and
milliseconds since the epoch, UTC, in the directory (the protocol's).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from mla_node import pki
from mla_node.errors import ConfigError, KeyFileError, TrustError
from mla_node.identity import (
    REGISTRATION_FORMAT,
    TLS_CERT_FILE,
    check_endpoints,
    check_node_fields,
    registration_signing_bytes,
)
from mla_node.protocol.directory import (
    KEY_USES,
    KeyEntry,
    NodeEntry,
    TrustRoot,
    directory_body,
    sign_directory,
    verify_directory,
)
from mla_node.protocol.keys import (
    SIGNING_ALG,
    SigningKey,
    Suite,
    generate_signing_key,
    key_id,
    verify_ed25519,
)

__all__ = [
    "AdmitResult",
    "admit",
    "init_authority",
    "install_directory",
    "load_ca",
    "load_trust_root",
    "publish",
    "remove_node",
    "revoke_key",
    "set_endpoints",
]

ROOT_KEY_FILE = "root.key"
CA_KEY_FILE = "ca.key"
CA_CERT_FILE = "ca.pem"
TRUST_ROOT_FILE = "trust-root.json"
REGISTRY_FILE = "registry.json"
DIRECTORY_FILE = "directory.bin"
ISSUED_DIR = "issued"
LOCK_FILE = ".lock"

REGISTRY_FORMAT = "mla-node-registry/1"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS_PER_DAY = 86_400_000
_MAX_NETWORK_NAME = 256  # the directory refuses longer names


@dataclass(frozen=True)
class AdmitResult:
    state: str
    cert_path: Path  # the copy next to the registration, for the node
    directory_path: Path
    version: int


@dataclass(frozen=True)
class _Registry:
    network: str
    version: int
    nodes: dict[str, NodeEntry]
    revoked: dict[str, int]  # kid -> revoked_at (ms)


@dataclass(frozen=True)
class _Registration:
    state: str
    authority_name: str
    endpoint: str
    endpoints: tuple[str, ...]  # every peer endpoint, endpoint first
    suites: tuple[str, ...]
    hostnames: list[str]
    keys: tuple[KeyEntry, ...]
    tls_public_key: ec.EllipticCurvePublicKey


# --- commands -----------------------------------------------------------------------------------


def init_authority(dir: Path, *, network: str = "remja", now: datetime) -> TrustRoot:
    """Create the root key, the TLS CA and an empty registry; return the trust root for nodes."""
    existing = [n for n in (ROOT_KEY_FILE, CA_KEY_FILE, REGISTRY_FILE) if (dir / n).exists()]
    if existing:
        # A new root key would silently orphan every node that trusts the current one.
        raise ConfigError(
            f"{dir} already holds an authority ({', '.join(existing)}); it is never overwritten",
            field=str(dir / existing[0]),
        )
    if not network.strip() or len(network) > _MAX_NETWORK_NAME:
        raise ConfigError(
            f"the network name must be 1 to {_MAX_NETWORK_NAME} characters", field="network"
        )
    root = generate_signing_key()
    ca_key, ca_cert = pki.new_ca(f"{network} network CA", now)
    trust = TrustRoot(network, {root.kid: root.public}, pki.certificate_pem(ca_cert))
    pki.write_private_file(dir / ROOT_KEY_FILE, root.private_bytes())
    pki.write_private_file(dir / CA_KEY_FILE, pki.private_key_pem(ca_key))
    pki.write_public_file(dir / CA_CERT_FILE, trust.tls_ca_pem)
    pki.write_public_file(dir / TRUST_ROOT_FILE, trust.to_json())
    _save_registry(dir, _Registry(network, 0, {}, {}))
    return trust


def admit(
    dir: Path,
    registration: Path,
    *,
    now: datetime,
    directory_valid_days: int = 30,
    cert_valid_days: int = 397,
    overlap_s: int = 0,
    keep_certificate: bool = False,
    endpoints: Sequence[str] | None = None,
) -> AdmitResult:
    """Verify a node's registration, issue its TLS certificate, add it and publish.

    The certificate goes to ``issued/<STATE>.pem`` and to ``tls.pem`` beside the registration
    file, which on a single machine is the node's keys folder. Admitting a state again replaces
    its entry; its previous keys stay listed with their validity cut at ``now``, so receipts and
    evidence they signed still verify against newer directories while new traffic cannot use them.

    A key rotation under traffic passes ``overlap_s``: the previous keys stay valid that long
    after ``now``, so what was sealed or signed with them before every node has the new directory
    is still accepted. With ``keep_certificate`` the state's current certificate is kept when it
    certifies the registration's TLS key: rotating message keys then leaves the pinned TLS
    certificate alone, and no peer's connection breaks while the directories propagate.

    ``endpoints``, when given, replace the peer endpoints the registration lists (the first is
    the primary); each must be an https URL whose host the registration's hostnames name, since
    every worker of the node presents the one certificate issued here.
    """
    if overlap_s < 0:
        raise ConfigError("the overlap must not be negative", field="overlap_s")
    reg = _read_registration(registration)
    if endpoints is not None:
        reg = replace(reg, endpoints=_checked_endpoints(list(endpoints), reg.hostnames))
    with _locked(dir):
        registry = _load_registry(dir)
        ca_key = _load_ca_key(dir)
        ca_cert = _load_ca_cert(dir)
        previous = registry.nodes.get(reg.state)
        kept = x509.load_der_x509_certificate(previous.tls_cert_der) if previous else None
        if keep_certificate and kept is not None and kept.public_key() == reg.tls_public_key:
            cert = kept
        else:
            cert = pki.issue_node_certificate(
                ca_key, ca_cert, reg.tls_public_key, reg.state, reg.hostnames, now, cert_valid_days
            )
        cert_der = cert.public_bytes(Encoding.DER)
        entry = NodeEntry(
            state=reg.state,
            authority=reg.authority_name,
            endpoint=reg.endpoints[0],
            endpoints=reg.endpoints,
            suites=reg.suites,
            tls_cert_sha256=pki.certificate_fingerprint(cert_der),
            tls_cert_der=cert_der,
            keys=reg.keys + _retired_keys(previous, reg.keys, _ms(now), overlap_s * 1000),
        )
        cert_pem = pki.certificate_pem(cert)
        pki.write_public_file(dir / ISSUED_DIR / f"{reg.state}.pem", cert_pem)
        nodes = {**registry.nodes, reg.state: entry}
        directory_path, version = _publish_locked(
            dir, replace(registry, nodes=nodes), now, directory_valid_days
        )
    # After publishing: a node that has its certificate also finds it in the directory.
    cert_path = registration.parent / TLS_CERT_FILE
    pki.write_public_file(cert_path, cert_pem)
    return AdmitResult(reg.state, cert_path, directory_path, version)


def _retired_keys(
    previous: NodeEntry | None, current: tuple[KeyEntry, ...], now_ms: int, overlap_ms: int = 0
) -> tuple[KeyEntry, ...]:
    if previous is None:
        return ()
    kept = {k.kid for k in current}
    # Closed just before `now` (+ the overlap), because validity windows include their end:
    # without an overlap, only the new keys are usable from the moment this directory is issued.
    return tuple(
        replace(k, not_after=min(k.not_after, now_ms - 1 + overlap_ms))
        for k in previous.keys
        # A key whose window had not opened yet never signed anything worth keeping.
        if k.kid not in kept and k.not_before < now_ms
    )


def set_endpoints(
    dir: Path,
    state: str,
    endpoints: Sequence[str],
    *,
    now: datetime,
    directory_valid_days: int = 30,
) -> int:
    """Replace the peer endpoints of an admitted state (the first is the primary), then publish;
    returns the new directory version.

    For a node that runs several workers, each serving the peer endpoint at its own URL with the
    same certificate: every URL's host must be one the state's certificate names, or no peer
    could complete a handshake there. Keys and certificate are left as they are.
    """
    with _locked(dir):
        registry = _load_registry(dir)
        entry = registry.nodes.get(state)
        if entry is None:
            raise ConfigError(f"{state!r} has no node in the registry", field="state")
        cert = x509.load_der_x509_certificate(entry.tls_cert_der)
        checked = _checked_endpoints(list(endpoints), _certificate_hostnames(cert))
        nodes = {**registry.nodes, state: entry.with_endpoints(checked)}
        _, version = _publish_locked(dir, replace(registry, nodes=nodes), now, directory_valid_days)
    return version


def _checked_endpoints(endpoints: list[str], hostnames: list[str]) -> tuple[str, ...]:
    if not endpoints:
        raise ConfigError("a node needs at least one endpoint", field="endpoints")
    return tuple(check_endpoints(endpoints[0], endpoints, hostnames))


def _certificate_hostnames(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return [*san.get_values_for_type(x509.DNSName), *ips]


def publish(dir: Path, *, now: datetime, directory_valid_days: int = 30) -> Path:
    """Sign the registry as the next directory version and write ``directory.bin``."""
    with _locked(dir):
        path, _ = _publish_locked(dir, _load_registry(dir), now, directory_valid_days)
    return path


def revoke_key(dir: Path, kid: str, *, now: datetime, directory_valid_days: int = 30) -> None:
    """Revoke a node key from ``now`` on, then publish."""
    with _locked(dir):
        registry = _load_registry(dir)
        known = {k.kid for n in registry.nodes.values() for k in n.keys} | set(registry.revoked)
        if kid not in known:
            # Refused rather than recorded: a mistyped kid would otherwise revoke nothing while
            # the operator believes the compromised key is dead.
            raise ConfigError(f"no admitted node has a key {kid!r}", field="kid")
        # Keep the earliest time: revoking again must not re-validate what was signed in between.
        revoked = {**registry.revoked, kid: min(registry.revoked.get(kid, _ms(now)), _ms(now))}
        _publish_locked(dir, replace(registry, revoked=revoked), now, directory_valid_days)


def remove_node(dir: Path, state: str, *, now: datetime, directory_valid_days: int = 30) -> None:
    """Remove a state's node from the directory, then publish. Its revocations stay listed."""
    with _locked(dir):
        registry = _load_registry(dir)
        if state not in registry.nodes:
            raise ConfigError(f"{state!r} has no node in the registry", field="state")
        nodes = {s: n for s, n in registry.nodes.items() if s != state}
        _publish_locked(dir, replace(registry, nodes=nodes), now, directory_valid_days)


def load_trust_root(path: Path) -> TrustRoot:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the trust root {path}: {exc.strerror or exc}", field=str(path)
        ) from exc
    try:
        return TrustRoot.from_json(data)
    except TrustError as exc:
        raise ConfigError(f"{path}: {exc.detail}", field=str(path)) from exc


def load_ca(dir: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The network CA's key and certificate, e.g. to certify the directory service."""
    return _load_ca_key(dir), _load_ca_cert(dir)


def install_directory(authority_dir: Path, target: Path) -> None:
    """Copy the latest directory to ``target`` atomically, so a node polling it never sees half."""
    source = authority_dir / DIRECTORY_FILE
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read {source}: {exc.strerror or exc}; has a directory been published?",
            field=str(source),
        ) from exc
    pki.write_public_file(target, data)


# --- publishing ---------------------------------------------------------------------------------


def _publish_locked(
    dir: Path, registry: _Registry, now: datetime, valid_days: int
) -> tuple[Path, int]:
    if valid_days < 1:
        raise ConfigError("a directory must be valid for at least one day", field="valid_days")
    issued_at = _ms(now)
    registry = replace(registry, version=registry.version + 1)
    body = directory_body(
        network=registry.network,
        version=registry.version,
        issued_at=issued_at,
        expires_at=issued_at + valid_days * _MS_PER_DAY,
        nodes=list(registry.nodes.values()),
        revoked=registry.revoked,
    )
    data = sign_directory(_load_root_key(dir), body)
    # Never publish what every node would refuse (a root key that does not match the trust root
    # handed out, an entry the parser rejects): better one failed command than a dark network.
    try:
        verify_directory(data, load_trust_root(dir / TRUST_ROOT_FILE), now=issued_at)
    except TrustError as exc:
        raise ConfigError(
            f"the new directory would be refused by the nodes: {exc.detail}", field=str(dir)
        ) from exc
    # Registry first: after a crash in between, the next publish skips a version number, which is
    # harmless, instead of reusing one for different content, which nodes refuse as a rollback.
    _save_registry(dir, registry)
    path = dir / DIRECTORY_FILE
    pki.write_public_file(path, data)  # temp file + fsync + os.replace
    return path, registry.version


def _ms(now: datetime) -> int:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    return (now - _EPOCH) // timedelta(milliseconds=1)


@contextmanager
def _locked(dir: Path) -> Iterator[None]:
    # Two admits run at once would each bump the version from the same registry and one node
    # would vanish; the lock makes each command a read-modify-write of its own.
    if not dir.is_dir():
        raise ConfigError(f"{dir} is not an authority folder; initialise it first", field=str(dir))
    fd = os.open(dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --- files of the authority ---------------------------------------------------------------------


def _load_root_key(dir: Path) -> SigningKey:
    path = dir / ROOT_KEY_FILE
    try:
        return SigningKey.from_private_bytes(pki.read_private_file(path))
    except ValueError as exc:
        raise KeyFileError(
            f"{path} is not a raw 32-byte Ed25519 private key", field=str(path)
        ) from exc


def _load_ca_key(dir: Path) -> ec.EllipticCurvePrivateKey:
    path = dir / CA_KEY_FILE
    data = pki.read_private_file(path)
    try:
        return pki.load_ec_private_key_pem(data)
    except KeyFileError as exc:
        raise KeyFileError(f"{path}: {exc.detail}", field=str(path)) from exc


def _load_ca_cert(dir: Path) -> x509.Certificate:
    path = dir / CA_CERT_FILE
    try:
        return pki.load_certificate_pem(path.read_bytes())
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror or exc}", field=str(path)) from exc
    except KeyFileError as exc:
        raise KeyFileError(f"{path}: {exc.detail}", field=str(path)) from exc


def _save_registry(dir: Path, registry: _Registry) -> None:
    obj = {
        "format": REGISTRY_FORMAT,
        "network": registry.network,
        "version": registry.version,
        "nodes": {state: _node_to_json(n) for state, n in sorted(registry.nodes.items())},
        "revoked": dict(sorted(registry.revoked.items())),
    }
    pki.write_public_file(dir / REGISTRY_FILE, json.dumps(obj, indent=2).encode("ascii") + b"\n")


def _load_registry(dir: Path) -> _Registry:
    path = dir / REGISTRY_FILE
    try:
        obj = json.loads(path.read_bytes())
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{path} does not exist; initialise the authority folder first", field=str(path)
        ) from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", field=str(path)) from exc
    try:
        if obj["format"] != REGISTRY_FORMAT:
            raise ValueError(f"unknown format {obj['format']!r}")
        return _Registry(
            network=str(obj["network"]),
            version=_int(obj["version"]),
            nodes={str(s): _node_from_json(n) for s, n in obj["nodes"].items()},
            revoked={str(kid): _int(at) for kid, at in obj["revoked"].items()},
        )
    except (KeyError, TypeError, ValueError, AttributeError, ConfigError) as exc:
        raise ConfigError(f"{path} is not a valid registry: {exc!r}", field=str(path)) from exc


def _node_to_json(node: NodeEntry) -> dict[str, Any]:
    return {
        "state": node.state,
        "authority": node.authority,
        "endpoint": node.endpoint,
        # Only when there are several: a registry of single-endpoint nodes reads as before.
        **({"endpoints": list(node.endpoints)} if len(node.endpoints) > 1 else {}),
        "suites": list(node.suites),
        "tls_cert_sha256": node.tls_cert_sha256,
        "tls_cert_pem": pki.certificate_pem(
            x509.load_der_x509_certificate(node.tls_cert_der)
        ).decode("ascii"),
        "keys": [_key_to_json(k) for k in node.keys],
    }


def _node_from_json(obj: dict[str, Any]) -> NodeEntry:
    cert = pki.load_certificate_pem(str(obj["tls_cert_pem"]).encode("ascii"))
    endpoint = str(obj["endpoint"])
    listed = obj.get("endpoints")
    endpoints = (endpoint,) if listed is None else tuple(str(e) for e in listed)
    if endpoints[0] != endpoint:
        raise ValueError(f"the first endpoint of {obj['state']} is not its endpoint")
    return NodeEntry(
        state=str(obj["state"]),
        authority=str(obj["authority"]),
        endpoint=endpoint,
        endpoints=endpoints,
        suites=tuple(str(s) for s in obj["suites"]),
        tls_cert_sha256=str(obj["tls_cert_sha256"]),
        tls_cert_der=cert.public_bytes(Encoding.DER),
        keys=tuple(_key_from_json(k, f"keys[{i}]") for i, k in enumerate(obj["keys"])),
    )


def _key_to_json(key: KeyEntry) -> dict[str, Any]:
    return {**key.as_map(), "public": base64.b64encode(key.public).decode("ascii")}


def _key_from_json(obj: Any, where: str) -> KeyEntry:
    """A key entry from JSON, checked as the directory parser will check it."""
    if not isinstance(obj, dict):
        raise ConfigError(f"{where} must be an object", field=where)
    kid, use, alg = (_typed(obj, name, str, where) for name in ("kid", "use", "alg"))
    not_before, not_after = (_typed(obj, name, int, where) for name in ("not_before", "not_after"))
    try:
        public = base64.b64decode(_typed(obj, "public", str, where), validate=True)
    except ValueError as exc:
        raise ConfigError(f"{where}.public is not base64", field=f"{where}.public") from exc
    if use not in KEY_USES:
        raise ConfigError(f"{where}.use must be one of {sorted(KEY_USES)}", field=f"{where}.use")
    allowed = {SIGNING_ALG} if use == "sign" else {s.value for s in Suite}
    if alg not in allowed:
        raise ConfigError(
            f"{where}.alg {alg!r} is not one of {sorted(allowed)}", field=f"{where}.alg"
        )
    if key_id(alg, public) != kid:
        raise ConfigError(f"{where}.kid does not match its public key", field=f"{where}.kid")
    if not_before > not_after:
        raise ConfigError(f"{where}: not_after is before not_before", field=f"{where}.not_after")
    return KeyEntry(kid, use, alg, public, not_before, not_after)


def _typed(obj: dict[str, Any], name: str, kind: type, where: str = "") -> Any:
    path = f"{where}.{name}" if where else name
    value = obj.get(name)
    # bool is an int in Python; a JSON true must not pass as a timestamp.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{path} is missing or not a {kind.__name__}", field=path)
    return value


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{value!r} is not an integer")
    return value


# --- registrations ------------------------------------------------------------------------------


def _read_registration(path: Path) -> _Registration:
    """Parse and verify a node's registration; every refusal names the field at fault."""
    try:
        obj = json.loads(
            path.read_bytes(), object_pairs_hook=_no_duplicates, parse_constant=_no_constant
        )
    except OSError as exc:
        raise ConfigError(
            f"cannot read the registration {path}: {exc.strerror or exc}", field=str(path)
        ) from exc
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}", field=str(path)) from exc
    if not isinstance(obj, dict):
        raise ConfigError(f"{path} must hold a JSON object", field=str(path))
    if obj.get("format") != REGISTRATION_FORMAT:
        raise ConfigError(f"{path} is not a {REGISTRATION_FORMAT} file", field="format")

    raw_keys = _typed(obj, "keys", list)
    keys = tuple(_key_from_json(k, f"keys[{i}]") for i, k in enumerate(raw_keys))
    if len({k.kid for k in keys}) != len(keys):
        raise ConfigError("a key is listed twice", field="keys")
    signing = [k for k in keys if k.use == "sign"]
    if len(signing) != 1:
        raise ConfigError("a registration carries exactly one signing key", field="keys")
    try:
        signature = base64.b64decode(_typed(obj, "signature", str), validate=True)
    except ValueError as exc:
        raise ConfigError("signature is not base64", field="signature") from exc
    # Checked before any other field is believed: everything below is covered by it.
    if not verify_ed25519(signing[0].public, signature, registration_signing_bytes(obj)):
        raise ConfigError(
            "the registration signature does not verify with its signing key: the file was "
            "changed after the node signed it",
            field="signature",
        )

    state, authority_name, endpoint = (
        _typed(obj, name, str) for name in ("state", "authority_name", "endpoint")
    )
    hostnames = _typed(obj, "hostnames", list)
    check_node_fields(
        state=state, authority_name=authority_name, endpoint=endpoint, hostnames=hostnames
    )
    endpoints = check_endpoints(
        endpoint, _typed(obj, "endpoints", list) if "endpoints" in obj else None, hostnames
    )
    suites = _typed(obj, "suites", list)
    known_suites = {s.value for s in Suite}
    if not suites or len(set(suites)) != len(suites) or not set(suites) <= known_suites:
        raise ConfigError(
            f"suites must be distinct values among {sorted(known_suites)}", field="suites"
        )
    for suite in suites:
        if not any(k.use == "encrypt" and k.alg == suite for k in keys):
            # A sender choosing this suite would find no key to seal to.
            raise ConfigError(f"no encryption key for the accepted suite {suite}", field="suites")
    return _Registration(
        state=state,
        authority_name=authority_name,
        endpoint=endpoint,
        endpoints=tuple(endpoints),
        suites=tuple(suites),
        hostnames=hostnames,
        keys=keys,
        tls_public_key=_csr_public_key(_typed(obj, "tls_csr_pem", str)),
    )


def _csr_public_key(pem: str) -> ec.EllipticCurvePublicKey:
    try:
        csr = x509.load_pem_x509_csr(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise ConfigError("tls_csr_pem is not a PEM CSR", field="tls_csr_pem") from exc
    public = csr.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(
        public.curve, ec.SECP256R1
    ):
        raise ConfigError("the CSR's key must be ECDSA P-256", field="tls_csr_pem")
    # The CSR's only role is to prove the node holds the TLS private key; its subject is ignored.
    if not csr.is_signature_valid:
        raise ConfigError("the CSR's signature does not verify", field="tls_csr_pem")
    return public


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json keeps the last of duplicate keys; refusing them removes any doubt about which value a
    # human reviewer read and which one was signed.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key")
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")
