"""The network authority's directory service: the signed directory over HTTPS.

``mla-node authority serve`` runs :class:`DirectoryServer` on the authority's folder; nodes poll
it through :mod:`mla_node.directory_client`.

Routes::

    GET /directory.bin    the latest signed directory; ETag is its SHA-256, If-None-Match -> 304
    GET /trust-root.json  the trust root, to compare fingerprints with the copy received out of
                          band (never a substitute for it: TLS cannot vouch for its own root)
    GET /healthz          200 while a valid directory is served, 503 with the reason otherwise

Decisions (docs/deployment.md, "The directory service"):

- The root signature protects the content; TLS only has to stop someone on the path from feeding
  the nodes junk that costs them work, or from quietly withholding newer versions. So the server
  presents a server-only certificate issued by the network CA at start (``serve-tls.pem``), which
  nodes check against the CA of their trust root. No client certificate is asked: the directory
  is no secret (every node holds it) and a node must be able to fetch the directory that lists
  its renewed certificate.
- The server re-reads ``directory.bin`` as soon as it changes (``authority publish``, ``admit``,
  ``revoke`` write it atomically) and verifies it before serving it: a file that does not verify
  against the trust root is not served (the last good one is), with an alert. Refusing older
  versions is left to the nodes, the one place that rule lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import signal
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mla_node import authority, pki
from mla_node.errors import ConfigError, NotFound, TrustError
from mla_node.protocol.directory import Directory, TrustRoot, verify_directory
from mla_node.service.trust import DEFAULT_ALERT_FRACTION, StaleAlarm, Staleness, staleness
from mla_node.transport.listening import close_servers
from mla_node.transport.problems import problem_middleware

__all__ = [
    "DIRECTORY_PATH",
    "DirectoryServer",
    "issue_serving_certificate",
    "parse_listen",
    "serve_until_stopped",
    "serving_hostnames",
]

log = logging.getLogger(__name__)

DIRECTORY_PATH = "/directory.bin"
TRUST_ROOT_PATH = "/trust-root.json"
HEALTH_PATH = "/healthz"
DIRECTORY_TYPE = "application/vnd.mla-node.directory"
VERSION_HEADER = "Mla-Directory-Version"  # informational: the signed body is what counts
SERVE_KEY_FILE = "serve-tls.key"
SERVE_CERT_FILE = "serve-tls.pem"
# Short, because the server renews it by itself (a third before the end) and nothing pins it.
SERVE_CERT_DAYS = 90
MAINTENANCE_S = 60.0  # how often the server looks at its directory's expiry and its certificate
_WILDCARDS = {"", "0.0.0.0", "::"}  # noqa: S104 - names of "every address", not a bind


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8444`` for IPv6) as a host and a port."""
    try:
        url = urlsplit(f"//{text}")
        host, port = url.hostname, url.port
    except ValueError as exc:
        raise ConfigError(f"--listen {text!r}: {exc}", field="listen") from exc
    if host is None or port is None:
        raise ConfigError(f"--listen {text!r} must be HOST:PORT, e.g. 0.0.0.0:8444", field="listen")
    return host, port


def serving_hostnames(host: str, given: list[str]) -> list[str]:
    """The names for the service's certificate: those given, else the listening host's."""
    if given:
        return given
    if host in _WILDCARDS:
        raise ConfigError(
            f"listening on every address ({host or '*'}): give --hostname, the name nodes use "
            "in keys.directory_url",
            field="hostname",
        )
    return [host]


def issue_serving_certificate(
    authority_dir: Path, hostnames: list[str], now: dt.datetime
) -> x509.Certificate:
    """A fresh key and a server-only certificate from the network CA, written to the folder.

    Unlike a node's certificate it has no client-auth use and no state URI: whoever took it from
    the service's host could not pass for a node anywhere.
    """
    ca_key, ca_cert = authority.load_ca(authority_dir)
    key = pki.new_tls_key()
    not_after = min(now + dt.timedelta(days=SERVE_CERT_DAYS), ca_cert.not_valid_after_utc)
    # pki's helpers for the names, key usage and key ids, so that this certificate is built
    # like the nodes' and passes the same strict checks.
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, "mla-node directory service"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, pki.NODE_ORGANIZATION),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - pki.CLOCK_SKEW_ALLOWANCE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(pki.key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(pki.general_names(hostnames)), critical=False)
        .add_extension(pki.authority_key_identifier(ca_key, ca_cert), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pki.write_private_file(authority_dir / SERVE_KEY_FILE, pki.private_key_pem(key))
    pki.write_public_file(authority_dir / SERVE_CERT_FILE, pki.certificate_pem(cert))
    return cert


@dataclass(frozen=True)
class _Published:
    stamp: tuple[int, int, int]  # inode, mtime, size of the file it was read from
    data: bytes
    directory: Directory
    sha256: str


class DirectoryServer:
    """Serves the authority folder's latest verified directory and its trust root over HTTPS."""

    def __init__(
        self,
        authority_dir: Path,
        hostnames: list[str],
        *,
        clock: Callable[[], int] = _wall_ms,
        alert_fraction: float = DEFAULT_ALERT_FRACTION,
    ) -> None:
        if not hostnames:
            raise ConfigError(
                "give the host name(s) nodes use in keys.directory_url (--hostname)",
                field="hostname",
            )
        self.dir = authority_dir
        trust_path = authority_dir / authority.TRUST_ROOT_FILE
        self.trust: TrustRoot = authority.load_trust_root(trust_path)
        self._trust_json = trust_path.read_bytes()
        self.hostnames = hostnames
        self.url = ""  # of the directory, once started
        self._clock = clock
        self.alarm = StaleAlarm(alert_fraction, who="authority")
        self._published: _Published | None = None
        self._refused: tuple[int, int, int] | None = None
        self._tls: ssl.SSLContext | None = None
        self._cert_renew_at: dt.datetime | None = None
        self._runner: web.AppRunner | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, *, sock: socket.socket | None = None
    ) -> str:
        """Issue the TLS certificate, listen, and return the directory's URL."""
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.minimum_version = ssl.TLSVersion.TLSv1_3
        self._renew_certificate(self._now())
        if await self._load() is None:
            log.warning(
                "no directory in %s yet: nodes get 404 until one is published "
                "(mla-node authority admit or publish)",
                self.dir,
            )
        app = web.Application(middlewares=[problem_middleware])
        app.router.add_get(DIRECTORY_PATH, self._get_directory)
        app.router.add_get(TRUST_ROOT_PATH, self._get_trust_root)
        app.router.add_get(HEALTH_PATH, self._get_health)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site: web.BaseSite
        if sock is not None:
            site = web.SockSite(self._runner, sock, ssl_context=self._tls)
        else:
            site = web.TCPSite(self._runner, host, port, ssl_context=self._tls, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise ConfigError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}", field="listen"
            ) from exc
        bound_port = self._runner.addresses[-1][1]
        name = self.hostnames[0]
        self.url = f"https://{f'[{name}]' if ':' in name else name}:{bound_port}{DIRECTORY_PATH}"
        self._task = asyncio.create_task(self._maintain(), name="directory-service")
        return self.url

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._runner is not None:
            await close_servers([self._runner])

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._clock() / 1000, dt.UTC)

    def _renew_certificate(self, now: dt.datetime) -> None:
        assert self._tls is not None
        cert = issue_serving_certificate(self.dir, self.hostnames, now)
        # Loading into the live context: new handshakes get the new certificate, no restart.
        self._tls.load_cert_chain(self.dir / SERVE_CERT_FILE, self.dir / SERVE_KEY_FILE)
        lifetime = cert.not_valid_after_utc - now
        self._cert_renew_at = now + lifetime * 2 / 3

    async def _load(self) -> _Published | None:
        """The directory to serve: the file's, if it changed and verifies; else the last good."""
        path = self.dir / authority.DIRECTORY_FILE
        try:
            st = await asyncio.to_thread(os.stat, path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            served = self._published.stamp if self._published else None
            if stamp in (self._refused, served):
                return self._published
            data = await asyncio.to_thread(path.read_bytes)
        except OSError:
            return self._published  # none yet, or being replaced: keep what is served
        try:
            directory = verify_directory(data, self.trust, now=0)  # expiry: see _maintain
        except TrustError as exc:
            self._refused = stamp
            log.error(
                "ALERT directory_invalid authority file=%s: %s (%s); still serving version %s",
                path, exc.detail, exc.code,
                self._published.directory.version if self._published else "none",
            )  # fmt: skip
            return self._published
        previous = self._published
        self._published = _Published(stamp, data, directory, hashlib.sha256(data).hexdigest())
        if previous is None or previous.sha256 != self._published.sha256:
            log.info(
                "serving directory version %d (%d nodes)", directory.version, len(directory.nodes)
            )
            if previous is not None and directory.version < previous.directory.version:
                log.warning(
                    "directory.bin went back from version %d to %d: nodes refuse it",
                    previous.directory.version, directory.version,
                )  # fmt: skip
        return self._published

    async def _maintain(self) -> None:
        while True:
            try:
                published = await self._load()
                self.alarm.check(
                    published.directory if published else None,
                    self._clock(),
                    f"publish a newer one: mla-node authority publish --dir {self.dir}",
                )
                now = self._now()
                if self._cert_renew_at is not None and now >= self._cert_renew_at:
                    self._renew_certificate(now)
                    log.info("directory service certificate renewed")
            except Exception:  # the service goes on serving whatever one round did
                log.exception("directory service maintenance failed")
            await asyncio.sleep(MAINTENANCE_S)

    async def _get_directory(self, request: web.Request) -> web.Response:
        published = await self._load()
        if published is None:
            raise NotFound("no directory has been published yet")
        headers = {
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
            VERSION_HEADER: str(published.directory.version),
        }
        if any(tag.value == published.sha256 for tag in request.if_none_match or ()):
            response = web.Response(status=304, headers=headers)
        else:
            response = web.Response(
                body=published.data, content_type=DIRECTORY_TYPE, headers=headers
            )
        response.etag = published.sha256
        return response

    async def _get_trust_root(self, request: web.Request) -> web.Response:
        return web.Response(body=self._trust_json, content_type="application/json")

    async def _get_health(self, request: web.Request) -> web.Response:
        published = await self._load()
        if published is None:
            return web.json_response({"status": "no_directory"}, status=503)
        directory = published.directory
        level = staleness(directory, self._clock(), self.alarm.fraction)
        body: dict[str, Any] = {
            "status": "directory_expired" if level is Staleness.EXPIRED else "ok",
            "network": directory.network,
            "version": directory.version,
            "expires_at": directory.expires_at,
            "stale": level is not Staleness.FRESH,
        }
        return web.json_response(body, status=503 if level is Staleness.EXPIRED else 200)


async def serve_until_stopped(
    authority_dir: Path,
    host: str,
    port: int,
    hostnames: list[str],
    *,
    ready_file: Path | None = None,
    say: Callable[[str], None] = print,
) -> None:
    """``mla-node authority serve``: serve until SIGTERM or SIGINT, then stop cleanly."""
    server = DirectoryServer(authority_dir, hostnames)
    url = await server.start(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        say(f"Serving the directory of {server.trust.network!r} at {url}")
        say(f"  nodes set keys.directory_url = {json.dumps(url)}")
        if ready_file is not None:
            pki.write_public_file(ready_file, json.dumps({"url": url}).encode())
        await stop.wait()
    finally:
        if ready_file is not None:
            ready_file.unlink(missing_ok=True)  # noqa: ASYNC240 (one tiny file, at exit)
        await server.stop()
