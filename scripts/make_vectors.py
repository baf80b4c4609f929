"""Write the protocol's test vectors into tests/vectors/ (see docs/protocol.md, "Test vectors").

    .venv/bin/python scripts/make_vectors.py [--out tests/vectors]

Keys come from fixed seeds, so the keys, the directories, the receipts and the evidence records are
the same bytes on every run. Envelopes are not: HPKE draws its ephemeral key inside
``cryptography`` and offers no way to pass one in. So the output is generated once and COMMITTED;
running this script again rewrites every file (envelopes with new ciphertexts) and the vectors
must still pass. ``tests/vectors/test_vectors.py`` checks the committed files, using nothing but
the files and the protocol core.

Every private key written here is a TEST KEY, public by construction. Never use one elsewhere.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import msgpack  # noqa: E402

from mla_node.errors import MlaError  # noqa: E402
from mla_node.protocol import codec  # noqa: E402
from mla_node.protocol.checkpoint import sign_checkpoint  # noqa: E402
from mla_node.protocol.envelope import MAX_ENVELOPE, envelope_digest, pad  # noqa: E402
from mla_node.protocol.evidence import Event, sign_evidence  # noqa: E402
from mla_node.protocol.keys import SIGNING_ALG, Suite, key_id  # noqa: E402
from mla_node.protocol.merkle import Tree, leaf_hash  # noqa: E402
from mla_node.protocol.receipts import DELIVERED, REJECTED, sign_receipt  # noqa: E402
from tests.factory import (  # noqa: E402
    DAY,
    HOUR,
    MAX_AGE_MS,
    MAX_FUTURE_MS,
    MINUTE,
    NOW,
    TestNetwork,
    craft_envelope,
    fixed_signing_key,
    make_network,
    split_envelope,
    ulid,
)

H = Suite.MLKEM768_X25519
X = Suite.X25519
BODY: dict[str, Any] = {
    "form": "mla_request/1",
    "case": "AR-2026-0001",
    "requesting_authority": "Ministerio de Justicia y Derechos Humanos (TEST)",
    "summary": "Solicitud de asistencia jurídica mutua: vector de prueba",
    "documents": 3,
    "urgent": False,
    "refs": ["TEST-1", "TEST-2"],
    "note": None,
}
FROM_CA: dict[str, Any] = {"from": "CA"}
D1 = "directory/good.json"
D2 = "directory/v2_rotated_revoked.json"
TEST_KEY_WARNING = (
    "TEST KEYS ONLY. These private keys are published with mla_node's test vectors and derived "
    "from fixed labels: never use them, or anything signed by them, outside tests."
)


class Writer:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.count = 0

    def write(self, name: str, obj: dict[str, Any]) -> None:
        path = self.out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj, indent=1, ensure_ascii=True) + "\n")
        self.count += 1

    def vector(
        self,
        name: str,
        kind: str,
        description: str,
        data: bytes | None,
        expect: str,
        *,
        now: int | None = None,
        context: dict[str, Any] | None = None,
        **more: Any,
    ) -> None:
        obj: dict[str, Any] = {"description": description, "kind": kind}
        if data is not None:
            obj["input_hex"] = data.hex()
        if now is not None:
            obj["now"] = now
        obj["context"] = context or {}
        obj["expect"] = expect
        obj.update(more)
        self.write(name, obj)


def envelope_context(me: str, directory: str = D1) -> dict[str, Any]:
    return {
        "me": me,
        "directory": directory,
        "max_age_ms": MAX_AGE_MS,
        "max_future_ms": MAX_FUTURE_MS,
    }


def keys_json(net: TestNetwork) -> dict[str, Any]:
    nodes: dict[str, Any] = {}
    for state, node in net.nodes.items():
        entries: list[dict[str, Any]] = []
        for k in node.keys:
            if k.signing is not None:
                private = k.signing.private_bytes()
            else:
                assert k.encryption is not None
                private = k.encryption.private_raw
            entries.append(
                {
                    "kid": k.entry.kid,
                    "use": k.entry.use,
                    "alg": k.entry.alg,
                    "public_hex": k.entry.public.hex(),
                    "private_hex": private.hex(),
                }
            )
        for suite in Suite:
            enc = node.encryption(suite)
            if enc.kid not in {e["kid"] for e in entries}:
                entries.append(
                    {
                        "kid": enc.kid,
                        "use": "encrypt",
                        "alg": suite.value,
                        "public_hex": enc.public.hex(),
                        "private_hex": enc.private_raw.hex(),
                        "unpublished": True,
                    }
                )
        nodes[state] = entries
    return {
        "WARNING": TEST_KEY_WARNING,
        "formats": {
            SIGNING_ALG: "private: the 32-byte Ed25519 seed; public: the 32-byte raw key",
            X.value: "private: the 32-byte X25519 scalar; public: the 32-byte raw key",
            H.value: (
                "private: the 64-byte ML-KEM-768 seed (d || z) followed by the 32-byte X25519 "
                "private key; public: the 1184-byte ML-KEM-768 encapsulation key followed by the "
                "32-byte X25519 public key"
            ),
        },
        "network": net.network,
        "root": {
            "kid": net.root.kid,
            "alg": SIGNING_ALG,
            "public_hex": net.root.public.hex(),
            "private_hex": net.root.private_bytes().hex(),
        },
        "nodes": nodes,
    }


def codec_json() -> dict[str, Any]:
    pae_cases = [
        (b"", []),
        (b"mla-node/v1/receipt", [b"kid", b"\x80\x00"]),
        (b"d", [b"ab", b"c"]),
        (b"d", [b"a", b"bc"]),
        (codec.DOMAIN_HPKE_INFO, [b"\x81\xa1v\x01"]),
    ]
    kid_cases = [
        (SIGNING_ALG, bytes(32)),
        (SIGNING_ALG, fixed_signing_key("vector").public),
        (X.value, bytes(range(32))),
    ]
    return {
        "description": "Known answers for PAE (codec.pae) and key ids (keys.key_id)",
        "pae": [
            {
                "domain_hex": d.hex(),
                "parts_hex": [p.hex() for p in parts],
                "output_hex": codec.pae(d, *parts).hex(),
            }
            for d, parts in pae_cases
        ],
        "key_id": [
            {"alg": alg, "public_hex": pub.hex(), "kid": key_id(alg, pub)} for alg, pub in kid_cases
        ],
        "padding": [
            {"plaintext_len": n, "padded_len": len(pad(bytes(n)))} for n in (0, 1023, 1024, 70000)
        ],
    }


def checkpoint_vectors(w: Writer, key: Any, records: list[bytes]) -> None:
    """AR's log: its two evidence records and a third; checkpoints of size 2 and 3 over it."""
    leaves = [leaf_hash(r) for r in [*records, b"a third record"]]
    tree = Tree(leaves)
    c2 = sign_checkpoint(key, node="AR", size=2, root=tree.root(2), at=NOW + 2 * MINUTE)
    c3 = sign_checkpoint(key, node="AR", size=3, root=tree.root(3), at=NOW + 3 * MINUTE)
    ctx = {"directory": D1, "node": "AR"}
    consistent = {
        **ctx,
        "previous_hex": c2.hex(),
        "proof_hex": [h.hex() for h in tree.consistency_proof(2)],
    }
    expected = {
        "node": "AR",
        "size": 3,
        "root_hex": tree.root(3).hex(),
        "at": NOW + 3 * MINUTE,
        "kid": key.kid,
    }
    w.vector(
        "checkpoint/good.json",
        "checkpoint",
        "AR's checkpoint of its first 3 records",
        c3,
        "ok",
        context=ctx,
        expected=expected,
    )
    w.vector(
        "checkpoint/consistent.json",
        "checkpoint",
        "AR's checkpoint of size 3 with its consistency proof from its checkpoint of size 2",
        c3,
        "ok",
        context=consistent,
        expected=expected,
    )
    fork = Tree([leaves[0], leaf_hash(b"a forged second record"), leaves[2]])
    forked = sign_checkpoint(key, node="AR", size=3, root=fork.root(3), at=NOW + 3 * MINUTE)
    w.vector(
        "checkpoint/split_view.json",
        "checkpoint",
        "A validly signed checkpoint of a forked history: not consistent with AR's size-2 head",
        forked,
        "log_proof_invalid",
        context={**consistent, "proof_hex": [h.hex() for h in fork.consistency_proof(2)]},
    )
    flipped = bytearray(c3)
    flipped[len(flipped) // 2] ^= 0x01
    w.vector(
        "checkpoint/tampered.json",
        "checkpoint",
        "AR's checkpoint, one bit flipped",
        bytes(flipped),
        "checkpoint_invalid",
        context=ctx,
    )
    w.vector(
        "checkpoint/wrong_node.json",
        "checkpoint",
        "AR's checkpoint presented as BR's",
        c3,
        "checkpoint_invalid",
        context={"directory": D1, "node": "BR"},
    )
    w.vector(
        "checkpoint/evidence_as_checkpoint.json",
        "checkpoint",
        "An evidence record signed by AR presented as a checkpoint: the domain differs",
        records[0],
        "checkpoint_invalid",
        context=ctx,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "vectors")
    args = parser.parse_args()
    out: Path = args.out
    for sub in ("directory", "envelope", "receipt", "evidence", "checkpoint"):
        shutil.rmtree(out / sub, ignore_errors=True)
    w = Writer(out)

    net = make_network(("AR", "BR", "US"), now=NOW, suites={"US": [X.value]})
    ar, br, us = net.nodes["AR"], net.nodes["BR"], net.nodes["US"]
    ar0, br0 = ar.signing, br.signing
    w.write("trust_root.json", json.loads(net.trust.to_json()))
    w.write("codec.json", codec_json())

    # --- directories -----------------------------------------------------------------------------
    d1 = net.directory_bytes
    w.vector(
        D1,
        "directory",
        "Version 1 of the test network: AR and BR accept both suites, US only X25519",
        d1,
        "ok",
        now=NOW,
        expected={
            "version": 1,
            "network": net.network,
            "issued_at": NOW,
            "expires_at": net.expires_at,
            "states": sorted(net.nodes),
            "revoked": {},
        },
    )
    same_version = net.resign_directory(version=1, issued_at=NOW + 1, install=False)
    d_expired_at = net.expires_at
    directory_cases: list[tuple[str, str, bytes, dict[str, Any], str, int]] = [
        (
            "rollback",
            "Version 1 offered to a node that already holds version 2",
            d1,
            {"current_version": 2},
            "directory_rollback",
            NOW,
        ),
        (
            "same_version_other_content",
            "Another directory numbered 1, to a node holding the good version 1",
            same_version,
            {"current_version": 1, "current_digest_hex": hashlib.sha256(d1).hexdigest()},
            "directory_rollback",
            NOW,
        ),
        (
            "expired",
            "The good version 1 at its expiry time",
            d1,
            {},
            "directory_expired",
            d_expired_at,
        ),
    ]
    for name, desc, data, ctx, code, now in directory_cases:
        w.vector(f"directory/{name}.json", "directory", desc, data, code, now=now, context=ctx)

    tampered = bytearray(d1)
    tampered[d1.index(b"https://127.0.0.1") + 8] ^= 1
    w.vector(
        "directory/tampered.json",
        "directory",
        "One bit of an endpoint flipped after signing",
        bytes(tampered),
        "directory_bad_signature",
        now=NOW,
    )
    w.vector(
        "directory/unknown_root_key.json",
        "directory",
        "A well-formed directory signed by a key that is not in the trust root",
        net.resign_directory(root=fixed_signing_key("attacker"), install=False),
        "directory_bad_signature",
        now=NOW,
    )

    def at_ar(body: dict[str, Any]) -> dict[str, Any]:
        node: dict[str, Any] = next(n for n in body["nodes"] if n["state"] == "AR")
        return node

    def http(body: dict[str, Any]) -> None:
        at_ar(body)["endpoint"] = "http://127.0.0.1:18443"

    def kid_mismatch(body: dict[str, Any]) -> None:
        at_ar(body)["keys"][0]["public"] = fixed_signing_key("other").public

    def tls_mismatch(body: dict[str, Any]) -> None:
        at_ar(body)["tls_cert_sha256"] = "sha256:" + "00" * 32

    def not_member(body: dict[str, Any]) -> None:
        at_ar(body)["state"] = "FR"

    for name, desc, mutate in [
        ("endpoint_not_https", "AR's endpoint is http://, signed by the real root", http),
        ("kid_mismatch", "AR's signing key replaced, its kid kept", kid_mismatch),
        ("tls_hash_mismatch", "tls_cert_sha256 does not hash tls_cert", tls_mismatch),
        ("state_not_member", "A node whose state is not an OAS member", not_member),
    ]:
        w.vector(
            f"directory/{name}.json",
            "directory",
            desc,
            net.resign_directory(mutate=mutate, install=False),
            "directory_malformed",
            now=NOW,
        )
    w.vector(
        "directory/wrong_network.json",
        "directory",
        "A directory of another network, signed by the same root key",
        net.resign_directory(network="another-network", install=False),
        "directory_malformed",
        now=NOW,
    )

    # --- envelopes under version 1 ---------------------------------------------------------------
    def mid(n: int) -> str:
        return ulid(NOW, n)

    good_h = net.seal("AR", "BR", BODY, mid=mid(1))
    good_x = net.seal("AR", "US", BODY, mid=mid(2))
    good_notice = net.seal(
        "BR",
        "AR",
        {"notice": "acknowledged"},
        mid=mid(3),
        suite=X,
        message_type="notice",
        created=NOW - MINUTE,
    )
    for name, desc, data, me, body in [
        (
            "good_hybrid",
            "AR to BR in the hybrid suite, the strongest both accept",
            good_h,
            "BR",
            BODY,
        ),
        ("good_x25519", "AR to US, which accepts only X25519", good_x, "US", BODY),
        (
            "good_notice_x25519",
            "BR to AR, a notice, X25519 by choice, created a minute before now",
            good_notice,
            "AR",
            {"notice": "acknowledged"},
        ),
    ]:
        opened = net.open(me, data)
        w.vector(
            f"envelope/{name}.json",
            "envelope",
            desc,
            data,
            "ok",
            now=NOW,
            context=envelope_context(me),
            expected_header=opened.header.as_map(),
            expected_digest_hex=opened.digest.hex(),
            expected_body=body,
        )

    def env(name: str, desc: str, data: bytes, code: str, me: str = "BR", **kw: Any) -> None:
        directory = kw.pop("directory", D1)
        now = kw.pop("now", NOW)
        w.vector(
            f"envelope/{name}.json",
            "envelope",
            desc,
            data,
            code,
            now=now,
            context=envelope_context(me, directory),
            **kw,
        )

    def signed(
        header: dict[str, Any],
        *,
        body: Any = BODY,
        to: str = "BR",
        suite: Suite = X,
        key: Any = None,
    ) -> bytes:
        ciphertext = net.encrypt_for(to, codec.pack(header), body, suite=suite)
        return craft_envelope(header, ciphertext, key or ar0)

    _, header_bytes, ciphertext, signature = split_envelope(good_h)
    header = codec.unpack(header_bytes, error=MlaError, max_bytes=4096)

    env(
        "truncated",
        "The good hybrid envelope cut in half",
        good_h[: len(good_h) // 2],
        "envelope_malformed",
    )
    env(
        "hostile_array_header",
        "An array header claiming 2^32 - 1 items",
        b"\xdd\xff\xff\xff\xff",
        "envelope_malformed",
    )
    env(
        "hostile_deep_nesting",
        "10,000 nested one-item arrays",
        b"\x91" * 10_000 + b"\x01",
        "envelope_malformed",
    )
    env(
        "hostile_ext_type",
        "A msgpack ext type where the outer array belongs",
        msgpack.packb(msgpack.ExtType(1, b"x")),
        "envelope_malformed",
    )
    env(
        "hostile_int_map_keys",
        "A header map with integer keys",
        craft_envelope(msgpack.packb({1: 1}), b"c", ar0),
        "envelope_malformed",
    )
    env(
        "signature_wrong_length",
        "The good envelope with a 63-byte signature",
        craft_envelope(header_bytes, ciphertext, None, signature=signature[:63]),
        "envelope_malformed",
    )
    env(
        "extra_header_field",
        "A signed header with a field beyond the routing fields",
        signed({**net.header("AR", "BR", mid=mid(10)), "subject": "Extradition of J. Doe"}),
        "envelope_malformed",
    )
    env(
        "bad_message_id",
        "A signed header whose mid is not a 26-character ULID",
        signed(net.header("AR", "BR", mid="01kdvdna000000000000000001")),
        "envelope_malformed",
    )
    h11 = net.header("AR", "BR", mid=mid(11))
    env(
        "body_with_ext_type",
        "Signed and decryptable, but the body holds a msgpack ext type",
        craft_envelope(
            h11,
            net.encrypt_plaintext(
                "BR", codec.pack(h11), pad(msgpack.packb({"a": msgpack.ExtType(1, b"x")}))
            ),
            ar0,
        ),
        "envelope_malformed",
    )
    w.vector(
        "envelope/too_large.json",
        "envelope",
        f"{MAX_ENVELOPE + 1} zero bytes: refused on length before parsing",
        None,
        "envelope_too_large",
        now=NOW,
        context=envelope_context("BR"),
        input_repeat={"byte_hex": "00", "count": MAX_ENVELOPE + 1},
    )
    env(
        "outer_version_2",
        "The good envelope with outer version 2",
        craft_envelope(header_bytes, ciphertext, None, signature=signature, outer_version=2),
        "envelope_unsupported_version",
    )
    env(
        "header_version_2",
        "Outer version 1, signed header version 2",
        signed({**net.header("AR", "BR", mid=mid(12)), "v": 2}),
        "envelope_unsupported_version",
    )
    env(
        "suite_not_accepted",
        "AR to US in the hybrid suite, which US does not accept",
        net.seal("AR", "US", BODY, mid=mid(13), suite=H),
        "envelope_unsupported_suite",
        me="US",
    )
    env(
        "unknown_sender",
        "From CA, an OAS state with no node in the directory",
        signed(
            net.header("AR", "BR", mid=mid(14), skid=fixed_signing_key("CA").kid, **FROM_CA),
            key=fixed_signing_key("CA"),
        ),
        "envelope_unknown_sender",
    )
    stranger = fixed_signing_key("stolen")
    env(
        "unknown_key",
        "From AR, signed by a key AR never published",
        signed(net.header("AR", "BR", mid=mid(15), skid=stranger.kid), key=stranger),
        "envelope_unknown_key",
    )
    env(
        "unknown_recipient_key",
        "Encrypted to a recipient key id BR does not hold",
        signed(net.header("AR", "BR", mid=mid(16), rkid="0" * 24)),
        "envelope_unknown_key",
    )
    env(
        "signature_zeroed",
        "The good envelope with 64 zero bytes as signature",
        craft_envelope(header_bytes, ciphertext, None, signature=bytes(64)),
        "envelope_bad_signature",
    )
    env(
        "suite_mutated",
        "The good hybrid envelope with the header's suite rewritten to X25519",
        craft_envelope({**header, "suite": X.value}, ciphertext, None, signature=signature),
        "envelope_bad_signature",
    )
    env(
        "plaintext_for_ciphertext",
        "The good envelope with the ciphertext replaced by the msgpack body, signature kept",
        craft_envelope(header_bytes, codec.pack(BODY), None, signature=signature),
        "envelope_bad_signature",
    )
    br_key = br0
    rehdr = net.header("AR", "US", mid=mid(1), skid=ar0.kid)
    env(
        "reencrypted_by_recipient",
        "BR re-encrypts AR's body to US under AR's name, signing with its own key",
        signed(rehdr, to="US", key=br_key),
        "envelope_bad_signature",
        me="US",
    )
    env(
        "wrong_recipient",
        "The good AR-to-BR envelope delivered to US",
        good_h,
        "envelope_wrong_recipient",
        me="US",
    )
    env(
        "reflection",
        "The good AR-to-BR envelope sent back to AR",
        good_h,
        "envelope_wrong_recipient",
        me="AR",
    )
    env(
        "stale",
        "Created 7 days and 1 ms before now",
        net.seal("AR", "BR", BODY, mid=mid(17), created=NOW - MAX_AGE_MS - 1),
        "envelope_stale",
    )
    env(
        "from_future",
        "Created 5 minutes and 1 ms after now",
        net.seal("AR", "BR", BODY, mid=mid(18), created=NOW + MAX_FUTURE_MS + 1),
        "envelope_from_future",
    )
    h19 = net.header("AR", "BR", mid=mid(19))
    other = {**h19, "mid": mid(20)}
    env(
        "ciphertext_bound_to_other_header",
        "Signed by AR, but encrypted under another header's HPKE info",
        craft_envelope(h19, net.encrypt_for("BR", codec.pack(other), BODY), ar0),
        "envelope_undecryptable",
    )
    env(
        "signed_plaintext",
        "Signed by AR, with the padded plaintext where the ciphertext goes",
        craft_envelope(h19, pad(codec.pack(BODY)), ar0),
        "envelope_undecryptable",
    )

    # --- receipts and evidence under version 1 ---------------------------------------------------
    good_digest = envelope_digest(good_h)
    receipt = sign_receipt(
        br0,
        message_id=mid(1),
        sender="AR",
        recipient="BR",
        envelope_digest=good_digest,
        status=DELIVERED,
        code=None,
        at=NOW,
    )
    rcontext = {
        "directory": D1,
        "expect_message_id": mid(1),
        "expect_envelope_digest_hex": good_digest.hex(),
        "expect_signer": "BR",
    }
    w.vector(
        "receipt/good.json",
        "receipt",
        "BR's delivered receipt for envelope/good_hybrid",
        receipt,
        "ok",
        context=rcontext,
        expected={
            "mid": mid(1),
            "from": "AR",
            "to": "BR",
            "status": DELIVERED,
            "code": None,
            "at": NOW,
            "envelope_hex": good_digest.hex(),
            "kid": br0.kid,
        },
    )
    rejected = sign_receipt(
        us.signing,
        message_id=mid(13),
        sender="AR",
        recipient="US",
        envelope_digest=envelope_digest(b"x"),
        status=REJECTED,
        code="envelope_unsupported_suite",
        at=NOW,
    )
    w.vector(
        "receipt/good_rejected.json",
        "receipt",
        "US's signed rejection, with its code",
        rejected,
        "ok",
        context={"directory": D1},
        expected={
            "mid": mid(13),
            "from": "AR",
            "to": "US",
            "status": REJECTED,
            "code": "envelope_unsupported_suite",
            "at": NOW,
            "envelope_hex": envelope_digest(b"x").hex(),
            "kid": us.signing.kid,
        },
    )
    forged = sign_receipt(
        us.signing,
        message_id=mid(1),
        sender="AR",
        recipient="BR",
        envelope_digest=good_digest,
        status=DELIVERED,
        code=None,
        at=NOW,
    )
    w.vector(
        "receipt/wrong_signer.json",
        "receipt",
        "Signed by US, claiming BR received it",
        forged,
        "receipt_invalid",
        context=rcontext,
    )
    w.vector(
        "receipt/wrong_digest.json",
        "receipt",
        "The good receipt, expected for another envelope",
        receipt,
        "receipt_invalid",
        context={**rcontext, "expect_envelope_digest_hex": "00" * 32},
    )
    flipped = bytearray(receipt)
    flipped[-70] ^= 1
    w.vector(
        "receipt/tampered.json",
        "receipt",
        "The good receipt with one bit of the body flipped",
        bytes(flipped),
        "receipt_invalid",
        context=rcontext,
    )
    evidence_min = sign_evidence(
        ar0,
        event=Event.SUBMITTED,
        node="AR",
        message_id=mid(1),
        case_id="AR-2026-0001",
        at=NOW - MINUTE,
    )
    evidence_full = sign_evidence(
        ar0,
        event=Event.DELIVERED,
        node="AR",
        message_id=mid(1),
        case_id="AR-2026-0001",
        at=NOW + MINUTE,
        envelope_digest=good_digest,
        peer="BR",
        detail=None,
        receipt_digest=envelope_digest(receipt),
    )
    econtext = {"directory": D1, "node": "AR"}
    w.vector(
        "evidence/good_submitted.json",
        "evidence",
        "AR's record of a clerk's submission",
        evidence_min,
        "ok",
        context=econtext,
        expected={
            "event": "submitted",
            "node": "AR",
            "mid": mid(1),
            "case": "AR-2026-0001",
            "envelope_hex": None,
            "peer": None,
            "at": NOW - MINUTE,
            "detail": None,
            "receipt_hex": None,
            "kid": ar0.kid,
        },
    )
    w.vector(
        "evidence/good_delivered.json",
        "evidence",
        "AR's record of BR's receipt for envelope/good_hybrid, naming both by digest",
        evidence_full,
        "ok",
        context=econtext,
        expected={
            "event": "delivered",
            "node": "AR",
            "mid": mid(1),
            "case": "AR-2026-0001",
            "envelope_hex": good_digest.hex(),
            "peer": "BR",
            "at": NOW + MINUTE,
            "detail": None,
            "receipt_hex": envelope_digest(receipt).hex(),
            "kid": ar0.kid,
        },
    )
    w.vector(
        "evidence/wrong_node.json",
        "evidence",
        "AR's record presented as BR's",
        evidence_min,
        "evidence_invalid",
        context={"directory": D1, "node": "BR"},
    )
    flipped = bytearray(evidence_full)
    flipped[len(flipped) // 2] ^= 0x40
    w.vector(
        "evidence/tampered.json",
        "evidence",
        "AR's delivered record, one bit flipped",
        bytes(flipped),
        "evidence_invalid",
        context=econtext,
    )
    w.vector(
        "evidence/receipt_as_evidence.json",
        "evidence",
        "A receipt signed by AR's key presented as evidence: the domain differs",
        sign_receipt(
            ar0,
            message_id=mid(1),
            sender="BR",
            recipient="AR",
            envelope_digest=good_digest,
            status=DELIVERED,
            code=None,
            at=NOW,
        ),
        "evidence_invalid",
        context=econtext,
    )

    checkpoint_vectors(w, ar0, [evidence_min, evidence_full])

    # --- version 2: AR's and BR's first signing keys revoked, AR's next key not yet valid --------
    ar1 = net.rotate_signing_key("AR", not_before=NOW + DAY)
    br1 = net.rotate_signing_key("BR", not_before=NOW - HOUR)
    d2 = net.resign_directory(revoked={ar0.kid: NOW + HOUR, br0.kid: NOW + HOUR})
    w.vector(
        D2,
        "directory",
        "Version 2: AR's and BR's first signing keys revoked at now + 1 h; AR's next key valid "
        "from now + 1 day, BR's from now - 1 h",
        d2,
        "ok",
        now=NOW,
        context={"current_version": 1, "current_digest_hex": hashlib.sha256(d1).hexdigest()},
        expected={
            "version": 2,
            "network": net.network,
            "issued_at": NOW,
            "expires_at": net.expires_at,
            "states": sorted(net.nodes),
            "revoked": {ar0.kid: NOW + HOUR, br0.kid: NOW + HOUR},
        },
    )
    env(
        "revoked_key",
        "Signed by AR's first key, revoked in version 2 (live traffic refuses any "
        "revoked key, whatever the revocation time)",
        net.seal("AR", "BR", BODY, mid=mid(21), signing_key=ar0),
        "envelope_revoked_key",
        directory=D2,
    )
    env(
        "key_not_yet_valid",
        "Signed by AR's second key, valid only from now + 1 day",
        net.seal("AR", "BR", BODY, mid=mid(22), signing_key=ar1),
        "envelope_key_not_valid",
        directory=D2,
    )
    w.vector(
        "receipt/before_revocation.json",
        "receipt",
        "The good receipt, signed by BR's first "
        "key before its revocation, checked against version 2",
        receipt,
        "ok",
        context={**rcontext, "directory": D2},
        expected={
            "mid": mid(1),
            "from": "AR",
            "to": "BR",
            "status": DELIVERED,
            "code": None,
            "at": NOW,
            "envelope_hex": good_digest.hex(),
            "kid": br0.kid,
        },
    )
    late = sign_receipt(
        br0,
        message_id=mid(1),
        sender="AR",
        recipient="BR",
        envelope_digest=good_digest,
        status=DELIVERED,
        code=None,
        at=NOW + 2 * HOUR,
    )
    w.vector(
        "receipt/after_revocation.json",
        "receipt",
        "Signed by BR's first key, dated after its revocation",
        late,
        "receipt_invalid",
        context={**rcontext, "directory": D2},
    )
    assert br1.kid != br0.kid

    w.write("keys.json", keys_json(net))
    print(f"wrote {w.count} files to {out}")


if __name__ == "__main__":
    main()
