"""The signed, versioned, expiring directory of the network's nodes, and the trust root.

The network authority signs the directory with its root key. A node trusts nothing about a peer
(endpoint, keys, TLS certificate, accepted suites) that is not in a directory it verified here.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from mla_node.errors import (
    DirectoryBadSignature,
    DirectoryExpired,
    DirectoryMalformed,
    DirectoryRollback,
    MlaError,
)
from mla_node.protocol import codec
from mla_node.protocol.keys import SIGNING_ALG, SigningKey, Suite, key_id
from mla_node.protocol.signed import open_signed, sign_object

DIRECTORY_VERSION = 1
TRUST_ROOT_FORMAT = "mla-node-trust-root/1"
OAS_STATES = frozenset(
    [
        "AG",
        "AR",
        "BS",
        "BB",
        "BZ",
        "BO",
        "BR",
        "CA",
        "CL",
        "CO",
        "CR",
        "CU",
        "DM",
        "DO",
        "EC",
        "SV",
        "GD",
        "GT",
        "GY",
        "HT",
        "HN",
        "JM",
        "MX",
        "NI",
        "PA",
        "PY",
        "PE",
        "KN",
        "LC",
        "VC",
        "SR",
        "TT",
        "US",
        "UY",
        "VE",
    ]
)
KEY_USES = frozenset({"sign", "encrypt"})
MAX_AUTHORITY_NAME = 512
MAX_ENDPOINT = 512  # characters of one endpoint URL
# Peer endpoints one state may list (one per worker process or machine of its node). A bound,
# so that a directory cannot make a sender cycle through thousands of URLs for one delivery.
MAX_ENDPOINTS = 16
_ED25519_LEN = 32


class KeyProblem(StrEnum):
    UNKNOWN = "unknown"
    NOT_VALID = "not_valid"
    REVOKED = "revoked"


@dataclass(frozen=True)
class KeyEntry:
    kid: str
    use: str  # "sign" or "encrypt"
    alg: str  # "ed25519" or a Suite value
    public: bytes
    not_before: int  # ms since the epoch, UTC
    not_after: int

    def as_map(self) -> dict[str, Any]:
        return {
            "kid": self.kid,
            "use": self.use,
            "alg": self.alg,
            "public": self.public,
            "not_before": self.not_before,
            "not_after": self.not_after,
        }


@dataclass(frozen=True)
class NodeEntry:
    """One state's node as the directory lists it.

    ``endpoints`` are every https URL of the node's peer endpoint (one per worker of a node that
    runs several, all presenting the same certificate), in the authority's order; ``endpoint``
    is always ``endpoints[0]``, the primary. Left out, ``endpoints`` is ``(endpoint,)``. An
    ``endpoint`` that is not ``endpoints[0]`` wins and pins the entry to that one URL: that is
    what ``dataclasses.replace(entry, endpoint=url)`` means (send to this URL only); to change
    the list, use ``with_endpoints``.
    """

    state: str
    authority: str  # the central authority's name
    endpoint: str  # https URL of the primary peer endpoint: endpoints[0]
    suites: tuple[str, ...]
    tls_cert_sha256: str  # "sha256:<hex>" of the DER certificate the node presents
    tls_cert_der: bytes
    keys: tuple[KeyEntry, ...]
    endpoints: tuple[str, ...] = ()  # every peer endpoint URL, endpoints[0] == endpoint

    def __post_init__(self) -> None:
        if not self.endpoints or self.endpoints[0] != self.endpoint:
            object.__setattr__(self, "endpoints", (self.endpoint,))
        else:
            object.__setattr__(self, "endpoints", tuple(self.endpoints))

    def with_endpoints(self, endpoints: tuple[str, ...] | list[str]) -> NodeEntry:
        """The same entry with another list of endpoints, the first being the primary."""
        if not endpoints:
            raise ValueError("a node has at least one endpoint")
        return dataclasses.replace(self, endpoint=endpoints[0], endpoints=tuple(endpoints))

    def as_map(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "state": self.state,
            "authority": self.authority,
            "endpoint": self.endpoint,
        }
        # Only when there is more than one, so a single-endpoint entry signs as it always did.
        if len(self.endpoints) > 1:
            out["endpoints"] = list(self.endpoints)
        out.update(
            {
                "suites": list(self.suites),
                "tls_cert_sha256": self.tls_cert_sha256,
                "tls_cert": self.tls_cert_der,
                "keys": [k.as_map() for k in self.keys],
            }
        )
        return out


@dataclass(frozen=True)
class Directory:
    version: int
    network: str
    issued_at: int
    expires_at: int
    nodes: dict[str, NodeEntry]
    revoked: dict[str, int] = field(default_factory=dict)  # kid -> revoked_at (ms)
    raw: bytes = b""  # the signed bytes it was verified from, kept for evidence bundles

    def node(self, state: str) -> NodeEntry | None:
        return self.nodes.get(state)

    def check_key(
        self, state: str, kid: str, use: str, at: int, *, live: bool
    ) -> tuple[KeyEntry | None, KeyProblem | None]:
        """Is ``kid`` a key of ``state`` for ``use`` at time ``at``?

        ``live`` is for traffic arriving now: any revocation refuses the key, because a
        compromised key can backdate what it signs. Historical checks (old receipts, audits)
        accept a key used before its revocation time, so evidence outlives key rotation.
        """
        node = self.nodes.get(state)
        entry = (
            next((k for k in node.keys if k.kid == kid and k.use == use), None) if node else None
        )
        if entry is None:
            return None, KeyProblem.UNKNOWN
        revoked_at = self.revoked.get(kid)
        if revoked_at is not None and (live or at >= revoked_at):
            return entry, KeyProblem.REVOKED
        if not entry.not_before <= at <= entry.not_after:
            return entry, KeyProblem.NOT_VALID
        return entry, None

    def signing_key_lookup(
        self, state: str, error: type[MlaError], what: str
    ) -> Callable[[str], bytes]:
        """A key lookup for ``open_signed``: any signing key ``state`` is listed with. Whether
        the key was valid when it signed is for the caller to check against the signed time."""
        entry = self.nodes.get(state)
        if entry is None:
            raise error(f"{state} is not in the directory")
        keys = {k.kid: k.public for k in entry.keys if k.use == "sign"}

        def key_for(kid: str) -> bytes:
            if kid not in keys:
                raise error(f"{what} signed by unknown key {kid}")
            return keys[kid]

        return key_for

    def encryption_key(self, state: str, suite: Suite, at: int) -> KeyEntry | None:
        """The newest valid, unrevoked encryption key of ``state`` for ``suite``."""
        node = self.nodes.get(state)
        if node is None:
            return None
        usable = [
            k
            for k in node.keys
            if k.use == "encrypt"
            and k.alg == suite.value
            and k.kid not in self.revoked
            and k.not_before <= at <= k.not_after
        ]
        return max(usable, key=lambda k: k.not_before, default=None)


def directory_body(
    *,
    network: str,
    version: int,
    issued_at: int,
    expires_at: int,
    nodes: list[NodeEntry],
    revoked: dict[str, int],
) -> dict[str, Any]:
    return {
        "v": DIRECTORY_VERSION,
        "kind": "directory",
        "network": network,
        "version": version,
        "issued_at": issued_at,
        "expires_at": expires_at,
        "nodes": [n.as_map() for n in sorted(nodes, key=lambda n: n.state)],
        "revoked": [{"kid": kid, "revoked_at": at} for kid, at in sorted(revoked.items())],
    }


def sign_directory(root: SigningKey, body: dict[str, Any]) -> bytes:
    return sign_object(codec.DOMAIN_DIRECTORY, root, body)


@dataclass(frozen=True)
class TrustRoot:
    """What an auditor or a node needs to trust the network: root keys and the TLS CA."""

    network: str
    root_keys: dict[str, bytes]  # kid -> Ed25519 public key
    tls_ca_pem: bytes

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "format": TRUST_ROOT_FORMAT,
                "network": self.network,
                "root_keys": [
                    {"kid": kid, "alg": SIGNING_ALG, "public": base64.b64encode(pub).decode()}
                    for kid, pub in self.root_keys.items()
                ],
                "tls_ca_pem": self.tls_ca_pem.decode(),
            },
            indent=2,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> TrustRoot:
        try:
            obj = json.loads(data)
            if obj["format"] != TRUST_ROOT_FORMAT:
                raise ValueError(f"unknown format {obj['format']!r}")
            keys = {}
            for k in obj["root_keys"]:
                public = base64.b64decode(k["public"], validate=True)
                if k["alg"] != SIGNING_ALG or key_id(SIGNING_ALG, public) != k["kid"]:
                    raise ValueError(f"root key {k['kid']!r} does not match its public key")
                keys[k["kid"]] = public
            return cls(str(obj["network"]), keys, str(obj["tls_ca_pem"]).encode())
        except (ValueError, KeyError, TypeError) as exc:
            raise DirectoryMalformed(f"trust root is not valid: {exc}") from exc


def verify_directory(
    data: bytes,
    trust: TrustRoot,
    *,
    now: int,
    current_version: int | None = None,
    current_digest: bytes | None = None,
) -> Directory:
    """Verify a directory against the trust root; refuse rollbacks and expired ones."""

    def root_key(kid: str) -> bytes:
        if kid not in trust.root_keys:
            raise DirectoryBadSignature(f"directory signed by unknown root key {kid!r}")
        return trust.root_keys[kid]

    signed = open_signed(codec.DOMAIN_DIRECTORY, data, root_key, DirectoryBadSignature, "directory")
    directory = _parse(signed.body, data)
    if directory.network != trust.network:
        raise DirectoryMalformed(
            f"directory is for network {directory.network!r}, not {trust.network!r}"
        )
    if current_version is not None:
        if directory.version < current_version:
            raise DirectoryRollback(
                f"directory version {directory.version} is older than {current_version}"
            )
        if directory.version == current_version and current_digest not in (None, signed.digest):
            raise DirectoryRollback(
                f"a different directory with the same version {directory.version}"
            )
    if now >= directory.expires_at:
        raise DirectoryExpired(f"directory version {directory.version} has expired")
    return directory


def _parse(body: codec.Fields, raw: bytes) -> Directory:
    # A properly signed but ill-formed directory is the authority's bug: malformed, not forged.
    fields = codec.Fields(body.raw(), DirectoryMalformed, "directory")
    if fields.integer("v") != DIRECTORY_VERSION or fields.text("kind") != "directory":
        raise DirectoryMalformed("not a version 1 directory")
    nodes: dict[str, NodeEntry] = {}
    for n in fields.children("nodes"):
        state = n.text("state", 2)
        if state not in OAS_STATES or state in nodes:
            raise DirectoryMalformed(f"bad or repeated state {state!r}", field="directory.nodes")
        keys = tuple(
            KeyEntry(
                kid=k.text("kid", 64),
                use=k.one_of("use", KEY_USES),
                alg=k.text("alg", 64),
                public=k.blob("public"),
                not_before=k.integer("not_before"),
                not_after=k.integer("not_after"),
            )
            for k in n.children("keys")
        )
        for k in keys:
            if key_id(k.alg, k.public) != k.kid:
                raise DirectoryMalformed(f"key id {k.kid} does not match its key")
            if k.use == "sign" and (k.alg != SIGNING_ALG or len(k.public) != _ED25519_LEN):
                raise DirectoryMalformed(f"signing key {k.kid} is not a raw Ed25519 key")
        suites = n.array("suites")
        if not all(isinstance(s, str) for s in suites):
            raise DirectoryMalformed("suites must be strings", field=f"directory.nodes.{state}")
        endpoint = n.text("endpoint", MAX_ENDPOINT)
        if not endpoint.startswith("https://"):
            raise DirectoryMalformed(f"endpoint of {state} is not https", field="endpoint")
        endpoints = _endpoints(n, state, endpoint)
        tls_cert_der = n.blob("tls_cert")
        tls_cert_sha256 = n.text("tls_cert_sha256", 80)
        if tls_cert_sha256 != "sha256:" + hashlib.sha256(tls_cert_der).hexdigest():
            raise DirectoryMalformed(
                f"tls_cert_sha256 of {state} does not match tls_cert", field="tls_cert_sha256"
            )
        nodes[state] = NodeEntry(
            state=state,
            authority=n.text("authority", MAX_AUTHORITY_NAME),
            endpoint=endpoint,
            endpoints=endpoints,
            suites=tuple(suites),
            tls_cert_sha256=tls_cert_sha256,
            tls_cert_der=tls_cert_der,
            keys=keys,
        )
    revoked = {r.text("kid", 64): r.integer("revoked_at") for r in fields.children("revoked")}
    return Directory(
        version=fields.integer("version"),
        network=fields.text("network"),
        issued_at=fields.integer("issued_at"),
        expires_at=fields.integer("expires_at"),
        nodes=nodes,
        revoked=revoked,
        raw=raw,
    )


def _endpoints(n: codec.Fields, state: str, endpoint: str) -> tuple[str, ...]:
    """The optional ``endpoints`` list of a node map: absent, the node has ``endpoint`` alone."""
    if "endpoints" not in n.raw():
        return (endpoint,)
    listed = n.array("endpoints")
    if not 1 <= len(listed) <= MAX_ENDPOINTS:
        raise DirectoryMalformed(
            f"{state} lists {len(listed)} endpoints, not 1 to {MAX_ENDPOINTS}", field="endpoints"
        )
    for url in listed:
        if not isinstance(url, str) or len(url) > MAX_ENDPOINT or not url.startswith("https://"):
            raise DirectoryMalformed(
                f"an endpoint of {state} is not an https URL of at most {MAX_ENDPOINT} characters",
                field="endpoints",
            )
    if listed[0] != endpoint:
        raise DirectoryMalformed(
            f"the first endpoint of {state} is not its endpoint", field="endpoints"
        )
    if len(set(listed)) != len(listed):
        raise DirectoryMalformed(f"{state} lists an endpoint twice", field="endpoints")
    return tuple(listed)
