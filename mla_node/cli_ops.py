"""The operators' commands: ``backup``, ``restore``, ``db check``, ``db port``, ``doctor``,
``conformance``
(docs/deployment.md). Each prints what it found; a check that fails exits 1, an error 2."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import click

from mla_node import backup, conformance, dbport, doctor
from mla_node.cli_common import EXIT_CHECK_FAILED, FILE_OPTION
from mla_node.config import NodeConfig, load_config
from mla_node.errors import ClientError
from mla_node.identity import load_identity
from mla_node.passphrase import configured_passphrase
from mla_node.protocol.directory import Directory, NodeEntry, TrustRoot, verify_directory
from mla_node.storage import pg_engine
from mla_node.transport.http import HttpTransport

CONFIG = click.option(
    "--config", "config_path", type=FILE_OPTION, required=True, help="The node's config.toml."
)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[-1]]).rstrip())


@click.command("backup")
@CONFIG
@click.option("-o", "--output", type=FILE_OPTION, required=True, help="The backup file to write.")
def backup_command(config_path: Path, output: Path) -> None:
    """Copy the node's database to OUTPUT, online: the node keeps running and writing.

    The copy is one consistent snapshot (SQLite's online backup API, WAL included), a single
    file, mode 0600, checked before it is kept. The keys are not in it: back up keys/ apart
    (docs/deployment.md, Backups).
    """
    config = load_config(config_path)
    report = backup.backup(config.database_path, output)
    f = report.facts
    click.echo(
        f"Backed up {config.database_path} to {output} in {report.seconds:.2f} s "
        f"({report.size} bytes): {f.messages} message(s), {f.evidence} evidence record(s), "
        f"schema version {f.schema_version}, integrity ok."
    )


@click.command("restore")
@click.argument("backup_file", type=FILE_OPTION)
@CONFIG
def restore_command(backup_file: Path, config_path: Path) -> None:
    """Replace the node's database with BACKUP_FILE, then verify the node's evidence log.

    Refuses while the node runs (database_in_use). The database it replaces is kept beside it
    as NAME.before-restore-TIME. Exits 1 when the restored log does not verify.
    """
    config = load_config(config_path)
    report = backup.restore(backup_file, config, now=dt.datetime.now(dt.UTC))
    f = report.facts
    click.echo(
        f"Restored {config.database_path} from {backup_file}: {f.messages} message(s), "
        f"{f.evidence} evidence record(s), schema version {f.schema_version}."
    )
    if report.kept is not None:
        click.echo(f"The database it replaced is kept as {report.kept}.")
    bad = report.log.first_bad
    if bad is not None:
        click.echo(f"FAILED: the restored log does not verify: {bad}", err=True)
        sys.exit(EXIT_CHECK_FAILED)
    click.echo(
        f"Log verified: {report.log.entries} record(s), {len(report.log.checkpoints)} "
        "checkpoint(s), every signature and the tree."
    )


@click.command("check")
@CONFIG
def db_check_command(config_path: Path) -> None:
    """Check the node's database: integrity, migrations, and its evidence log.

    Read-only, so it works while the node runs. A database written by a newer mla_node is an
    error (database_too_new, exit 2), as it is for the node itself; a failed check exits 1.
    """
    checks = backup.check_database(load_config(config_path))
    _table([("CHECK", "RESULT", "DETAIL")] + [(c.name, _word(c.ok), c.detail) for c in checks])
    if not all(c.ok for c in checks):
        sys.exit(EXIT_CHECK_FAILED)


@click.command("port")
@CONFIG
@click.option(
    "--to", "url", required=True, metavar="URL",
    help="An empty PostgreSQL database: postgresql://USER@HOST:PORT/DBNAME.",
)  # fmt: skip
def db_port_command(config_path: Path, url: str) -> None:
    """Copy a stopped node's SQLite database (node.database) into an empty PostgreSQL
    database, then verify the copy: row counts table by table, and the evidence log read back
    from PostgreSQL, as `mla-node audit verify` checks it.

    Refuses while the node runs, when the target already holds node data and when the file
    was written by a newer mla_node (exit 2). The copy is one transaction: if it fails, the
    target is left empty. Nothing is changed in the config: the command prints the line to set.
    Exits 1 when the verification fails.
    """
    config = load_config(config_path)
    click.echo(f"Porting {config.database_path} to {pg_engine.redacted(url)} ...")
    report = asyncio.run(dbport.port(config, url))
    rows = [("TABLE", "SQLITE", "POSTGRESQL")]
    rows += [(t.table, str(t.source_rows), str(t.target_rows)) for t in report.tables]
    _table(rows)
    copied = sum(t.target_rows for t in report.tables)
    click.echo(
        f"Copied {copied} row(s) of {len(report.tables)} table(s) in {report.copy_seconds:.2f} s "
        f"(one transaction); identity sequences advanced: {', '.join(report.sequences) or 'none'}."
    )
    log, failed = report.log, False
    if not report.counts_ok:
        bad = ", ".join(t.table for t in report.tables if not t.ok)
        click.echo(f"FAILED: the row counts differ in {bad}", err=True)
        failed = True
    if log.first_bad is not None:
        click.echo(f"FAILED: the log read back from PostgreSQL does not verify: {log.first_bad}",
                   err=True)  # fmt: skip
        failed = True
    elif report.source_checkpoint != report.target_checkpoint:
        click.echo(
            f"FAILED: the newest checkpoint differs: {_head(report.source_checkpoint)} in "
            f"SQLite, {_head(report.target_checkpoint)} in PostgreSQL",
            err=True,
        )
        failed = True
    if failed:
        click.echo(
            "Do not switch the node to PostgreSQL; it can keep running on its SQLite file.",
            err=True,
        )
        sys.exit(EXIT_CHECK_FAILED)
    click.echo(
        f"Log verified on PostgreSQL in {report.verify_seconds:.2f} s: {log.entries} record(s), "
        f"{len(log.checkpoints)} checkpoint(s), every signature and the tree; newest checkpoint "
        f"{_head(report.target_checkpoint)}, the same as in SQLite."
    )
    click.echo(f"Now set, in the [node] section of {config_path}:")
    shown = pg_engine.redacted(url)
    click.echo(f'  database = "{shown}"')
    if shown != url:
        click.echo("  (with the password in place of ***, or none there and it in ~/.pgpass)")
    files = dbport.files_line(config)
    if files is not None:
        click.echo(f"  {files}    # the evidence files stay where they are")
    click.echo(
        f"and start the node. {config.database_path} is left as it was: keep it until the node "
        "runs well on PostgreSQL."
    )


def _head(head: tuple[int, bytes] | None) -> str:
    return "none" if head is None else f"size {head[0]}, root {head[1].hex()[:16]}"


def _word(ok: bool) -> str:
    return doctor.OK if ok else doctor.FAIL


@click.command("doctor")
@CONFIG
@click.option(
    "--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
    help="Seconds to wait for each peer.",
)  # fmt: skip
def doctor_command(config_path: Path, timeout: float) -> None:
    """Check a node: config, key files and their modes, certificates, the directory, the
    database, and a signed round trip to each peer. Exits 1 on any failed check.

    The round trip leaves nothing at the peer: its envelope is refused by design, with a
    rejection the peer signs and this command verifies (docs/deployment.md, Doctor).
    """
    config = load_config(config_path)
    rows = asyncio.run(doctor.diagnose(config, _now_ms(), peer_timeout_s=timeout))
    _table([("CHECK", "RESULT", "DETAIL")] + [(r.check, r.status, r.detail) for r in rows])
    failed = [r for r in rows if r.status == doctor.FAIL]
    if failed:
        click.echo(f"{len(failed)} problem(s) found.", err=True)
        sys.exit(EXIT_CHECK_FAILED)


@click.command("conformance")
@CONFIG
@click.option("--peer", required=True, help="State code of the node to test, e.g. BR.")
@click.option("--url", help="Its peer endpoint  [default: the one the directory lists]")
@click.option(
    "--directory",
    "directory_path",
    type=FILE_OPTION,
    help="A signed directory listing the peer (e.g. the authority's candidate)  "
    "[default: the node's keys.directory]",
)
def conformance_command(
    config_path: Path, peer: str, url: str | None, directory_path: Path | None
) -> None:
    """Check that another state's node fails closed: send it every negative envelope vector,
    re-signed with this node's keys, over mutual TLS.

    Each must be refused with the vector's code and, when its header is readable, with a
    rejection receipt the peer signed; an envelope the peer accepts fails the run (exit 1).
    No case leaves a message at the peer (docs/deployment.md, Conformance).
    """
    config = load_config(config_path)
    directory = _directory(config, directory_path)
    entry = directory.node(peer.upper())
    if entry is None:
        raise ClientError(f"{peer} is not in the directory: give --directory", field="peer")
    if url is not None:
        entry = dataclasses.replace(entry, endpoint=url)
    identity = load_identity(config.keys_dir, configured_passphrase(config))
    cases = conformance.negative_cases(
        directory, config.node.state, entry, identity.signing_key, _now_ms()
    )
    click.echo(f"Sending {len(cases)} bad envelopes to {entry.state} at {entry.endpoint} ...")
    outcomes = asyncio.run(
        _run(identity.tls_cert_path, identity.tls_key_path, entry, directory, cases)
    )
    rows = [("CASE", "RESULT", "EXPECTED", "GOT", "RECEIPT")]
    rows += [(o.case.name, _word(o.ok), o.case.expect, o.got, o.signed) for o in outcomes]
    _table(rows)
    failed = [o for o in outcomes if not o.ok]
    verdict = "fails closed" if not failed else f"does NOT fail closed ({len(failed)} case(s))"
    click.echo(
        f"{entry.state} {verdict}: {len(outcomes) - len(failed)}/{len(outcomes)} as expected."
    )
    if failed:
        sys.exit(EXIT_CHECK_FAILED)


def _directory(config: NodeConfig, path: Path | None) -> Directory:
    trust = TrustRoot.from_json(config.trust_root_path.read_bytes())
    source = path or config.directory_path
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise ClientError(f"cannot read {source}: {exc.strerror}") from exc
    return verify_directory(data, trust, now=_now_ms())


async def _run(
    cert: Path, key: Path, entry: NodeEntry, directory: Directory, cases: list[conformance.Case]
) -> list[conformance.Outcome]:
    transport = HttpTransport(cert, key)
    try:
        return await conformance.run_all(transport, entry, directory, cases)
    finally:
        await transport.close()
