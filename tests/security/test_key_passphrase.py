"""Private keys sealed at rest with a passphrase (optional per node), and ``mla-node keys rotate``.

``node init --passphrase-env`` (or ``--passphrase-file``) seals the signing, encryption and TLS
private keys (passphrase.py: scrypt + AES-256-GCM); the node reads the passphrase at start. A
wrong or missing passphrase stops it at once with a ConfigError naming the file, never a
traceback. Files stay 0600, unsealed folders keep working, and two nodes, one of them sealed,
exchange requests over real mutual TLS (the sealed TLS key reaches OpenSSL from memory only).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner, Result

from mla_node import authority, passphrase, pki
from mla_node.cli import cli
from mla_node.config import NodeConfig, load_config
from mla_node.errors import ConfigError, KeyFileError
from mla_node.identity import (
    ENCRYPTION_KEY_FILES,
    REGISTRATION_FILE,
    SIGNING_KEY_FILE,
    TLS_KEY_FILE,
    load_identity,
    rotate_keys,
)
from mla_node.localnet import create_network
from mla_node.runtime import NodeRuntime
from mla_node.service.tokens import create_token
from tests.netkit import RunningNode, bound_socket, wait_for

ENDPOINT = "https://127.0.0.1:9443"
SECRET = "correct horse battery staple"
ENV = "MLA_TEST_KEY_PASSPHRASE"
PRIVATE = (SIGNING_KEY_FILE, *ENCRYPTION_KEY_FILES.values(), TLS_KEY_FILE)


@pytest.fixture(autouse=True)
def cheap_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    """2**12 instead of 2**17: the format and the checks are the same, the tests 30 times faster.
    (The cost is in each file's header, so the reader follows whatever the writer used.)"""
    monkeypatch.setattr(passphrase, "SCRYPT_LOG2_N", 12)


def invoke(*args: str | Path, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)


def assert_error(result: Result, code: str, *fragments: str) -> None:
    """Exit 2, one ``error [code]: ...`` line, no traceback."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith(f"error [{code}]: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def admitted_node(tmp_path: Path, *init_options: str, env: str | None = SECRET) -> Path:
    """AR's folder made by ``node init`` with ``init_options``, admitted: its keys folder."""
    auth, node = tmp_path / "authority", tmp_path / "ar"
    assert invoke("authority", "init", "--dir", auth).exit_code == 0
    done = invoke(
        "node", "init", "--state", "AR", "--dir", node, "--endpoint", ENDPOINT, *init_options,
        env={ENV: env},
    )  # fmt: skip
    assert done.exit_code == 0, done.stderr
    admit = invoke("authority", "admit", node / "keys" / REGISTRATION_FILE, "--dir", auth)
    assert admit.exit_code == 0, admit.stderr
    return node / "keys"


# --- sealing at node init ------------------------------------------------------------------------


def test_node_init_seals_every_private_key_and_keeps_them_0600(tmp_path: Path) -> None:
    keys = admitted_node(tmp_path, "--passphrase-env", ENV)
    config = load_config(keys.parent / "config.toml")
    assert config.keys.passphrase_env == ENV
    identity = load_identity(keys, SECRET.encode())
    plain = [
        identity.signing_key.private_bytes(),
        *(k.private_raw for k in identity.encryption_keys.values()),
    ]
    for name in PRIVATE:
        data = (keys / name).read_bytes()
        assert passphrase.is_sealed(data), name
        assert mode(keys / name) == 0o600, name
        assert not any(secret in data for secret in plain), name
    assert b"PRIVATE KEY" not in (keys / TLS_KEY_FILE).read_bytes()
    assert mode(keys / REGISTRATION_FILE) == 0o644  # public, and not sealed
    assert not passphrase.is_sealed((keys / REGISTRATION_FILE).read_bytes())


def test_sealed_keys_round_trip_and_the_tls_key_reaches_openssl_from_memory(
    tmp_path: Path,
) -> None:
    keys = admitted_node(tmp_path, "--passphrase-env", ENV)
    identity = load_identity(keys, SECRET.encode())
    raw = passphrase.unseal((keys / SIGNING_KEY_FILE).read_bytes(), SECRET.encode(), keys)
    assert identity.signing_key.private_bytes() == raw
    assert str(identity.tls_key_path).startswith("/proc/self/fd/")
    assert b"PRIVATE KEY" in pki.read_private_file(identity.tls_key_path)  # 0600, in memory
    ca = tmp_path / "authority" / authority.CA_CERT_FILE
    pki.server_ssl_context(identity.tls_cert_path, identity.tls_key_path, ca)
    pki.client_ssl_context(identity.tls_cert_path, identity.tls_key_path, ca)
    # Loading again (each new directory does) reuses the in-memory file.
    assert load_identity(keys, SECRET.encode()).tls_key_path == identity.tls_key_path


def test_the_default_cost_is_written_into_each_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passphrase, "SCRYPT_LOG2_N", 17)
    sealed = passphrase.seal(b"k" * 32, b"pw")
    assert sealed[len(passphrase.MAGIC) : len(passphrase.MAGIC) + 3] == bytes([17, 8, 1])
    assert passphrase.unseal(sealed, b"pw", Path("k")) == b"k" * 32


def test_commands_that_sign_read_the_passphrase_too(tmp_path: Path) -> None:
    keys = admitted_node(tmp_path, "--passphrase-env", ENV)
    config = keys.parent / "config.toml"
    created = invoke("token", "create", "--config", config, "--role", "clerk", env={ENV: SECRET})
    assert created.exit_code == 0, created.stderr
    refused = invoke("token", "create", "--config", config, "--role", "clerk", env={ENV: "no"})
    assert_error(refused, "key_file_invalid", str(keys / SIGNING_KEY_FILE), "wrong passphrase")


def test_a_passphrase_file_works_and_must_be_private(tmp_path: Path) -> None:
    secret_file = tmp_path / "passphrase.txt"
    pki.write_private_file(secret_file, SECRET.encode() + b"\n")
    keys = admitted_node(tmp_path, "--passphrase-file", str(secret_file), env=None)
    config = load_config(keys.parent / "config.toml")
    assert config.keys.passphrase_file == str(secret_file)
    assert passphrase.configured_passphrase(config) == SECRET.encode()
    load_identity(keys, passphrase.configured_passphrase(config))
    os.chmod(secret_file, 0o644)
    assert_error(
        invoke("run", "--config", keys.parent / "config.toml"),
        "key_file_invalid",
        str(secret_file),
        "chmod 600",
    )


# --- failing fast --------------------------------------------------------------------------------


def test_a_wrong_passphrase_stops_the_node_naming_the_file(tmp_path: Path) -> None:
    keys = admitted_node(tmp_path, "--passphrase-env", ENV)
    result = invoke("run", "--config", keys.parent / "config.toml", env={ENV: "not it"})
    assert_error(result, "key_file_invalid", str(keys / SIGNING_KEY_FILE), "wrong passphrase")
    with pytest.raises(KeyFileError) as info:
        load_identity(keys, b"not it")
    assert info.value.field == str(keys / SIGNING_KEY_FILE)


def test_a_missing_passphrase_stops_the_node_naming_what_is_missing(tmp_path: Path) -> None:
    keys = admitted_node(tmp_path, "--passphrase-env", ENV)
    config_path = keys.parent / "config.toml"
    # The variable the config names is not set.
    assert_error(
        invoke("run", "--config", config_path, env={ENV: None}),
        "config_invalid",
        "keys.passphrase_env",
        ENV,
    )
    # The config names no passphrase at all, but the files are sealed.
    text = config_path.read_text().replace(f'passphrase_env = "{ENV}"', 'passphrase_env = ""')
    config_path.write_text(text)
    assert_error(
        invoke("run", "--config", config_path),
        "key_file_invalid",
        str(keys / SIGNING_KEY_FILE),
        "sealed with a passphrase and none is configured",
    )


def test_node_init_without_the_passphrase_writes_nothing(tmp_path: Path) -> None:
    node = tmp_path / "ar"
    result = invoke(
        "node", "init", "--state", "AR", "--dir", node, "--endpoint", ENDPOINT,
        "--passphrase-env", ENV, env={ENV: None},
    )  # fmt: skip
    assert_error(result, "config_invalid", ENV)
    assert not (node / "keys").exists() and not (node / "config.toml").exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "wrong passphrase, or the file was altered"),
        (lambda b: b[: len(passphrase.MAGIC) + 10], "truncated"),
        # A planted file asking for 2**40 scrypt rounds is refused before any memory is taken.
        (lambda b: passphrase.MAGIC + bytes([40]) + b[len(passphrase.MAGIC) + 1 :], "scrypt"),
    ],
    ids=["flipped bit", "truncated", "hostile cost"],
)
def test_a_damaged_sealed_file_is_refused_by_name(
    tmp_path: Path, damage: object, message: str
) -> None:
    keys = admitted_node(tmp_path, "--passphrase-env", ENV)
    path = keys / ENCRYPTION_KEY_FILES[next(iter(ENCRYPTION_KEY_FILES))]
    pki.write_private_file(path, damage(path.read_bytes()))  # type: ignore[operator]
    with pytest.raises(KeyFileError, match=message) as info:
        load_identity(keys, SECRET.encode())
    assert info.value.field == str(path)


def test_setting_both_passphrase_sources_is_refused(tmp_path: Path) -> None:
    config = NodeConfig.model_validate(
        {
            "node": {"state": "AR", "authority_name": "x"},
            "keys": {"passphrase_env": ENV, "passphrase_file": "p.txt"},
            "base_dir": tmp_path,
        }
    )
    with pytest.raises(ConfigError, match="not both"):
        passphrase.configured_passphrase(config)


# --- unsealed keys -------------------------------------------------------------------------------


def test_unsealed_keys_still_work_with_or_without_a_passphrase(tmp_path: Path) -> None:
    keys = admitted_node(tmp_path)
    assert not any(passphrase.is_sealed((keys / n).read_bytes()) for n in PRIVATE)
    assert load_config(keys.parent / "config.toml").keys.passphrase_env == ""
    plain = load_identity(keys)
    assert plain.tls_key_path == keys / TLS_KEY_FILE
    # A node given a passphrase later reads its old plain files as they are: sealing is per file.
    mixed = load_identity(keys, SECRET.encode())
    assert mixed.signing_key.kid == plain.signing_key.kid
    pki.write_private_file(
        keys / SIGNING_KEY_FILE,
        passphrase.seal(plain.signing_key.private_bytes(), SECRET.encode()),
    )
    assert load_identity(keys, SECRET.encode()).signing_key.kid == plain.signing_key.kid


# --- rotation ------------------------------------------------------------------------------------


def test_keys_rotate_keeps_the_old_keys_and_writes_a_registration(tmp_path: Path) -> None:
    keys = admitted_node(tmp_path, "--passphrase-env", ENV)
    before = load_identity(keys, SECRET.encode())
    old_registration = json.loads((keys / REGISTRATION_FILE).read_bytes())
    result = invoke("keys", "rotate", "--config", keys.parent / "config.toml", env={ENV: SECRET})
    assert result.exit_code == 0, result.stderr
    after = load_identity(keys, SECRET.encode())
    assert after.signing_key.kid != before.signing_key.kid
    assert after.signing_key.kid in result.stdout
    # Every old key is kept (sealed as it was); every new file is sealed; all 0600.
    retired = sorted((keys / "retired").iterdir())
    assert len(retired) == 1 + len(ENCRYPTION_KEY_FILES)
    assert set(before.encryption_keys) < set(after.encryption_keys)
    for path in [*retired, *(keys / n for n in PRIVATE)]:
        assert passphrase.is_sealed(path.read_bytes()) and mode(path) == 0o600, path
    # The registration names the new keys, keeps the node's fields, and is admissible with an
    # overlap and the same certificate.
    registration = json.loads((keys / REGISTRATION_FILE).read_bytes())
    assert {k["kid"] for k in registration["keys"]} == {
        after.signing_key.kid,
        *(set(after.encryption_keys) - set(before.encryption_keys)),
    }
    assert registration["tls_csr_pem"] == old_registration["tls_csr_pem"]
    cert_before = (keys / "tls.pem").read_bytes()
    authority.admit(
        tmp_path / "authority",
        keys / REGISTRATION_FILE,
        now=dt.datetime.now(dt.UTC),
        overlap_s=60,
        keep_certificate=True,
    )
    assert (keys / "tls.pem").read_bytes() == cert_before


def test_keys_rotate_with_a_wrong_passphrase_changes_nothing(tmp_path: Path) -> None:
    keys = admitted_node(tmp_path, "--passphrase-env", ENV)
    files = {p: p.read_bytes() for p in keys.iterdir() if p.is_file()}
    result = invoke("keys", "rotate", "--config", keys.parent / "config.toml", env={ENV: "nope"})
    assert_error(result, "key_file_invalid", "wrong passphrase")
    assert {p: p.read_bytes() for p in keys.iterdir() if p.is_file()} == files
    assert not (keys / "retired").exists()


def test_keys_rotate_has_help() -> None:
    result = invoke("keys", "rotate", "--help")
    assert result.exit_code == 0 and "Make new signing and encryption keys" in result.stdout


def test_rotate_keys_refuses_a_folder_without_a_registration(tmp_path: Path) -> None:
    keys = admitted_node(tmp_path)
    (keys / REGISTRATION_FILE).unlink()
    with pytest.raises(KeyFileError, match=REGISTRATION_FILE):
        rotate_keys(keys, now_ms=0)
    assert not (keys / "retired").exists()


# --- two nodes, one sealed, over real mutual TLS -------------------------------------------------


def _seal_in_place(keys: Path, secret: bytes) -> None:
    for name in PRIVATE:
        pki.write_private_file(
            keys / name, passphrase.seal(pki.read_private_file(keys / name), secret)
        )


@asynccontextmanager
async def sealed_and_plain(tmp_path: Path) -> AsyncIterator[dict[str, RunningNode]]:
    """AR with sealed keys (passphrase from the environment) and BR with plain ones, running."""
    peer = {s: bound_socket() for s in ("AR", "BR")}
    clerk = {s: bound_socket() for s in ("AR", "BR")}
    local = create_network(
        tmp_path,
        ["AR", "BR"],
        peer_ports={s: k.getsockname()[1] for s, k in peer.items()},
        clerk_ports={s: k.getsockname()[1] for s, k in clerk.items()},
        now=dt.datetime.now(dt.UTC),
    )
    _seal_in_place(local["AR"].config.keys_dir, SECRET.encode())
    ar_keys = local["AR"].config.keys.model_copy(update={"passphrase_env": ENV})
    configs = {
        "AR": local["AR"].config.model_copy(update={"keys": ar_keys}),
        "BR": local["BR"].config,
    }
    nodes: dict[str, RunningNode] = {}
    async with aiohttp.ClientSession() as http:
        try:
            for state, config in configs.items():
                runtime = await NodeRuntime.start(
                    config, clerk_socket=clerk[state], peer_socket=peer[state]
                )
                _, token = await create_token(
                    runtime.ctx.db,
                    "clerk",
                    state,
                    runtime.ctx.clock(),
                    signer=runtime.ctx.identity.signing_key,
                    state=state,
                )
                nodes[state] = RunningNode(
                    dataclasses.replace(local[state], config=config),
                    runtime,
                    {"clerk": token},
                    http,
                )
            yield nodes
        finally:
            for node in nodes.values():
                await node.runtime.stop()


async def test_a_sealed_node_sends_and_receives_over_mutual_tls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, SECRET)
    async with sealed_and_plain(tmp_path) as nodes:
        ar, br = nodes["AR"], nodes["BR"]
        assert str(ar.runtime.ctx.identity.tls_key_path).startswith("/proc/self/fd/")
        sent = [(ar, (await ar.submit("BR"))["id"]), (br, (await br.submit("AR"))["id"])]

        async def delivered() -> bool:
            views = [(await node.call("GET", f"/api/v1/requests/{m}"))[1] for node, m in sent]
            return all(v["status"] == "delivered" and v["receipt"]["verified"] for v in views)

        await wait_for(delivered, within_s=30)
