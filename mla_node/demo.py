"""``mla-node demo``: three states exchange two requests through the real clerk API.

AR sends a mutual legal assistance request to BR and US an extradition request to AR (the treaty
forms' examples, fictional people). Both receipts are awaited until the sender's node has verified
them against the directory; then BR's clerk opens AR's request and acknowledges it, and the
acknowledgement travels back as signed evidence. Last, AR's auditor downloads the case's evidence
bundle and the demo verifies it offline with the network's trust root alone, as a court would.
Everything goes over HTTP with bearer tokens, as a clerk's browser or script would, so the demo
exercises exactly what the nodes serve.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from mla_node.errors import BundleInvalid, DeliveryError
from mla_node.localnet import NETWORK_FILE, Manifest, NodeRecord
from mla_node.protocol import forms
from mla_node.protocol.bundle import BundleReport, verify_bundle
from mla_node.protocol.directory import TrustRoot

__all__ = [
    "DEMO_STATES",
    "DEMO_TIMEOUT_S",
    "DemoFailed",
    "DemoResult",
    "by_hand",
    "report",
    "run_scenario",
]

DEMO_STATES = ("AR", "BR", "US")
DEMO_TIMEOUT_S = 90.0
_POLL_S = 0.05
# (sender, recipient, form type)
SCENARIO = (("AR", "BR", "mla_request"), ("US", "AR", "extradition_request"))


class DemoFailed(Exception):
    """A check of the demo failed (a receipt not verified in time, an API call refused)."""


@dataclass(frozen=True)
class DemoRequest:
    id: str
    sender: str
    recipient: str
    type: str
    receipt: dict[str, Any]
    evidence: list[dict[str, Any]]  # both nodes' records, in time order
    verified_after_s: float  # from the start of the demo to its verified receipt


@dataclass(frozen=True)
class DemoResult:
    requests: list[DemoRequest]
    second_receipt_s: float  # from the start of the demo to the second verified receipt
    bundle: BundleReport  # the first case's evidence bundle, verified with the trust root
    bundle_bytes: int


class _Clerk:
    """One node's clerk API, as a clerk's script sees it."""

    def __init__(self, http: aiohttp.ClientSession, node: NodeRecord) -> None:
        self.http = http
        self.node = node

    async def call(
        self, method: str, path: str, *, role: str = "clerk", json: Any = None
    ) -> dict[str, Any]:
        token = {"clerk": self.node.token, "auditor": self.node.auditor_token}[role]
        url = self.node.clerk_url + path
        try:
            async with self.http.request(
                method, url, json=json, headers={"Authorization": f"Bearer {token}"}
            ) as resp:
                body = await resp.json(content_type=None)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise DeliveryError(
                f"{self.node.state}'s clerk API at {self.node.clerk_url} did not answer "
                f"{method} {path}: {exc!r}; see {self.node.log}"
            ) from exc
        if not 200 <= status < 300 or not isinstance(body, dict):
            problem = body if isinstance(body, dict) else {}
            raise DemoFailed(
                f"{self.node.state} answered {method} {path} with {status} "
                f"[{problem.get('code')}]: {problem.get('detail')}"
            )
        return body

    async def download(self, path: str, *, role: str) -> bytes:
        token = {"clerk": self.node.token, "auditor": self.node.auditor_token}[role]
        async with self.http.get(
            self.node.clerk_url + path, headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            data = await resp.read()
            if resp.status != 200:
                raise DemoFailed(f"{self.node.state} answered GET {path} with {resp.status}")
            return data


async def _until(
    check: Callable[[], Awaitable[dict[str, Any]]],
    what: str,
    deadline: float,
    clock: Callable[[], float],
) -> dict[str, Any]:
    last: dict[str, Any] = {}
    while clock() < deadline:
        last = await check()
        if last.get("_done"):
            return last
        await asyncio.sleep(_POLL_S)
    raise DemoFailed(f"{what} not reached in time (last status: {last.get('status')!r})")


async def run_scenario(
    manifest: Manifest,
    *,
    started: float,
    deadline: float,
    say: Callable[[str], None] = lambda line: None,
    clock: Callable[[], float] = time.monotonic,
) -> DemoResult:
    """Run the demo against the running nodes of ``manifest``; times are ``clock()`` seconds."""
    missing = [s for s in DEMO_STATES if s not in manifest.nodes]
    if missing:
        raise DemoFailed(f"the network has no node for {', '.join(missing)}")
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        clerks = {s: _Clerk(http, manifest.nodes[s]) for s in DEMO_STATES}
        sent: list[tuple[str, str, str, str]] = []
        for sender, recipient, form_type in SCENARIO:
            created = await clerks[sender].call(
                "POST", "/api/v1/requests",
                json={"type": form_type, "to": recipient, "form": forms.example(form_type)},
            )  # fmt: skip
            sent.append((created["id"], sender, recipient, form_type))
            say(f"{sender} → {recipient}  {form_type} submitted as {created['id']}")

        async def verified_receipt(message_id: str, sender: str) -> float:
            async def check() -> dict[str, Any]:
                view = await clerks[sender].call("GET", f"/api/v1/requests/{message_id}")
                receipt = view.get("receipt") or {}
                if "verification_error" in receipt:
                    raise DemoFailed(
                        f"the receipt for {message_id} does not verify at {sender}: "
                        f"{receipt['verification_error']}"
                    )
                return {**view, "_done": receipt.get("verified") is True}

            await _until(check, f"a verified receipt for {message_id}", deadline, clock)
            elapsed = clock() - started
            say(f"{sender}: receipt for {message_id} verified ({elapsed:.2f} s after start)")
            return elapsed

        times = await asyncio.gather(*(verified_receipt(mid, snd) for mid, snd, _, _ in sent))

        first_id, first_sender, first_recipient, _ = sent[0]
        # BR's clerk opens AR's request (evidence: retrieved), then acknowledges it.
        await clerks[first_recipient].call("GET", f"/api/v1/requests/{first_id}")
        await clerks[first_recipient].call(
            "POST", f"/api/v1/requests/{first_id}/acknowledge", json={}
        )
        say(f"{first_recipient} acknowledged {first_id}")

        async def acknowledged() -> dict[str, Any]:
            view = await clerks[first_sender].call("GET", f"/api/v1/requests/{first_id}")
            events = [e.get("event") for e in view.get("evidence", [])]
            return {**view, "_done": "acknowledged" in events}

        await _until(acknowledged, f"the acknowledgement of {first_id} at AR", deadline, clock)
        say(f"{first_sender}: acknowledgement of {first_id} received")

        data = await clerks[first_sender].download(
            f"/api/v1/audit/bundles/{first_id}", role="auditor"
        )
        try:
            bundle = verify_bundle(data, TrustRoot.from_json(manifest.trust_root.read_bytes()))
        except BundleInvalid as exc:
            raise DemoFailed(f"the evidence bundle of {first_id} does not verify: {exc}") from exc
        say(f"{first_sender}'s auditor: evidence bundle of case {first_id} verified offline")

        requests = []
        for (message_id, sender, recipient, form_type), elapsed in zip(sent, times, strict=True):
            mine = await clerks[sender].call("GET", f"/api/v1/requests/{message_id}")
            # The auditor reads without opening it for a clerk (no "retrieved" record).
            theirs = await clerks[recipient].call(
                "GET", f"/api/v1/requests/{message_id}", role="auditor"
            )
            requests.append(
                DemoRequest(
                    id=message_id,
                    sender=sender,
                    recipient=recipient,
                    type=form_type,
                    receipt=mine["receipt"],
                    evidence=_timeline(mine["evidence"] + theirs["evidence"]),
                    verified_after_s=elapsed,
                )
            )
    return DemoResult(requests, max(times), bundle, len(data))


def _timeline(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # ISO 8601 UTC times of one format sort as text; unverified records (no time) go last.
    return sorted(records, key=lambda r: (r.get("at") is None, r.get("at") or ""))


def _check(ok: object) -> str:
    return "verified ✓" if ok is True else "NOT VERIFIED ✗"


def report(result: DemoResult) -> list[str]:
    """The lines printed for each request: receipt and evidence timeline."""
    lines: list[str] = []
    for req in result.requests:
        r = req.receipt
        lines += [
            "",
            f"{req.id}  {req.sender} → {req.recipient}  {req.type}",
            f"  receipt   {r['status']}, signed by {r['signed_by']} at {r['at']}  "
            f"{_check(r['verified'])}",
            f"            sha256 {r['sha256']}",
        ]
        for i, e in enumerate(req.evidence):
            label = "  evidence  " if i == 0 else " " * 12
            if "event" in e:
                lines.append(
                    f"{label}{e['at']}  {e['node']}  {e['event']:<13} {_check(e['verified'])}"
                )
            else:
                lines.append(f"{label}(record refused: {e.get('verification_error')})  ✗")
    b = result.bundle
    lines += [
        "",
        f"Evidence bundle of case {b.case} from {b.node} ({result.bundle_bytes:,} bytes): "
        f"{len(b.messages)} envelopes with their receipts, {len(b.evidence)} log records with "
        f"inclusion proofs in checkpoint {b.checkpoint.size}; verified offline with the trust "
        "root alone ✓",
        "  (the same check by hand: mla-node audit verify-bundle FILE --trust trust-root.json)",
    ]
    return lines


def by_hand(manifest: Manifest, extradition_id: str) -> list[str]:
    """How to try the running network by hand: URLs, clerk tokens, curl commands."""
    ar = manifest.nodes["AR"]
    auth = f'-H "Authorization: Bearer {ar.token}"'
    return [
        "",
        "The network keeps running; try the clerk API by hand (Ctrl-C stops it):",
        *(f"  {n.state}  {n.clerk_url}  clerk token {n.token}" for n in manifest.nodes.values()),
        f"  (auditor and admin tokens: {manifest.folder / NETWORK_FILE})",
        "",
        f'  curl -s {auth} "{ar.clerk_url}/api/v1/requests?box=inbox"',
        f"  curl -s {auth} {ar.clerk_url}/api/v1/requests/{extradition_id}",
        f"  curl -s -X POST {auth} {ar.clerk_url}/api/v1/requests/{extradition_id}/acknowledge",
        f"  The API is described at {ar.clerk_url}/openapi.json",
    ]
