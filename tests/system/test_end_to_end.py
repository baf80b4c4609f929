"""Two and three real nodes in-process over mutual TLS: submit, deliver, receipt, acknowledge."""

from __future__ import annotations

from pathlib import Path

from tests.netkit import running_network, wait_for


async def test_request_is_delivered_with_a_verified_receipt(tmp_path: Path) -> None:
    async with running_network(tmp_path, ("AR", "BR")) as net:
        created = await net["AR"].submit("BR")

        async def delivered() -> bool:
            _, view = await net["AR"].call("GET", f"/api/v1/requests/{created['id']}")
            return bool(view["status"] == "delivered")

        await wait_for(delivered)
        _, view = await net["AR"].call("GET", f"/api/v1/requests/{created['id']}")
        assert view["receipt"]["verified"] is True
        assert view["receipt"]["status"] == "delivered"
        events = [e["event"] for e in view["evidence"]]
        assert events == ["submitted", "delivered"]
        assert all(e["verified"] for e in view["evidence"])

        status, inbox = await net["BR"].call("GET", "/api/v1/requests?box=inbox")
        assert status == 200
        assert [i["id"] for i in inbox["items"]] == [created["id"]]
        _, received = await net["BR"].call("GET", f"/api/v1/requests/{created['id']}")
        assert received["form"]["stated_purpose"]
        assert [e["event"] for e in received["evidence"]] == ["delivered", "retrieved"]

        status, ack = await net["BR"].call(
            "POST", f"/api/v1/requests/{created['id']}/acknowledge", json={}
        )
        assert status == 201, ack

        async def acknowledged() -> bool:
            _, view = await net["AR"].call("GET", f"/api/v1/requests/{created['id']}")
            return "acknowledged" in [e["event"] for e in view["evidence"]]

        await wait_for(acknowledged)
