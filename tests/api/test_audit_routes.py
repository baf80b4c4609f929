"""The auditor's routes on real nodes: the log with user actions, proofs that verify against the
signed checkpoints, a bundle that verifies offline, and an auditor who sees no request content."""

from __future__ import annotations

import pytest

from mla_node.protocol.bundle import verify_bundle
from mla_node.protocol.directory import TrustRoot
from mla_node.protocol.merkle import verify_consistency, verify_inclusion
from tests.api.speckit import Api, delivered

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _log(api: Api) -> list[dict[str, object]]:
    items: list[dict[str, object]] = []
    after = 0
    while True:
        page = await api.get(f"/api/v1/audit/log?after={after}&limit=3", role="auditor")
        assert page.status == 200, page.body
        items += page.body["items"]
        if page.body["next_after"] is None:
            return items
        after = page.body["next_after"]


async def test_the_log_shows_every_record_and_who_looked(ar: Api, br: Api) -> None:
    sent = await delivered(ar, br)
    view = await ar.get(f"/api/v1/requests/{sent}", role="auditor")
    assert view.status == 200 and view.body["form"] is None  # no content for auditors
    assert view.body["use_restriction"] is not None  # the restriction is shown, though
    assert "viewed" not in [e["event"] for e in view.body["evidence"]]

    items = await _log(ar)
    assert [i["seq"] for i in items] == list(range(1, len(items) + 1))
    assert all(i["verified"] for i in items)
    tokens = [i for i in items if i["event"] == "token_created"]
    assert {t["detail"] for t in tokens} >= {"clerk:clerk-AR", "auditor:auditor-AR"}
    viewed = [i for i in items if i["event"] == "viewed" and i["message_id"] == sent]
    assert [(v["actor"], v["detail"]) for v in viewed] == [("auditor:auditor-AR", "metadata")]


async def test_proofs_verify_against_the_signed_checkpoints(ar: Api, br: Api) -> None:
    first = await ar.post("/api/v1/audit/checkpoints", role="auditor")
    assert first.status == 200 and first.body["verified"], first.body
    await delivered(ar, br)
    second = await ar.post("/api/v1/audit/checkpoints", role="admin")
    assert second.body["size"] > first.body["size"]
    listed = await ar.get("/api/v1/audit/checkpoints", role="auditor")
    assert [c["size"] for c in listed.body["items"]][-2:] == [
        first.body["size"],
        second.body["size"],
    ]

    old, new = first.body["size"], second.body["size"]
    proof = await ar.get(f"/api/v1/audit/proofs/consistency?from={old}&to={new}", role="auditor")
    assert proof.status == 200, proof.body
    verify_consistency(
        old,
        new,
        bytes.fromhex(first.body["root"]),
        bytes.fromhex(second.body["root"]),
        [bytes.fromhex(h) for h in proof.body["proof"]],
    )
    for seq in (1, old, new):
        inc = await ar.get(f"/api/v1/audit/proofs/inclusion?seq={seq}", role="auditor")
        assert inc.status == 200 and inc.body["size"] == new, inc.body
        verify_inclusion(
            bytes.fromhex(inc.body["leaf_hash"]),
            seq - 1,
            new,
            [bytes.fromhex(h) for h in inc.body["proof"]],
            bytes.fromhex(second.body["root"]),
        )


async def test_a_bundle_from_the_api_verifies_and_records_its_export(ar: Api, br: Api) -> None:
    sent = await delivered(ar, br)
    async with ar.node.http.get(
        f"{ar.base}/api/v1/audit/bundles/{sent}", headers=ar.auth("auditor")
    ) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/vnd.mla-node.bundle+json"
        assert f"case-{sent}.bundle.json" in resp.headers["Content-Disposition"]
        data = await resp.read()
    trust = TrustRoot.from_json(ar.node.runtime.ctx.config.trust_root_path.read_bytes())
    report = verify_bundle(data, trust)
    exported = [e for _, e in report.evidence if e.event == "exported"]
    assert [(e.message_id, e.actor, e.detail) for e in exported] == [
        (sent, "auditor:auditor-AR", "bundle")
    ]
    assert all(m.content is None for m in report.messages), "auditors see no content"

    async with ar.node.http.get(
        f"{ar.base}/api/v1/audit/bundles/{sent}", headers=ar.auth("clerk")
    ) as resp:
        assert resp.status == 200
        clerks = verify_bundle(await resp.read(), trust)
    assert [m.body is not None for m in clerks.messages] == [True]
    assert any(e.detail == "bundle with content" for _, e in clerks.evidence)
    assert report.messages[0].receipt is not None
    assert report.messages[0].receipt.status == "delivered"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("/api/v1/audit/proofs/inclusion", "seq"),
        ("/api/v1/audit/proofs/inclusion?seq=0", "seq"),
        ("/api/v1/audit/proofs/inclusion?seq=1&size=999999", "size"),
        ("/api/v1/audit/proofs/inclusion?seq=x", "seq"),
        ("/api/v1/audit/proofs/consistency?from=2&to=1", "from"),
        ("/api/v1/audit/proofs/consistency?from=1", "to"),
        ("/api/v1/audit/log?limit=0", "limit"),
        ("/api/v1/audit/log?after=-1", "after"),
        ("/api/v1/audit/log?colour=red", "colour"),
    ],
)
async def test_bad_parameters_name_the_field(ar: Api, query: str, field: str) -> None:
    reply = await ar.get(query, role="auditor")
    assert reply.status == 400
    assert reply.problem()["code"] == "invalid_parameter"
    assert reply.problem()["field"] == field


async def test_a_bundle_of_an_unknown_message_is_404(ar: Api) -> None:
    reply = await ar.get("/api/v1/audit/bundles/" + "0" * 26, role="auditor")
    assert reply.status == 404 and reply.problem()["field"] == "id"
