"""A local network of state nodes in one folder: the authority, each node's keys and config.

Used by ``mla-node network up``, the demo and the multi-node tests. Only the file layout is made
here; starting the nodes (as processes or in-process) is the caller's business
(:mod:`mla_node.supervisor` runs them as processes).

Layout::

    DIR/authority/            the network authority (root key, CA, registry, directory.bin)
    DIR/nodes/<STATE>/        config.toml, keys/, trust-root.json, directory.bin, node.db,
                              node.log and ready.json (while it runs as a process)
    DIR/network.json          the manifest: URLs, tokens, files and pid of every node       0600
    DIR/.network.lock         serialises the commands that rewrite the manifest            0600

``network.json`` holds bearer tokens, hence 0600. Its shape is fixed (tests and chaos scripts read
it)::

    {"authority": {"dir": ..., "trust_root": ...},
     "nodes": {"AR": {"state", "clerk_url", "peer_url", "token", "auditor_token", "admin_token",
                      "config", "database", "pid", "log"}, ...}}

``pid`` is null while a node is stopped.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fcntl
import json
import os
import random
import secrets
import shutil
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mla_node import authority, pki
from mla_node.config import (
    ClerkApiSection,
    DeliverySection,
    NodeConfig,
    NodeSection,
    PeerSection,
)
from mla_node.config_text import commented_config
from mla_node.errors import ConfigError
from mla_node.identity import init_node, load_signing_key
from mla_node.protocol.keys import Suite
from mla_node.service.tokens import create_token
from mla_node.storage.db import open_database

CENTRAL_AUTHORITIES = {
    "AR": "Ministerio de Justicia de la Nación Argentina",
    "BR": "Ministério da Justiça e Segurança Pública do Brasil",
    "US": "U.S. Department of Justice, Office of International Affairs",
    "CA": "Department of Justice Canada, International Assistance Group",
    "MX": "Fiscalía General de la República de México",
    "CL": "Ministerio de Relaciones Exteriores de Chile",
    "CO": "Fiscalía General de la Nación de Colombia",
}

# A local network recovers quickly: short backoff, a directory checked every second, and a dead
# worker's outbox claims lapsing after 5 s.
LOCAL_DELIVERY = DeliverySection(
    initial_backoff_s=0.2,
    max_backoff_s=2.0,
    request_timeout_s=10.0,
    directory_poll_s=1.0,
    lease_s=5.0,
)


@dataclass(frozen=True)
class LocalNode:
    state: str
    folder: Path
    config_path: Path
    config: NodeConfig
    clerk_port: int
    peer_port: int  # the port of its endpoint in the directory: where peers connect
    # Workers 2..N of a node on PostgreSQL: (config file, clerk port, peer port) of each; the
    # node's own config and ports are its first worker's.
    extra_workers: tuple[tuple[Path, int, int], ...] = ()

    @property
    def listen_port(self) -> int:
        """The port its peer endpoint listens on: ``peer_port`` unless something stands between."""
        return self.config.peer.port


def create_network(
    folder: Path,
    states: list[str],
    *,
    peer_ports: dict[str, int],
    clerk_ports: dict[str, int],
    now: dt.datetime,
    host: str = "127.0.0.1",
    delivery: DeliverySection = LOCAL_DELIVERY,
    suites: dict[str, list[Suite]] | None = None,
    listen_ports: dict[str, int] | None = None,
    databases: dict[str, str] | None = None,
    extra_workers: dict[str, list[tuple[int, int]]] | None = None,
) -> dict[str, LocalNode]:
    """Make the authority and each state's node (keys, config, trust root), admit them all and
    publish the directory.

    ``peer_ports`` are the ports of the endpoints the directory lists; each node listens on its
    ``listen_ports`` entry instead when there is one (a fault proxy then stands on the endpoint
    port and forwards to the node: see :mod:`chaos.proxy`).

    ``databases`` gives a state's ``node.database`` (a PostgreSQL URL) instead of its SQLite file;
    ``extra_workers`` the (clerk port, peer port) of each further worker of a state on such a
    database: each gets a config of its own (``worker-K.toml``, the same but for its ports) and
    its endpoint in the directory entry, after the first worker's.
    """
    extra_workers = extra_workers or {}
    listen_ports = {**peer_ports, **(listen_ports or {})}
    auth_dir = folder / "authority"
    authority.init_authority(auth_dir, now=now)
    nodes: dict[str, LocalNode] = {}
    for state in states:
        node_dir = folder / "nodes" / state
        keys_dir = node_dir / "keys"
        authority_name = CENTRAL_AUTHORITIES.get(state, f"Central authority of {state}")
        workers = extra_workers.get(state, [])
        endpoints = [
            f"https://{host}:{port}" for port in [peer_ports[state], *(w[1] for w in workers)]
        ]
        registration = init_node(
            keys_dir,
            state=state,
            authority_name=authority_name,
            endpoint=endpoints[0],
            endpoints=endpoints,
            hostnames=[host, "localhost"],
            suites=(suites or {}).get(state, list(Suite)),
            now_ms=int(now.timestamp() * 1000),
        )
        authority.admit(auth_dir, registration, now=now)
        node_section = NodeSection(state=state, authority_name=authority_name)
        if databases and state in databases:
            node_section = node_section.model_copy(update={"database": databases[state]})
        config = NodeConfig(
            node=node_section,
            clerk_api=ClerkApiSection(host=host, port=clerk_ports[state]),
            peer=PeerSection(host=host, port=listen_ports[state]),
            delivery=delivery,
            base_dir=node_dir,
        )
        config_path = node_dir / "config.toml"
        title = f"mla-node configuration of {state}'s node in a local network (mla-node network up)"
        pki.write_public_file(config_path, commented_config(config, title=title).encode())
        worker_files: list[tuple[Path, int, int]] = []
        for number, (clerk_port, peer_port) in enumerate(workers, start=2):
            worker = config.model_copy(
                update={
                    "clerk_api": ClerkApiSection(host=host, port=clerk_port),
                    "peer": PeerSection(host=host, port=peer_port),
                }
            )
            path = node_dir / f"worker-{number}.toml"
            text = commented_config(worker, title=f"{title}: worker {number}")
            pki.write_public_file(path, text.encode())
            worker_files.append((path, clerk_port, peer_port))
        shutil.copyfile(auth_dir / "trust-root.json", node_dir / "trust-root.json")
        nodes[state] = LocalNode(
            state,
            node_dir,
            config_path,
            config,
            clerk_ports[state],
            peer_ports[state],
            tuple(worker_files),
        )
    publish_directory(folder, list(nodes.values()))
    return nodes


def publish_directory(folder: Path, nodes: list[LocalNode]) -> None:
    """Copy the authority's latest directory to every node (each picks it up live)."""
    for node in nodes:
        authority.install_directory(folder / "authority", node.config.directory_path)


# --- ports ---------------------------------------------------------------------------------------


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports free on ``host`` now, outside the ephemeral range if possible.

    Each is checked by binding it (all at once, then closed). They are drawn below the range the
    kernel hands out for ``bind(:0)`` and outgoing connections: a port from that range, closed
    again, can be taken by any client connection (the readiness checks, the nodes' deliveries)
    before the node binds it, and the node then fails with "address in use". Below it, only a
    program binding that very port could take it. Falls back to ``bind(:0)`` if that fails.
    """
    low, high = _PORT_RANGE[0], min(_PORT_RANGE[1], ephemeral_low() - 1)
    rng = random.SystemRandom()
    with ExitStack() as stack:
        ports: list[int] = []
        for _ in range(_PORT_ATTEMPTS):
            if len(ports) == count:
                break
            port = rng.randint(low, high) if low < high else 0
            sock = stack.enter_context(socket.socket(socket.AF_INET))
            try:
                sock.bind((host, port))
            except OSError:
                continue
            bound = int(sock.getsockname()[1])
            if bound not in ports:
                ports.append(bound)
        while len(ports) < count:  # an unusual system: take what bind(:0) gives
            sock = stack.enter_context(socket.socket(socket.AF_INET))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


_PORT_RANGE = (15000, 32767)
_PORT_ATTEMPTS = 500


def ephemeral_low() -> int:
    """The lowest port of the kernel's ephemeral range (Linux; 49152 elsewhere, as IANA says)."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 49152


# --- the manifest: network.json ------------------------------------------------------------------

NETWORK_FILE = "network.json"
LOCK_FILE = ".network.lock"
READY_FILE = "ready.json"
LOG_FILE = "node.log"
TOKEN_ROLES = {"token": "clerk", "auditor_token": "auditor", "admin_token": "admin"}


@dataclass(frozen=True)
class NodeRecord:
    """One node of ``network.json``."""

    state: str
    clerk_url: str
    peer_url: str
    token: str  # clerk
    auditor_token: str
    admin_token: str
    config: Path
    database: str  # the SQLite file, or the PostgreSQL URL its workers share
    pid: int | None
    log: Path
    # Workers 2..N (a node on PostgreSQL): the same node, each with its config, ports, log, pid.
    extra_workers: tuple[NodeRecord, ...] = ()

    @property
    def folder(self) -> Path:
        return self.config.parent

    @property
    def ready_file(self) -> Path:
        if self.config.name == "config.toml":
            return self.folder / READY_FILE
        return self.folder / f"ready-{self.config.stem}.json"

    @property
    def workers(self) -> tuple[NodeRecord, ...]:
        """Every process of the node, its first worker (this record) first."""
        return (self, *self.extra_workers)

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "clerk_url": self.clerk_url,
            "peer_url": self.peer_url,
            "token": self.token,
            "auditor_token": self.auditor_token,
            "admin_token": self.admin_token,
            "config": str(self.config),
            "database": self.database,
            "pid": self.pid,
            "log": str(self.log),
            "workers": [
                {
                    "pid": w.pid,
                    "clerk_url": w.clerk_url,
                    "peer_url": w.peer_url,
                    "config": str(w.config),
                    "log": str(w.log),
                }
                for w in self.workers
            ],
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> NodeRecord:
        record = cls(
            state=_text(obj, "state"),
            clerk_url=_text(obj, "clerk_url"),
            peer_url=_text(obj, "peer_url"),
            token=_text(obj, "token"),
            auditor_token=_text(obj, "auditor_token"),
            admin_token=_text(obj, "admin_token"),
            config=Path(_text(obj, "config")),
            database=_text(obj, "database"),
            pid=_pid(obj["pid"]),
            log=Path(_text(obj, "log")),
        )
        extra = tuple(
            replace(
                record,
                clerk_url=_text(w, "clerk_url"),
                peer_url=_text(w, "peer_url"),
                config=Path(_text(w, "config")),
                pid=_pid(w["pid"]),
                log=Path(_text(w, "log")),
            )
            for w in obj.get("workers", [])[1:]
        )
        return replace(record, extra_workers=extra)


def _pid(pid: Any) -> int | None:
    if pid is not None and (not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0):
        raise ValueError(f"bad pid {pid!r}")
    return pid


def _text(obj: dict[str, Any], key: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise TypeError(f"{key} must be a string")
    return value


@dataclass(frozen=True)
class Manifest:
    folder: Path
    authority_dir: Path
    trust_root: Path
    nodes: dict[str, NodeRecord]

    def with_pid(self, key: str, pid: int | None) -> Manifest:
        """The manifest with the pid of process ``key`` ("AR", or "AR/2" for a second worker)."""
        state, _, number = key.partition("/")
        node = self.nodes[state]
        if number:
            index = int(number) - 2
            workers = list(node.extra_workers)
            workers[index] = replace(workers[index], pid=pid)
            node = replace(node, extra_workers=tuple(workers))
        else:
            node = replace(node, pid=pid)
        return replace(self, nodes={**self.nodes, state: node})

    def processes(self, states: list[str] | None = None) -> dict[str, NodeRecord]:
        """Every node process by key ("AR", "AR/2", ...): each worker of each node."""
        return {
            (state if number == 1 else f"{state}/{number}"): worker
            for state, node in self.nodes.items()
            if states is None or state in states
            for number, worker in enumerate(node.workers, start=1)
        }

    def node(self, state: str) -> NodeRecord:
        try:
            return self.nodes[state]
        except KeyError:
            raise ConfigError(
                f"the network in {self.folder} has no node {state!r} "
                f"(it has {', '.join(self.nodes)})",
                field="state",
            ) from None

    def to_json(self) -> dict[str, Any]:
        return {
            "authority": {"dir": str(self.authority_dir), "trust_root": str(self.trust_root)},
            "nodes": {state: node.to_json() for state, node in self.nodes.items()},
        }


def read_manifest(folder: Path) -> Manifest | None:
    """The manifest of the network in ``folder``, or None if there is none."""
    path = folder / NETWORK_FILE
    try:
        obj = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", field=str(path)) from exc
    try:
        nodes = {str(s): NodeRecord.from_json(n) for s, n in obj["nodes"].items()}
        if any(s != n.state for s, n in nodes.items()):
            raise ValueError("a node is filed under another state than its own")
        return Manifest(
            folder=folder,
            authority_dir=Path(_text(obj["authority"], "dir")),
            trust_root=Path(_text(obj["authority"], "trust_root")),
            nodes=nodes,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{path} is not a network manifest: {exc!r}", field=str(path)) from exc


def write_manifest(manifest: Manifest) -> Path:
    path = manifest.folder / NETWORK_FILE
    text = json.dumps(manifest.to_json(), indent=2, ensure_ascii=False) + "\n"
    pki.write_private_file(path, text.encode())
    return path


@contextmanager
def manifest_lock(folder: Path) -> Iterator[None]:
    """Hold the network folder's lock: one command at a time rewrites ``network.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def init_network(
    folder: Path,
    states: list[str],
    *,
    now: dt.datetime,
    workers: int = 1,
    database_server: str | None = None,
) -> Manifest:
    """Create a network of ``states`` on free loopback ports, with a clerk, an auditor and an
    admin token in each node's database, and write its manifest (every ``pid`` null).

    With ``database_server`` (a PostgreSQL URL without a database name) each state gets a new
    database there, and ``workers`` processes share it."""
    if workers > 1 and database_server is None:
        raise ConfigError(
            "several workers per state need a shared PostgreSQL database: give --database",
            field="workers",
        )
    folder = folder.resolve()
    taken = [name for name in ("authority", "nodes", NETWORK_FILE) if (folder / name).exists()]
    if taken:
        raise ConfigError(
            f"{folder} already holds {', '.join(taken)} but no complete network; "
            "remove it or choose an empty folder",
            field=str(folder),
        )
    ports = iter(free_ports(2 * len(states) * workers))
    pairs = {state: [(next(ports), next(ports)) for _ in range(workers)] for state in states}
    databases = (
        asyncio.run(create_postgres_databases(database_server, states))
        if database_server is not None
        else None
    )
    local = create_network(
        folder,
        states,
        peer_ports={state: pairs[state][0][1] for state in states},
        clerk_ports={state: pairs[state][0][0] for state in states},
        now=now,
        databases=databases,
        extra_workers={state: pairs[state][1:] for state in states},
    )
    records: dict[str, NodeRecord] = {}
    for state, node in local.items():
        tokens = asyncio.run(create_tokens(node.config, now_ms=int(now.timestamp() * 1000)))
        host = node.config.clerk_api.host
        record = NodeRecord(
            state=state,
            clerk_url=f"http://{host}:{node.clerk_port}",
            peer_url=f"https://{node.config.peer.host}:{node.peer_port}",
            config=node.config_path,
            database=node.config.database_location,
            pid=None,
            log=node.folder / LOG_FILE,
            token=tokens["token"],
            auditor_token=tokens["auditor_token"],
            admin_token=tokens["admin_token"],
        )
        extra = tuple(
            replace(
                record,
                clerk_url=f"http://{host}:{clerk_port}",
                peer_url=f"https://{node.config.peer.host}:{peer_port}",
                config=path,
                log=node.folder / f"{path.stem}.log",
            )
            for path, clerk_port, peer_port in node.extra_workers
        )
        records[state] = replace(record, extra_workers=extra)
    manifest = Manifest(
        folder=folder,
        authority_dir=folder / "authority",
        trust_root=folder / "authority" / authority.TRUST_ROOT_FILE,
        nodes=records,
    )
    write_manifest(manifest)
    return manifest


def create_database_file(path: Path) -> None:
    """Create an empty database file readable by its owner only, if there is none.

    It will hold the forms in clear. SQLite gives the ``-wal`` and ``-shm`` files it creates the
    mode of the database file, so they stay private too; an empty file is an empty database.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
    except FileExistsError:
        return
    except OSError as exc:
        raise ConfigError(f"cannot create {path}: {exc.strerror or exc}", field=str(path)) from exc
    os.close(fd)


async def create_postgres_databases(server: str, states: list[str]) -> dict[str, str]:
    """A new database for each state on the PostgreSQL ``server``; their URLs by state.

    Named ``mla_<state>_<random>``, so that several local networks can share one server."""
    from mla_node.storage import pg_engine

    tag = secrets.token_hex(3)
    names = {state: f"mla_{state.lower()}_{tag}" for state in states}
    await pg_engine.create_databases(server, list(names.values()))
    return {state: pg_engine.with_database(server, name) for state, name in names.items()}


async def create_tokens(config: NodeConfig, *, now_ms: int) -> dict[str, str]:
    """A clerk, an auditor and an admin token in the node's database (not running yet)."""
    if config.database_url is None:
        create_database_file(config.database_path)
    db = await open_database(config.database_location)
    try:
        tokens: dict[str, str] = {}
        signer = load_signing_key(config.keys_dir)
        for key, role in TOKEN_ROLES.items():
            _, tokens[key] = await create_token(
                db,
                role,
                f"{role} ({config.node.state}, local network)",
                now_ms,
                signer=signer,
                state=config.node.state,
            )
        return tokens
    finally:
        await db.close()
