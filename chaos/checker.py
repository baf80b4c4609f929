"""The checker: the clerks' history against what every node holds, Jepsen style.

It reads each node's SQLite file directly (read-only, after the network stopped) rather than
asking the nodes, so a node that lies or lost its mind cannot talk its way out of a finding.

Findings, each a list of message ids or operation keys:

- ``lost``: a clerk was told "created" (201) but the recipient does not hold the message;
- ``duplicated``: one clerk operation delivered more than once (two messages with its key in an
  inbox, or two outbound messages for one Idempotency-Key);
- ``unexpected``: an inbox message no clerk submitted;
- ``pending``: still in an outbox, or submitted but neither delivered nor settled;
- ``bad_receipts``: a delivered message whose sender does not hold exactly one receipt that
  verifies against the directory, for this envelope, signed by the recipient;
- ``integrity``: a database whose ``PRAGMA integrity_check`` is not ``ok``.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mla_node.errors import MlaError
from mla_node.protocol.directory import Directory, TrustRoot, verify_directory
from mla_node.protocol.receipts import verify_receipt


@dataclass
class Operation:
    """One clerk action: submit a request from ``sender`` to ``recipient`` under ``key``."""

    key: str
    sender: str
    recipient: str
    message_id: str | None = None  # set once a 201 was seen
    attempts: int = 0
    outcome: str = "pending"  # created | gave_up | refused:<code>


@dataclass
class Verdict:
    operations: int
    created: int
    delivered: int
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    bad_receipts: list[str] = field(default_factory=list)
    integrity: dict[str, str] = field(default_factory=dict)
    not_created: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.unexpected
            or self.pending
            or self.bad_receipts
            or self.not_created
            or any(v != "ok" for v in self.integrity.values())
        )

    def as_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "operations": self.operations,
            "created": self.created,
            "delivered": self.delivered,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "unexpected": self.unexpected,
            "pending": self.pending,
            "bad_receipts": self.bad_receipts,
            "not_created": self.not_created,
            "integrity": self.integrity,
        }


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    return conn


def _directory(node_folder: Path) -> Directory:
    trust = TrustRoot.from_json((node_folder / "trust-root.json").read_bytes())
    # now=0: an audit after the fact checks signatures, not whether the directory is still fresh.
    return verify_directory((node_folder / "directory.bin").read_bytes(), trust, now=0)


def check(history: list[Operation], databases: dict[str, Path]) -> Verdict:
    """Compare the history with the databases of a stopped network (state → node.db)."""
    created = {op.message_id: op for op in history if op.message_id}
    verdict = Verdict(operations=len(history), created=len(created), delivered=0)
    verdict.not_created = [op.key for op in history if op.message_id is None]
    inboxes: dict[str, list[sqlite3.Row]] = {}
    outbound: dict[str, list[sqlite3.Row]] = {}
    for state, path in databases.items():
        with _connect(path) as conn:
            verdict.integrity[state] = conn.execute("PRAGMA integrity_check").fetchone()[0]
            inboxes[state] = conn.execute(
                "SELECT id, sender, recipient, form FROM messages WHERE direction = 'in'"
            ).fetchall()
            outbound[state] = conn.execute(
                "SELECT m.id, m.recipient, m.status, m.envelope_sha256, m.form, "
                "r.receipt, r.status AS receipt_status, "
                "(SELECT COUNT(*) FROM receipts WHERE message_id = m.id) AS receipts, "
                "(SELECT COUNT(*) FROM outbox WHERE message_id = m.id) AS queued "
                "FROM messages m LEFT JOIN receipts r ON r.message_id = m.id "
                "WHERE m.direction = 'out'"
            ).fetchall()

    key_of = {op.message_id: op.key for op in history if op.message_id}
    ops_by_key = {op.key: op for op in history}
    for state, rows in inboxes.items():
        seen_keys: Counter[str] = Counter()
        for row in rows:
            op = created.get(row["id"])
            if op is None or op.recipient != state or op.sender != row["sender"]:
                # A form whose case reference names an operation is one of ours delivered under an
                # id the clerk never saw: that is a duplicate, not an unexpected message.
                reference = json.loads(row["form"]).get("case_reference", "")
                if reference in ops_by_key and reference.startswith("chaos-"):
                    verdict.duplicated.append(row["id"])
                else:
                    verdict.unexpected.append(row["id"])
                continue
            seen_keys[op.key] += 1
            verdict.delivered += 1
        verdict.duplicated += [k for k, n in seen_keys.items() if n > 1]
        held = {row["id"] for row in rows}
        verdict.lost += [m for m, op in created.items() if op.recipient == state and m not in held]

    for state, rows in outbound.items():
        directory = _directory(databases[state].parent)
        per_key: Counter[str] = Counter()
        for row in rows:
            key = key_of.get(row["id"]) or json.loads(row["form"]).get("case_reference", "")
            per_key[key] += 1
            if row["queued"]:
                verdict.pending.append(row["id"])
            if row["id"] not in created:
                continue
            if row["receipts"] != 1 or row["receipt_status"] != "delivered":
                verdict.bad_receipts.append(row["id"])
                continue
            try:
                verify_receipt(
                    row["receipt"],
                    directory,
                    expect_message_id=row["id"],
                    expect_envelope_digest=row["envelope_sha256"],
                    expect_signer=row["recipient"],
                )
            except MlaError:
                verdict.bad_receipts.append(row["id"])
        verdict.duplicated += [k for k, n in per_key.items() if n > 1 and k.startswith("chaos-")]
    return verdict
