"""Evidence bundles: everything a court needs about one case, verifiable with the trust root alone.

A bundle is written by one node about one case thread. It holds, as the signed bytes they were:

- the directory the node had accepted (its certificates and keys, signed by the network
  authority) — so the bundle carries every key its signatures need;
- the node's newest checkpoint (its signed log head);
- every envelope of the thread (ciphertext, header and the sender's signature) with the receipt
  that answered it;
- every evidence record of the case from the node's log, each with its inclusion proof against
  the checkpoint. A record the checkpoint does not cover yet cannot go into a bundle: nothing
  would pin its place in the log.

The file is canonical JSON (sorted keys, no spaces, ASCII, base64 without slack) and the verifier
refuses any other form, so that flipping any byte of a bundle is caught: either the JSON or the
base64 is no longer canonical, or a signature, proof or cross-reference no longer holds. Nothing
in a bundle is taken on trust: every field is either signed, covered by a proof, or checked
against something that is.

A bundle may also disclose each message's content: the exact body bytes, which the verifier
checks against the content commitment the node's own log signed (envelope.content_digest; the
other node's log signs the same one). Envelopes are encrypt-then-sign, so without that commitment
a third party could not tell a disclosed plaintext from one the node made up.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from mla_node.errors import BundleInvalid, MlaError
from mla_node.protocol import codec
from mla_node.protocol.checkpoint import Checkpoint, verify_checkpoint
from mla_node.protocol.directory import Directory, TrustRoot, verify_directory
from mla_node.protocol.envelope import (
    MAX_BODY_DEPTH,
    MAX_ENVELOPE,
    Header,
    content_digest,
    envelope_digest,
    verify_envelope_signature,
)
from mla_node.protocol.evidence import Event, Evidence, verify_evidence
from mla_node.protocol.merkle import leaf_hash, verify_inclusion
from mla_node.protocol.receipts import DELIVERED, Receipt, verify_receipt

BUNDLE_FORMAT = "mla-node-bundle/1"
_TOP = frozenset({"format", "node", "case", "directory", "checkpoint", "messages", "evidence"})
_MESSAGE = frozenset({"envelope", "receipt", "content"})
_RECORD = frozenset({"seq", "record", "proof"})


@dataclass(frozen=True)
class BundleMessage:
    envelope: bytes
    receipt: bytes | None
    content: bytes | None = None  # the exact body bytes, disclosed only to who may see them


@dataclass(frozen=True)
class BundleRecord:
    seq: int
    record: bytes
    proof: list[bytes]  # inclusion proof against the bundle's checkpoint


@dataclass(frozen=True)
class VerifiedMessage:
    header: Header
    digest: bytes
    receipt: Receipt | None
    content: bytes | None  # disclosed body bytes, checked against the node's signed digest
    body: dict[str, Any] | None  # the disclosed body, decoded


@dataclass
class BundleReport:
    """What a verified bundle shows."""

    node: str
    case: str
    directory_version: int
    checkpoint: Checkpoint
    messages: list[VerifiedMessage] = field(default_factory=list)
    evidence: list[tuple[int, Evidence]] = field(default_factory=list)

    def account(self) -> list[str]:
        """A readable account, in time order: who sent what to whom, when it was delivered, and
        every step the node recorded."""
        lines: list[tuple[int, str]] = []
        by_id = {m.header.message_id: m.header for m in self.messages}
        for m in self.messages:
            h = m.header
            lines.append(
                (
                    h.created_at,
                    f"{h.sender} sent message {h.message_id} to {h.recipient} ({h.type}; "
                    f"envelope sha256 {m.digest.hex()[:16]}…, signed with key {h.sender_kid})",
                )
            )
            if m.body is not None:
                lines.append(
                    (
                        h.created_at,
                        f"content of {h.message_id} disclosed: {m.body.get('type')} form "
                        f"version {m.body.get('version')}, the very bytes whose digest "
                        f"{self.node}'s log signed; {_stamp(m.body)}",
                    )
                )
            if m.receipt is not None:
                r = m.receipt
                outcome = "delivered" if r.status == DELIVERED else f"refused it ({r.code})"
                lines.append(
                    (r.at, f"{r.recipient} signed a receipt for {r.message_id}: {outcome}")
                )
        for seq, e in self.evidence:
            header = by_id.get(e.message_id)
            lines.append((e.at, f"{e.node}'s log #{seq}: {_describe(e, header)}"))
        lines.sort(key=lambda item: item[0])
        return [f"{_iso(at)}  {text}" for at, text in lines]


def _stamp(body: dict[str, Any]) -> str:
    """The handling code and use restriction a disclosed request travelled under, as signed."""
    form = body.get("form") if isinstance(body.get("form"), dict) else {}
    assert isinstance(form, dict)
    restriction = form.get("stated_purpose") or form.get("use_restriction")
    handling = str(body.get("handling") or "confidential").upper()
    return f"HANDLING {handling}" + (f"; USE RESTRICTED TO: {restriction}" if restriction else "")


def _describe(e: Evidence, header: Header | None) -> str:
    """One log record in words, from the point of view of the node that signed it."""
    mid, by = e.message_id, f" by {e.actor}" if e.actor else ""
    outbound = header is not None and header.sender == e.node
    if e.event == Event.SUBMITTED:
        return f"{mid} accepted for sending to {e.peer}{by}"
    if e.event == Event.DELIVERED:
        if outbound:
            return f"{mid} delivered: {e.peer}'s receipt recorded"
        return f"{mid} from {e.peer} stored, receipt issued"
    if e.event == Event.NOT_DELIVERED:
        return f"{mid} not delivered ({e.detail})"
    if e.event in (Event.ACKNOWLEDGED, Event.ANSWERED):
        verb = "acknowledged" if e.event == Event.ACKNOWLEDGED else "answered"
        return f"{mid} {verb} by message {e.detail}{by}"
    if e.event == Event.RETRIEVED:
        return f"{mid} opened for the first time{by}"
    if e.event == Event.VIEWED:
        return f"{mid} looked at ({e.detail}){by}"
    if e.event == Event.EXPORTED:
        return f"the case's evidence {e.detail} exported{by}"
    if e.event == Event.RESENT:
        return f"{mid} sent again as {e.detail}{by}"
    detail = f" ({e.detail})" if e.detail else ""
    return f"{mid}: {e.event}{detail}{by}"


def encode_bundle(
    *,
    node: str,
    case: str,
    directory: bytes,
    checkpoint: bytes,
    messages: Sequence[BundleMessage],
    evidence: Sequence[BundleRecord],
) -> bytes:
    """The canonical bytes of a bundle (messages in message-id order, records in log order)."""
    body = {
        "format": BUNDLE_FORMAT,
        "node": node,
        "case": case,
        "directory": _b64(directory),
        "checkpoint": _b64(checkpoint),
        "messages": [
            {
                "envelope": _b64(m.envelope),
                "receipt": None if m.receipt is None else _b64(m.receipt),
                "content": None if m.content is None else _b64(m.content),
            }
            for m in messages
        ],
        "evidence": [
            {
                "seq": r.seq,
                "record": _b64(r.record),
                "proof": [_b64(h) for h in r.proof],
            }
            for r in sorted(evidence, key=lambda r: r.seq)
        ],
    }
    return _canonical(body)


def verify_bundle(data: bytes, trust: TrustRoot) -> BundleReport:
    """Verify a bundle with nothing but the network's trust root; ``BundleInvalid`` names the
    first part that fails."""
    body = _parse(data)
    node, case = _text(body, "node"), _text(body, "case")
    # now=0: an audit after the fact checks signatures, not whether the directory is still fresh
    with _named("directory"):
        directory = verify_directory(_unb64(body["directory"], "directory"), trust, now=0)
    with _named("checkpoint"):
        checkpoint = verify_checkpoint(
            _unb64(body["checkpoint"], "checkpoint"), directory, node=node
        )
    report = BundleReport(node, case, directory.version, checkpoint)
    report.messages = _messages(body["messages"], directory, node)
    report.evidence = _evidence(body["evidence"], directory, node, case, checkpoint)
    if not report.evidence:
        raise BundleInvalid("the bundle holds no evidence record")
    _cross_check(report)
    return report


def _parse(data: bytes) -> dict[str, Any]:
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise BundleInvalid("the file is not JSON: not an evidence bundle") from None
    if not isinstance(body, dict) or body.get("format") != BUNDLE_FORMAT:
        raise BundleInvalid(f"not an {BUNDLE_FORMAT} bundle")
    if set(body) != _TOP:
        raise BundleInvalid(f"a bundle has exactly the fields {sorted(_TOP)}")
    if _canonical(body) != data:
        raise BundleInvalid(
            "the bundle is not in its canonical form (changed after it was written)"
        )
    return body


def _messages(items: Any, directory: Directory, node: str) -> list[VerifiedMessage]:
    if not isinstance(items, list):
        raise BundleInvalid("messages must be a list")
    verified: list[VerifiedMessage] = []
    for i, item in enumerate(items):
        where = f"message #{i + 1}"
        if not isinstance(item, dict) or set(item) != _MESSAGE:
            raise BundleInvalid(f"{where}: has exactly the fields {sorted(_MESSAGE)}")
        envelope = _unb64(item["envelope"], where)
        with _named(where):
            header = verify_envelope_signature(envelope, directory)
        if node not in (header.sender, header.recipient):
            raise BundleInvalid(f"{where}: {header.message_id} is not to or from {node}")
        digest = envelope_digest(envelope)
        receipt = None
        if item["receipt"] is not None:
            raw = _unb64(item["receipt"], where)
            with _named(f"the receipt of {header.message_id}"):
                receipt = verify_receipt(
                    raw,
                    directory,
                    expect_message_id=header.message_id,
                    expect_envelope_digest=digest,
                    expect_signer=header.recipient,
                )
        if verified and header.message_id <= verified[-1].header.message_id:
            raise BundleInvalid(f"{where}: messages are not in message-id order")
        content, body = None, None
        if item["content"] is not None:
            content = _unb64(item["content"], where)
            body = codec.unpack(
                content, error=BundleInvalid, max_bytes=MAX_ENVELOPE, max_depth=MAX_BODY_DEPTH
            )
            if not isinstance(body, dict):
                raise BundleInvalid(f"{where}: the disclosed content is not a message body")
        verified.append(VerifiedMessage(header, digest, receipt, content, body))
    return verified


def _evidence(
    items: Any, directory: Directory, node: str, case: str, checkpoint: Checkpoint
) -> list[tuple[int, Evidence]]:
    if not isinstance(items, list):
        raise BundleInvalid("evidence must be a list")
    records: list[tuple[int, Evidence]] = []
    for i, item in enumerate(items):
        where = f"evidence #{i + 1}"
        if not isinstance(item, dict) or set(item) != _RECORD:
            raise BundleInvalid(f"{where}: has exactly the fields {sorted(_RECORD)}")
        seq = item["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise BundleInvalid(f"{where}: seq must be a positive integer")
        where = f"log entry #{seq}"
        if records and seq <= records[-1][0]:
            raise BundleInvalid(f"{where}: records are not in log order")
        raw = _unb64(item["record"], where)
        with _named(where):
            evidence = verify_evidence(raw, directory, node=node)
        if evidence.case_id != case:
            raise BundleInvalid(f"{where}: is about case {evidence.case_id}, not {case}")
        proof = item["proof"]
        if not isinstance(proof, list):
            raise BundleInvalid(f"{where}: proof must be a list")
        if seq > checkpoint.size:
            raise BundleInvalid(f"{where}: beyond the checkpoint of size {checkpoint.size}")
        path = [_unb64(h, where) for h in proof]
        with _named(f"{where} (not in the node's log of size {checkpoint.size})"):
            verify_inclusion(leaf_hash(raw), seq - 1, checkpoint.size, path, checkpoint.root)
        records.append((seq, evidence))
    return records


def _cross_check(report: BundleReport) -> None:
    """Tie envelopes, receipts and the log together: every message is one the node's log speaks
    of, and whatever the log says about an envelope or a receipt is the one in the bundle."""
    by_id = {m.header.message_id: m for m in report.messages}
    mentioned: set[str] = set()
    committed: set[str] = set()  # messages whose disclosed content a signed digest matches
    for seq, e in report.evidence:
        message = by_id.get(e.message_id)
        if message is None:
            raise BundleInvalid(
                f"log entry #{seq}: its message {e.message_id} is not in the bundle"
            )
        mentioned.add(e.message_id)
        if e.envelope_digest is not None and e.envelope_digest != message.digest:
            raise BundleInvalid(f"log entry #{seq}: names another envelope than the bundle's")
        if e.receipt_digest is not None and (
            message.receipt is None or message.receipt.digest != e.receipt_digest
        ):
            raise BundleInvalid(f"log entry #{seq}: names a receipt the bundle does not hold")
        delivered_here = e.event == Event.DELIVERED and message.header.sender == report.node
        if delivered_here and message.receipt is None:
            raise BundleInvalid(f"log entry #{seq}: delivered, but the receipt is missing")
        if e.content_digest is not None and message.content is not None:
            if content_digest(message.content) != e.content_digest:
                raise BundleInvalid(
                    f"message {e.message_id}: the disclosed content is not what log entry "
                    f"#{seq} signed"
                )
            committed.add(e.message_id)
    for message_id in by_id.keys() - mentioned:
        raise BundleInvalid(f"message {message_id}: the node's log says nothing about it")
    for message_id, message in by_id.items():
        if message.content is not None and message_id not in committed:
            raise BundleInvalid(
                f"message {message_id}: content disclosed, but no log entry commits to it"
            )


@contextmanager
def _named(where: str) -> Iterator[None]:
    """Turn any verification error inside into ``BundleInvalid`` naming the part at fault."""
    try:
        yield
    except BundleInvalid:
        raise
    except MlaError as exc:
        raise BundleInvalid(f"{where}: [{exc.code}] {exc.detail}") from None


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any, where: str = "bundle") -> bytes:
    if not isinstance(value, str):
        raise BundleInvalid(f"{where}: expected base64 text")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BundleInvalid(f"{where}: invalid base64") from None
    if _b64(data) != value:  # unused low bits of the last character could hide a flipped bit
        raise BundleInvalid(f"{where}: base64 is not in its canonical form")
    return data


def _text(body: dict[str, Any], key: str) -> str:
    value = body[key]
    if not isinstance(value, str):
        raise BundleInvalid(f"{key} must be text")
    return value


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds")
