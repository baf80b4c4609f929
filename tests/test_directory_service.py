"""The authority's directory service (``mla-node authority serve``) and the nodes that poll it.

Real servers on 127.0.0.1:0 with certificates from the network CA, real nodes: a newly published
directory is applied without a restart; an unreachable authority leaves the nodes working on the
last good directory, with ``ALERT directory_stale`` as its expiry approaches; a rolled-back or
badly signed directory from the URL is refused.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from click.testing import CliRunner

from mla_node import authority, pki
from mla_node.cli import cli
from mla_node.config import NodeConfig, parse_config
from mla_node.directory_client import HttpDirectorySource, source_for_config
from mla_node.directory_server import DIRECTORY_PATH, DirectoryServer, issue_serving_certificate
from mla_node.errors import ConfigError, DirectoryUnavailable
from mla_node.localnet import create_network
from mla_node.protocol import forms
from mla_node.protocol.directory import Directory, directory_body, sign_directory
from mla_node.protocol.keys import generate_signing_key
from mla_node.protocol.signed import MAX_SIGNED_OBJECT
from mla_node.runtime import NodeRuntime
from mla_node.service.tokens import create_token
from mla_node.service.trust import ALERT_REPEAT_MS, StaleAlarm, Staleness
from mla_node.storage import repo
from mla_node.transport.listening import close_servers
from tests.netkit import RunningNode, bound_socket, wait_for

pytestmark = pytest.mark.timeout(90)

FETCH_S = 0.1


@dataclass
class Deployment:
    folder: Path
    server: DirectoryServer
    nodes: dict[str, RunningNode] = field(default_factory=dict)

    @property
    def authority_dir(self) -> Path:
        return self.folder / "authority"

    def __getitem__(self, state: str) -> RunningNode:
        return self.nodes[state]

    def version(self, state: str) -> int:
        current = self.nodes[state].runtime.ctx.trust.current
        assert current is not None
        return current.version


def with_keys(config: NodeConfig, **keys: Any) -> NodeConfig:
    return config.model_copy(update={"keys": config.keys.model_copy(update=keys)})


@asynccontextmanager
async def deployment(
    folder: Path, *, url: str | None = None, states: tuple[str, ...] = ("AR", "BR")
) -> AsyncIterator[Deployment]:
    """An authority serving its directory, and nodes whose keys.directory_url names it (or
    ``url``, to point them elsewhere)."""
    peer = {s: bound_socket() for s in states}
    clerk = {s: bound_socket() for s in states}
    local = create_network(
        folder,
        list(states),
        peer_ports={s: k.getsockname()[1] for s, k in peer.items()},
        clerk_ports={s: k.getsockname()[1] for s, k in clerk.items()},
        now=dt.datetime.now(dt.UTC),
    )
    server = DirectoryServer(folder / "authority", ["127.0.0.1"])
    served = await server.start("127.0.0.1", 0)
    net = Deployment(folder, server)
    http = aiohttp.ClientSession()
    try:
        for state, node in local.items():
            config = with_keys(node.config, directory_url=url or served, directory_fetch_s=FETCH_S)
            runtime = await NodeRuntime.start(
                config, clerk_socket=clerk[state], peer_socket=peer[state]
            )
            net.nodes[state] = RunningNode(node, runtime, await clerk_token(runtime), http)
        yield net
    finally:
        for running in net.nodes.values():
            await running.runtime.stop()
        await server.stop()
        await http.close()
        for sock in [*peer.values(), *clerk.values()]:
            sock.close()


async def clerk_token(runtime: NodeRuntime) -> dict[str, str]:
    _, secret = await create_token(
        runtime.ctx.db,
        "clerk",
        "clerk",
        runtime.ctx.clock(),
        signer=runtime.ctx.identity.signing_key,
        state=runtime.config.node.state,
    )
    return {"clerk": secret}


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def alerts(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.getMessage().startswith("ALERT directory_stale") and r.levelno == level
    ]


async def until(check: Callable[[], bool], within_s: float = 20.0) -> None:
    async def ok() -> bool:
        return check()

    await wait_for(ok, within_s)


# --- a node follows the service ------------------------------------------------------------------


async def test_a_node_applies_a_newly_published_directory_without_restart(tmp_path: Path) -> None:
    async with deployment(tmp_path) as net:
        ar = net["AR"]
        before = net.version("AR")
        authority.publish(net.authority_dir, now=now())
        await until(lambda: net.version("AR") == before + 1)
        # Fetch, verify, then persist: in the database (a restart cannot roll it back) and in
        # the directory file, which then no longer looks older than what the node uses.
        stored = await repo.accepted_directory(ar.runtime.ctx.db)
        assert stored is not None and stored[0] == before + 1
        served = (net.authority_dir / authority.DIRECTORY_FILE).read_bytes()
        # The file is written on a thread after the adoption the wait above saw.
        await until(lambda: ar.local.config.directory_path.read_bytes() == served)

        # A change that matters: BR leaves the network, and AR stops sending to it at once.
        authority.remove_node(net.authority_dir, "BR", now=now())
        await until(lambda: net.version("AR") == before + 2)
        status, body = await ar.call(
            "POST", "/api/v1/requests",
            json={"type": "mla_request", "to": "BR", "form": forms.example("mla_request")},
        )  # fmt: skip
        assert (status, body["code"]) == (422, "unknown_state")


async def test_an_unreachable_authority_leaves_the_node_working_and_alerting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with deployment(tmp_path) as net:
        ar = net["AR"]
        before = net.version("AR")
        # A directory with a tenth of its day left: inside the default alert fraction (0.2).
        authority.publish(
            net.authority_dir, now=now() - dt.timedelta(hours=21.6), directory_valid_days=1
        )
        await until(lambda: net.version("AR") == before + 1)
        await until(lambda: bool(alerts(caplog, logging.WARNING)))
        assert f"version={before + 1}" in alerts(caplog, logging.WARNING)[0]

        await net.server.stop()  # the authority goes away
        trusts = [n.runtime.ctx.trust for n in net.nodes.values()]
        await until(lambda: all(t.fetch_error is not None for t in trusts))
        assert ar.runtime.ctx.trust.fetch_error.code == "directory_unavailable"  # type: ignore[union-attr]
        await asyncio.sleep(10 * FETCH_S)
        unreachable = [m for m in caplog.messages if "unreachable" in m]
        # Once per node (both run in this process) when it starts failing, not at every poll.
        assert len(unreachable) == len(net.nodes), unreachable

        # Work goes on with the last good directory: a request is delivered and receipted.
        created = await ar.submit("BR")

        async def delivered() -> bool:
            _, view = await ar.call("GET", f"/api/v1/requests/{created['id']}")
            return bool(view["status"] == "delivered" and view["receipt"]["verified"])

        await wait_for(delivered)
        assert net.version("AR") == before + 1
        assert not alerts(caplog, logging.ERROR)

        # The alert names the unreachable service once it repeats.
        trust = ar.runtime.ctx.trust
        trust.alarm.repeat_ms = 0
        assert trust.check_freshness() is Staleness.STALE
        assert "unreachable" in alerts(caplog, logging.WARNING)[-1]


def _directory(issued_at: int, expires_at: int) -> Directory:
    return Directory(
        version=7, network="remja", issued_at=issued_at, expires_at=expires_at, nodes={}
    )


def test_the_stale_alarm_warns_near_expiry_errs_after_and_does_not_flood(
    caplog: pytest.LogCaptureFixture,
) -> None:
    day = 86_400_000
    directory = _directory(0, 30 * day)
    alarm = StaleAlarm(0.2)
    assert alarm.check(directory, 20 * day, "hint") is Staleness.FRESH
    assert alarm.check(directory, 25 * day, "hint") is Staleness.STALE  # 5 of 30 days left
    assert alarm.check(directory, 25 * day + 60_000, "hint") is Staleness.STALE
    assert len(alerts(caplog, logging.WARNING)) == 1, "once, then once an hour"
    assert alarm.check(directory, 25 * day + ALERT_REPEAT_MS, "hint") is Staleness.STALE
    assert len(alerts(caplog, logging.WARNING)) == 2
    assert alarm.check(directory, 30 * day, "publish") is Staleness.EXPIRED
    (error,) = alerts(caplog, logging.ERROR)
    assert "version=7" in error and "expired" in error and error.endswith("publish")
    assert alarm.check(None, 31 * day, "hint") is Staleness.FRESH  # nothing accepted: no alarm


# --- what a node refuses from the URL ------------------------------------------------------------


async def test_a_rolled_back_directory_from_the_url_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with deployment(tmp_path) as net:
        ar = net["AR"]
        served = net.authority_dir / authority.DIRECTORY_FILE
        old = served.read_bytes()
        authority.publish(net.authority_dir, now=now())
        newer = net.version("AR") + 1
        # Every node first holds the newer one (a node still on the old one would see nothing
        # to refuse in it).
        await until(lambda: all(net.version(state) == newer for state in net.nodes))

        pki.write_public_file(served, old)  # an old backup restored on the authority's side
        trust = ar.runtime.ctx.trust
        # Every node fetches the old bytes in its own time: wait until each has judged them.
        await until(
            lambda: all(n.runtime.ctx.trust.last_error is not None for n in net.nodes.values())
        )
        assert trust.last_error.code == "directory_rollback"  # type: ignore[union-attr]
        await asyncio.sleep(10 * FETCH_S)
        assert net.version("AR") == newer
        refusals = [m for m in caplog.messages if m.startswith("directory refused")]
        # Once per node (both run in this process), not at every poll.
        assert len(refusals) == len(net.nodes), "the same refused bytes are judged once"
        assert hashlib.sha256(ar.local.config.directory_path.read_bytes()).digest() != (
            hashlib.sha256(old).digest()
        )


def forged_directory(network: str, version: int) -> bytes:
    """A well-formed directory signed by a key that is not the network's root."""
    issued = int(time.time() * 1000)
    body = directory_body(
        network=network,
        version=version,
        issued_at=issued,
        expires_at=issued + 86_400_000,
        nodes=[],
        revoked={},
    )
    return sign_directory(generate_signing_key(), body)


@asynccontextmanager
async def hostile_service(authority_dir: Path, answer: web.Response) -> AsyncIterator[str]:
    """A server holding a valid certificate from the network CA that answers what it likes."""
    issue_serving_certificate(authority_dir, ["127.0.0.1"], now())
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(authority_dir / "serve-tls.pem", authority_dir / "serve-tls.key")

    async def handler(request: web.Request) -> web.Response:
        return answer

    app = web.Application()
    app.router.add_get(DIRECTORY_PATH, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"https://127.0.0.1:{port}{DIRECTORY_PATH}"
    finally:
        await close_servers([runner])


async def test_a_badly_signed_directory_from_the_url_is_refused(tmp_path: Path) -> None:
    async with deployment(tmp_path) as net:
        # The node is pointed at an impostor holding a valid TLS certificate from the CA.
        before = net.version("AR")
        ar = net["AR"]
        forged = forged_directory("remja", before + 100)
        impostor = web.Response(body=forged)
        async with hostile_service(net.authority_dir, impostor) as url:
            source = source_for_config(
                with_keys(ar.runtime.config, directory_url=url), ar.runtime.ctx.trust.trust_root
            )
            assert source is not None
            trust = ar.runtime.ctx.trust
            await trust.close()
            trust.source = source
            assert not await trust.fetch()
            assert trust.last_error is not None
            assert trust.last_error.code == "directory_bad_signature"
            assert net.version("AR") == before
            # The authority's own service refuses to serve such a file, too.
            served = net.authority_dir / authority.DIRECTORY_FILE
            pki.write_public_file(served, forged)
            plain = HttpDirectorySource(net.server.url, net.server.trust.tls_ca_pem)
            try:
                data = await plain.fetch(None)
            finally:
                await plain.close()
            assert data is not None and data != forged
            await source.close()


# --- the service itself --------------------------------------------------------------------------


async def test_the_service_answers_conditional_gets_health_and_the_trust_root(
    tmp_path: Path,
) -> None:
    create_network(tmp_path, ["AR"], peer_ports={"AR": 1}, clerk_ports={"AR": 2}, now=now())
    folder = tmp_path / "authority"
    server = DirectoryServer(folder, ["127.0.0.1"])
    url = await server.start()
    source = HttpDirectorySource(url, server.trust.tls_ca_pem)
    try:
        data = await source.fetch(None)
        assert data == (folder / authority.DIRECTORY_FILE).read_bytes()
        assert await source.fetch(hashlib.sha256(data).digest()) is None  # 304 Not Modified
        assert await source.fetch(b"\0" * 32) == data

        base = url.removesuffix(DIRECTORY_PATH)
        tls = ssl.create_default_context(cadata=server.trust.tls_ca_pem.decode())
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls)) as http:
            async with http.get(base + "/healthz") as resp:
                assert resp.status == 200
                health = await resp.json()
                assert (health["status"], health["version"]) == ("ok", 1)
            async with http.get(base + "/trust-root.json") as resp:
                assert await resp.read() == (folder / authority.TRUST_ROOT_FILE).read_bytes()
            async with http.get(base + "/nothing") as resp:
                assert (resp.status, (await resp.json())["code"]) == (404, "not_found")
    finally:
        await source.close()
        await server.stop()
    # The certificate is server-only, from the network CA, for the names given.
    cert = pki.load_certificate_pem((folder / "serve-tls.pem").read_bytes())
    assert pki.state_of_certificate(cert) is None
    assert os.stat(folder / "serve-tls.key").st_mode & 0o077 == 0


async def test_a_service_not_certified_by_the_network_ca_is_unavailable(tmp_path: Path) -> None:
    create_network(tmp_path, ["AR"], peer_ports={"AR": 1}, clerk_ports={"AR": 2}, now=now())
    server = DirectoryServer(tmp_path / "authority", ["127.0.0.1"])
    url = await server.start()
    _, other_ca = pki.new_ca("someone else's CA", now())
    source = HttpDirectorySource(url, pki.certificate_pem(other_ca))
    misnamed = HttpDirectorySource(url.replace("127.0.0.1", "localhost"), server.trust.tls_ca_pem)
    try:
        with pytest.raises(DirectoryUnavailable, match="certificate"):
            await source.fetch(None)
        with pytest.raises(DirectoryUnavailable, match=r"certificate|hostname|match"):
            await misnamed.fetch(None)
    finally:
        await source.close()
        await misnamed.close()
        await server.stop()


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (lambda: web.Response(body=b"x" * (MAX_SIGNED_OBJECT + 1)), "more than"),
        (lambda: web.Response(status=302, headers={"Location": "https://example.org/"}), "302"),
        (lambda: web.Response(status=500), "500"),
    ],
    ids=["too-large", "redirect", "server-error"],
)
async def test_bad_answers_of_the_service_are_unavailable(
    tmp_path: Path, answer: Callable[[], web.Response], says: str
) -> None:
    create_network(tmp_path, ["AR"], peer_ports={"AR": 1}, clerk_ports={"AR": 2}, now=now())
    folder = tmp_path / "authority"
    async with hostile_service(folder, answer()) as url:
        ca = authority.load_trust_root(folder / authority.TRUST_ROOT_FILE).tls_ca_pem
        source = HttpDirectorySource(url, ca)
        try:
            with pytest.raises(DirectoryUnavailable, match=says):
                await source.fetch(None)
        finally:
            await source.close()


# --- configuration and the command ---------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["http://authority:8444/directory.bin", "authority:8444", "https:///directory.bin"]
)
def test_the_directory_url_must_be_https(tmp_path: Path, url: str) -> None:
    data = {"node": {"state": "AR", "authority_name": "x"}, "keys": {"directory_url": url}}
    with pytest.raises(ConfigError) as caught:
        parse_config(data, tmp_path)
    assert caught.value.field == "keys.directory_url"


@pytest.mark.parametrize(("content", "says"), [(None, "cannot read"), (b"junk", "not PEM")])
async def test_a_bad_directory_ca_file_is_named(
    tmp_path: Path, content: bytes | None, says: str
) -> None:
    nodes = create_network(tmp_path, ["AR"], peer_ports={"AR": 0}, clerk_ports={"AR": 0}, now=now())
    if content is not None:
        (nodes["AR"].folder / "ca.pem").write_bytes(content)
    config = with_keys(
        nodes["AR"].config, directory_url="https://a:1/directory.bin", directory_ca="ca.pem"
    )
    with pytest.raises(ConfigError, match=says) as caught:
        await NodeRuntime.start(config)
    assert caught.value.field == "keys.directory_ca"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--listen", "nonsense"], "HOST:PORT"),
        (["--listen", "0.0.0.0:0"], "--hostname"),
        (["--listen", "127.0.0.1:99999"], "--listen"),
    ],
)
def test_authority_serve_refuses_bad_options(tmp_path: Path, args: list[str], says: str) -> None:
    authority.init_authority(tmp_path, now=now())
    result = CliRunner().invoke(cli, ["authority", "serve", "--dir", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error [config_invalid]: ")
    assert says in result.stderr


def test_authority_serve_runs_until_sigterm(tmp_path: Path) -> None:
    create_network(tmp_path, ["AR"], peer_ports={"AR": 1}, clerk_ports={"AR": 2}, now=now())
    folder = tmp_path / "authority"
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mla_node", "authority", "serve", "--dir", str(folder),
         "--listen", "127.0.0.1:0", "--ready-file", str(ready)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the service did not start"
            time.sleep(0.05)
        url = json.loads(ready.read_text())["url"]
        trust = authority.load_trust_root(folder / authority.TRUST_ROOT_FILE)
        data = asyncio.run(_fetch_once(url, trust.tls_ca_pem))
        assert data == (folder / authority.DIRECTORY_FILE).read_bytes()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "keys.directory_url" in out
    assert not ready.exists()


async def _fetch_once(url: str, ca: bytes) -> bytes | None:
    source = HttpDirectorySource(url, ca)
    try:
        return await source.fetch(None)
    finally:
        await source.close()
