"""Key files, certificates and real mutual TLS between aiohttp servers and clients on 127.0.0.1."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import ssl
import stat
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mla_node import pki
from mla_node.errors import ConfigError, KeyFileError
from mla_node.transport.listening import close_servers

TIMEOUT = aiohttp.ClientTimeout(total=15)


@dataclass(frozen=True)
class NodeFiles:
    cert: Path
    key: Path
    ca: Path

    def server(self) -> ssl.SSLContext:
        return pki.server_ssl_context(self.cert, self.key, self.ca)

    def client(self) -> ssl.SSLContext:
        return pki.client_ssl_context(self.cert, self.key, self.ca)


@dataclass
class Network:
    """A network authority's CA and a place to write nodes' files, as an operator would."""

    root: Path
    now: datetime
    name: str = "REMJA network CA"
    ca_key: ec.EllipticCurvePrivateKey = field(init=False)
    ca_cert: x509.Certificate = field(init=False)
    ca_path: Path = field(init=False)

    def __post_init__(self) -> None:
        # Back-dated so that the leaves the expiry tests issue in the past fall inside its validity.
        self.ca_key, self.ca_cert = pki.new_ca(self.name, self.now - timedelta(days=1000))
        self.ca_path = self.root / "ca.pem"
        pki.write_public_file(self.ca_path, pki.certificate_pem(self.ca_cert))

    def node(
        self,
        state: str,
        hostnames: tuple[str, ...] = ("127.0.0.1", "::1", "localhost"),
        issued: datetime | None = None,
    ) -> NodeFiles:
        key = pki.new_tls_key()
        cert = pki.issue_node_certificate(
            self.ca_key,
            self.ca_cert,
            key.public_key(),
            state,
            list(hostnames),
            issued or self.now,
        )
        files = NodeFiles(
            self.root / state / "tls.pem", self.root / state / "tls.key", self.ca_path
        )
        pki.write_private_file(files.key, pki.private_key_pem(key))
        pki.write_public_file(files.cert, pki.certificate_pem(cert))
        return files


@pytest.fixture
def now() -> datetime:
    # Real time, because OpenSSL checks validity against the real clock during the handshake.
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def network(tmp_path: Path, now: datetime) -> Network:
    return Network(tmp_path / "net", now)


@pytest.fixture
def umask() -> Iterator[None]:
    """Restores the process umask, which a test sets on purpose."""
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


@dataclass
class Server:
    url: str
    seen_states: list[str | None] = field(default_factory=list)
    handshake_errors: list[ssl.SSLError] = field(default_factory=list)

    async def refusal(self) -> ssl.SSLError:
        """Why the server refused the last handshake.

        In TLS 1.3 the client finishes its side of the handshake before the server has checked
        the client certificate, so the client only sees a disconnect; the reason is on the server,
        reported to the loop's exception handler, possibly a little after the client gave up.
        """
        for _ in range(500):
            if self.handshake_errors:
                return self.handshake_errors[-1]
            await asyncio.sleep(0.01)
        raise AssertionError("the server reported no handshake failure")


@asynccontextmanager
async def serve(ssl_context: ssl.SSLContext) -> AsyncIterator[Server]:
    """A real aiohttp server on 127.0.0.1, port chosen by the kernel."""
    server = Server(url="")

    async def whoami(request: web.Request) -> web.Response:
        der = pki.peer_certificate_der(request.transport)
        state = (
            None if der is None else pki.state_of_certificate(x509.load_der_x509_certificate(der))
        )
        server.seen_states.append(state)
        return web.Response(text=state or "")

    def on_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, ssl.SSLError):
            server.handshake_errors.append(exc)
        else:
            loop.default_exception_handler(context)

    app = web.Application()
    app.router.add_get("/whoami", whoami)
    loop = asyncio.get_running_loop()
    previous_handler, previous_debug = loop.get_exception_handler(), loop.get_debug()
    # asyncio reports why an incoming TLS handshake failed only in debug mode.
    loop.set_debug(True)
    loop.set_exception_handler(on_loop_error)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
        host, port = runner.addresses[0][:2]
        server.url = f"https://{host}:{port}/whoami"
        yield server
    finally:
        await close_servers([runner])
        loop.set_exception_handler(previous_handler)
        loop.set_debug(previous_debug)


async def fetch(url: str, client_ctx: ssl.SSLContext) -> str:
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.get(url, ssl=client_ctx) as response,
    ):
        response.raise_for_status()
        return await response.text()


def bare_client_context(ca: Path) -> ssl.SSLContext:
    """Trusts the network CA, presents no certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=ca)
    return ctx


# --- mutual TLS over real sockets ---------------------------------------------------------------


async def test_mutual_tls_server_sees_the_client_state(network: Network) -> None:
    mx, us = network.node("MX"), network.node("US")
    async with serve(mx.server()) as server:
        assert await fetch(server.url, us.client()) == "US"
        assert await fetch(server.url, network.node("BR").client()) == "BR"
    assert server.seen_states == ["US", "BR"]
    assert server.handshake_errors == []


async def test_client_with_certificate_from_another_ca_is_refused(
    network: Network, tmp_path: Path, now: datetime
) -> None:
    rogue = Network(tmp_path / "rogue", now, name="REMJA network CA")
    # Trusts the real CA, so only the server's check of the client certificate can fail.
    impostor = rogue.node("US")
    impostor_ctx = pki.client_ssl_context(impostor.cert, impostor.key, network.ca_path)
    async with serve(network.node("MX").server()) as server:
        with pytest.raises(aiohttp.ClientConnectionError):
            await fetch(server.url, impostor_ctx)
        refusal = await server.refusal()
    assert isinstance(refusal, ssl.SSLCertVerificationError)
    assert refusal.verify_message == "unable to get local issuer certificate"
    assert server.seen_states == []


async def test_client_without_certificate_is_refused(network: Network) -> None:
    async with serve(network.node("MX").server()) as server:
        with pytest.raises(aiohttp.ClientConnectionError):
            await fetch(server.url, bare_client_context(network.ca_path))
        refusal = await server.refusal()
    assert refusal.reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE"
    assert server.seen_states == []


async def test_client_limited_to_tls12_is_refused(network: Network) -> None:
    us = network.node("US")
    ctx = bare_client_context(network.ca_path)
    ctx.load_cert_chain(us.cert, us.key)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    async with serve(network.node("MX").server()) as server:
        # Fails while connecting, i.e. in the handshake, before any request is sent.
        with pytest.raises(aiohttp.ClientConnectorError):
            await fetch(server.url, ctx)
        refusal = await server.refusal()
    assert refusal.reason == "UNSUPPORTED_PROTOCOL"
    assert server.seen_states == []


async def test_expired_server_certificate_is_refused_by_client(
    network: Network, now: datetime
) -> None:
    expired = network.node("MX", issued=now - timedelta(days=800))
    async with serve(expired.server()) as server:
        with pytest.raises(aiohttp.ClientConnectorCertificateError) as info:
            await fetch(server.url, network.node("US").client())
    assert "expired" in str(info.value.certificate_error)
    assert server.seen_states == []


async def test_expired_client_certificate_is_refused_by_server(
    network: Network, now: datetime
) -> None:
    expired = network.node("US", issued=now - timedelta(days=800))
    async with serve(network.node("MX").server()) as server:
        with pytest.raises(aiohttp.ClientConnectionError):
            await fetch(server.url, expired.client())
        refusal = await server.refusal()
    assert isinstance(refusal, ssl.SSLCertVerificationError)
    assert refusal.verify_message == "certificate has expired"
    assert server.seen_states == []


async def test_server_certificate_for_another_host_is_refused(network: Network) -> None:
    elsewhere = network.node("MX", hostnames=("mx.node.example",))
    async with serve(elsewhere.server()) as server:
        with pytest.raises(aiohttp.ClientConnectorCertificateError) as info:
            await fetch(server.url, network.node("US").client())
    assert "mismatch" in str(info.value.certificate_error).lower()


def test_contexts_trust_only_the_network_ca(network: Network) -> None:
    us = network.node("US")
    for ctx in (us.client(), us.server()):
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
        assert ctx.verify_mode == ssl.CERT_REQUIRED
        assert ctx.get_ca_certs(binary_form=True) == [
            network.ca_cert.public_bytes(serialization.Encoding.DER)
        ]
    assert us.client().check_hostname


# --- files ---------------------------------------------------------------------------------------


@pytest.mark.usefixtures("umask")
def test_write_private_file_is_0600_even_with_umask_0(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "node.key"
    os.umask(0)
    pki.write_private_file(path, b"first")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Replacing a file that an operator had widened narrows it again.
    path.chmod(0o644)
    pki.write_private_file(path, b"second")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == b"second"
    assert os.listdir(path.parent) == ["node.key"]


@pytest.mark.usefixtures("umask")
def test_write_public_file_is_0644_even_with_umask_077(tmp_path: Path) -> None:
    path = tmp_path / "ca.pem"
    os.umask(0o077)
    pki.write_public_file(path, b"cert")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_bytes() == b"cert"


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "node.key"
    pki.write_private_file(path, b"old")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(KeyFileError) as info:
        pki.write_private_file(path, b"new")
    assert info.value.field == str(path)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["node.key"]


def test_read_private_file_refuses_a_0644_key(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    pki.write_private_file(path, b"secret")
    assert pki.read_private_file(path) == b"secret"
    path.chmod(0o644)
    with pytest.raises(KeyFileError) as info:
        pki.read_private_file(path)
    assert info.value.field == str(path)
    assert "chmod 600" in info.value.detail
    assert "0644" in info.value.detail


def test_read_private_file_refuses_missing_and_non_regular(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist") as info:
        pki.read_private_file(tmp_path / "absent.key")
    assert info.value.field == str(tmp_path / "absent.key")
    directory = tmp_path / "dir.key"
    directory.mkdir(mode=0o700)
    with pytest.raises(KeyFileError, match="not a regular file"):
        pki.read_private_file(directory)


def test_tls_contexts_refuse_a_widely_readable_key(network: Network) -> None:
    us = network.node("US")
    us.key.chmod(0o640)
    with pytest.raises(KeyFileError, match="chmod 600"):
        us.server()
    with pytest.raises(KeyFileError, match="chmod 600"):
        us.client()


def test_tls_context_refuses_a_key_that_does_not_match_the_certificate(
    network: Network,
) -> None:
    us, mx = network.node("US"), network.node("MX")
    with pytest.raises(KeyFileError) as info:
        pki.server_ssl_context(us.cert, mx.key, network.ca_path)
    assert info.value.field == str(mx.key)


def test_tls_context_refuses_a_bad_ca_file(network: Network, tmp_path: Path) -> None:
    us = network.node("US")
    bad = tmp_path / "bad-ca.pem"
    pki.write_public_file(bad, b"not a certificate")
    with pytest.raises(ConfigError) as info:
        pki.client_ssl_context(us.cert, us.key, bad)
    assert info.value.field == str(bad)
    with pytest.raises(ConfigError):
        pki.client_ssl_context(us.cert, us.key, tmp_path / "absent.pem")


# --- certificates --------------------------------------------------------------------------------


def test_node_certificate_has_the_expected_names_and_uses(network: Network, now: datetime) -> None:
    key = pki.new_tls_key()
    cert = pki.issue_node_certificate(
        network.ca_key,
        network.ca_cert,
        key.public_key(),
        "MX",
        ["Node.MX.example.", "127.0.0.1", "::1"],
        now,
    )
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "mla-node MX"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == (
        "REMJA network"
    )
    assert cert.issuer == network.ca_cert.subject

    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["node.mx.example"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:mla-node:state:MX"]
    assert pki.state_of_certificate(cert) == "MX"

    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical
    assert basic.value.ca is False
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = network.ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    assert cert.not_valid_after_utc - now == timedelta(days=397)
    assert cert.not_valid_before_utc <= now
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    cert.verify_directly_issued_by(network.ca_cert)
    # Random serials: two certificates for the same key never collide.
    again = pki.issue_node_certificate(
        network.ca_key, network.ca_cert, key.public_key(), "MX", ["127.0.0.1"], now
    )
    assert again.serial_number != cert.serial_number


def test_ca_certificate_is_a_p256_ca_for_leaves_only(now: datetime) -> None:
    key, cert = pki.new_ca("REMJA network CA", now)
    assert isinstance(key.curve, ec.SECP256R1)
    assert cert.subject == cert.issuer
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical
    assert (basic.value.ca, basic.value.path_length) == (True, 0)
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign
    assert not usage.digital_signature
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert cert.not_valid_after_utc - now == timedelta(days=3650)
    assert pki.state_of_certificate(cert) is None


def test_issuing_refuses_bad_input(network: Network, now: datetime) -> None:
    public = pki.new_tls_key().public_key()
    with pytest.raises(ConfigError) as info:
        pki.issue_node_certificate(network.ca_key, network.ca_cert, public, "MX", [], now)
    assert info.value.field == "hostnames"
    with pytest.raises(ConfigError) as info:
        pki.issue_node_certificate(
            network.ca_key, network.ca_cert, public, "M X", ["127.0.0.1"], now
        )
    assert info.value.field == "state"
    other_ca_key, _ = pki.new_ca("other", now)
    with pytest.raises(ConfigError) as info:
        pki.issue_node_certificate(other_ca_key, network.ca_cert, public, "MX", ["a.example"], now)
    assert info.value.field == "ca_key"
    with pytest.raises(ValueError, match="timezone-aware"):
        pki.new_ca("naive", now.replace(tzinfo=None))


def test_pem_round_trip_and_fingerprint(network: Network) -> None:
    key = pki.new_tls_key()
    loaded = pki.load_ec_private_key_pem(pki.private_key_pem(key))
    assert loaded.private_numbers() == key.private_numbers()
    cert = pki.load_certificate_pem(pki.certificate_pem(network.ca_cert))
    assert cert == network.ca_cert
    der = cert.public_bytes(serialization.Encoding.DER)
    assert pki.certificate_fingerprint(der) == "sha256:" + cert.fingerprint(hashes.SHA256()).hex()


@pytest.mark.parametrize(
    "pem",
    [
        pytest.param(b"garbage", id="garbage"),
        pytest.param(b"", id="empty"),
        pytest.param(pki.private_key_pem(ec.generate_private_key(ec.SECP384R1())), id="p384"),
        pytest.param(pki.private_key_pem(ed25519.Ed25519PrivateKey.generate()), id="ed25519"),
        pytest.param(
            pki.new_tls_key().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"pw"),
            ),
            id="encrypted",
        ),
    ],
)
def test_load_ec_private_key_pem_refuses_anything_but_p256(pem: bytes) -> None:
    with pytest.raises(KeyFileError):
        pki.load_ec_private_key_pem(pem)


def test_load_certificate_pem_refuses_garbage() -> None:
    with pytest.raises(KeyFileError):
        pki.load_certificate_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


def test_peer_certificate_der_without_tls_is_none() -> None:
    assert pki.peer_certificate_der(None) is None
