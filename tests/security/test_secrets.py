"""Secrets stay secret: a sentinel plaintext and every private key appear nowhere they should not.

Real nodes over real mutual TLS, every logger captured at DEBUG. The sentinel travels inside a
submitted form; the only places it may exist in clear are ``messages.form`` (the validated form,
at the sender and at the recipient) and ``message_bodies.body`` (the exact body both nodes'
content digests commit to, for evidence bundles; purged with the form). Private keys (raw bytes,
base64, hex, the TLS key's PEM body) appear in no log line, no database file, no envelope, no
problem+json body, no OpenAPI or peers response. Clerk tokens are stored only as their SHA-256:
the secret is not in the database files.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mla_node import authority
from mla_node import logs as log_format
from mla_node.protocol import forms
from mla_node.transport.http import (
    ENVELOPE_PATH,
    ENVELOPE_TYPE,
    HttpTransport,
    pinned_client_context,
)
from tests.netkit import RunningNode, running_network, wait_for

SENTINEL = "SENTINEL-7f3a9c1e-4b2d-plaintext-must-not-leak"
MAY_HOLD_PLAINTEXT = {("messages", "form"), ("message_bodies", "body")}


def _forms_of(secret: bytes) -> list[bytes]:
    """The ways a key's bytes could show up in a text or binary file."""
    return [
        secret,
        base64.b64encode(secret),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
        secret.hex().encode(),
        secret.hex().upper().encode(),
    ]


def _pem_forms(pem: bytes) -> list[bytes]:
    lines = [line for line in pem.splitlines() if line and not line.startswith(b"-----")]
    body = b"".join(lines)
    # Every full base64 line of the PEM body, the joined body and the DER it encodes.
    return [*lines, body, *_forms_of(base64.b64decode(body))]


def private_key_needles(folder: Path) -> dict[str, bytes]:
    needles: dict[str, bytes] = {}
    key_files = [*folder.glob("nodes/*/keys/*.key"), *(folder / "authority").glob("*.key")]
    assert len(key_files) >= 2 * 4 + 2  # per node: signing, 2 encryption, TLS; root and CA
    for path in key_files:
        data = path.read_bytes()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        variants = _pem_forms(data) if data.startswith(b"-----BEGIN") else _forms_of(data)
        for i, variant in enumerate(variants):
            needles[f"{path.relative_to(folder)} form {i}"] = variant
    return needles


def found_in(haystack: bytes, needles: dict[str, bytes]) -> list[str]:
    return [name for name, needle in needles.items() if needle in haystack]


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Everything logged, also as the JSON lines of ``node.log_format = "json"``."""
    out = io.StringIO()
    handler = log_format.handler("json", out)
    handler.setLevel(logging.DEBUG)
    logging.getLogger().addHandler(handler)
    yield out
    logging.getLogger().removeHandler(handler)


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every envelope exactly as a node hands it to the TLS connection."""
    sent: list[bytes] = []
    real = HttpTransport.send

    async def capture(self: HttpTransport, peer: Any, envelope: bytes) -> Any:
        sent.append(envelope)
        return await real(self, peer, envelope)

    monkeypatch.setattr(HttpTransport, "send", capture)
    return sent


async def problems(node: RunningNode, other: RunningNode, envelope: bytes) -> list[bytes]:
    """problem+json bodies of many kinds, several provoked with the sentinel in the request."""
    url = node.runtime.clerk_url
    bad_form = {**forms.example("mla_request"), "offence": 12345, "unknown": SENTINEL}
    attempts: list[tuple[str, str, dict[str, str], Any]] = [
        ("POST", "/api/v1/requests", {}, {"type": "mla_request", "to": "BR", "form": bad_form}),
        ("POST", "/api/v1/requests", {}, {"type": SENTINEL, "to": "BR", "form": {}}),
        ("POST", "/api/v1/requests", {}, {"type": "mla_request", "to": SENTINEL, "form": {}}),
        ("POST", "/api/v1/requests", {"Content-Type": "application/json"}, SENTINEL + "{"),
        ("POST", "/api/v1/requests", {"Content-Type": "text/plain"}, SENTINEL),
        ("GET", "/api/v1/requests/" + SENTINEL, {}, None),
        ("GET", "/api/v1/requests?box=" + SENTINEL, {}, None),
        ("GET", "/api/v1/requests", {"Authorization": "Bearer " + SENTINEL}, None),
        ("POST", "/api/v1/requests", {"Idempotency-Key": SENTINEL * 10}, {}),
    ]
    bodies = []
    for method, path, headers, body in attempts:
        kw: dict[str, Any] = {"json": body} if isinstance(body, dict) else {"data": body}
        async with node.http.request(
            method, url + path, headers={**node.headers(), **headers}, **kw
        ) as resp:
            assert resp.status >= 400, (method, path)
            assert resp.content_type == "application/problem+json", (method, path)
            bodies.append(await resp.read())
    # A peer-endpoint refusal: the captured envelope replayed to a node it is not addressed to.
    identity = other.runtime.ctx.identity
    entry = node.runtime.ctx.directory().node(node.state)
    assert entry is not None
    ctx = pinned_client_context(identity.tls_cert_path, identity.tls_key_path, entry.tls_cert_der)
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as http,
        http.post(
            node.runtime.peer_url + ENVELOPE_PATH,
            data=envelope,
            headers={"Content-Type": ENVELOPE_TYPE},
        ) as resp,
    ):
        assert resp.status >= 400
        bodies.append(await resp.read())
    return bodies


async def test_sentinel_and_private_keys_appear_nowhere(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, wire: list[bytes], json_log: io.StringIO
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, every level
    responses: list[bytes] = []
    tokens: list[str] = []
    async with running_network(tmp_path, ("AR", "BR", "US")) as net:
        ar, br, us = net["AR"], net["BR"], net["US"]
        tokens = [t for node in (ar, br, us) for t in node.tokens.values()]
        form = {**forms.example("mla_request"), "summary_of_facts": f"Facts: {SENTINEL}."}
        status, created = await ar.call(
            "POST", "/api/v1/requests", json={"type": "mla_request", "to": "BR", "form": form}
        )
        assert status == 201, created

        async def delivered() -> bool:
            _, got = await ar.call("GET", f"/api/v1/requests/{created['id']}")
            return bool(got["status"] == "delivered")

        await wait_for(delivered)
        # The recipient reads it (the plaintext is meant to be there, in messages.form).
        status, got = await br.call("GET", f"/api/v1/requests/{created['id']}")
        assert status == 200
        assert SENTINEL in got["form"]["summary_of_facts"]

        assert len(wire) >= 1
        responses += await problems(us, ar, wire[0])
        responses += await problems(ar, br, wire[0])
        for node in (ar, br, us):
            for path in ("/openapi.json", "/api/v1/peers", "/healthz", "/readyz"):
                async with node.http.get(
                    node.runtime.clerk_url + path, headers=node.headers()
                ) as resp:
                    assert resp.status == 200, path
                    responses.append(await resp.read())
        # Clear columns, while the nodes run: only messages.form may hold the sentinel.
        for node in (ar, br):
            assert columns_holding(node.local.config.database_path, SENTINEL.encode()) == (
                MAY_HOLD_PLAINTEXT
            )
        assert columns_holding(us.local.config.database_path, SENTINEL.encode()) == set()

    keys = private_key_needles(tmp_path)
    sentinel = {"sentinel": SENTINEL.encode()}
    logs = "\n".join(
        [caplog.text, *(r.getMessage() + (r.exc_text or "") for r in caplog.records)]
    ).encode()
    assert len(caplog.records) > 10  # the capture really saw the nodes' logging
    assert found_in(logs, {**keys, **sentinel, **_token_needles(tokens)}) == []
    json_lines = json_log.getvalue().splitlines()
    assert len(json_lines) > 10 and all(json.loads(line)["msg"] for line in json_lines)
    assert (
        found_in(json_log.getvalue().encode(), {**keys, **sentinel, **_token_needles(tokens)}) == []
    )
    for envelope in wire:
        assert found_in(envelope, {**keys, **sentinel}) == []
    for body in responses:
        assert found_in(body, {**keys, **sentinel}) == []

    # Every byte of every database file (main file and WAL, after the nodes stopped): no key, no
    # token secret, only hashes of them.
    db_files = [p for p in tmp_path.glob("nodes/*/*.db*") if p.is_file()]
    assert db_files
    for db_file in db_files:
        assert found_in(db_file.read_bytes(), {**keys, **_token_needles(tokens)}) == [], db_file
    for state in ("AR", "BR", "US"):
        database = tmp_path / "nodes" / state / "node.db"
        holders = columns_holding(database, SENTINEL.encode())
        assert holders == (set() if state == "US" else MAY_HOLD_PLAINTEXT), state
        hashes = {bytes(row[0]) for row in _rows(database, "SELECT token_sha256 FROM tokens")}
        assert {hashlib.sha256(t.encode()).digest() for t in tokens} & hashes


def _token_needles(tokens: list[str]) -> dict[str, bytes]:
    return {f"token {t[:8]}": t.encode() for t in tokens} | {
        f"token {t[:8]} body": t.removeprefix("mla_").encode() for t in tokens
    }


def _rows(database: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
        return list(conn.execute(sql))


def columns_holding(database: Path, needle: bytes) -> set[tuple[str, str]]:
    """Every (table, column) with a value that contains ``needle``, as text or as bytes."""
    holders: set[tuple[str, str]] = set()
    tables = [r[0] for r in _rows(database, "SELECT name FROM sqlite_master WHERE type='table'")]
    assert "messages" in tables
    for table in tables:
        for _, column, *_ in _rows(database, f"PRAGMA table_info({table})"):
            for (value,) in _rows(database, f'SELECT "{column}" FROM "{table}"'):  # noqa: S608
                raw = value.encode() if isinstance(value, str) else value
                if isinstance(raw, bytes) and needle in raw:
                    holders.add((table, column))
    return holders


def test_authority_key_files_are_private(tmp_path: Path) -> None:
    import datetime as dt

    authority.init_authority(tmp_path / "a", now=dt.datetime.now(dt.UTC))
    for path in (tmp_path / "a").glob("*.key"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
