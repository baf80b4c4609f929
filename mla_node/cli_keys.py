"""``mla-node keys``: a node's own keys: rotation."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from mla_node.cli_common import FILE_OPTION
from mla_node.config import load_config
from mla_node.identity import REGISTRATION_FILE, rotate_keys
from mla_node.passphrase import configured_passphrase


@click.group("keys")
def keys_group() -> None:
    """A node's own keys: rotation."""


@keys_group.command("rotate")
@click.option("--config", "config_path", type=FILE_OPTION, required=True, help="config.toml.")
@click.option(
    "--valid-days",
    type=click.IntRange(min=1),
    default=730,
    show_default=True,
    help="How long the new keys are valid.",
)
def keys_rotate(config_path: Path, valid_days: int) -> None:
    """Make new signing and encryption keys and the registration that announces them.

    The current keys move to keys/retired/: the node still opens envelopes sealed to them and
    keeps them as proof of what it signed. The TLS key is not changed. Works while the node runs;
    it goes on signing with the old key until a directory lists the new one, then switches by
    itself. New key files are sealed when the config names a passphrase (which must open the
    current ones).

    Send keys/registration.json to the network authority and confirm the new signing key id
    with them out of band. They admit it with an overlap, so that what the old keys sealed or
    signed is still accepted while every node picks up the new directory, and keep the node's
    TLS certificate.
    """
    config = load_config(config_path)
    now = dt.datetime.now(dt.UTC)
    rotation = rotate_keys(
        config.keys_dir,
        now_ms=int(now.timestamp() * 1000),
        passphrase=configured_passphrase(config),
        key_valid_days=valid_days,
    )
    click.echo(f"New keys for {config.node.state} in {config.keys_dir}.")
    click.echo(f"  signing key id: {rotation.signing_kid}  (confirm it with the authority)")
    click.echo(f"  registration:   {rotation.registration}")
    for kid, path in rotation.retired.items():
        click.echo(f"  retired:        {kid}  ->  {path}")
    click.echo(
        f"Next: send {REGISTRATION_FILE} to the network authority, to be admitted with an "
        "overlap and the same TLS certificate; the node switches keys once the new directory "
        "lists them."
    )
