"""Several peer endpoints for one state: registration, admission, set_endpoints, the CLI."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import pytest

from mla_node import authority, identity
from mla_node.errors import ConfigError
from mla_node.protocol.directory import verify_directory
from tests.test_authority import NOW, Network, edit_registration, endpoint, ms, net
from tests.test_cli import assert_error, invoke

__all__ = ["net"]  # the fixture, imported for the tests below

W1, W2 = "https://w1.mx.example:8443/", "https://w2.mx.example:8443/"
MX_HOSTS = ["mla.mx.example", "w1.mx.example", "w2.mx.example"]


def mx_node(net: Network, **overrides: object) -> Path:
    args: dict[str, object] = {"hostnames": MX_HOSTS}
    args.update(overrides)
    return net.new_node("MX", "node-MX", **args)


def test_registration_with_several_endpoints_is_admitted_with_them(net: Network) -> None:
    registration = mx_node(net, endpoints=[endpoint("MX"), W1, W2])
    body = json.loads(registration.read_bytes())
    assert body["endpoints"] == [endpoint("MX"), W1, W2]
    authority.admit(net.authority, registration, now=NOW)
    entry = net.directory().nodes["MX"]
    assert entry.endpoints == (endpoint("MX"), W1, W2)
    assert entry.endpoint == endpoint("MX")
    assert net.registry()["nodes"]["MX"]["endpoints"] == [endpoint("MX"), W1, W2]
    # Single-endpoint nodes keep their registry and registration shape.
    assert "endpoints" not in net.registry()["nodes"]["AR"]
    assert "endpoints" not in json.loads((net.keys["AR"] / "registration.json").read_bytes())


def test_a_key_rotation_keeps_the_endpoints(net: Network) -> None:
    registration = mx_node(net, endpoints=[endpoint("MX"), W1])
    authority.admit(net.authority, registration, now=NOW)
    rotation = identity.rotate_keys(registration.parent, now_ms=ms(NOW))
    assert json.loads(rotation.registration.read_bytes())["endpoints"] == [endpoint("MX"), W1]
    authority.admit(net.authority, rotation.registration, now=NOW, keep_certificate=True)
    assert net.directory().nodes["MX"].endpoints == (endpoint("MX"), W1)


@pytest.mark.parametrize(
    ("endpoints", "field"),
    [
        ([W1, endpoint("MX")], "endpoints"),  # the first is not the endpoint
        ([endpoint("MX"), W1, W1], "endpoints"),
        ([endpoint("MX"), "http://w1.mx.example/"], "endpoints"),
        ([endpoint("MX"), "https://elsewhere.example/"], "hostnames"),
        ([endpoint("MX")] + [f"https://w{i}.mx.example/" for i in range(16)], "endpoints"),
        ([], "endpoints"),
    ],
)
def test_bad_endpoints_are_refused_at_init_and_at_admission(
    net: Network, endpoints: list[str], field: str
) -> None:
    hosts = MX_HOSTS + [f"w{i}.mx.example" for i in range(16)]
    with pytest.raises(ConfigError) as at_init:
        mx_node(net, endpoints=endpoints, hostnames=hosts)
    assert at_init.value.field == field
    path = edit_registration(
        mx_node(net, hostnames=hosts).parent, lambda b: b.update(endpoints=endpoints)
    )
    with pytest.raises(ConfigError) as at_admit:
        authority.admit(net.authority, path, now=NOW)
    assert at_admit.value.field == field


def test_admit_can_list_other_endpoints_than_the_registration(net: Network) -> None:
    registration = mx_node(net)
    authority.admit(net.authority, registration, now=NOW, endpoints=[W1, W2])
    assert net.directory().nodes["MX"].endpoints == (W1, W2)
    with pytest.raises(ConfigError) as info:
        authority.admit(
            net.authority, registration, now=NOW, endpoints=["https://elsewhere.example/"]
        )
    assert info.value.field == "hostnames"


def test_set_endpoints_republishes_with_the_next_version(net: Network) -> None:
    state_url = endpoint("AR")
    other = "https://127.0.0.1:9443/"  # 127.0.0.1 is among AR's certificate names
    version = authority.set_endpoints(net.authority, "AR", [state_url, other], now=NOW)
    assert version == net.directory().version == 4
    entry = net.directory().nodes["AR"]
    assert entry.endpoints == (state_url, other)
    assert entry.keys == net.directory().nodes["AR"].keys
    # Back to one: the entry (and the registry) lose the list.
    authority.set_endpoints(net.authority, "AR", [other], now=NOW + timedelta(seconds=1))
    assert net.directory().nodes["AR"].endpoints == (other,)
    assert "endpoints" not in net.registry()["nodes"]["AR"]


@pytest.mark.parametrize(
    ("state", "endpoints", "field"),
    [
        ("MX", ["https://mla.mx.example/"], "state"),  # not admitted
        ("AR", [], "endpoints"),
        ("AR", ["https://elsewhere.example/"], "hostnames"),  # not in AR's certificate
        ("AR", [endpoint("AR"), endpoint("AR")], "endpoints"),
        ("AR", ["http://127.0.0.1:1/"], "endpoints"),
    ],
)
def test_set_endpoints_refuses(net: Network, state: str, endpoints: list[str], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        authority.set_endpoints(net.authority, state, endpoints, now=NOW)
    assert info.value.field == field
    assert net.directory().version == 3


def test_cli_node_init_and_admit_take_repeated_endpoints(tmp_path: Path) -> None:
    auth, node = tmp_path / "authority", tmp_path / "ar"
    assert invoke("authority", "init", "--dir", auth).exit_code == 0
    first, second = "https://127.0.0.1:9443", "https://127.0.0.1:9444"
    made = invoke(
        "node", "init", "--state", "AR", "--dir", node, "--endpoint", first, "--endpoint", second
    )
    assert made.exit_code == 0, made.stderr
    registration = node / "keys" / "registration.json"
    assert json.loads(registration.read_bytes())["endpoints"] == [first, second]

    third = "https://127.0.0.1:9445"
    admitted = invoke(
        "authority", "admit", registration, "--dir", auth, "--endpoint", third, "--endpoint", first
    )
    assert admitted.exit_code == 0, admitted.stderr
    trust = authority.load_trust_root(auth / authority.TRUST_ROOT_FILE)
    directory = verify_directory(
        (auth / authority.DIRECTORY_FILE).read_bytes(), trust, now=int(time.time() * 1000)
    )
    assert directory.nodes["AR"].endpoints == (third, first)

    refused = invoke(
        "authority", "admit", registration, "--dir", auth, "--endpoint", "https://x.example"
    )
    assert_error(refused, "config_invalid", "x.example")
