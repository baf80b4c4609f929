"""Wiring one running node: database, keys, directory, delivery loops and the two HTTP servers.

The clerk API listens on a local address; the peer endpoint on the mutual-TLS address. Tests hand
in pre-bound sockets (``127.0.0.1:0``) so they can learn the ports before the directory is made.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from mla_node import crashpoints, pki
from mla_node.api.app import make_clerk_app
from mla_node.api.ops_routes import OPS, Ops
from mla_node.config import NodeConfig
from mla_node.directory_client import source_for_config
from mla_node.errors import ConfigError, MlaError
from mla_node.identity import load_identity
from mla_node.passphrase import configured_passphrase
from mla_node.protocol.directory import TrustRoot
from mla_node.protocol.envelope import MAX_ENVELOPE, read_header
from mla_node.protocol.witness import ConsistencyProof
from mla_node.service import attachments, audit_log, health, inbound
from mla_node.service.alerts import AlertMonitor
from mla_node.service.blob_transfer import PeerBlobs
from mla_node.service.context import NodeContext
from mla_node.service.delivery import Deliverer
from mla_node.service.health import CertificateWatch
from mla_node.service.trust import TrustKeeper
from mla_node.storage import ops_repo
from mla_node.storage.db import SQLITE_MIGRATIONS, open_database
from mla_node.storage.node_lock import NodeLock
from mla_node.transport.http import HttpTransport, make_peer_app
from mla_node.transport.listening import close_servers

log = logging.getLogger(__name__)

UPLOAD_EXPIRY_CHECK_S = 3600.0  # hourly: clerk_api.unsubmitted_upload_s counts days
MIGRATIONS = SQLITE_MIGRATIONS  # the SQLite file made by init and the local network
HTTP_SHUTDOWN_S = 2.0  # longest wait for HTTP handlers still running when the servers close


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class NodeRuntime:
    config: NodeConfig
    ctx: NodeContext
    deliverer: Deliverer
    transport: HttpTransport
    runners: list[web.AppRunner] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    clerk_url: str = ""
    peer_url: str = ""
    monitor: AlertMonitor = field(init=False)  # set by start(), before the servers
    lock: NodeLock | None = field(init=False, default=None)  # <database>.lock, while running

    @classmethod
    async def start(
        cls,
        config: NodeConfig,
        *,
        clerk_socket: socket.socket | None = None,
        peer_socket: socket.socket | None = None,
        clock: Callable[[], int] = wall_clock_ms,
        source_host: str | None = None,
    ) -> NodeRuntime:
        try:
            crashpoints.check_environment()
        except ValueError as exc:
            raise ConfigError(f"{crashpoints.ENV_VAR}: {exc}", field=crashpoints.ENV_VAR) from exc
        identity = load_identity(config.keys_dir, configured_passphrase(config))
        try:
            trust_root = TrustRoot.from_json(config.trust_root_path.read_bytes())
        except OSError as exc:
            raise ConfigError(
                f"cannot read the trust root {config.trust_root_path}: {exc.strerror}",
                field="keys.trust_root",
            ) from exc
        # One node per SQLite file; workers sharing a PostgreSQL database take its write lock
        # per transaction instead (storage/pg_engine.py).
        lock = None if config.database_url else NodeLock.acquire(config.database_path)
        try:
            db = await open_database(config.database_location, name=f"mla-node {config.node.state}")
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        runners: list[web.AppRunner] = []
        try:
            trust = TrustKeeper(
                trust_root,
                config.directory_path,
                db,
                clock,
                source=source_for_config(config, trust_root),
                alert_fraction=config.keys.directory_alert_fraction,
            )
            await trust.start()
            ctx = NodeContext(config=config, db=db, identity=identity, trust=trust, clock=clock)
            if (directory := trust.current) is not None:
                ctx.sign_with_listed_key(directory)
            await audit_log.checkpoint(ctx)  # a signed head of the log as it stands at start
            if filled := await ops_repo.fill_legal_due_dates(db):
                log.info("worked out the legal dates of %d messages stored before", filled)
            transport = HttpTransport(
                identity.tls_cert_path,
                identity.tls_key_path,
                max_connections_per_peer=config.delivery.max_in_flight,
                source_host=source_host,
            )
            runtime = cls(config, ctx, Deliverer(ctx, transport), transport, runners)
            runtime.lock = lock
            certs = CertificateWatch(identity.tls_cert_path, trust_root.tls_ca_pem)
            runtime.monitor = AlertMonitor(ctx, certs)
            await runtime._serve(trust_root, clerk_socket, peer_socket)
        except BaseException:
            await close_servers(runners)
            await db.close()
            if lock is not None:
                lock.release()
            raise
        await runtime.deliverer.start()
        runtime.tasks.append(
            asyncio.create_task(
                trust.poll(config.delivery.directory_poll_s, config.keys.directory_fetch_s),
                name="directory",
            )
        )
        runtime.tasks.append(
            asyncio.create_task(
                audit_log.checkpoint_every(ctx, config.audit.checkpoint_interval_s),
                name="checkpoints",
            )
        )
        runtime.tasks.append(
            asyncio.create_task(
                attachments.expire_unsubmitted_every(ctx, UPLOAD_EXPIRY_CHECK_S),
                name="upload-expiry",
            )
        )
        runtime.tasks.append(
            asyncio.create_task(runtime.monitor.run(config.ops.alert_check_s), name="alerts")
        )
        log.info(
            "node %s ready: clerk API %s, peer endpoint %s",
            config.node.state,
            runtime.clerk_url,
            runtime.peer_url,
        )
        return runtime

    async def _serve(
        self,
        trust_root: TrustRoot,
        clerk_socket: socket.socket | None,
        peer_socket: socket.socket | None,
    ) -> None:
        ca_path = self.config.keys_dir / "network-ca.pem"
        pki.write_public_file(ca_path, trust_root.tls_ca_pem)
        identity = self.ctx.identity
        server_tls = pki.server_ssl_context(identity.tls_cert_path, identity.tls_key_path, ca_path)

        async def receive(data: bytes, cert: bytes | None) -> bytes:
            return await self._receive(data, cert)

        async def log_proof(witnessed_size: int) -> ConsistencyProof | None:
            return await inbound.log_proof(self.ctx, witnessed_size)

        peer_app = make_peer_app(
            receive, MAX_ENVELOPE, log_proof=log_proof, blobs=PeerBlobs(self.ctx)
        )
        clerk_app = make_clerk_app(self.ctx, self.readiness, self.config.clerk_api.max_body_bytes)
        clerk_app[OPS] = Ops(self.deliverer.metrics, self.monitor)
        cfg = self.config
        self.peer_url = await self._site(
            peer_app, peer_socket, cfg.peer.host, cfg.peer.port, server_tls, "https"
        )
        self.clerk_url = await self._site(
            clerk_app, clerk_socket, cfg.clerk_api.host, cfg.clerk_api.port, None, "http"
        )

    async def _site(
        self,
        app: web.Application,
        sock: socket.socket | None,
        host: str,
        port: int,
        tls: Any,
        scheme: str,
    ) -> str:
        # By the time the servers close, deliveries have had their grace: a request still in a
        # handler is cut short, safely (a clerk retries with its Idempotency-Key; a sender whose
        # envelope was stored gets the original receipt when it sends it again).
        grace = min(self.config.delivery.shutdown_grace_s, HTTP_SHUTDOWN_S)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=grace)
        await runner.setup()
        self.runners.append(runner)
        site: web.BaseSite
        if sock is not None:
            site = web.SockSite(runner, sock, ssl_context=tls)
        else:
            site = web.TCPSite(runner, host, port, ssl_context=tls, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            setting = "peer.port" if scheme == "https" else "clerk_api.port"
            raise ConfigError(
                f"cannot listen on {host}:{port}: {exc.strerror}", field=setting
            ) from exc
        bound_host, bound_port = runner.addresses[-1][:2]
        return f"{scheme}://{bound_host}:{bound_port}"

    async def _receive(self, data: bytes, cert: bytes | None) -> bytes:
        """An envelope from a peer: counted by outcome, and logged once stored (with the
        sender's request id, set by the peer endpoint)."""
        sender, message_id = "unknown", "?"
        with contextlib.suppress(MlaError):
            header = read_header(data)[0]
            message_id = header.message_id
            # Only states of the directory become a label: a peer cannot grow the metrics.
            if self.ctx.trust.current and self.ctx.trust.current.node(header.sender):
                sender = header.sender
        try:
            received = await inbound.receive(self.ctx, data, cert)
        except MlaError as exc:
            self.deliverer.metrics.answered(sender, exc.code)
            raise
        if received.repeat:
            self.deliverer.metrics.answered(sender, "repeat")
            log.info("envelope %s from %s again: its original receipt sent", message_id, sender)
        else:
            self.deliverer.metrics.answered(sender, "delivered")
            log.info("envelope %s from %s stored; receipt sent", message_id, sender)
        return received.receipt

    async def readiness(self) -> dict[str, Any]:
        """What GET /readyz answers: each check ``ok`` or the code of what is wrong. Not ready
        when the database takes no write, a key file is missing or readable by others, the
        directory or a certificate has ended, or the sender or a background task stopped."""
        checks: dict[str, str] = {}
        try:
            self.ctx.directory()
            checks["directory"] = "ok"
        except MlaError as exc:
            checks["directory"] = exc.code
        checks["database"] = await health.probe_database(self.ctx.db)
        problems = health.check_key_files(self.config.keys_dir)
        checks["keys"] = problems[0].code if problems else "ok"
        checks["certificates"] = self._certificates()
        if self.ctx.stopping:
            checks["sender"] = "shutting_down"
        else:
            checks["sender"] = "ok" if self.deliverer.running else "stopped"
        stopped = [t.get_name() for t in self.tasks if t.done()]
        checks["background"] = f"stopped: {', '.join(stopped)}" if stopped else "ok"
        return {"ready": all(v == "ok" for v in checks.values()), "checks": checks}

    def _certificates(self) -> str:
        try:
            expiries = self.monitor.certs.expiries()
        except MlaError as exc:
            return exc.code
        now = self.ctx.clock()
        ended = [c.which for c in expiries if c.not_after <= now]
        return f"certificate_expired: {', '.join(ended)}" if ended else "ok"

    async def stop(self) -> None:
        """Stop gracefully: the clerk API refuses writes (503 ``shutting_down``) at once, the
        deliveries in flight get ``delivery.shutdown_grace_s`` to finish and record their
        receipts, then everything else is cancelled. Nothing is lost: an envelope whose receipt
        was not recorded stays in the outbox and is sent again after a restart, and the receiver
        answers that repeat with its original receipt."""
        self.ctx.stopping = True
        log.info("node %s stopping", self.config.node.state)
        await self.deliverer.stop(self.config.delivery.shutdown_grace_s)
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await close_servers(self.runners)
        await self.transport.close()
        await self.ctx.trust.close()
        await self.ctx.db.close()
        if self.lock is not None:
            self.lock.release()


async def run_until_stopped(config: NodeConfig, ready_file: str | None = None) -> None:
    """``mla-node run``: serve until SIGTERM or SIGINT, then stop cleanly."""
    runtime = await NodeRuntime.start(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        if ready_file:
            pki.write_public_file(
                Path(ready_file),
                json.dumps({"clerk_url": runtime.clerk_url, "peer_url": runtime.peer_url}).encode(),
            )
        await stop.wait()
    finally:
        if ready_file:
            Path(ready_file).unlink(missing_ok=True)  # noqa: ASYNC240 (one tiny file, at exit)
        await runtime.stop()
