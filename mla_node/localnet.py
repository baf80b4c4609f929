"""A local network of state nodes in one folder: the authority, each node's keys and config.

Used by ``mla-node network up``, the demo and the multi-node tests. Only the file layout is made
here; starting the nodes (as processes or in-process) is the caller's business.

Layout::

    DIR/authority/            the network authority (root key, CA, registry, directory.bin)
    DIR/nodes/<STATE>/        config.toml, keys/, trust-root.json, directory.bin, node.db
    DIR/network.json          written by ``network up`` once every node is ready
"""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path

from mla_node import authority, pki
from mla_node.config import (
    ClerkApiSection,
    DeliverySection,
    NodeConfig,
    NodeSection,
    PeerSection,
    render_config,
)
from mla_node.identity import init_node
from mla_node.protocol.keys import Suite

CENTRAL_AUTHORITIES = {
    "AR": "Ministerio de Justicia de la Nación Argentina",
    "BR": "Ministério da Justiça e Segurança Pública do Brasil",
    "US": "U.S. Department of Justice, Office of International Affairs",
    "CA": "Department of Justice Canada, International Assistance Group",
    "MX": "Fiscalía General de la República de México",
    "CL": "Ministerio de Relaciones Exteriores de Chile",
    "CO": "Fiscalía General de la Nación de Colombia",
}

# A local network recovers quickly: short backoff and a directory checked every second.
LOCAL_DELIVERY = DeliverySection(
    initial_backoff_s=0.2, max_backoff_s=2.0, request_timeout_s=10.0, directory_poll_s=1.0
)


@dataclass(frozen=True)
class LocalNode:
    state: str
    folder: Path
    config_path: Path
    config: NodeConfig
    clerk_port: int
    peer_port: int


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
) -> dict[str, LocalNode]:
    auth_dir = folder / "authority"
    authority.init_authority(auth_dir, now=now)
    nodes: dict[str, LocalNode] = {}
    for state in states:
        node_dir = folder / "nodes" / state
        keys_dir = node_dir / "keys"
        registration = init_node(
            keys_dir,
            state=state,
            authority_name=CENTRAL_AUTHORITIES.get(state, f"Central authority of {state}"),
            endpoint=f"https://{host}:{peer_ports[state]}",
            hostnames=[host, "localhost"],
            suites=(suites or {}).get(state, list(Suite)),
            now_ms=int(now.timestamp() * 1000),
        )
        authority.admit(auth_dir, registration, now=now)
        config = NodeConfig(
            node=NodeSection(state=state, authority_name=CENTRAL_AUTHORITIES.get(state, state)),
            clerk_api=ClerkApiSection(host=host, port=clerk_ports[state]),
            peer=PeerSection(host=host, port=peer_ports[state]),
            delivery=delivery,
            base_dir=node_dir,
        )
        config_path = node_dir / "config.toml"
        pki.write_public_file(config_path, render_config(config).encode())
        shutil.copyfile(auth_dir / "trust-root.json", node_dir / "trust-root.json")
        nodes[state] = LocalNode(
            state,
            node_dir,
            config_path,
            config,
            clerk_ports[state],
            peer_ports[state],
        )
    publish_directory(folder, list(nodes.values()))
    return nodes


def publish_directory(folder: Path, nodes: list[LocalNode]) -> None:
    """Copy the authority's latest directory to every node (each picks it up live)."""
    for node in nodes:
        authority.install_directory(folder / "authority", node.config.directory_path)
