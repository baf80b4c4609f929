"""``mla-node``: the command line of a node, of the network authority and of a local network.

Thin on purpose: parse, call one function of the package, print. Logging is configured here and
nowhere else. Every error mla_node raises on purpose (``MlaError``) is printed as
``error [code]: detail`` with exit code 2; a failed check (the demo's receipts) exits with 1.
Command docstrings are the ``--help`` text.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import shlex
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import click

from mla_node import authority, directory_server, localnet, logs, supervisor
from mla_node.cli_audit import audit_group
from mla_node.cli_client import client_group
from mla_node.cli_common import (
    DIR_OPTION,
    EXIT_CHECK_FAILED,
    EXIT_ERROR,
    FILE_OPTION,
)
from mla_node.cli_keys import keys_group
from mla_node.cli_ops import (
    backup_command,
    conformance_command,
    db_check_command,
    db_port_command,
    doctor_command,
    restore_command,
)
from mla_node.config import NodeConfig, load_config, parse_config
from mla_node.config_text import commented_config, node_init_config, node_init_title
from mla_node.demo import (
    DEMO_STATES,
    DEMO_TIMEOUT_S,
    DemoFailed,
    by_hand,
    report,
    run_scenario,
)
from mla_node.errors import ConfigError, MlaError
from mla_node.identity import (
    REGISTRATION_FILE,
    check_endpoints,
    check_node_fields,
    init_node,
    load_signing_key,
)
from mla_node.passphrase import configured_passphrase
from mla_node.pki import write_public_file
from mla_node.protocol import forms
from mla_node.protocol.directory import OAS_STATES, verify_directory
from mla_node.protocol.keys import Suite
from mla_node.runtime import run_until_stopped
from mla_node.service import retention
from mla_node.service.context import Role
from mla_node.service.tokens import create_token
from mla_node.storage.db import open_database

LOG_LEVELS = ("debug", "info", "warning", "error")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _configure_logging(level: str, fmt: str = "text") -> None:
    logs.configure(level, fmt)


class _Cli(click.Group):
    """The root group: the one place where expected errors become a message and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MlaError as exc:
            click.echo(f"error [{exc.code}]: {exc.detail}", err=True)
            ctx.exit(EXIT_ERROR)
        except DemoFailed as exc:
            click.echo(f"check failed: {exc}", err=True)
            ctx.exit(EXIT_CHECK_FAILED)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mla-node", prog_name="mla-node")
def cli() -> None:
    """A node of the OAS network for mutual legal assistance and extradition requests.

    Each state's central authority runs one node; the network authority admits them and signs
    the directory of nodes. Try `mla-node demo` for three states on this machine.
    """


cli.add_command(audit_group)
cli.add_command(client_group)
cli.add_command(keys_group)
cli.add_command(backup_command)
cli.add_command(restore_command)
cli.add_command(doctor_command)
cli.add_command(conformance_command)


def main() -> None:
    """The ``mla-node`` console script."""
    cli.main(prog_name="mla-node")


# --- the network authority -----------------------------------------------------------------------


@cli.group("authority")
def authority_group() -> None:
    """The network authority: root key, TLS CA, admitted nodes, signed directory."""


@authority_group.command("init")
@click.option("--dir", "folder", type=DIR_OPTION, required=True, help="Authority folder.")
@click.option("--network", default="remja", show_default=True, help="Name of the network.")
def authority_init(folder: Path, network: str) -> None:
    """Create the authority's root key, TLS CA and empty registry in DIR.

    Never overwrites an existing authority: a new root key would orphan every node. Give the
    trust-root.json it writes to every node and to every auditor.
    """
    trust = authority.init_authority(folder, network=network, now=_now())
    click.echo(f"Authority of the network {trust.network!r} created in {folder}.")
    click.echo(f"  trust root:  {folder / authority.TRUST_ROOT_FILE}")
    click.echo(f"  root key id: {', '.join(trust.root_keys)}")
    click.echo(
        f"Next: admit each node with `mla-node authority admit REGISTRATION --dir {folder}`."
    )


@authority_group.command("admit")
@click.argument("registration", type=FILE_OPTION)
@click.option("--dir", "folder", type=DIR_OPTION, required=True, help="Authority folder.")
@click.option(
    "--overlap",
    "overlap_s",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Seconds the state's previous keys stay valid (a key rotation under traffic: "
    "mla-node keys rotate; e.g. 86400). 0: cut them now.",
)
@click.option(
    "--keep-certificate",
    is_flag=True,
    help="Keep the state's TLS certificate when it certifies the registration's TLS key "
    "(a rotation of message keys only: no TLS handshake is refused meanwhile).",
)
@click.option(
    "--endpoint",
    "endpoints",
    multiple=True,
    help="Peer endpoint URL to list for the node instead of the registration's; repeat for a "
    "node with several workers (the first is the primary). Each host must be among the "
    "registration's hostnames.",
)
def authority_admit(
    registration: Path,
    folder: Path,
    overlap_s: int,
    keep_certificate: bool,
    endpoints: tuple[str, ...],
) -> None:
    """Admit a node: verify its REGISTRATION, issue its TLS certificate and publish.

    Confirm out of band (by telephone, say) that the signing key id printed here is the one the
    state's central authority generated: the registration proves possession of the keys, not
    who sent it. The certificate is written to issued/STATE.pem and as tls.pem next to the
    registration. For a key rotation (mla-node keys rotate) pass --overlap and
    --keep-certificate, so that nothing in flight is refused while the new directory spreads.
    """
    result = authority.admit(
        folder,
        registration,
        now=_now(),
        overlap_s=overlap_s,
        keep_certificate=keep_certificate,
        endpoints=list(endpoints) or None,
    )
    click.echo(f"Admitted {result.state}; directory version {result.version} published.")
    for kid in _signing_kids(registration):
        click.echo(f"  signing key id: {kid}  (confirm it with {result.state} out of band)")
    click.echo(f"  certificate:    {result.cert_path}")
    click.echo(f"  directory:      {result.directory_path}")
    click.echo(
        f"Send {result.state} its certificate (into its keys/ folder as tls.pem), "
        f"{folder / authority.TRUST_ROOT_FILE} and the directory (as directory.bin)."
    )


def _signing_kids(registration: Path) -> list[str]:
    # Read after admit() verified the file, so it is well-formed.
    keys = json.loads(registration.read_bytes()).get("keys", [])
    return [str(k["kid"]) for k in keys if k.get("use") == "sign"]


@authority_group.command("publish")
@click.option("--dir", "folder", type=DIR_OPTION, required=True, help="Authority folder.")
def authority_publish(folder: Path) -> None:
    """Sign the registry as a new directory version (before the current one expires).

    Copy the new directory.bin to every node's directory file; nodes pick it up while running.
    """
    now = _now()
    path = authority.publish(folder, now=now)
    _echo_directory(folder, path, now)


def _echo_directory(folder: Path, path: Path, now: dt.datetime) -> None:
    trust = authority.load_trust_root(folder / authority.TRUST_ROOT_FILE)
    directory = verify_directory(path.read_bytes(), trust, now=int(now.timestamp() * 1000))
    expires = dt.datetime.fromtimestamp(directory.expires_at / 1000, dt.UTC)
    click.echo(
        f"Directory version {directory.version} ({len(directory.nodes)} nodes) published to "
        f"{path}, valid until {expires.isoformat(timespec='seconds')}."
    )
    click.echo("Copy it to every node's directory.bin; running nodes pick it up.")


@authority_group.command("revoke")
@click.argument("kid")
@click.option("--dir", "folder", type=DIR_OPTION, required=True, help="Authority folder.")
def authority_revoke(kid: str, folder: Path) -> None:
    """Revoke a node key KID from now on, and publish.

    What the key signed before now still verifies; anything newer is refused. A kid no admitted
    node has is refused rather than recorded, so a typo cannot leave a compromised key alive.
    """
    now = _now()
    authority.revoke_key(folder, kid, now=now)
    click.echo(f"Key {kid} revoked from {now.isoformat(timespec='seconds')}.")
    _echo_directory(folder, folder / authority.DIRECTORY_FILE, now)


@authority_group.command("serve")
@click.option("--dir", "folder", type=DIR_OPTION, required=True, help="Authority folder.")
@click.option(
    "--listen",
    default="127.0.0.1:8444",
    show_default=True,
    help="HOST:PORT to listen on (port 0: any free; 0.0.0.0 for every address).",
)
@click.option(
    "--hostname",
    "hostnames",
    multiple=True,
    help="Name nodes reach the service by, for its TLS certificate; repeat for several  "
    "[default: the --listen host]",
)
@click.option(
    "--ready-file", type=FILE_OPTION, help="Written (JSON: url) once the service listens."
)
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default="info", show_default=True)
def authority_serve(
    folder: Path,
    listen: str,
    hostnames: tuple[str, ...],
    ready_file: Path | None,
    log_level: str,
) -> None:
    """Publish the signed directory (and the trust root) over HTTPS until SIGTERM or Ctrl-C.

    Nodes whose keys.directory_url names https://HOSTNAME:PORT/directory.bin poll it and apply
    each newer version without a restart. A directory published meanwhile (admit, publish,
    revoke) is served at once; one that does not verify is not. The TLS certificate is issued
    by the network CA at start (serve-tls.pem), so nodes trust it through their trust root.
    """
    host, port = directory_server.parse_listen(listen)
    names = directory_server.serving_hostnames(host, list(hostnames))
    _configure_logging(log_level)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            directory_server.serve_until_stopped(
                folder, host, port, names, ready_file=ready_file, say=click.echo
            )
        )


# --- a node's folder -----------------------------------------------------------------------------


@cli.group("node")
def node_group() -> None:
    """A node's own folder: keys, configuration, registration."""


@node_group.command("init")
@click.option("--state", required=True, help="ISO 3166 alpha-2 code of the state, e.g. AR.")
@click.option("--dir", "folder", type=DIR_OPTION, required=True, help="The node's folder.")
@click.option(
    "--endpoint",
    "endpoints",
    required=True,
    multiple=True,
    help="https:// URL other nodes deliver to, e.g. https://mla.example.org:8443; repeat for a "
    "node with several workers, each at its own URL (the first is the primary).",
)
@click.option("--authority-name", help="Name of the central authority (known for some states).")
@click.option(
    "--hostname",
    "hostnames",
    multiple=True,
    help="Name or address for the TLS certificate; repeat for several (default: the endpoint's).",
)
@click.option(
    "--clerk-port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="Port of the local clerk API.",
)
@click.option(
    "--peer-port",
    type=click.IntRange(0, 65535),
    help="Port the peer endpoint listens on  [default: the endpoint's port, else 8443]",
)
@click.option(
    "--passphrase-env",
    metavar="VAR",
    help="Seal the private key files with the passphrase in environment variable VAR; the node "
    "reads it from VAR at start (keys.passphrase_env).",
)
@click.option(
    "--passphrase-file",
    type=FILE_OPTION,
    help="Seal them with the first line of FILE (mode 0600) instead (keys.passphrase_file).",
)
def node_init(
    state: str,
    folder: Path,
    endpoints: tuple[str, ...],
    authority_name: str | None,
    hostnames: tuple[str, ...],
    clerk_port: int,
    peer_port: int | None,
    passphrase_env: str | None,
    passphrase_file: Path | None,
) -> None:
    """Create a node's keys (keys/, private keys 0600), its config.toml and its registration.

    Nothing is overwritten. Send keys/registration.json to the network authority; once it has
    admitted the node, place the tls.pem it returns in keys/, and its trust-root.json and
    directory.bin in the node's folder. With --passphrase-env or --passphrase-file the private
    key files are also sealed with a passphrase (scrypt, AES-256-GCM), which the node then needs
    at every start.
    """
    state = state.upper()
    config_path = folder / "config.toml"
    if config_path.exists():
        raise ConfigError(
            f"{config_path} already exists: a node's folder is initialised only once",
            field=str(config_path),
        )
    name = authority_name or localnet.CENTRAL_AUTHORITIES.get(state)
    endpoint = endpoints[0]
    hosts = [urlsplit(e).hostname for e in endpoints]
    names = list(hostnames) or list(dict.fromkeys(h for h in hosts if h))
    # Checked before any file is written, so a mistake leaves nothing half made.
    check_node_fields(state=state, authority_name=name or "?", endpoint=endpoint, hostnames=names)
    check_endpoints(endpoint, list(endpoints), names)
    if name is None:
        raise ConfigError(
            f"no central authority is known for {state}: give --authority-name",
            field="authority_name",
        )
    config = node_init_config(
        state, name, endpoint, clerk_port=clerk_port, peer_port=peer_port, base_dir=folder
    )
    config = _with_passphrase_source(config, passphrase_env, passphrase_file)
    passphrase = configured_passphrase(config)  # the node's own reading of it, before any key
    registration = init_node(
        config.keys_dir,
        state=state,
        authority_name=name,
        endpoint=endpoint,
        endpoints=list(endpoints),
        hostnames=names,
        suites=list(Suite),
        now_ms=int(_now().timestamp() * 1000),
        passphrase=passphrase,
    )
    text = commented_config(config, title=node_init_title(state))
    write_public_file(config_path, text.encode())
    localnet.create_database_file(config.database_path)
    kids = _signing_kids(registration)
    click.echo(f"Node {state} initialised in {folder}.")
    sealed = ", sealed with the passphrase" if passphrase else ""
    click.echo(f"  keys:           {config.keys_dir}  (private keys 0600{sealed})")
    click.echo(f"  config:         {config_path}")
    click.echo(f"  registration:   {registration}")
    click.echo(f"  signing key id: {', '.join(kids)}")
    click.echo("Next steps:")
    click.echo(
        f"  1. Send {registration.name} to the network authority and confirm the signing key id "
        "with them by telephone. They run: mla-node authority admit "
        f"{REGISTRATION_FILE} --dir AUTHORITY_DIR"
    )
    click.echo(
        f"  2. Copy what they send back: tls.pem to {config.keys_dir}/, trust-root.json to "
        f"{config.trust_root_path}, directory.bin to {config.directory_path}."
    )
    click.echo(
        f"  3. Create a clerk token: mla-node token create --config {config_path} --role clerk"
    )
    click.echo(f"  4. Start the node:       mla-node run --config {config_path}")


def _with_passphrase_source(config: NodeConfig, env: str | None, file: Path | None) -> NodeConfig:
    if env is None and file is None:
        return config
    data = config.model_dump(mode="json")
    data["keys"]["passphrase_env"] = env or ""
    # Absolute: the config resolves relative paths against its own folder, not the shell's.
    data["keys"]["passphrase_file"] = str(file.resolve()) if file else ""
    return parse_config(data, config.base_dir)


# --- tokens --------------------------------------------------------------------------------------


@cli.group("token")
def token_group() -> None:
    """API tokens of the clerk API."""


@token_group.command("create")
@click.option("--config", "config_path", type=FILE_OPTION, required=True, help="config.toml.")
@click.option(
    "--role", type=click.Choice([r.value for r in Role]), required=True, help="What it may do."
)
@click.option("--name", help="Who holds it (shown in evidence records)  [default: the role]")
def token_create(config_path: Path, role: str, name: str | None) -> None:
    """Create an API token in the node's database and print its secret, once.

    The secret alone goes to standard output (TOKEN=$(mla-node token create ...)); the node keeps
    only its SHA-256, so it cannot be shown again. Works while the node runs.
    """
    config = load_config(config_path)
    token_id, secret = asyncio.run(_create_token(config, role, name or role))
    click.echo(
        f"Created token {token_id} ({role}, {name or role}) for {config.node.state}; "
        "the secret below is shown only this once.",
        err=True,
    )
    click.echo(secret)


async def _create_token(config: NodeConfig, role: str, name: str) -> tuple[str, str]:
    db = await open_database(config.database_location)
    try:
        return await create_token(
            db,
            role,
            name,
            int(time.time() * 1000),
            signer=load_signing_key(config.keys_dir, configured_passphrase(config)),
            state=config.node.state,
        )
    finally:
        await db.close()


# --- the database --------------------------------------------------------------------------------


@cli.group("db")
def db_group() -> None:
    """A node's database: retention and checks."""


db_group.add_command(db_check_command)
db_group.add_command(db_port_command)


@db_group.command("purge")
@click.option("--config", "config_path", type=FILE_OPTION, required=True, help="config.toml.")
@click.option(
    "--older-than",
    "days",
    type=click.FloatRange(min=1),
    required=True,
    help="Purge case threads last active more than DAYS days ago.",
)
@click.option("--dry-run", is_flag=True, help="Only report what would be purged.")
def db_purge(config_path: Path, days: float, dry_run: bool) -> None:
    """Remove the contents (forms, envelope bytes) of old, closed case threads.

    A thread is kept whole while it is under a legal hold or has an open message: queued or in
    retry, undeliverable and not resent, or received and not yet opened by a clerk. Digests,
    receipts and signed evidence are always kept, so every receipt and evidence record still
    verifies (docs/retention.md). Works while the node runs.
    """
    config = load_config(config_path)
    report = asyncio.run(_purge(config, days, dry_run))
    cutoff = dt.datetime.fromtimestamp(report.cutoff / 1000, dt.UTC).isoformat(timespec="seconds")
    verb = "Would purge" if dry_run else "Purged"
    click.echo(
        f"{verb} {report.cases} case thread(s), {report.messages} message(s), "
        f"{report.freed_bytes} bytes of content, last active before {cutoff}."
    )
    click.echo(
        f"Kept: {report.kept_open} old thread(s) with an open message, "
        f"{report.kept_held} under a legal hold."
    )


async def _purge(config: NodeConfig, days: float, dry_run: bool) -> retention.PurgeReport:
    db = await open_database(config.database_location)
    try:
        return await retention.purge(
            db, older_than_days=days, now=int(time.time() * 1000), dry_run=dry_run
        )
    finally:
        await db.close()


# --- running a node ------------------------------------------------------------------------------


@cli.command("run")
@click.option("--config", "config_path", type=FILE_OPTION, required=True, help="config.toml.")
@click.option(
    "--ready-file",
    type=FILE_OPTION,
    help="Written (JSON: clerk_url, peer_url) once the node serves.",
)
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default="info", show_default=True)
@click.option(
    "--log-format",
    type=click.Choice(logs.LOG_FORMATS),
    help="text, or one JSON object a line  [default: node.log_format of the config]",
)
def run(config_path: Path, ready_file: Path | None, log_level: str, log_format: str | None) -> None:
    """Run a node until SIGTERM or Ctrl-C, then stop cleanly.

    Logs go to standard error, as text or JSON lines (node.log_format, --log-format), each
    line of a clerk API call or a delivery with its request id. A bad setting stops it at
    once, naming the setting (e.g. delivery.max_backoff_s).
    """
    config = load_config(config_path)
    _configure_logging(log_level, log_format or config.node.log_format)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_until_stopped(config, str(ready_file) if ready_file else None))


# --- a local network of processes ----------------------------------------------------------------


@cli.group("network")
def network_group() -> None:
    """A local network of nodes on 127.0.0.1, each a background process (for tests and demos)."""


def _states(text: str | None) -> list[str] | None:
    if text is None:
        return None
    states = [s.strip().upper() for s in text.split(",") if s.strip()]
    bad = [s for s in states if s not in OAS_STATES]
    if bad:
        raise ConfigError(f"{', '.join(bad)}: not the code of an OAS member state", field="states")
    if len(states) < 2 or len(set(states)) != len(states):
        raise ConfigError("give at least two different states, e.g. AR,BR,US", field="states")
    return states


@network_group.command("up")
@click.option("--dir", "folder", type=DIR_OPTION, required=True, help="Network folder.")
@click.option("--states", help="Comma-separated state codes of a new network  [default: AR,BR,US]")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=supervisor.START_TIMEOUT_S,
    show_default=True,
    help="Seconds to wait for every node to be ready.",
)
@click.option(
    "--database",
    "database_server",
    metavar="URL",
    help="A new network's nodes on this PostgreSQL server (postgresql://USER@HOST:PORT/), one "
    "new database per state, instead of SQLite files.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 16),
    default=1,
    show_default=True,
    help="Processes per state of a new network, sharing its database (needs --database).",
)
def network_up(
    folder: Path, states: str | None, timeout: float, database_server: str | None, workers: int
) -> None:
    """Create a local network in DIR (or restart its stopped nodes) and wait until it is ready.

    A new network gets an authority, one node per state on free loopback ports, and a
    clerk, an auditor and an admin token per node. Each node runs in the background with
    its log in DIR/nodes/STATE/node.log. DIR/network.json (0600) lists URLs, tokens, files
    and pids. Run again on the same DIR, it restarts the stopped nodes with the same keys,
    database, ports and tokens.

    With --database and --workers N, each state's N workers share one PostgreSQL database,
    each with its own ports (DIR/nodes/STATE/worker-K.toml, worker-K.log); the directory
    lists every worker's peer endpoint, and network.json lists them under "workers".
    """
    if database_server is not None and not database_server.startswith(
        ("postgresql://", "postgres://")
    ):
        raise ConfigError("--database takes a postgresql:// URL", field="database")
    with _sigterm_as_interrupt():
        manifest, started = supervisor.network_up(
            folder,
            _states(states),
            timeout=timeout,
            workers=workers,
            database_server=database_server,
        )
    click.echo(f"Network ready in {manifest.folder} ({len(started)} node(s) started now).")
    _echo_table(manifest)
    click.echo(f"Tokens: {manifest.folder / localnet.NETWORK_FILE}")
    click.echo(f"Stop it with: mla-node network down --dir {folder}")


def _echo_table(manifest: localnet.Manifest) -> None:
    rows = [("STATE", "PID", "CLERK API", "PEER ENDPOINT", "LOG")]
    rows += [
        (n.state, str(n.pid or "-"), n.clerk_url, n.peer_url, str(n.log))
        for n in manifest.processes().values()
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@network_group.command("down")
@click.option("--dir", "folder", type=DIR_OPTION, required=True, help="Network folder.")
@click.option(
    "--timeout", type=click.FloatRange(min=0), default=supervisor.STOP_TIMEOUT_S,
    show_default=True, help="Seconds to wait after SIGTERM before SIGKILL.",
)  # fmt: skip
def network_down(folder: Path, timeout: float) -> None:
    """Stop every node of the network in DIR: SIGTERM, then SIGKILL after the timeout.

    Exits 0 once nothing runs, also when nothing was running.
    """
    if localnet.read_manifest(folder.resolve()) is None:
        click.echo(f"No network in {folder}: nothing to stop.", err=True)
        return
    for result in supervisor.network_down(folder, timeout=timeout):
        click.echo(f"{result.state}  {result.how}" + (f" (pid {result.pid})" if result.pid else ""))


@network_group.command("start-node")
@click.argument("state")
@click.option("--dir", "folder", type=DIR_OPTION, required=True, help="Network folder.")
@click.option(
    "--timeout", type=click.FloatRange(min=1), default=supervisor.START_TIMEOUT_S,
    show_default=True, help="Seconds to wait for the node to be ready.",
)  # fmt: skip
def network_start_node(state: str, folder: Path, timeout: float) -> None:
    """Start one stopped node of the network in DIR, with its keys, database and ports."""
    node, started = supervisor.start_node(folder, state.upper(), timeout=timeout)
    click.echo(f"{node.state}  {'started' if started else 'already running'} (pid {node.pid})")


@network_group.command("stop-node")
@click.argument("state")
@click.option("--dir", "folder", type=DIR_OPTION, required=True, help="Network folder.")
@click.option("--kill", is_flag=True, help="SIGKILL at once, as a crash would.")
def network_stop_node(state: str, folder: Path, kill: bool) -> None:
    """Stop one node of the network in DIR: SIGTERM and wait, or SIGKILL with --kill."""
    result = supervisor.stop_node(folder, state.upper(), kill=kill)
    click.echo(f"{result.state}  {result.how}" + (f" (pid {result.pid})" if result.pid else ""))


@network_group.command("env")
@click.option("--dir", "folder", type=DIR_OPTION, required=True, help="Network folder.")
def network_env(folder: Path) -> None:
    """Print shell variables for each node of the network in DIR, for curl by hand.

    `eval "$(mla-node network env --dir DIR)"` sets AR_URL, AR_TOKEN (clerk),
    AR_AUDITOR_TOKEN and AR_ADMIN_TOKEN, and the same for every other state.
    """
    manifest = localnet.read_manifest(folder.resolve())
    if manifest is None:
        raise ConfigError(f"no network in {folder}: run `mla-node network up` first", field="dir")
    for node in manifest.nodes.values():
        for name, value in (
            ("URL", node.clerk_url),
            ("TOKEN", node.token),
            ("AUDITOR_TOKEN", node.auditor_token),
            ("ADMIN_TOKEN", node.admin_token),
        ):
            click.echo(f"export {node.state}_{name}={shlex.quote(value)}")


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Let SIGTERM unwind like Ctrl-C, so the nodes this command started are stopped too."""

    def interrupt(signum: int, frame: object) -> NoReturn:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- treaty forms --------------------------------------------------------------------------------


@cli.group("forms")
def forms_group() -> None:
    """The treaty forms a clerk fills in: their types and examples."""


@forms_group.command("list")
def forms_list() -> None:
    """List the form types: the requests that open a case, and the follow-ups in it."""
    for title, kinds in (("requests", forms.REQUEST_TYPES), ("follow-ups", forms.FOLLOW_UP_TYPES)):
        click.echo(f"{title}: {', '.join(sorted(kinds))}")


@forms_group.command("example")
@click.argument("form_type", type=click.Choice(sorted(forms.ALL_TYPES)))
@click.option("--to", help="For a request: the requested state, to print a whole submission.")
def forms_example(form_type: str, to: str | None) -> None:
    """Print a valid example of FORM_TYPE as JSON (with --to: the body of a POST).

    A request needs --to; a follow-up's body is POSTed to /api/v1/requests/{id}/replies.
    """
    body: dict[str, Any] = {"type": form_type}
    if form_type in forms.REQUEST_TYPES:
        if to is None:
            raise click.UsageError("a request needs --to STATE (the requested state)")
        body["to"] = to.upper()
    body["form"] = forms.example(form_type)
    click.echo(json.dumps(body, indent=2, ensure_ascii=False))


# --- the demo ------------------------------------------------------------------------------------


@cli.command("demo")
@click.option("--once", is_flag=True, help="Exit when both receipts are verified (0) or not (1).")
@click.option(
    "--dir",
    "folder",
    type=DIR_OPTION,
    help="Network folder, kept afterwards (e.g. ./demo-network)  [default: a temporary one]",
)
def demo(once: bool, folder: Path | None) -> None:
    """Three states on this machine exchange two requests through the real clerk API.

    AR sends a mutual legal assistance request to BR; US sends an extradition request to AR.
    The demo waits until each sender has verified its signed receipt, then BR acknowledges
    AR's request. It prints each request's receipt and evidence timeline, and how long it
    took from start to the second verified receipt (at most 90 s).

    Without --once the network keeps running with its clerk URLs, tokens and a curl example
    printed, until Ctrl-C.
    """
    started = time.monotonic()
    deadline = started + DEMO_TIMEOUT_S
    temporary = folder is None
    where = Path(tempfile.mkdtemp(prefix="mla-node-demo-")) if folder is None else folder
    new = not (where / localnet.NETWORK_FILE).exists()
    click.echo(f"Starting {', '.join(DEMO_STATES)} in {where} ...")
    succeeded = False
    with _sigterm_as_interrupt():
        manifest, procs = supervisor.network_up(
            where,
            list(DEMO_STATES) if new else None,
            timeout=min(supervisor.START_TIMEOUT_S, DEMO_TIMEOUT_S),
        )
        try:
            ready_s = time.monotonic() - started
            click.echo(f"Network ready after {ready_s:.2f} s.")
            result = asyncio.run(
                run_scenario(manifest, started=started, deadline=deadline, say=click.echo)
            )
            for line in report(result):
                click.echo(line)
            click.echo("")
            click.echo(
                f"Second verified receipt {result.second_receipt_s:.2f} s after start "
                f"({result.second_receipt_s - ready_s:.2f} s after the network was ready)."
            )
            succeeded = True
            if not once:
                for line in by_hand(manifest, result.requests[-1].id):
                    click.echo(line)
                with contextlib.suppress(KeyboardInterrupt):
                    while True:
                        time.sleep(1)
                click.echo("\nStopping the network ...")
        finally:
            supervisor.network_down(where, procs=procs)
            if temporary and succeeded:
                shutil.rmtree(where, ignore_errors=True)
            elif not succeeded:
                click.echo(f"Network files and node logs kept in {where}", err=True)
