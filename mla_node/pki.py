"""Key files, X.509 certificates and TLS contexts for the links between nodes.

This is shell code (files, sockets), not part of the pure protocol core. TLS only protects the
link and names the peer; message authenticity comes from the Ed25519 signatures inside envelopes.

Decisions:

- Certificates are ECDSA P-256, issued by the network authority's CA: Ed25519 TLS certificates
  fail in browsers and in ``cryptography``'s X.509 verifier.
- A node's state is carried as a URI SAN ``urn:mla-node:state:<STATE>`` rather than parsed out of
  the subject CN, so the identity the transport checks against the envelope's sender is a
  structured, unambiguous value. It is only meaningful on a certificate that already chained to the
  network CA (that is, one taken from a completed mutual TLS handshake).
- TLS 1.3 only, mutual, trusting the network CA file only (never the system store): any public CA
  could otherwise issue a certificate that passes as a node.
- Functions that build certificates take ``now``; the only randomness is the serial number and the
  ECDSA signature itself.
- Private key files must be 0600. They are written atomically so that a crash never leaves a
  truncated key behind, and read through one descriptor so the mode checked is the mode of the file
  actually read.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import os
import re
import secrets
import shlex
import ssl
import stat
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mla_node.errors import ConfigError, KeyFileError

__all__ = [
    "STATE_URI_PREFIX",
    "certificate_fingerprint",
    "certificate_pem",
    "client_ssl_context",
    "issue_node_certificate",
    "load_certificate_pem",
    "load_ec_private_key_pem",
    "new_ca",
    "new_tls_key",
    "peer_certificate_der",
    "private_key_pem",
    "read_private_file",
    "server_ssl_context",
    "state_of_certificate",
    "write_private_file",
    "write_public_file",
]

STATE_URI_PREFIX = "urn:mla-node:state:"
NODE_ORGANIZATION = "REMJA network"

# Certificates start this long before `now` so that a peer whose clock is slightly behind the
# issuer's does not refuse a freshly issued certificate as "not yet valid".
CLOCK_SKEW_ALLOWANCE = timedelta(hours=1)

# Restricted to what is safe unescaped in both a URN and a CN, so the value read back from the
# URI SAN is exactly the value that was issued.
_STATE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


# --- files -------------------------------------------------------------------------------------


def write_private_file(path: Path, data: bytes) -> None:
    """Atomically write ``data`` to ``path`` with mode 0600 (whatever the umask)."""
    _write_atomic(path, data, file_mode=0o600, dir_mode=0o700)


def write_public_file(path: Path, data: bytes) -> None:
    """Atomically write ``data`` to ``path`` with mode 0644 (whatever the umask)."""
    _write_atomic(path, data, file_mode=0o644, dir_mode=0o755)


def _write_atomic(path: Path, data: bytes, *, file_mode: int, dir_mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        path.parent.mkdir(mode=dir_mode, parents=True, exist_ok=True)
        # 0600 at creation: the bytes are never readable by others, even for a public file that is
        # widened below, and O_EXCL|O_NOFOLLOW refuse a planted file or symlink at the temp name.
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        try:
            # The umask may have narrowed the creation mode; fchmod is not subject to it.
            os.fchmod(fd, file_mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise KeyFileError(f"cannot write {path}: {exc.strerror or exc}", field=str(path)) from exc


def _fsync_dir(directory: Path) -> None:
    # Without this the rename itself may be lost on power failure, leaving the old file or none.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_private_file(path: Path) -> bytes:
    """Read a private key file, refusing it if missing, not a regular file, or not 0600-ish."""
    try:
        # O_NONBLOCK so that a FIFO planted at the path cannot hang start-up before the check.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError as exc:
        raise KeyFileError(f"key file {path} does not exist", field=str(path)) from exc
    except OSError as exc:
        raise KeyFileError(
            f"cannot open key file {path}: {exc.strerror or exc}", field=str(path)
        ) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"key file {path} is not a regular file", field=str(path))
        if st.st_mode & 0o077:
            raise KeyFileError(
                f"key file {path} has mode {stat.S_IMODE(st.st_mode):04o}, readable by others; "
                f"it must be readable by its owner only: run `chmod 600 {shlex.quote(str(path))}`",
                field=str(path),
            )
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read()
    except OSError as exc:
        raise KeyFileError(
            f"cannot read key file {path}: {exc.strerror or exc}", field=str(path)
        ) from exc
    finally:
        os.close(fd)


# --- keys and certificates ---------------------------------------------------------------------


def new_tls_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def new_ca(
    common_name: str, now: datetime, valid_days: int = 3650
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed P-256 CA that may only sign leaf certificates (path length 0)."""
    _require_aware(now)
    key = new_tls_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW_ALLOWANCE)
        .not_valid_after(now + timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue_node_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    node_public_key: ec.EllipticCurvePublicKey,
    state: str,
    hostnames: list[str],
    now: datetime,
    valid_days: int = 397,
) -> x509.Certificate:
    """A leaf certificate for ``state``'s node, good as both TLS server and TLS client."""
    _require_aware(now)
    if not _STATE_RE.fullmatch(state):
        raise ConfigError(
            f"state {state!r} must be 1-64 letters, digits, '.', '_' or '-'", field="state"
        )
    if ca_key.public_key() != ca_cert.public_key():
        # Caught here, a mismatch is an operator's mistake; caught at handshake, it is an outage.
        raise ConfigError("the CA private key does not match the CA certificate", field="ca_key")
    if not ca_cert.not_valid_before_utc <= now <= ca_cert.not_valid_after_utc:
        raise ConfigError("the CA certificate is not valid at the issuing time", field="ca_cert")
    if not isinstance(node_public_key.curve, ec.SECP256R1):
        raise ConfigError("node TLS keys must be P-256", field="node_public_key")

    return (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, f"mla-node {state}"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, NODE_ORGANIZATION),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(node_public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW_ALLOWANCE)
        .not_valid_after(now + timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # A TLS 1.3 ECDSA key only ever signs the handshake.
        .add_extension(key_usage(digital_signature=True), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    *general_names(hostnames),
                    x509.UniformResourceIdentifier(STATE_URI_PREFIX + state),
                ]
            ),
            critical=False,
        )
        .add_extension(authority_key_identifier(ca_key, ca_cert), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(node_public_key), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _require_aware(now: datetime) -> None:
    # cryptography reads a naive datetime as UTC; a caller passing local time would silently
    # shift validity by the UTC offset.
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")


def general_names(hostnames: list[str]) -> list[x509.GeneralName]:
    if not hostnames:
        raise ConfigError(
            "a node certificate needs at least one hostname or IP address", field="hostnames"
        )
    names: list[x509.GeneralName] = []
    for raw in hostnames:
        host = raw.strip().rstrip(".").lower()
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host.strip("[]"))))
            continue
        except ValueError:
            pass
        if not host or not host.isascii() or any(c.isspace() for c in host):
            raise ConfigError(
                f"hostname {raw!r} is not an ASCII DNS name (use the IDNA xn-- form) or an IP",
                field="hostnames",
            )
        names.append(x509.DNSName(host))
    return list(dict.fromkeys(names))


def authority_key_identifier(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate
) -> x509.AuthorityKeyIdentifier:
    # Reuse the CA's own SKI when it has one: chain building matches AKI to SKI byte for byte, and
    # a CA made elsewhere may have derived its SKI by another method than ours.
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def state_of_certificate(cert: x509.Certificate) -> str | None:
    """The state named by the certificate's URI SAN; None if absent or ambiguous.

    Only meaningful for a certificate that has already been verified against the network CA.
    """
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    states = {
        uri[len(STATE_URI_PREFIX) :]
        for uri in san.get_values_for_type(x509.UniformResourceIdentifier)
        if uri.startswith(STATE_URI_PREFIX)
    }
    if len(states) != 1:
        return None
    (state,) = states
    return state if _STATE_RE.fullmatch(state) else None


def certificate_fingerprint(cert_der: bytes) -> str:
    return "sha256:" + hashlib.sha256(cert_der).hexdigest()


# --- PEM ---------------------------------------------------------------------------------------


def private_key_pem(key: PrivateKeyTypes) -> bytes:
    """PKCS#8 PEM without encryption: protection comes from the 0600 file mode."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def certificate_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_certificate_pem(data: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise KeyFileError("not a PEM X.509 certificate") from exc


def load_ec_private_key_pem(data: bytes) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:
        # cryptography raises TypeError for a password-protected key given no password.
        raise KeyFileError(
            "the private key is encrypted; mla_node expects an unencrypted key in a 0600 file"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyFileError("not a PEM private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise KeyFileError("the private key is not an ECDSA P-256 key")
    return key


# --- TLS ---------------------------------------------------------------------------------------


def server_ssl_context(cert_pem_path: Path, key_path: Path, ca_pem_path: Path) -> ssl.SSLContext:
    """TLS 1.3 server context that requires a client certificate from the network CA."""
    ctx = _node_context(ssl.PROTOCOL_TLS_SERVER, cert_pem_path, key_path, ca_pem_path)
    # Our clients never resume sessions; a ticket would only let a session outlive the
    # certificate checks of the handshake that minted it.
    ctx.num_tickets = 0
    return ctx


def client_ssl_context(cert_pem_path: Path, key_path: Path, ca_pem_path: Path) -> ssl.SSLContext:
    """TLS 1.3 client context that presents our node certificate and checks the peer's name."""
    ctx = _node_context(ssl.PROTOCOL_TLS_CLIENT, cert_pem_path, key_path, ca_pem_path)
    ctx.check_hostname = True
    return ctx


def _node_context(
    protocol: int, cert_pem_path: Path, key_path: Path, ca_pem_path: Path
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    # Strict RFC 5280 checks: our own CA sets every extension it requires, so nothing legitimate
    # is lost and malformed chains are refused.
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    _load_network_ca(ctx, ca_pem_path)

    # ssl can only load a key from a path: check the mode first, then let OpenSSL read it.
    read_private_file(key_path)
    try:
        ctx.load_cert_chain(certfile=cert_pem_path, keyfile=key_path)
    except FileNotFoundError as exc:
        raise KeyFileError(
            f"certificate file {cert_pem_path} does not exist", field=str(cert_pem_path)
        ) from exc
    except (ssl.SSLError, OSError) as exc:
        raise KeyFileError(
            f"cannot load certificate {cert_pem_path} with key {key_path} "
            f"(unreadable, not PEM, or the key does not match the certificate): {exc}",
            field=str(key_path),
        ) from exc
    return ctx


def _load_network_ca(ctx: ssl.SSLContext, ca_pem_path: Path) -> None:
    try:
        data = ca_pem_path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the network CA file {ca_pem_path}: {exc.strerror or exc}",
            field=str(ca_pem_path),
        ) from exc
    # Parsed here for a clear error; several certificates are allowed so that a CA rollover can
    # trust the old and the new root side by side.
    try:
        x509.load_pem_x509_certificates(data)
        ctx.load_verify_locations(cadata=data.decode("ascii"))
    except (ValueError, ssl.SSLError) as exc:
        raise ConfigError(
            f"the network CA file {ca_pem_path} is not PEM X.509 certificates",
            field=str(ca_pem_path),
        ) from exc


def peer_certificate_der(transport: asyncio.BaseTransport | None) -> bytes | None:
    """The DER certificate the TLS peer presented, or None without TLS or a peer certificate.

    Meant for an inbound aiohttp ``request.transport``, to tie the client certificate's state to
    the envelope's sender. On the sending side it is no substitute for ``check_hostname`` and the
    signed receipt: aiohttp may release a response's connection (``response.connection`` becomes
    None) as soon as a small body has arrived, before the caller can look at it.
    """
    if transport is None:
        return None
    ssl_object = transport.get_extra_info("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    return ssl_object.getpeercert(binary_form=True)
