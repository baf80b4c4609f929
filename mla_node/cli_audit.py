"""``mla-node audit``: the auditor's commands (docs/audit.md)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import click

from mla_node import auditor
from mla_node.cli_common import EXIT_CHECK_FAILED, FILE_OPTION, iso_ms, read_file
from mla_node.errors import BundleInvalid, CheckpointInvalid, ClientError, LogProofInvalid
from mla_node.protocol.bundle import verify_bundle
from mla_node.protocol.directory import TrustRoot, verify_directory
from mla_node.protocol.evidence import Evidence, verify_evidence
from mla_node.protocol.reconcile import reconcile
from mla_node.service.bundles import build_bundle
from mla_node.storage.readonly import ReadOnlyDatabase
from mla_node.witness_file import check_split_view_file, summary_lines


@click.group("audit")
def audit_group() -> None:
    """Verify a node's evidence log offline: export it, check every signature, the tree and
    every checkpoint (docs/audit.md)."""


@audit_group.command("export")
@click.option("--db", "db_path", type=FILE_OPTION, required=True, help="The node's database.")
@click.option("-o", "--output", type=FILE_OPTION, required=True, help="File to write.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["jsonl", "csv"]),
    default="jsonl",
    show_default=True,
    help="jsonl: the verifiable export; csv: the records decoded, for reading.",
)
def audit_export(db_path: Path, output: Path, output_format: str) -> None:
    """Write the node's whole evidence log as JSON Lines: its checkpoints, then every record with
    its inclusion proof against the newest checkpoint (`audit verify --export` checks it). With
    --format csv, one row per record, decoded but not verified: a reading aid.

    Opens the database read-only, so it works while the node runs.
    """
    log = auditor.read_database(db_path)
    if output_format == "csv":
        rows = auditor.write_csv(log, output)
        click.echo(f"Wrote {rows} record(s) of {log.node or 'an unknown node'} to {output} (CSV).")
        return
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


@audit_group.command("bundle")
@click.argument("request_id")
@click.option("--db", "db_path", type=FILE_OPTION, required=True, help="The node's database.")
@click.option("-o", "--output", type=FILE_OPTION, required=True, help="Bundle file to write.")
@click.option(
    "--with-content",
    is_flag=True,
    help="Disclose each message's content (personal data): only for who may read it.",
)
def audit_bundle(request_id: str, db_path: Path, output: Path, with_content: bool) -> None:
    """Write the evidence bundle of the case REQUEST_ID belongs to: its envelopes and receipts,
    the node's evidence records with inclusion proofs, the node's checkpoint and the directory.

    Opens the database read-only (it works while the node runs, on a copy or a backup). Records
    newer than the node's newest checkpoint cannot be proven yet and are left out (the command
    says how many); the auditor API (GET /api/v1/audit/bundles/ID) signs a fresh checkpoint first.
    """
    with ReadOnlyDatabase(db_path) as db:
        bundle = asyncio.run(build_bundle(db, request_id, with_content=with_content))
    output.write_bytes(bundle.data)
    click.echo(
        f"Wrote the bundle of case {bundle.case_id} ({bundle.node}): {bundle.messages} "
        f"message(s), {bundle.records} evidence record(s), checkpoint of size "
        f"{bundle.checkpoint_size}, to {output} ({len(bundle.data)} bytes)."
    )
    if bundle.left_out:
        click.echo(
            f"{bundle.left_out} newer record(s) of the case are not in a checkpoint yet and were "
            "left out; write the bundle again after the node's next checkpoint.",
            err=True,
        )


@audit_group.command("verify-bundle")
@click.argument("files", type=FILE_OPTION, nargs=-1, required=True)
@click.option("--trust", "trust_path", type=FILE_OPTION, required=True, help="trust-root.json.")
@click.option("--show-content", is_flag=True, help="Print disclosed forms as JSON.")
def audit_verify_bundle(files: tuple[Path, ...], trust_path: Path, show_content: bool) -> None:
    """Verify evidence bundles offline with nothing but the network's trust root, and print
    what each shows: who sent what to whom, when, when it was delivered and every step the
    node recorded. Exits 1 naming the first part that fails."""
    trust = TrustRoot.from_json(read_file(trust_path))
    failed = False
    for path in files:
        try:
            report = verify_bundle(read_file(path), trust)
        except BundleInvalid as exc:
            click.echo(f"FAILED: {path}: {exc.detail}", err=True)
            failed = True
            continue
        head = report.checkpoint
        click.echo(
            f"Bundle verified: {path}\n"
            f"  case {report.case}, written by {report.node}; directory version "
            f"{report.directory_version}; log checkpoint of size {head.size} signed "
            f"{iso_ms(head.at)}; {len(report.messages)} message(s), "
            f"{len(report.evidence)} evidence record(s), every signature and proof checked."
        )
        for line in report.account():
            click.echo(f"  {line}")
        if show_content:
            for m in report.messages:
                if m.body is not None:
                    form = json.dumps(m.body.get("form"), indent=2, ensure_ascii=False)
                    click.echo(f"  content of {m.header.message_id}:\n{form}")
    if failed:
        sys.exit(EXIT_CHECK_FAILED)


@audit_group.command("reconcile")
@click.argument("log_a", metavar="A", type=FILE_OPTION)
@click.argument("log_b", metavar="B", type=FILE_OPTION)
@click.option("--trust", "trust_path", type=FILE_OPTION, required=True, help="trust-root.json.")
@click.option(
    "--directory", "directory_path", type=FILE_OPTION, required=True, help="directory.bin."
)
def audit_reconcile(log_a: Path, log_b: Path, trust_path: Path, directory_path: Path) -> None:
    """Reconcile two nodes' logs (each a database or an `audit export` file): every envelope
    one sent and got a receipt for is recorded by the other as delivered with that receipt, and
    everything one recorded receiving, the other recorded sending.

    Both logs are verified first. Exits 1 listing every mismatch.
    """
    trust = TrustRoot.from_json(read_file(trust_path))
    directory = verify_directory(read_file(directory_path), trust, now=0)
    nodes: list[tuple[str, list[Evidence]]] = []
    for path in (log_a, log_b):
        log = _read_log(path)
        report = auditor.verify(log, directory)
        if report.first_bad is not None:
            click.echo(
                f"FAILED: {path}: the log itself does not verify: {report.first_bad}", err=True
            )
            sys.exit(EXIT_CHECK_FAILED)
        records = [e.record for e in log.entries if e.record is not None]
        nodes.append(
            (report.node, [verify_evidence(r, directory, node=report.node) for r in records])
        )
    (a, a_log), (b, b_log) = nodes
    if a == b:
        raise ClientError(f"both logs are {a}'s; give the logs of two nodes")
    result = reconcile(a, a_log, b, b_log)
    click.echo(f"Reconciled the logs of {a} and {b} (both verified):")
    click.echo(f"  delivered, both logs agree      {result.matched}")
    click.echo(f"  still in flight                 {result.in_flight}")
    click.echo(f"  refused or given up             {result.refused}")
    click.echo(f"  mismatches                      {len(result.mismatches)}")
    for mismatch in result.mismatches:
        click.echo(f"MISMATCH: {mismatch}", err=True)
    if not result.ok:
        sys.exit(EXIT_CHECK_FAILED)


def _read_log(path: Path) -> auditor.NodeLog:
    """A database or an export, told apart by the SQLite file header."""
    if not path.is_file():
        raise ClientError(f"no log at {path}: give a node database or an `audit export` file")
    with path.open("rb") as f:
        is_database = f.read(16) == b"SQLite format 3\x00"
    return auditor.read_database(path) if is_database else auditor.read_export(path)


@audit_group.command("verify-split-view")
@click.argument("file", type=FILE_OPTION)
@click.option("--trust", "trust_path", type=FILE_OPTION, required=True, help="trust-root.json.")
@click.option(
    "--directory", "directory_path", type=FILE_OPTION, required=True, help="directory.bin."
)
def audit_verify_split_view(file: Path, trust_path: Path, directory_path: Path) -> None:
    """Check a split-view evidence file a node wrote when a peer showed it two histories of its
    log: both checkpoints signed by that peer, and no consistency between them.

    Exits 0 when the file proves a split view, 1 when it does not (naming why)."""
    trust = TrustRoot.from_json(read_file(trust_path))
    directory = verify_directory(read_file(directory_path), trust, now=0)
    try:
        view = check_split_view_file(file, directory)
    except (CheckpointInvalid, LogProofInvalid) as exc:
        click.echo(f"FAILED: {file}: [{exc.code}] {exc.detail}", err=True)
        sys.exit(EXIT_CHECK_FAILED)
    for line in summary_lines(view):
        click.echo(line)
