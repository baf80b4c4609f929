"""Run the committed test vectors (written by scripts/make_vectors.py, described in
docs/protocol.md): good ones open or verify to the expected values, bad ones fail with their code.

This runner uses nothing but the JSON files and the protocol core, as another implementation
would: keys come from keys.json, trust from trust_root.json, never from tests/factory.py.
"""

from __future__ import annotations

import json
import runpy
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from mla_node import errors
from mla_node.errors import MlaError
from mla_node.protocol import codec
from mla_node.protocol.checkpoint import verify_checkpoint
from mla_node.protocol.directory import Directory, TrustRoot, verify_directory
from mla_node.protocol.envelope import open_envelope, pad
from mla_node.protocol.evidence import verify_evidence
from mla_node.protocol.keys import SIGNING_ALG, EncryptionKey, SigningKey, Suite, key_id
from mla_node.protocol.merkle import verify_consistency
from mla_node.protocol.receipts import verify_receipt

HERE = Path(__file__).parent
KINDS = ("directory", "envelope", "receipt", "evidence", "checkpoint")
CASES = sorted(
    p.relative_to(HERE).as_posix() for kind in KINDS for p in HERE.glob(f"{kind}/*.json")
)

# Codes the pure core never raises: the transport and the storage raise them.
NOT_FROM_THE_CORE = {
    errors.EnvelopeError.code,  # the base class
    errors.EnvelopeSenderMismatch.code,  # TLS certificate vs envelope sender: transport
    errors.MessageIdConflict.code,  # same id, other content: storage
    errors.AttachmentMissing.code,  # the file is not (yet) in this node's store: storage
    errors.AttachmentInvalid.code,  # the stored file does not match the signed digest: storage
    # A bundle is a composition of the objects vectored here (directory, checkpoint, envelope,
    # receipt, evidence, proofs); tests/test_bundle.py flips every byte of a real one.
    errors.BundleInvalid.code,
}


@cache
def load(name: str) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads((HERE / name).read_text())
    return obj


def input_bytes(vector: dict[str, Any]) -> bytes:
    if "input_hex" in vector:
        return bytes.fromhex(vector["input_hex"])
    repeat = vector["input_repeat"]
    count: int = repeat["count"]
    return bytes.fromhex(repeat["byte_hex"]) * count


def trust() -> TrustRoot:
    return TrustRoot.from_json((HERE / "trust_root.json").read_bytes())


def run_directory(vector: dict[str, Any]) -> Directory:
    ctx = vector["context"]
    digest = ctx.get("current_digest_hex")
    return verify_directory(
        input_bytes(vector),
        trust(),
        now=vector["now"],
        current_version=ctx.get("current_version"),
        current_digest=bytes.fromhex(digest) if digest else None,
    )


@cache
def directory(name: str) -> Directory:
    vector = load(name)
    assert vector["kind"] == "directory"
    assert vector["expect"] == "ok", f"{name} is not a good directory"
    return run_directory(vector)


def private_keys(state: str) -> dict[str, EncryptionKey]:
    out = {}
    for k in load("keys.json")["nodes"][state]:
        if k["use"] == "encrypt":
            key = EncryptionKey(Suite(k["alg"]), bytes.fromhex(k["private_hex"]))
            out[key.kid] = key
    return out


def run(vector: dict[str, Any]) -> Any:
    ctx = vector["context"]
    kind = vector["kind"]
    data = input_bytes(vector)
    if kind == "directory":
        return run_directory(vector)
    d = directory(ctx["directory"])
    if kind == "envelope":
        return open_envelope(
            data,
            directory=d,
            me=ctx["me"],
            my_keys=private_keys(ctx["me"]),
            now=vector["now"],
            max_age_ms=ctx["max_age_ms"],
            max_future_ms=ctx["max_future_ms"],
        )
    if kind == "receipt":
        digest = ctx.get("expect_envelope_digest_hex")
        return verify_receipt(
            data,
            d,
            expect_message_id=ctx.get("expect_message_id"),
            expect_envelope_digest=bytes.fromhex(digest) if digest else None,
            expect_signer=ctx.get("expect_signer"),
        )
    if kind == "checkpoint":
        head = verify_checkpoint(data, d, node=ctx["node"])
        if "previous_hex" in ctx:
            old = verify_checkpoint(bytes.fromhex(ctx["previous_hex"]), d, node=ctx["node"])
            proof = [bytes.fromhex(h) for h in ctx["proof_hex"]]
            verify_consistency(old.size, head.size, old.root, head.root, proof)
        return head
    assert kind == "evidence"
    return verify_evidence(data, d, node=ctx["node"])


def _hex(value: bytes | None) -> str | None:
    return value.hex() if value is not None else None


def observed(kind: str, result: Any) -> dict[str, Any]:
    """The verified object in the vectors' JSON vocabulary."""
    if kind == "directory":
        return {
            "version": result.version,
            "network": result.network,
            "issued_at": result.issued_at,
            "expires_at": result.expires_at,
            "states": sorted(result.nodes),
            "revoked": result.revoked,
        }
    if kind == "receipt":
        return {
            "mid": result.message_id,
            "from": result.sender,
            "to": result.recipient,
            "status": result.status,
            "code": result.code,
            "at": result.at,
            "envelope_hex": result.envelope_digest.hex(),
            "kid": result.kid,
        }
    if kind == "checkpoint":
        return {
            "node": result.node,
            "size": result.size,
            "root_hex": result.root.hex(),
            "at": result.at,
            "kid": result.kid,
        }
    assert kind == "evidence"
    return {
        "event": result.event,
        "node": result.node,
        "mid": result.message_id,
        "case": result.case_id,
        "envelope_hex": _hex(result.envelope_digest),
        "peer": result.peer,
        "at": result.at,
        "detail": result.detail,
        "receipt_hex": _hex(result.receipt_digest),
        "kid": result.kid,
    }


@pytest.mark.parametrize("name", CASES)
def test_vector(name: str) -> None:
    vector = load(name)
    assert vector["description"]
    assert vector["kind"] == name.split("/")[0]
    if vector["expect"] != "ok":
        with pytest.raises(MlaError) as info:
            run(vector)
        assert info.value.code == vector["expect"], info.value.detail
        return
    result = run(vector)
    if vector["kind"] == "envelope":
        assert result.header.as_map() == vector["expected_header"]
        assert result.body == vector["expected_body"]
        assert result.digest.hex() == vector["expected_digest_hex"]
    else:
        assert observed(vector["kind"], result) == vector["expected"]


def test_there_are_vectors_of_every_kind() -> None:
    for kind in KINDS:
        assert any(c.startswith(f"{kind}/") for c in CASES), kind
    assert len(CASES) > 40


def test_every_core_error_code_has_a_vector() -> None:
    codes = {load(c)["expect"] for c in CASES}
    wanted = {
        cls.code
        for cls in errors.all_error_classes()
        if issubclass(cls, errors.EnvelopeError | errors.ReceiptError | errors.TrustError)
        and cls.code not in NOT_FROM_THE_CORE
        and cls is not errors.TrustError
    }
    assert wanted - codes == set()
    assert {"ok"} <= codes


def test_keys_file_is_labelled_and_consistent() -> None:
    keys = load("keys.json")
    assert keys["WARNING"].startswith("TEST KEYS ONLY")
    root = SigningKey.from_private_bytes(bytes.fromhex(keys["root"]["private_hex"]))
    assert root.kid == keys["root"]["kid"]
    assert trust().root_keys == {root.kid: root.public}
    assert keys["network"] == trust().network
    published = {
        k.kid: k
        for name in CASES
        if name.startswith("directory/") and load(name)["expect"] == "ok"
        for node in directory(name).nodes.values()
        for k in node.keys
    }
    for state, entries in keys["nodes"].items():
        for k in entries:
            private = bytes.fromhex(k["private_hex"])
            if k["use"] == "sign":
                public = SigningKey.from_private_bytes(private).public
            else:
                public = EncryptionKey(Suite(k["alg"]), private).public
            assert public.hex() == k["public_hex"]
            assert key_id(k["alg"], public) == k["kid"]
            if not k.get("unpublished"):
                assert published[k["kid"]].public == public, (state, k["kid"])
    assert all(k.alg == SIGNING_ALG for k in published.values() if k.use == "sign")


def test_codec_known_answers() -> None:
    known = load("codec.json")
    for case in known["pae"]:
        parts = [bytes.fromhex(p) for p in case["parts_hex"]]
        assert codec.pae(bytes.fromhex(case["domain_hex"]), *parts).hex() == case["output_hex"]
    for case in known["key_id"]:
        assert key_id(case["alg"], bytes.fromhex(case["public_hex"])) == case["kid"]
    for case in known["padding"]:
        assert len(pad(bytes(case["plaintext_len"]))) == case["padded_len"]


def test_generator_reproduces_the_deterministic_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys, trust root, known answers and directories do not depend on HPKE's randomness: the
    script must write them byte for byte as committed (envelopes, and the receipts and evidence
    that name an envelope's digest, change on every run)."""
    script = HERE.parents[1] / "scripts" / "make_vectors.py"
    monkeypatch.setattr("sys.argv", [str(script), "--out", str(tmp_path)])
    runpy.run_path(str(script), run_name="__main__")
    fixed = ["keys.json", "trust_root.json", "codec.json"]
    fixed += [c for c in CASES if c.startswith("directory/")]
    for name in fixed:
        assert (tmp_path / name).read_text() == (HERE / name).read_text(), name
    written = {p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("*/*.json")}
    assert written == set(CASES)
