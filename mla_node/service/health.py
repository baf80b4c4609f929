"""What a running node, or an operator's check, asks of the node's own state: is the database
writable, are the key files there and private, when do the certificates and keys expire.

Shared by ``/readyz`` (runtime.py), the metrics (service/metrics.py), the alerts
(service/alerts.py) and ``mla-node doctor``, so each reads the same facts the same way. Every
check is cheap enough for a probe every few seconds: a few ``stat`` calls, certificates parsed
again only when their file changed, and one empty write transaction.
"""

from __future__ import annotations

import asyncio
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from mla_node.errors import MlaError, StorageError
from mla_node.identity import ENCRYPTION_KEY_FILES, SIGNING_KEY_FILE, TLS_CERT_FILE, TLS_KEY_FILE
from mla_node.protocol.directory import Directory
from mla_node.storage.db import Database, Transaction

OK = "ok"
# A readiness probe answers within this even when the writer is stuck behind a lock (SQLite's
# busy_timeout alone is 5 s): a stuck writer is exactly what the probe must report.
DB_PROBE_TIMEOUT_S = 2.0
MS_PER_DAY = 86_400_000


# --- the database ---------------------------------------------------------------------------


async def _empty_job(tx: Transaction) -> None:
    await tx.fetchone("SELECT 1")


async def probe_database(db: Database, timeout_s: float = DB_PROBE_TIMEOUT_S) -> str:
    """``ok`` when a write transaction goes through the single writer now, else a code.

    The job takes the write lock (BEGIN IMMEDIATE) and commits nothing, so it costs no fsync:
    it proves that the writer task runs, the lock can be had and the file takes writes.
    """
    try:
        await asyncio.wait_for(db.write(_empty_job), timeout_s)
    except TimeoutError:
        return "database_busy"
    except MlaError as exc:
        return exc.code
    return OK


# --- key files --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileProblem:
    path: Path
    code: str  # key_file_missing | key_file_mode
    detail: str


def key_file_paths(keys_dir: Path) -> list[Path]:
    """The files a node needs to start: signing, TLS key and certificate, encryption keys."""
    present = [keys_dir / n for n in ENCRYPTION_KEY_FILES.values() if (keys_dir / n).exists()]
    # With no encryption key at all, name the first one as missing.
    encryption = present or [keys_dir / next(iter(ENCRYPTION_KEY_FILES.values()))]
    return [
        keys_dir / SIGNING_KEY_FILE,
        keys_dir / TLS_KEY_FILE,
        keys_dir / TLS_CERT_FILE,
        *encryption,
    ]


def check_key_files(keys_dir: Path) -> list[FileProblem]:
    """Every needed key file must exist; private ones must be readable by their owner only."""
    problems: list[FileProblem] = []
    for path in key_file_paths(keys_dir):
        try:
            st = path.stat()
        except OSError as exc:
            problems.append(FileProblem(path, "key_file_missing", exc.strerror or str(exc)))
            continue
        if path.name != TLS_CERT_FILE and st.st_mode & 0o077:
            mode = f"{stat.S_IMODE(st.st_mode):04o}"
            problems.append(FileProblem(path, "key_file_mode", f"mode {mode}, must be 0600"))
    return problems


# --- certificates -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CertExpiry:
    which: str  # tls | ca | peer
    subject: str
    not_after: int  # ms since the epoch

    def days_left(self, now: int) -> float:
        return (self.not_after - now) / MS_PER_DAY


def _not_after_ms(cert: x509.Certificate) -> int:
    return int(cert.not_valid_after_utc.timestamp() * 1000)


class CertificateWatch:
    """The expiry of this node's TLS certificate and of the CA that issued it, read again only
    when ``tls.pem`` changes (an admission renews it in place)."""

    def __init__(self, tls_cert_path: Path, ca_pem: bytes) -> None:
        self.tls_cert_path = tls_cert_path
        self.ca_pem = ca_pem
        self._seen: tuple[int, int] | None = None
        self._expiries: list[CertExpiry] = []

    def expiries(self) -> list[CertExpiry]:
        """This node's certificate and its CA; raises MlaError when tls.pem cannot be read."""
        try:
            st = self.tls_cert_path.stat()
        except OSError as exc:
            raise StorageError(f"cannot read {self.tls_cert_path}: {exc.strerror}") from exc
        key = (st.st_mtime_ns, st.st_size)
        if key != self._seen:
            self._expiries = _read_expiries(self.tls_cert_path.read_bytes(), self.ca_pem)
            self._seen = key
        return self._expiries


def _read_expiries(tls_pem: bytes, ca_pem: bytes) -> list[CertExpiry]:
    try:
        cert = x509.load_pem_x509_certificate(tls_pem)
        cas = x509.load_pem_x509_certificates(ca_pem)
    except ValueError as exc:
        raise StorageError(f"a certificate cannot be read: {exc}") from exc
    out = [CertExpiry("tls", cert.subject.rfc4514_string(), _not_after_ms(cert))]
    # The CA that matters is the one that issued this node's certificate; a trust root in
    # the middle of a CA rollover lists others too.
    issuers = [ca for ca in cas if ca.subject == cert.issuer] or cas
    out += [CertExpiry("ca", ca.subject.rfc4514_string(), _not_after_ms(ca)) for ca in issuers]
    return out


def peer_certificate_expiries(directory: Directory, me: str) -> dict[str, int]:
    """state -> not_after (ms) of each other node's TLS certificate, as the directory lists it."""
    out: dict[str, int] = {}
    for state, node in directory.nodes.items():
        if state == me:
            continue
        try:
            out[state] = _not_after_ms(x509.load_der_x509_certificate(node.tls_cert_der))
        except ValueError:
            continue  # the directory verified; a certificate cryptography cannot read is skipped
    return out


@dataclass(frozen=True)
class KeyExpiry:
    kid: str
    use: str
    not_after: int


def own_key_expiries(directory: Directory, me: str, kids: set[str]) -> list[KeyExpiry]:
    """The validity end, as the directory publishes it, of the keys this node holds."""
    node = directory.node(me)
    if node is None:
        return []
    return [KeyExpiry(k.kid, k.use, k.not_after) for k in node.keys if k.kid in kids]
