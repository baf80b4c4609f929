"""Evidence bundles end to end: a real case thread between two nodes (request, retrieval,
acknowledgement, request for more information, supplement, execution result), its bundle written
from each node's database, verified with nothing but the trust root — and every byte of it
flipped, each flip caught with a named reason."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from mla_node.cli import cli
from mla_node.errors import BundleInvalid
from mla_node.protocol import forms
from mla_node.protocol.bundle import verify_bundle
from mla_node.protocol.directory import TrustRoot
from mla_node.service import audit_log, cases, views
from mla_node.service.bundles import build_bundle
from mla_node.service.context import Principal, Role
from mla_node.storage.readonly import ReadOnlyDatabase
from tests.service.memnet import CLERK, Node, memory_network, settle

# MLA_FULL flips every byte of the bundle; by default a spread sample of positions.
FLIPS = None if os.environ.get("MLA_FULL") else int(os.environ.get("MLA_BUNDLE_FLIPS", "1500"))
AUDITOR = Principal("tok_auditor", Role.AUDITOR, "Ana Auditor")


@dataclass(frozen=True)
class Case:
    folder: Path
    request_id: str
    ar_db: Path
    br_db: Path
    trust: TrustRoot


async def _follow_up(node: Node, message_id: str, form_type: str) -> str:
    payload = {"type": form_type, "form": forms.example(form_type)}
    row, _ = await cases.reply(node.ctx, CLERK, message_id, payload, None)
    return row.id


async def _case(folder: Path) -> Case:
    async with memory_network(folder) as (nodes, _):
        ar, br = nodes["AR"], nodes["BR"]
        payload = {"type": "mla_request", "to": "BR", "form": forms.example("mla_request")}
        request, _ = await cases.submit(ar.ctx, CLERK, payload, None)
        await settle(nodes)
        await views.get_request(br.ctx, CLERK, request.id)  # retrieved
        await cases.acknowledge(br.ctx, CLERK, request.id, {})
        asked = await _follow_up(br, request.id, "additional_info_request")
        await settle(nodes)
        await _follow_up(ar, asked, "supplement")
        await settle(nodes)
        await _follow_up(br, request.id, "execution_result")
        await settle(nodes)
        await views.get_request(ar.ctx, AUDITOR, request.id)  # a user action in the log
        for node in (ar, br):
            await audit_log.checkpoint(node.ctx)
        trust = TrustRoot.from_json(ar.ctx.config.trust_root_path.read_bytes())
        return Case(
            folder, request.id, ar.ctx.config.database_path, br.ctx.config.database_path, trust
        )


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Case:
    return asyncio.run(_case(tmp_path_factory.mktemp("bundle")))


def _bundle(db_path: Path, message_id: str, *, with_content: bool = True) -> bytes:
    with ReadOnlyDatabase(db_path) as db:
        return asyncio.run(build_bundle(db, message_id, with_content=with_content)).data


@pytest.fixture(scope="module")
def bundle(case: Case) -> bytes:
    return _bundle(case.ar_db, case.request_id)


def test_the_bundle_of_a_whole_case_verifies_with_the_trust_root_alone(
    case: Case, bundle: bytes
) -> None:
    report = verify_bundle(bundle, case.trust)
    assert report.node == "AR" and report.case == case.request_id
    assert len(report.messages) == 5  # request, ack, question, supplement, result
    assert all(m.receipt is not None and m.receipt.status == "delivered" for m in report.messages)
    events = [e.event for _, e in report.evidence]
    for event in ("submitted", "delivered", "acknowledged", "answered", "viewed"):
        assert event in events
    viewed = next(e for _, e in report.evidence if e.event == "viewed")
    assert viewed.actor == "auditor:Ana Auditor" and viewed.detail == "metadata"
    account = "\n".join(report.account())
    assert f"AR sent message {case.request_id} to BR (case;" in account
    assert f"BR signed a receipt for {case.request_id}: delivered" in account
    ack = report.messages[1].header.message_id
    assert f"{case.request_id} acknowledged by message {ack}" in account
    assert f"{case.request_id} looked at (metadata) by auditor:Ana Auditor" in account
    # every message's content disclosed, each the very bytes AR's log committed to
    assert all(m.body is not None for m in report.messages)
    assert report.messages[0].body is not None
    assert report.messages[0].body["form"] == forms.example("mla_request")
    assert f"content of {case.request_id} disclosed: mla_request form version 1" in account


def test_without_content_the_bundle_discloses_nothing(case: Case) -> None:
    report = verify_bundle(_bundle(case.ar_db, case.request_id, with_content=False), case.trust)
    assert all(m.content is None and m.body is None for m in report.messages)


def test_content_that_is_not_what_both_nodes_signed_is_refused(case: Case, bundle: bytes) -> None:
    body = json.loads(bundle)
    first, second = body["messages"][0], body["messages"][1]
    first["content"], second["content"] = second["content"], first["content"]
    swapped = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(BundleInvalid, match="disclosed content is not what log entry"):
        verify_bundle(swapped, case.trust)
    # The receiver's log commits to the same bytes: its bundle discloses an identical body.
    theirs = verify_bundle(_bundle(case.br_db, case.request_id), case.trust)
    ours = verify_bundle(bundle, case.trust)
    assert theirs.messages[0].content == ours.messages[0].content


def test_the_other_node_writes_the_same_case_from_its_side(case: Case) -> None:
    report = verify_bundle(_bundle(case.br_db, case.request_id), case.trust)
    assert report.node == "BR" and len(report.messages) == 5
    retrieved = [e for _, e in report.evidence if e.event == "retrieved"]
    assert [(e.message_id, e.actor) for e in retrieved] == [(case.request_id, "clerk:clerk")]


def test_flipping_any_byte_of_the_bundle_is_caught_with_a_named_reason(
    case: Case, bundle: bytes
) -> None:
    rng = random.Random(4)
    positions = (
        range(len(bundle))
        if FLIPS is None or len(bundle) <= FLIPS
        else sorted(rng.sample(range(len(bundle)), FLIPS))
    )
    missed, unnamed = [], []
    for i in positions:
        flipped = bytearray(bundle)
        flipped[i] ^= rng.randrange(1, 256)
        try:
            verify_bundle(bytes(flipped), case.trust)
        except BundleInvalid as exc:
            if not exc.detail:
                unnamed.append(i)
            continue
        missed.append(i)
    assert not missed, f"flips at {missed[:10]} went unnoticed"
    assert not unnamed, f"flips at {unnamed[:10]} were caught without a reason"


def test_a_bundle_verifies_on_a_machine_with_only_the_bundle_and_the_trust_root(
    case: Case, bundle: bytes, tmp_path: Path
) -> None:
    alone = tmp_path / "court"
    alone.mkdir()
    (alone / "case.bundle").write_bytes(bundle)
    shutil.copy(case.folder / "authority" / "trust-root.json", alone / "trust-root.json")
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "audit",
            "verify-bundle",
            str(alone / "case.bundle"),
            "--trust",
            str(alone / "trust-root.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Bundle verified" in result.output and "BR signed a receipt" in result.output

    (alone / "bad.bundle").write_bytes(bundle.replace(b'"case":"', b'"case":"0', 1))
    result = runner.invoke(
        cli,
        [
            "audit",
            "verify-bundle",
            str(alone / "bad.bundle"),
            "--trust",
            str(alone / "trust-root.json"),
        ],
    )
    assert result.exit_code == 1
    assert "FAILED" in result.output and "is about case" in result.output


def test_audit_bundle_command_writes_what_the_library_writes(
    case: Case, bundle: bytes, tmp_path: Path
) -> None:
    out = tmp_path / "cli.bundle"
    result = CliRunner().invoke(
        cli,
        [
            "audit",
            "bundle",
            case.request_id,
            "--db",
            str(case.ar_db),
            "-o",
            str(out),
            "--with-content",
        ],
    )
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == bundle
    missing = CliRunner().invoke(
        cli, ["audit", "bundle", "0" * 26, "--db", str(case.ar_db), "-o", str(out)]
    )
    assert missing.exit_code == 2 and "not_found" in missing.output
