"""``mla-node audit``: the auditor's commands (docs/audit.md)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from mla_node import auditor
from mla_node.cli_common import EXIT_CHECK_FAILED, FILE_OPTION, iso_ms, read_file
from mla_node.errors import ClientError
from mla_node.protocol.directory import TrustRoot, verify_directory


@click.group("audit")
def audit_group() -> None:
    """Verify a node's evidence log offline: export it, check every signature, the tree and
    every checkpoint (docs/audit.md)."""


@audit_group.command("export")
@click.option("--db", "db_path", type=FILE_OPTION, required=True, help="The node's database.")
@click.option("-o", "--output", type=FILE_OPTION, required=True, help="JSON Lines file to write.")
def audit_export(db_path: Path, output: Path) -> None:
    """Write the node's whole evidence log as JSON Lines: its checkpoints, then every record with
    its inclusion proof against the newest checkpoint.

    Opens the database read-only, so it works while the node runs.
    """
    log = auditor.read_database(db_path)
    lines = auditor.write_export(log, output)
    click.echo(
        f"Exported {len(log.entries)} evidence record(s) and {len(log.checkpoints)} "
        f"checkpoint(s) of {log.node or 'an unknown node'} to {output} ({lines} lines)."
    )


@audit_group.command("verify")
@click.option("--db", "db_path", type=FILE_OPTION, help="A node's database (read-only).")
@click.option("--export", "export_path", type=FILE_OPTION, help="An `audit export` file.")
@click.option("--trust", "trust_path", type=FILE_OPTION, required=True, help="trust-root.json.")
@click.option(
    "--directory", "directory_path", type=FILE_OPTION, required=True, help="directory.bin."
)
@click.option("--node", "node", help="The state whose log this must be  [default: as it says]")
@click.option("--workers", type=click.IntRange(min=1), help="Processes  [default: one per CPU]")
def audit_verify(
    db_path: Path | None,
    export_path: Path | None,
    trust_path: Path,
    directory_path: Path,
    node: str | None,
    workers: int | None,
) -> None:
    """Verify a node's whole evidence log offline, from its database or an export.

    Checks every record's signature, that seqs run without a gap, every checkpoint's signature,
    that each checkpoint's root is the tree of the records it covers, and consistency between
    successive checkpoints (and each record's inclusion proof, in an export). Exits 1 naming the
    first bad entry (its seq and why) when anything fails.
    """
    if (db_path is None) == (export_path is None):
        raise ClientError("give exactly one of --db and --export")
    started = time.perf_counter()
    trust = TrustRoot.from_json(read_file(trust_path))
    # now=0: an audit after the fact checks signatures, not whether the directory is still fresh.
    directory = verify_directory(read_file(directory_path), trust, now=0)
    if db_path is not None:
        log = auditor.read_database(db_path)
    else:
        assert export_path is not None
        log = auditor.read_export(export_path)
    report = auditor.verify(log, directory, node=node, workers=workers)
    elapsed = time.perf_counter() - started
    bad = report.first_bad
    if bad is not None:
        click.echo(f"FAILED: {bad}", err=True)
        if len(report.findings) > 1:
            click.echo(f"({len(report.findings) - 1} more problem(s) after it)", err=True)
        sys.exit(EXIT_CHECK_FAILED)
    newest = report.checkpoints[-1] if report.checkpoints else None
    rows = [
        ("node", report.node),
        ("entries", str(report.entries)),
        ("checkpoints", str(len(report.checkpoints))),
        ("newest checkpoint", f"size {newest.size}, at {iso_ms(newest.at)}" if newest else "none"),
        ("not yet in a checkpoint", str(report.uncovered)),
        ("inclusion proofs checked", str(report.proofs_checked)),
        ("root", report.root.hex()),
        ("time", f"{elapsed:.2f} s"),
    ]
    click.echo("Log verified: every signature, the tree and every checkpoint.")
    for name, value in rows:
        click.echo(f"  {name:<25} {value}")
