"""``mla-node doctor``: everything a node needs, checked from its config, one row per check.

Runs beside the node (it only reads the database) or while it is stopped. Each row is ``ok``,
``warn`` (works today, needs a human soon: a certificate within ``ops.expiry_alert_days``, a
stale directory) or ``fail``; any ``fail`` makes the command exit 1.

The round trip to each peer sends one envelope signed by this node and undecryptable by design
(conformance.py, ``signed_plaintext``): the peer must verify our signature with its directory to
get as far as decryption, refuse it with ``envelope_undecryptable`` and sign that refusal, which
is verified here against our directory. So one exchange proves both TLS identities, both
directories and both signing keys, and leaves nothing in the peer's inbox.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from cryptography.hazmat.primitives.serialization import Encoding

from mla_node import backup, conformance, pki
from mla_node.config import NodeConfig
from mla_node.errors import MlaError
from mla_node.identity import NodeIdentity, load_identity
from mla_node.passphrase import configured_passphrase
from mla_node.protocol.directory import Directory, TrustRoot, verify_directory
from mla_node.service.health import MS_PER_DAY, CertificateWatch, check_key_files
from mla_node.service.trust import Staleness, staleness
from mla_node.storage.db import open_database
from mla_node.storage.node_lock import in_use
from mla_node.transport.http import HttpTransport

OK, WARN, FAIL = "ok", "warn", "fail"
DER = Encoding.DER


@dataclass(frozen=True)
class Row:
    check: str
    status: str  # ok | warn | fail
    detail: str


async def diagnose(config: NodeConfig, now: int, *, peer_timeout_s: float = 10.0) -> list[Row]:
    rows = [Row("config", OK, f"{config.node.state}, {config.base_dir}")]
    problems = check_key_files(config.keys_dir)
    rows += [Row(f"key file {p.path.name}", FAIL, f"{p.code}: {p.detail}") for p in problems]
    identity: NodeIdentity | None = None
    try:
        identity = load_identity(config.keys_dir, configured_passphrase(config))
        rows.append(Row("keys", OK, f"signing key {identity.signing_key.kid}"))
    except MlaError as exc:
        rows.append(Row("keys", FAIL, f"{exc.code}: {exc.detail}"))
    trust, directory, rows_trust = _trust(config, now)
    rows += rows_trust
    if identity is not None and trust is not None:
        rows += _certificates(config, identity, trust, directory, now)
    rows += await _shared_database(config) if config.database_url else _database(config)
    if identity is not None and directory is not None:
        rows += await _peers(config, identity, directory, now, peer_timeout_s)
    return rows


def _trust(config: NodeConfig, now: int) -> tuple[TrustRoot | None, Directory | None, list[Row]]:
    try:
        trust = TrustRoot.from_json(config.trust_root_path.read_bytes())
    except (OSError, MlaError) as exc:
        return None, None, [Row("trust root", FAIL, str(exc))]
    rows = [Row("trust root", OK, f"network {trust.network}, {len(trust.root_keys)} root key(s)")]
    try:
        directory = verify_directory(config.directory_path.read_bytes(), trust, now=now)
    except OSError as exc:
        return trust, None, [*rows, Row("directory", FAIL, f"{config.directory_path}: {exc}")]
    except MlaError as exc:
        return trust, None, [*rows, Row("directory", FAIL, f"{exc.code}: {exc.detail}")]
    level = staleness(directory, now, config.keys.directory_alert_fraction)
    days = (directory.expires_at - now) / MS_PER_DAY
    status = OK if level is Staleness.FRESH else WARN
    rows.append(Row("directory", status, f"version {directory.version}, ends in {days:.1f} days"))
    if directory.node(config.node.state) is None:
        rows.append(Row("directory", FAIL, f"{config.node.state} is not in the directory"))
    return trust, directory, rows


def _certificates(
    config: NodeConfig,
    identity: NodeIdentity,
    trust: TrustRoot,
    directory: Directory | None,
    now: int,
) -> list[Row]:
    rows = []
    try:
        expiries = CertificateWatch(identity.tls_cert_path, trust.tls_ca_pem).expiries()
    except MlaError as exc:
        return [Row("certificates", FAIL, f"{exc.code}: {exc.detail}")]
    for cert in expiries:
        days = cert.days_left(now)
        if days <= 0:
            status, what = FAIL, f"ended {-days:.1f} days ago"
        else:
            status = WARN if days <= config.ops.expiry_alert_days else OK
            what = f"ends in {days:.1f} days"
        rows.append(Row(f"certificate {cert.which}", status, f"{cert.subject}: {what}"))
    entry = directory.node(config.node.state) if directory else None
    if entry is not None:
        mine = pki.load_certificate_pem(identity.tls_cert_path.read_bytes())
        listed = entry.tls_cert_sha256 == pki.certificate_fingerprint(mine.public_bytes(DER))
        detail = "the one the directory lists" if listed else "not the one the directory lists"
        rows.append(Row("certificate in directory", OK if listed else FAIL, detail))
    return rows


def _database(config: NodeConfig) -> list[Row]:
    running = in_use(config.database_path)
    rows = [Row("node process", OK, "running" if running else "not running")]
    try:
        checks = backup.check_database(config)
    except MlaError as exc:
        return [*rows, Row("database", FAIL, f"{exc.code}: {exc.detail}")]
    return rows + [Row(f"database {c.name}", OK if c.ok else FAIL, c.detail) for c in checks]


async def _shared_database(config: NodeConfig) -> list[Row]:
    """A node on PostgreSQL: the server answers, the schema is known, the log has no hole."""
    try:
        db = await open_database(config.database_location, name="mla-node doctor", migrate=False)
    except MlaError as exc:
        return [Row("database", FAIL, f"{exc.code}: {exc.detail}")]
    try:
        check = await db.integrity_check()
        detail = f"PostgreSQL, schema version {db.schema_version}, {check}"
        return [Row("database", OK if check == "ok" else FAIL, detail)]
    finally:
        await db.close()


async def _peers(
    config: NodeConfig, identity: NodeIdentity, directory: Directory, now: int, timeout_s: float
) -> list[Row]:
    transport = HttpTransport(identity.tls_cert_path, identity.tls_key_path)
    rows = []
    try:
        for state, entry in sorted(directory.nodes.items()):
            if state == config.node.state:
                continue
            case = conformance.probe_case(
                directory, config.node.state, entry, identity.signing_key, now
            )
            try:
                outcome = await asyncio.wait_for(
                    conformance.run_case(transport, entry, directory, case), timeout_s
                )
            except TimeoutError:
                rows.append(
                    Row(
                        f"peer {state}",
                        FAIL,
                        f"no answer from {entry.endpoint} in {timeout_s:.0f} s",
                    )
                )
                continue
            if outcome.ok:
                detail = f"signed round trip in {outcome.ms:.0f} ms ({entry.endpoint})"
            else:
                detail = f"{outcome.got}: {outcome.signed} ({entry.endpoint})"
            rows.append(Row(f"peer {state}", OK if outcome.ok else FAIL, detail))
    finally:
        await transport.close()
    return rows
