"""A log as CSV (``auditor.write_csv``): one row per record, decoded as it claims to be."""

from __future__ import annotations

import asyncio
import csv
import hashlib
from pathlib import Path

from click.testing import CliRunner

from mla_node import auditor
from mla_node.cli import cli
from mla_node.protocol.auditlog import Entry
from mla_node.protocol.evidence import Event, sign_evidence
from tests.factory import NOW, fixed_signing_key
from tests.test_audit import _traffic

KEY = fixed_signing_key("AR/sign/0")


def _rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def test_every_record_is_a_row_with_its_fields(tmp_path: Path) -> None:
    envelope = hashlib.sha256(b"an envelope").digest()
    receipt = hashlib.sha256(b"a receipt").digest()
    content = hashlib.sha256(b"the content").digest()
    submitted = sign_evidence(
        KEY,
        event=Event.SUBMITTED,
        node="AR",
        message_id="01KDVDNA000000000000000001",
        case_id="case, with a comma",
        at=NOW,
        envelope_digest=envelope,
        peer="BR",
    )
    delivered = sign_evidence(
        KEY,
        event=Event.DELIVERED,
        node="AR",
        message_id="01KDVDNA000000000000000001",
        case_id="case, with a comma",
        at=NOW + 1234,
        envelope_digest=envelope,
        peer="BR",
        receipt_digest=receipt,
        content_digest=content,
    )
    viewed = sign_evidence(
        KEY,
        event=Event.VIEWED,
        node="AR",
        message_id="01KDVDNA000000000000000001",
        case_id="case, with a comma",
        at=NOW + 5000,
        detail='said "hello"\nover two lines',
        actor="clerk:Ana Silva",
    )
    log = auditor.NodeLog(
        "AR",
        [
            Entry(1, submitted),
            Entry(2, delivered),
            Entry(3, viewed),
            Entry(4, b"not a record"),
            Entry(None, None, problem="line 7 is not a readable log entry"),
        ],
        [],
    )
    out = tmp_path / "log.csv"

    assert auditor.write_csv(log, out) == 4

    header, rows = _rows(out)
    assert header == list(auditor.CSV_COLUMNS)
    assert [r["seq"] for r in rows] == ["1", "2", "3", "4"]
    first, second, third, unreadable = rows
    assert first == {
        "seq": "1",
        "event": "submitted",
        "node": "AR",
        "message_id": "01KDVDNA000000000000000001",
        "case_id": "case, with a comma",
        "envelope_sha256": envelope.hex(),
        "peer": "BR",
        "at": str(NOW),
        "at_iso": "2026-01-01T00:00:00.000+00:00",
        "detail": "",
        "receipt_sha256": "",
        "actor": "",
        "content_sha256": "",
        "kid": KEY.kid,
        "sha256": hashlib.sha256(submitted).hexdigest(),
    }
    assert second["receipt_sha256"] == receipt.hex()
    assert second["content_sha256"] == content.hex()
    assert second["at_iso"] == "2026-01-01T00:00:01.234+00:00"
    assert third["detail"] == 'said "hello"\nover two lines'
    assert third["actor"] == "clerk:Ana Silva"
    # What cannot be decoded still has its row, so the seqs stay complete and it can be found.
    assert unreadable["sha256"] == hashlib.sha256(b"not a record").hexdigest()
    assert unreadable["event"] == "" and unreadable["kid"] == ""


def test_an_empty_log_is_a_header(tmp_path: Path) -> None:
    out = tmp_path / "log.csv"
    assert auditor.write_csv(auditor.NodeLog("AR", [], []), out) == 0
    assert _rows(out) == (list(auditor.CSV_COLUMNS), [])


def test_formulas_are_defused_and_impossible_times_kept_out(tmp_path: Path) -> None:
    record = sign_evidence(
        KEY,
        event=Event.REJECTED,
        node="AR",
        message_id="01KDVDNA000000000000000001",
        case_id='=HYPERLINK("https://evil.example","open")',
        at=2**62,
        detail="-1+2",
        actor="@clerk",
    )
    out = tmp_path / "log.csv"
    assert auditor.write_csv(auditor.NodeLog("AR", [Entry(1, record)], []), out) == 1
    (row,) = _rows(out)[1]
    assert row["case_id"] == '\'=HYPERLINK("https://evil.example","open")'
    assert row["detail"] == "'-1+2" and row["actor"] == "'@clerk"
    assert row["at"] == str(2**62) and row["at_iso"] == ""


def test_audit_export_format_csv_from_the_command_line(tmp_path: Path) -> None:
    files = asyncio.run(_traffic(tmp_path / "net"))
    out = tmp_path / "log.csv"
    result = CliRunner().invoke(
        cli, ["audit", "export", "--db", str(files.db), "-o", str(out), "--format", "csv"]
    )
    assert result.exit_code == 0, result.output
    with out.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["seq"]) for r in rows] == list(range(1, len(rows) + 1))
    assert {r["event"] for r in rows} >= {"submitted", "delivered"}
