"""The nodes' side of the directory service: fetching the signed directory over HTTPS.

A node whose ``keys.directory_url`` is set polls the authority's service
(:mod:`mla_node.directory_server`) through :class:`HttpDirectorySource`, wired by
:func:`source_for_config`, and hands what it gets to :class:`~mla_node.service.trust.TrustKeeper`,
which verifies it against the trust root before anything is used or stored.

The transport only has to be authenticated enough that nobody on the path can feed the node junk
or withhold newer versions unnoticed (docs/deployment.md, "The directory service"): the server's
certificate is checked against the CA of the node's trust root (or ``keys.directory_ca``) and the
URL's host name, never against the system's CAs. The client follows no redirect, reads at most
``MAX_SIGNED_OBJECT`` bytes and gives every failure as :class:`DirectoryUnavailable`, after which
the node keeps the directory it has.
"""

from __future__ import annotations

import ssl

import aiohttp
from cryptography import x509

from mla_node.config import NodeConfig
from mla_node.errors import ConfigError, DirectoryUnavailable
from mla_node.protocol.directory import TrustRoot
from mla_node.protocol.signed import MAX_SIGNED_OBJECT

__all__ = ["HttpDirectorySource", "source_for_config"]


def _client_context(ca_pem: bytes, where: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # checks the certificate and the host name
    # TLS 1.2 allowed (unlike between nodes): the service may sit behind an operator's proxy.
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    try:
        x509.load_pem_x509_certificates(ca_pem)
        ctx.load_verify_locations(cadata=ca_pem.decode("ascii"))
    except (ValueError, ssl.SSLError) as exc:
        raise ConfigError(f"{where} is not PEM X.509 certificates", field=where) from exc
    return ctx


class HttpDirectorySource:
    """The directory service as a :class:`~mla_node.service.trust.DirectorySource`."""

    def __init__(
        self, url: str, ca_pem: bytes, *, timeout_s: float = 30.0, ca_name: str = "CA"
    ) -> None:
        self.url = url
        self._ssl = _client_context(ca_pem, ca_name)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    @property
    def location(self) -> str:
        return self.url

    async def fetch(self, have: bytes | None) -> bytes | None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=1),
                timeout=self._timeout,
                trust_env=False,  # no proxy from the environment: the URL is what was configured
            )
        headers = {"If-None-Match": f'"{have.hex()}"'} if have else {}
        try:
            async with self._session.get(self.url, headers=headers, allow_redirects=False) as resp:
                if resp.status == 304:
                    return None
                if resp.status != 200:
                    raise DirectoryUnavailable(f"{self.url} answered HTTP {resp.status}")
                return await _read_capped(resp, self.url)
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError) as exc:
            raise DirectoryUnavailable(f"{self.url}: {exc or type(exc).__name__}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _read_capped(resp: aiohttp.ClientResponse, url: str) -> bytes:
    too_large = DirectoryUnavailable(f"{url} sent more than {MAX_SIGNED_OBJECT} bytes")
    if resp.content_length is not None and resp.content_length > MAX_SIGNED_OBJECT:
        raise too_large
    body = bytearray()
    async for chunk in resp.content.iter_chunked(64 << 10):
        body += chunk
        if len(body) > MAX_SIGNED_OBJECT:
            raise too_large
    return bytes(body)


def source_for_config(config: NodeConfig, trust_root: TrustRoot) -> HttpDirectorySource | None:
    """The directory service a node's config names, trusting its CA; None without a URL."""
    if not config.keys.directory_url:
        return None
    ca_pem, ca_name = trust_root.tls_ca_pem, "keys.trust_root"
    ca_path = config.directory_ca_path
    if ca_path is not None:
        ca_name = "keys.directory_ca"
        try:
            ca_pem = ca_path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"cannot read keys.directory_ca {ca_path}: {exc.strerror or exc}", field=ca_name
            ) from exc
    return HttpDirectorySource(
        config.keys.directory_url,
        ca_pem,
        timeout_s=config.delivery.request_timeout_s,
        ca_name=ca_name,
    )
