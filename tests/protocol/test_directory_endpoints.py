"""Several peer endpoints for one state: the optional ``endpoints`` list of a node map.

Absent, a node has its ``endpoint`` alone, and a single-endpoint directory signs byte for byte as
before the field existed; present, it is bounded, https only, without repeats, and starts with
``endpoint``. Mutate-and-re-sign, as in test_directory.py.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mla_node.errors import TrustError
from mla_node.protocol.directory import (
    MAX_ENDPOINTS,
    NodeEntry,
    TrustRoot,
    directory_body,
    sign_directory,
    verify_directory,
)
from mla_node.protocol.keys import SigningKey
from tests.factory import NOW, TestNetwork, make_network

VECTORS = Path(__file__).parents[1] / "vectors"
A, B, C = "https://a.ar.example:8443", "https://b.ar.example:8443", "https://c.ar.example"


@pytest.fixture
def net() -> TestNetwork:
    return make_network(now=NOW)


def _ar(body: dict[str, Any]) -> dict[str, Any]:
    node: dict[str, Any] = next(n for n in body["nodes"] if n["state"] == "AR")
    return node


def with_endpoints(net: TestNetwork, endpoints: Any, endpoint: str | None = None) -> bytes:
    def mutate(body: dict[str, Any]) -> None:
        node = _ar(body)
        node["endpoint"] = endpoint if endpoint is not None else endpoints[0]
        node["endpoints"] = endpoints

    return net.resign_directory(mutate=mutate, install=False)


def refused_field(action: Callable[[], object]) -> str | None:
    with pytest.raises(TrustError) as info:
        action()
    assert info.value.code == "directory_malformed", info.value.detail
    field: str | None = info.value.field
    return field


def test_absent_means_the_endpoint_alone(net: TestNetwork) -> None:
    for entry in net.directory.nodes.values():
        assert entry.endpoints == (entry.endpoint,)
        assert "endpoints" not in entry.as_map()


def test_listed_endpoints_are_read_in_order(net: TestNetwork) -> None:
    d = verify_directory(with_endpoints(net, [A, B, C]), net.trust, now=NOW)
    assert d.nodes["AR"].endpoints == (A, B, C)
    assert d.nodes["AR"].endpoint == A
    assert d.nodes["BR"].endpoints == (d.nodes["BR"].endpoint,)
    # A list of one is the same as no list.
    one = verify_directory(with_endpoints(net, [A]), net.trust, now=NOW)
    assert one.nodes["AR"].endpoints == (A,)


def test_round_trip_through_signing(net: TestNetwork) -> None:
    entries = [e for s, e in sorted(net.directory.nodes.items()) if s != "AR"]
    ar = net.directory.nodes["AR"].with_endpoints([A, B])
    body = directory_body(
        network=net.network,
        version=7,
        issued_at=NOW,
        expires_at=NOW + 1000,
        nodes=[ar, *entries],
        revoked={},
    )
    assert _ar(body)["endpoints"] == [A, B]
    assert list(_ar(body)) == [
        "state",
        "authority",
        "endpoint",
        "endpoints",
        "suites",
        "tls_cert_sha256",
        "tls_cert",
        "keys",
    ]
    d = verify_directory(sign_directory(net.root, body), net.trust, now=NOW)
    assert d.nodes["AR"] == ar
    assert d.nodes["AR"].endpoints == (A, B)


def test_single_endpoint_directories_sign_as_before(net: TestNetwork) -> None:
    """The committed vectors verify byte for byte, and re-signing what they hold gives the same
    bytes: an entry with one endpoint has no ``endpoints`` key on the wire."""
    vector = json.loads((VECTORS / "directory" / "good.json").read_text())
    trust = TrustRoot.from_json((VECTORS / "trust_root.json").read_bytes())
    data = bytes.fromhex(vector["input_hex"])
    d = verify_directory(data, trust, now=vector["now"])
    assert all(n.endpoints == (n.endpoint,) for n in d.nodes.values())
    keys = json.loads((VECTORS / "keys.json").read_text())
    root = SigningKey.from_private_bytes(bytes.fromhex(keys["root"]["private_hex"]))
    body = directory_body(
        network=d.network,
        version=d.version,
        issued_at=d.issued_at,
        expires_at=d.expires_at,
        nodes=list(d.nodes.values()),
        revoked=d.revoked,
    )
    assert sign_directory(root, body) == data
    assert b"endpoints" not in data


@pytest.mark.parametrize(
    ("endpoints", "endpoint"),
    [
        ([B, A], A),  # the first is not the endpoint
        ([A, B, A], None),  # repeated
        ([A, "http://b.ar.example"], None),  # not https
        ([A, "HTTPS://b.ar.example"], None),
        ([A, "https://" + "b" * 600], None),  # too long
        ([A, 443], None),  # not a string
        ([], A),  # empty
        ([A] + [f"https://w{i}.ar.example" for i in range(MAX_ENDPOINTS)], None),  # too many
        ("https://a.ar.example:8443", A),  # not a list
    ],
)
def test_bad_endpoint_lists_are_refused(
    net: TestNetwork, endpoints: Any, endpoint: str | None
) -> None:
    data = with_endpoints(net, endpoints, endpoint)
    field = refused_field(lambda: verify_directory(data, net.trust, now=NOW))
    assert field is not None and field.endswith("endpoints")


def test_the_bound_itself_is_accepted(net: TestNetwork) -> None:
    urls = [A] + [f"https://w{i}.ar.example" for i in range(MAX_ENDPOINTS - 1)]
    d = verify_directory(with_endpoints(net, urls), net.trust, now=NOW)
    assert len(d.nodes["AR"].endpoints) == MAX_ENDPOINTS


def test_entry_keeps_endpoint_as_the_first_endpoint(net: TestNetwork) -> None:
    ar = net.directory.nodes["AR"].with_endpoints((A, B))
    assert (ar.endpoint, ar.endpoints) == (A, (A, B))
    # Replacing the endpoint alone pins the entry to that URL (conformance --url does that).
    pinned = dataclasses.replace(ar, endpoint=C)
    assert (pinned.endpoint, pinned.endpoints) == (C, (C,))
    assert dataclasses.replace(ar, suites=()).endpoints == (A, B)
    with pytest.raises(ValueError):
        ar.with_endpoints(())
    assert isinstance(ar, NodeEntry)
