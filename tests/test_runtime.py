"""Starting a node: clear errors for what an operator can get wrong, and nothing left behind."""

from __future__ import annotations

import datetime as dt
import socket
from pathlib import Path

import pytest

from mla_node.errors import ConfigError
from mla_node.localnet import create_network
from mla_node.runtime import NodeRuntime
from tests.netkit import bound_socket


async def test_a_port_in_use_names_the_setting(tmp_path: Path) -> None:
    taken = bound_socket()
    taken.listen()
    free = bound_socket()
    peer_port = free.getsockname()[1]
    try:
        nodes = create_network(
            tmp_path,
            ["AR"],
            peer_ports={"AR": peer_port},
            clerk_ports={"AR": taken.getsockname()[1]},
            now=dt.datetime.now(dt.UTC),
        )
        free.close()
        with pytest.raises(ConfigError) as caught:
            await NodeRuntime.start(nodes["AR"].config)
        assert caught.value.field == "clerk_api.port"
        # The peer endpoint that had started is closed again: its port can be listened on at once.
        again = socket.socket()
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", peer_port))
        again.listen()
        again.close()
    finally:
        taken.close()
