"""The command line: authority, node and token commands in-process (CliRunner); the local network
and the demo as real processes (slow)."""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner, Result

from mla_node import authority
from mla_node.cli import cli
from mla_node.config import load_config
from mla_node.localnet import NETWORK_FILE, NodeRecord, ephemeral_low, free_ports, read_manifest
from mla_node.protocol import forms
from mla_node.runtime import MIGRATIONS
from mla_node.service.context import Role
from mla_node.service.tokens import authenticate
from mla_node.storage.db import Database, load_migrations
from mla_node.supervisor import is_running

ENDPOINT = "https://127.0.0.1:9443"


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_error(result: Result, code: str, *fragments: str) -> None:
    """Exit 2, one `error [code]: ...` line (plus detail lines), no traceback."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith(f"error [{code}]: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


# --- help ----------------------------------------------------------------------------------------


COMMANDS = [
    ("authority", "init"), ("authority", "admit"), ("authority", "publish"),
    ("authority", "revoke"), ("node", "init"), ("token", "create"), ("run",),
    ("network", "up"), ("network", "down"), ("network", "start-node"),
    ("network", "stop-node"), ("demo",), ("backup",), ("restore",), ("db", "check"),
    ("doctor",), ("conformance",),
]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_from_its_docstring(command: tuple[str, ...]) -> None:
    group: Any = cli
    for name in command:
        group = group.commands[name]
    first_line = group.callback.__doc__.strip().splitlines()[0]
    result = invoke(*command, "--help")
    assert result.exit_code == 0
    assert " ".join(first_line.split()[:4]) in " ".join(result.stdout.split())


def test_python_m_mla_node_runs_the_same_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mla_node", "--help"], capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0
    assert b"network" in done.stdout and b"demo" in done.stdout


# --- authority -----------------------------------------------------------------------------------


def test_authority_init_creates_private_keys_0600(tmp_path: Path) -> None:
    folder = tmp_path / "authority"
    result = invoke("authority", "init", "--dir", folder, "--network", "remja-test")
    assert result.exit_code == 0, result.stderr
    assert str(folder / "trust-root.json") in result.stdout
    assert mode(folder / "root.key") == 0o600
    assert mode(folder / "ca.key") == 0o600
    assert authority.load_trust_root(folder / "trust-root.json").network == "remja-test"


def test_authority_init_never_overwrites(tmp_path: Path) -> None:
    invoke("authority", "init", "--dir", tmp_path)
    root_key = (tmp_path / "root.key").read_bytes()
    assert_error(invoke("authority", "init", "--dir", tmp_path), "config_invalid", "never")
    assert (tmp_path / "root.key").read_bytes() == root_key


def test_authority_init_refuses_an_empty_network_name(tmp_path: Path) -> None:
    assert_error(
        invoke("authority", "init", "--dir", tmp_path, "--network", " "), "config_invalid", "name"
    )
    assert not (tmp_path / "root.key").exists()


def test_authority_commands_on_a_missing_folder_say_so(tmp_path: Path) -> None:
    assert_error(
        invoke("authority", "publish", "--dir", tmp_path / "nope"), "config_invalid", "initialise"
    )


# --- node init -----------------------------------------------------------------------------------


def test_node_init_writes_keys_config_and_registration(tmp_path: Path) -> None:
    folder = tmp_path / "ar"
    result = invoke(
        "node", "init", "--state", "AR", "--dir", folder, "--endpoint", ENDPOINT,
        "--clerk-port", "8181",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    keys = folder / "keys"
    for name in ("signing.key", "enc-mlkem768x25519.key", "enc-x25519.key", "tls.key"):
        assert mode(keys / name) == 0o600, name
    assert mode(folder / "node.db") == 0o600  # it will hold the forms in clear
    registration = keys / "registration.json"
    assert str(registration) in result.stdout
    assert "trust-root.json" in result.stdout and "directory.bin" in result.stdout
    body = json.loads(registration.read_bytes())
    assert body["state"] == "AR" and body["endpoint"] == ENDPOINT
    assert body["hostnames"] == ["127.0.0.1"]
    signing_kid = next(k["kid"] for k in body["keys"] if k["use"] == "sign")
    assert signing_kid in result.stdout
    config = load_config(folder / "config.toml")
    assert config.node.state == "AR"
    assert config.clerk_api.port == 8181
    # A loopback endpoint listens on loopback, on the endpoint's port.
    assert (config.peer.host, config.peer.port) == ("127.0.0.1", 9443)
    assert config.keys_dir == folder.resolve() / "keys"


def test_node_init_public_endpoint_listens_everywhere_on_its_port(tmp_path: Path) -> None:
    result = invoke(
        "node", "init", "--state", "br", "--dir", tmp_path, "--endpoint",
        "https://mla.example.org", "--hostname", "mla.example.org", "--hostname", "10.0.0.5",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    config = load_config(tmp_path / "config.toml")
    assert config.node.state == "BR"
    assert (config.peer.host, config.peer.port) == ("0.0.0.0", 8443)  # noqa: S104
    body = json.loads((tmp_path / "keys" / "registration.json").read_bytes())
    assert body["hostnames"] == ["mla.example.org", "10.0.0.5"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--state", "ZZ", "--endpoint", ENDPOINT], "OAS member state"),
        (["--state", "AR", "--endpoint", "http://127.0.0.1:9443"], "https://"),
        (["--state", "AR", "--endpoint", "https://127.0.0.1:99999"], "Port out of range"),
        (["--state", "AR", "--endpoint", ENDPOINT, "--hostname", "other.example"], "hostnames"),
        (["--state", "BS", "--endpoint", ENDPOINT], "--authority-name"),
        (["--state", "AR", "--endpoint", ENDPOINT, "--authority-name", "x" * 600], "authority"),
    ],
    ids=["state", "scheme", "port", "hostname", "authority-unknown", "authority-too-long"],
)
def test_node_init_refuses_bad_input_and_writes_nothing(
    tmp_path: Path, args: list[str], fragment: str
) -> None:
    folder = tmp_path / "node"
    assert_error(invoke("node", "init", "--dir", folder, *args), "config_invalid", fragment)
    assert not folder.exists() or not any(folder.rglob("*"))


def test_node_init_never_overwrites(tmp_path: Path) -> None:
    invoke("node", "init", "--state", "AR", "--dir", tmp_path, "--endpoint", ENDPOINT)
    key = (tmp_path / "keys" / "signing.key").read_bytes()
    result = invoke("node", "init", "--state", "AR", "--dir", tmp_path, "--endpoint", ENDPOINT)
    assert_error(result, "config_invalid", "already exists")
    assert (tmp_path / "keys" / "signing.key").read_bytes() == key


# --- admission by hand ---------------------------------------------------------------------------


def test_admit_publish_and_revoke(tmp_path: Path) -> None:
    auth, node = tmp_path / "authority", tmp_path / "ar"
    assert invoke("authority", "init", "--dir", auth).exit_code == 0
    invoke("node", "init", "--state", "AR", "--dir", node, "--endpoint", ENDPOINT)
    registration = node / "keys" / "registration.json"
    kid = next(
        k["kid"] for k in json.loads(registration.read_bytes())["keys"] if k["use"] == "sign"
    )

    admitted = invoke("authority", "admit", registration, "--dir", auth)
    assert admitted.exit_code == 0, admitted.stderr
    assert "Admitted AR" in admitted.stdout and kid in admitted.stdout
    assert (node / "keys" / "tls.pem").exists()
    assert (auth / "issued" / "AR.pem").exists()

    published = invoke("authority", "publish", "--dir", auth)
    assert published.exit_code == 0, published.stderr
    assert "Directory version 2 (1 nodes)" in published.stdout

    revoked = invoke("authority", "revoke", kid, "--dir", auth)
    assert revoked.exit_code == 0, revoked.stderr
    assert f"Key {kid} revoked" in revoked.stdout
    assert "Directory version 3" in revoked.stdout

    assert_error(invoke("authority", "revoke", "0" * 24, "--dir", auth), "config_invalid", "0" * 24)


def test_admit_refuses_a_tampered_registration(tmp_path: Path) -> None:
    auth, node = tmp_path / "authority", tmp_path / "ar"
    invoke("authority", "init", "--dir", auth)
    invoke("node", "init", "--state", "AR", "--dir", node, "--endpoint", ENDPOINT)
    registration = node / "keys" / "registration.json"
    body = json.loads(registration.read_bytes())
    body["endpoint"] = "https://127.0.0.1:9444"
    registration.write_text(json.dumps(body))
    result = invoke("authority", "admit", registration, "--dir", auth)
    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith("error [") and "Traceback" not in result.stderr
    assert not (node / "keys" / "tls.pem").exists()


def test_admit_a_missing_registration_is_a_usage_error(tmp_path: Path) -> None:
    invoke("authority", "init", "--dir", tmp_path)
    result = invoke("authority", "admit", tmp_path / "nope.json", "--dir", tmp_path)
    assert result.exit_code == 2
    assert "error [" in result.stderr and "nope.json" in result.stderr


# --- tokens --------------------------------------------------------------------------------------


@pytest.fixture
def node_config(tmp_path: Path) -> Path:
    invoke("node", "init", "--state", "AR", "--dir", tmp_path / "ar", "--endpoint", ENDPOINT)
    return tmp_path / "ar" / "config.toml"


def test_token_create_prints_the_secret_once_and_stores_its_hash(node_config: Path) -> None:
    result = invoke(
        "token", "create", "--config", node_config, "--role", "auditor", "--name", "Ana"
    )
    assert result.exit_code == 0, result.stderr
    secret = result.stdout.strip()
    assert secret.startswith("mla_") and "\n" not in secret
    assert "shown only this once" in result.stderr

    async def check() -> None:
        config = load_config(node_config)
        db = await Database.open(config.database_path, load_migrations(MIGRATIONS))
        try:
            principal = await authenticate(db, f"Bearer {secret}")
            assert (principal.role, principal.name) == (Role.AUDITOR, "Ana")
            rows = await db.fetchall("SELECT * FROM tokens")
            assert secret.encode() not in b"".join(
                v if isinstance(v, bytes) else str(v).encode() for r in rows for v in tuple(r)
            )
        finally:
            await db.close()

    asyncio.run(check())


def test_token_create_refuses_an_unknown_role(node_config: Path) -> None:
    result = invoke("token", "create", "--config", node_config, "--role", "judge")
    assert result.exit_code == 2
    assert "judge" in result.stderr and "Traceback" not in result.stderr


def test_token_create_with_a_missing_config_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert_error(
        invoke("token", "create", "--config", missing, "--role", "clerk"),
        "config_invalid",
        str(missing),
    )


def test_run_with_missing_keys_says_what_to_do(node_config: Path) -> None:
    # Not admitted yet: no tls.pem.
    assert_error(invoke("run", "--config", node_config), "key_file_invalid", "tls.pem")


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(6)
    assert len(set(ports)) == 6
    # Not from the range outgoing connections take their ports from (see free_ports).
    assert all(port < ephemeral_low() for port in ports)
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


# --- network commands without processes ----------------------------------------------------------


@pytest.mark.parametrize("states", ["AR", "AR,ZZ", "AR,AR"])
def test_network_up_refuses_bad_states(tmp_path: Path, states: str) -> None:
    result = invoke("network", "up", "--states", states, "--dir", tmp_path)
    assert_error(result, "config_invalid")
    assert not (tmp_path / NETWORK_FILE).exists()


def test_network_down_without_a_network_is_nothing_to_do(tmp_path: Path) -> None:
    result = invoke("network", "down", "--dir", tmp_path)
    assert result.exit_code == 0
    assert "nothing to stop" in result.stderr


def test_network_node_commands_without_a_network_say_so(tmp_path: Path) -> None:
    assert_error(invoke("network", "stop-node", "AR", "--dir", tmp_path), "config_invalid", "up")
    assert_error(invoke("network", "start-node", "AR", "--dir", tmp_path), "config_invalid", "up")


# --- real processes ------------------------------------------------------------------------------

MANIFEST_NODE_KEYS = {
    "state", "clerk_url", "peer_url", "token", "auditor_token", "admin_token",
    "config", "database", "pid", "log", "workers",
}  # fmt: skip


def mla_node(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mla_node", *(str(a) for a in args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def call(node: NodeRecord, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    url = urlsplit(node.clerk_url)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    try:
        headers = {"Authorization": f"Bearer {node.token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def wait_until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def submit(sender: NodeRecord, to: str) -> str:
    status, body = call(
        sender, "POST", "/api/v1/requests",
        {"type": "mla_request", "to": to, "form": forms.example("mla_request")},
    )  # fmt: skip
    assert status == 201, body
    return str(body["id"])


def receipt_verified(sender: NodeRecord, message_id: str) -> bool:
    _, view = call(sender, "GET", f"/api/v1/requests/{message_id}")
    return bool((view.get("receipt") or {}).get("verified"))


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat_file = Path(f"/proc/{pid}/stat")
    # Reparented to an init that does not reap: a zombie serves nothing.
    return stat_file.exists() and stat_file.read_text().rpartition(")")[2].split()[0] == "Z"


@pytest.fixture
def network_dir(tmp_path: Path) -> Iterator[Path]:
    """A network folder whose nodes are always stopped afterwards, whatever happened."""
    folder = tmp_path / "net"
    try:
        yield folder
    finally:
        mla_node("network", "down", "--dir", folder, "--timeout", "5", timeout=30)
        manifest = read_manifest(folder) if folder.exists() else None
        for node in manifest.nodes.values() if manifest else []:
            if is_running(node) and node.pid:
                os.kill(node.pid, signal.SIGKILL)


@pytest.mark.slow
def test_network_up_delivers_survives_a_crash_and_goes_down(network_dir: Path) -> None:
    up = mla_node("network", "up", "--states", "AR,BR", "--dir", network_dir)
    assert up.returncode == 0, up.stderr

    raw = json.loads((network_dir / NETWORK_FILE).read_bytes())
    assert set(raw) == {"authority", "nodes"}
    assert set(raw["authority"]) == {"dir", "trust_root"}
    assert Path(raw["authority"]["trust_root"]).is_file()
    assert set(raw["nodes"]) == {"AR", "BR"}
    for entry in raw["nodes"].values():
        assert set(entry) == MANIFEST_NODE_KEYS
        assert isinstance(entry["pid"], int)
        # One worker on SQLite: itself (issue 9 lists every worker of a node on PostgreSQL).
        [worker] = entry["workers"]
        assert worker == {k: entry[k] for k in ("pid", "clerk_url", "peer_url", "config", "log")}
        assert Path(entry["config"]).is_file()
        assert mode(Path(entry["database"])) == 0o600
        assert mode(Path(entry["log"])) == 0o600
    assert mode(network_dir / NETWORK_FILE) == 0o600  # it holds tokens
    manifest = read_manifest(network_dir)
    assert manifest is not None
    ar, br = manifest.nodes["AR"], manifest.nodes["BR"]
    for node in (ar, br):
        assert is_running(node)
        assert call(node, "GET", "/readyz")[0] == 200
        assert node.clerk_url in up.stdout
    env = invoke("network", "env", "--dir", network_dir)
    assert f"export AR_URL={ar.clerk_url}" in env.output.splitlines()
    assert f"export BR_TOKEN={br.token}" in env.output.splitlines()

    first = submit(ar, "BR")
    wait_until(lambda: receipt_verified(ar, first))

    # A token made while the node runs (a second SQLite writer, WAL) works at once.
    made = mla_node("token", "create", "--config", br.config, "--role", "auditor", timeout=60)
    assert made.returncode == 0, made.stderr
    auditor = dataclasses.replace(br, token=made.stdout.strip())
    status, view = call(auditor, "GET", f"/api/v1/requests/{first}")
    assert status == 200 and view["id"] == first

    # A crash: BR is killed; AR keeps what it sends meanwhile and delivers it once BR is back.
    assert br.pid is not None
    killed = mla_node("network", "stop-node", "BR", "--kill", "--dir", network_dir)
    assert killed.returncode == 0, killed.stderr
    assert "killed" in killed.stdout
    wait_until(lambda: pid_gone(br.pid or 0), timeout=10)
    assert read_manifest(network_dir).nodes["BR"].pid is None  # type: ignore[union-attr]
    second = submit(ar, "BR")
    time.sleep(0.5)
    assert not receipt_verified(ar, second)

    started = mla_node("network", "start-node", "BR", "--dir", network_dir)
    assert started.returncode == 0, started.stderr
    br = read_manifest(network_dir).nodes["BR"]  # type: ignore[union-attr]
    assert br.pid is not None and is_running(br)
    wait_until(lambda: receipt_verified(ar, second))
    _, inbox = call(br, "GET", "/api/v1/requests?box=inbox")
    assert {item["id"] for item in inbox["items"]} == {first, second}  # the data was kept

    # `network up` on a running network starts nothing and keeps the pids.
    again = mla_node("network", "up", "--dir", network_dir)
    assert again.returncode == 0, again.stderr
    assert read_manifest(network_dir).nodes["BR"].pid == br.pid  # type: ignore[union-attr]

    pids = [n.pid for n in read_manifest(network_dir).nodes.values()]  # type: ignore[union-attr]
    down = mla_node("network", "down", "--dir", network_dir)
    assert down.returncode == 0, down.stderr
    assert all(pid is not None and pid_gone(pid) for pid in pids)
    assert all(n.pid is None for n in read_manifest(network_dir).nodes.values())  # type: ignore[union-attr]
    assert mla_node("network", "down", "--dir", network_dir).returncode == 0

    # Up again: same ports, tokens and data.
    restarted = mla_node("network", "up", "--dir", network_dir)
    assert restarted.returncode == 0, restarted.stderr
    after = read_manifest(network_dir)
    assert after is not None
    assert after.nodes["AR"].clerk_url == ar.clerk_url and after.nodes["AR"].token == ar.token
    assert receipt_verified(after.nodes["AR"], first)


@pytest.mark.slow
def test_network_up_fails_clearly_and_stops_what_it_started(network_dir: Path) -> None:
    assert mla_node("network", "up", "--states", "AR,BR", "--dir", network_dir).returncode == 0
    assert mla_node("network", "down", "--dir", network_dir).returncode == 0
    manifest = read_manifest(network_dir)
    assert manifest is not None
    config = manifest.nodes["BR"].config
    config.write_text(config.read_text().replace("[delivery]\n", "[delivery]\nmax_backof_s = 3\n"))

    up = mla_node("network", "up", "--dir", network_dir)
    assert up.returncode == 2
    assert up.stderr.startswith("error [config_invalid]: node BR exited")
    assert "delivery.max_backof_s" in up.stderr  # the log tail names the bad key
    assert up.stderr.count("--- mla-node: starting BR") == 1  # of this start only
    after = read_manifest(network_dir)
    assert after is not None
    assert all(n.pid is None for n in after.nodes.values())
    assert not is_running(manifest.nodes["AR"])


@pytest.mark.slow
def test_demo_once_verifies_both_receipts(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    try:
        done = mla_node("demo", "--once", "--dir", folder, timeout=150)
    finally:
        mla_node("network", "down", "--dir", folder, timeout=30)
    logs = "".join(f"\n--- {p}\n{p.read_text()}" for p in folder.glob("nodes/*/node.log"))
    assert done.returncode == 0, done.stdout + done.stderr + logs
    out = done.stdout
    assert "AR → BR  mla_request" in out and "US → AR  extradition_request" in out
    assert out.count("receipt   delivered") == 2
    assert "NOT VERIFIED" not in out
    assert "BR  acknowledged" in out and "AR  acknowledged" in out
    assert "Second verified receipt" in out
    manifest = read_manifest(folder)
    assert manifest is not None
    assert all(n.pid is None for n in manifest.nodes.values())
    assert not any(is_running(n) for n in manifest.nodes.values())


def test_forms_example_prints_a_body_the_api_accepts() -> None:
    body = json.loads(invoke("forms", "example", "mla_request", "--to", "br").output)
    assert body["type"] == "mla_request"
    assert body["to"] == "BR"
    assert forms.validate_form("mla_request", 1, body["form"]) == body["form"]
    reply = json.loads(invoke("forms", "example", "status_inquiry").output)
    assert set(reply) == {"type", "form"}
    refused = CliRunner().invoke(cli, ["forms", "example", "mla_request"])
    assert refused.exit_code == 2
    assert "--to" in refused.output


def test_network_env_without_a_network_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["network", "env", "--dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "network up" in result.output
