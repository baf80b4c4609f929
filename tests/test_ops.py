"""Operations on real nodes (issue 8): metrics that move with traffic, one request id across two
nodes, /readyz failing for each cause, the alerts, and JSON log lines."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sqlite3
import time
from pathlib import Path

import pytest

from mla_node import logs
from mla_node.protocol import forms
from mla_node.service.alerts import deadline_forms, legal_deadlines
from mla_node.storage import ops_repo, repo
from mla_node.storage.db import SQLITE_MIGRATIONS, Database, Transaction, open_database
from mla_node.storage.engine import load_migrations
from mla_node.storage.ops_repo import FormRow
from tests.netkit import RunningNode, running_network, wait_for

DAY_MS = 86_400_000
SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? (\S+)$")


async def scrape(node: RunningNode) -> dict[str, float]:
    """Every sample of /metrics as ``name{labels}`` -> value."""
    async with node.http.get(
        node.runtime.clerk_url + "/metrics", headers=node.headers("auditor")
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    samples = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        match = SAMPLE.match(line)
        assert match, line
        samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return samples


async def delivered(node: RunningNode, ids: list[str]) -> bool:
    for message_id in ids:
        _, got = await node.call("GET", f"/api/v1/requests/{message_id}")
        if got["status"] != "delivered":
            return False
    return True


async def test_metrics_move_with_traffic_and_one_request_id_crosses_nodes(
    tmp_path: Path, request_id_log: pytest.LogCaptureFixture
) -> None:
    async with running_network(tmp_path, ("AR", "BR")) as net:
        ar, br = net["AR"], net["BR"]
        before = await scrape(ar)
        rid = "clerk-call-0123456789"
        sent = [await ar.submit("BR", headers={logs.REQUEST_ID_HEADER: rid})]
        sent += [await ar.submit("BR") for _ in range(4)]
        await wait_for(lambda: delivered(ar, [m["id"] for m in sent]))
        after = await scrape(ar)
        at_br = await scrape(br)

        # The in-memory counters and the histogram moved by exactly the traffic.
        peer = '{peer="BR"}'
        assert after[f"mla_delivery_attempts_total{peer}"] >= 5
        exchanges = after[f"mla_delivery_exchanges_total{peer}"]
        assert 1 <= exchanges <= after[f"mla_delivery_attempts_total{peer}"]
        assert after['mla_receipts_total{peer="BR",status="delivered"}'] == 5
        assert after[f"mla_delivery_latency_seconds_count{peer}"] == 5
        assert after['mla_delivery_latency_seconds_bucket{peer="BR",le="+Inf"}'] == 5
        assert at_br['mla_envelopes_received_total{peer="AR",outcome="delivered"}'] == 5
        # The gauges from the database moved too.
        assert after["mla_evidence_log_records"] >= before["mla_evidence_log_records"] + 10
        assert after["mla_database_commits_total"] > before["mla_database_commits_total"]
        assert after['mla_certificate_expires_in_seconds{which="tls"}'] > 300 * 86400
        assert after["mla_directory_version"] >= 1
        assert "mla_outbox_queued" + peer not in after  # nothing left queued

        # A scrape stays cheap: a few indexed reads.
        started = time.perf_counter()
        for _ in range(20):
            await scrape(ar)
        print(f"scrape: {(time.perf_counter() - started) / 20 * 1000:.2f} ms")

    # The clerk's id is on AR's delivery lines and BR's reception line alike.
    tagged = [r for r in request_id_log.records if getattr(r, "request_id", None) == rid]
    messages = [r.getMessage() for r in tagged]
    assert any("receipt verified" in m for m in messages), messages  # AR's delivery loop
    assert any("stored; receipt sent" in m for m in messages), messages  # BR's peer endpoint
    assert sent[0]["id"] in " ".join(messages)


async def test_a_request_id_is_echoed_and_a_bad_one_replaced(tmp_path: Path) -> None:
    async with running_network(tmp_path, ("AR", "BR")) as net:
        ar = net["AR"]
        url = ar.runtime.clerk_url + "/api/v1/peers"
        cases = (
            ("proxy-id-42:abc", True),
            ("bad id; ALERT", False),
            ("x" * 65, False),
            ("", False),
        )
        for sent, kept in cases:
            async with ar.http.get(url, headers=ar.headers(**{logs.REQUEST_ID_HEADER: sent})) as r:
                got = r.headers[logs.REQUEST_ID_HEADER]
            assert (got == sent) is kept
            assert logs.valid_request_id(got) == got
        async with ar.http.get(ar.runtime.clerk_url + "/healthz") as resp:
            assert logs.valid_request_id(resp.headers[logs.REQUEST_ID_HEADER])
        status, body = await ar.call("GET", "/metrics?x=1", role="auditor")
        assert status == 400 and body["code"] == "invalid_parameter"


async def test_readyz_fails_for_each_cause(tmp_path: Path) -> None:
    async with running_network(tmp_path, ("AR", "BR")) as net:
        ar = net["AR"]
        runtime = ar.runtime

        async def checks() -> tuple[int, dict[str, str]]:
            async with ar.http.get(runtime.clerk_url + "/readyz") as resp:
                body = await resp.json()
                return resp.status, body["checks"]

        status, ok = await checks()
        assert status == 200 and set(ok.values()) == {"ok"}

        # A key file gone, or readable by others.
        signing = ar.local.config.keys_dir / "signing.key"
        signing.chmod(0o644)
        assert await checks() == (503, {**ok, "keys": "key_file_mode"})
        signing.rename(signing.with_suffix(".gone"))
        assert await checks() == (503, {**ok, "keys": "key_file_missing"})
        signing.with_suffix(".gone").rename(signing)
        signing.chmod(0o600)

        # The database takes no write: another program holds its write lock.
        other = sqlite3.connect(ar.local.config.database_path, timeout=0)
        other.execute("BEGIN IMMEDIATE")
        try:
            status, found = await checks()
        finally:
            other.rollback()
            other.close()
        assert status == 503 and found["database"] == "database_busy"
        await wait_for(lambda: _ready(checks))

        # The directory ends (31 days on), then the certificate too (400 days on).
        real = runtime.ctx.clock
        runtime.ctx.clock = lambda: real() + 31 * DAY_MS
        status, found = await checks()
        assert status == 503
        assert (found["directory"], found["certificates"]) == ("directory_expired", "ok")
        runtime.ctx.clock = lambda: real() + 400 * DAY_MS
        assert (await checks())[1]["certificates"] == "certificate_expired: tls"
        runtime.ctx.clock = real

        # The sender stops.
        await runtime.deliverer.stop()
        assert await checks() == (503, {**ok, "sender": "stopped"})


async def _ready(checks: object) -> bool:
    status, _ = await checks()  # type: ignore[operator]
    return bool(status == 200)


async def test_alerts_for_certificates_peers_and_legal_deadlines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_network(tmp_path, ("AR", "BR")) as net:
        ar, br = net["AR"], net["BR"]
        overdue = {**forms.example("mla_request"), "deadline": "2020-01-31"}
        status, sent = await ar.call(
            "POST", "/api/v1/requests", json={"type": "mla_request", "to": "BR", "form": overdue}
        )
        assert status == 201
        await wait_for(lambda: delivered(ar, [sent["id"]]))
        await br.runtime.stop()  # BR unreachable from now on
        net.nodes.pop("BR")
        await ar.submit("BR")

        async def failing() -> bool:
            _, peers = await ar.call("GET", "/api/v1/peers")
            return bool(peers["peers"][0]["last_error"])

        await wait_for(failing)
        real = ar.runtime.ctx.clock
        ar.runtime.ctx.clock = lambda: real() + 380 * DAY_MS  # the TLS certificate has 17 days
        ar.runtime.monitor.forget()  # the deadlines read at start are cached for a minute
        status, body = await ar.call("GET", "/api/v1/alerts", role="admin")
        assert status == 200
        found = {(a["name"], a["subject"]): a for a in body["alerts"]}
        assert found[("certificate_expiring", "tls")]["severity"] == "warning"
        assert found[("peer_unreachable", "BR")]["since"] is not None
        assert found[("legal_deadline_overdue", sent["id"])]["due"] == "2020-02-01T00:00:00+00:00"
        assert ("directory_stale", "directory") in found  # 380 days on, long ended
        status, _ = await ar.call("GET", "/api/v1/alerts", role="clerk")
        assert status == 403
        metrics = await scrape(ar)
        # and the second request: the example form's deadline (2025-06-30) has passed too
        assert metrics['mla_legal_deadlines_overdue{box="outbox",kind="assistance"}'] == 2
        assert metrics['mla_alerts{name="peer_unreachable",severity="warning"}'] == 1

        caplog.clear()
        caplog.set_level(logging.WARNING)
        await ar.runtime.monitor.check_and_log()
        await ar.runtime.monitor.check_and_log()  # standing alerts are not repeated at once
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ALERT")]
        assert sum(line.startswith("ALERT certificate_expiring tls") for line in lines) == 1
        assert sum(line.startswith("ALERT peer_unreachable BR") for line in lines) == 1
        assert any(line.startswith("ALERT legal_deadline_overdue") for line in lines)
        assert not any(line.startswith("ALERT directory_stale") for line in lines)  # trust.py's
        ar.runtime.ctx.clock = real


def _stored(mid: str, form_type: str, form: dict[str, object], **kw: object) -> repo.MessageRow:
    fields: dict[str, object] = {
        "id": mid, "direction": "in", "sender": "BR", "recipient": "AR", "case_id": mid,
        "in_reply_to": None, "form_type": form_type, "form_version": 1, "form": form,
        "status": "received", "envelope": b"e", "envelope_sha256": b"\0" * 32, "created_at": 0,
        "updated_at": 0, "created_by": None,
    }  # fmt: skip
    return repo.MessageRow(**{**fields, **kw})  # type: ignore[arg-type]


SETTLING_CASES = [
    _stored("A", "mla_request", {"deadline": "2020-01-01"}),
    _stored("B", "mla_request", {"deadline": "2020-01-01"}),
    _stored("B1", "execution_result", {}, case_id="B"),
    _stored("C", "additional_info_request", {"deadline": "2020-01-01"}, case_id="A"),
    _stored("D", "additional_info_request", {"deadline": "2020-01-01"}, case_id="X"),
    _stored("D1", "supplement", {}, case_id="X", in_reply_to="D"),
    _stored("E", "provisional_arrest", {"formal_request_due_days": 60, "case_reference": "R1"}),
    _stored("F", "provisional_arrest", {"formal_request_due_days": 60, "case_reference": "R2"}),
    _stored("F1", "extradition_request", {"case_reference": "R2"}),
]


def test_legal_deadlines_are_settled_by_their_answers() -> None:
    now = 1_800_000_000_000
    rows = [
        FormRow(m.id, m.direction, m.sender, m.recipient, m.case_id, m.in_reply_to, m.form_type,
                m.form, m.created_at)
        for m in [*SETTLING_CASES, _stored("G", "mla_request", {"deadline": "2999-01-01"})]
    ]  # fmt: skip
    assert sorted(d.message_id for d in legal_deadlines(rows, now)) == ["A", "C", "E"]
    assert {d.box for d in legal_deadlines(rows, now)} == {"inbox"}


async def test_an_alert_check_reads_only_the_open_cases_whose_date_passed(
    tmp_path: Path,
) -> None:
    """The same cases as above, stored, among 300 requests whose dates have not come: the
    check finds the same three, and decodes neither the 300 nor the settled cases (it used to
    read every request ever stored, at every check)."""
    now = 1_800_000_000_000
    db = await open_database(tmp_path / "node.db")
    try:
        waiting = [
            _stored(f"G{i:03d}", "mla_request", {"deadline": "2999-01-01"}) for i in range(300)
        ]

        async def store(tx: Transaction) -> None:
            for message in [*SETTLING_CASES, *waiting]:
                assert await repo.insert_message(tx, message)

        await db.write(store)
        read = await deadline_forms(db, now)
        assert sorted(d.message_id for d in legal_deadlines(read, now)) == ["A", "C", "E"]
        # F's extradition request F1 is read to match their case references
        assert sorted(f.id for f in read) == ["A", "C", "E", "F", "F1"]
        assert await deadline_forms(db, 0) == []  # nothing had passed then
    finally:
        await db.close()


async def test_messages_stored_before_the_dates_were_kept_count_until_worked_out(
    tmp_path: Path,
) -> None:
    """A database from before migration 0010: its requests are read at each check, as they were,
    until the node works their dates out at start; the alerts are the same before and after."""
    path, now = tmp_path / "node.db", 1_800_000_000_000
    old = await Database.open(path, load_migrations(SQLITE_MIGRATIONS)[:9])

    async def store_as_version_9(tx: Transaction) -> None:
        for m in [*SETTLING_CASES, _stored("G", "mla_request", {"deadline": "2999-01-01"})]:
            await tx.execute(
                "INSERT INTO messages (id, direction, sender, recipient, case_id, in_reply_to, "
                "form_type, form_version, form, status, envelope, envelope_sha256, created_at, "
                "updated_at) VALUES (?, 'in', 'BR', 'AR', ?, ?, ?, 1, ?, 'received', x'65', ?, "
                "0, 0)",
                (m.id, m.case_id, m.in_reply_to, m.form_type, json.dumps(m.form), b"\0" * 32),
            )

    await old.write(store_as_version_9)
    await old.close()

    db = await open_database(path)
    try:
        before = legal_deadlines(await deadline_forms(db, now), now)
        assert sorted(d.message_id for d in before) == ["A", "C", "E"]
        assert await ops_repo.fill_legal_due_dates(db, batch=2) == 7  # the dated forms A..G
        assert await ops_repo.fill_legal_due_dates(db) == 0
        rows = await db.fetchall("SELECT id, legal_due_at FROM messages ORDER BY id")
        dates = {r[0]: r[1] for r in rows}
        assert dates["A"] == 1_577_923_200_000  # the end of 2020-01-01, UTC
        assert dates["E"] == 60 * DAY_MS and dates["B1"] is None and dates["G"] > now
        assert legal_deadlines(await deadline_forms(db, now), now) == before
    finally:
        await db.close()


def test_json_log_lines_carry_the_request_id_and_the_alert_name() -> None:
    out = io.StringIO()
    handler = logs.handler("json", out)
    logger = logging.getLogger("mla_node.test_json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        token = logs.REQUEST_ID.set("abcdef0123456789")
        logger.warning("ALERT peer_unreachable BR: %d failed", 3)
        logs.REQUEST_ID.reset(token)
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("it failed")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["request_id"] == "abcdef0123456789"
    assert first["alert"] == "peer_unreachable"
    assert first["msg"] == "ALERT peer_unreachable BR: 3 failed"
    assert "request_id" not in second and "ValueError: boom" in second["exc"]
    assert os.linesep not in first["msg"]
