"""Reconciling two nodes' logs: a real exchange agrees on both sides, and each kind of
disagreement the check exists for is named."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner

from mla_node.cli import cli
from mla_node.protocol.evidence import Event, Evidence
from mla_node.protocol.reconcile import reconcile
from tests.test_bundle import Case, _case


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Case:
    return asyncio.run(_case(tmp_path_factory.mktemp("reconcile")))


def _cli(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["audit", *map(str, args)])
    return result.exit_code, result.output


def test_a_real_exchange_reconciles(case: Case, tmp_path: Path) -> None:
    authority = case.folder / "authority"
    export = tmp_path / "br.jsonl"
    assert _cli("export", "--db", case.br_db, "-o", export)[0] == 0
    code, out = _cli(
        "reconcile",
        case.ar_db,
        export,  # a database and an export can be mixed
        "--trust",
        authority / "trust-root.json",
        "--directory",
        authority / "directory.bin",
    )
    assert code == 0, out
    # request, acknowledgement, question, supplement, execution result: five deliveries
    assert "delivered, both logs agree      5" in out
    assert "mismatches                      0" in out


def test_a_log_that_does_not_verify_is_not_reconciled(case: Case, tmp_path: Path) -> None:
    authority = case.folder / "authority"
    export = tmp_path / "br.jsonl"
    _cli("export", "--db", case.br_db, "-o", export)
    lines = export.read_text().splitlines()
    export.write_text("\n".join(lines[:-3] + lines[-2:]) + "\n")  # one record deleted
    code, out = _cli(
        "reconcile",
        case.ar_db,
        export,
        "--trust",
        authority / "trust-root.json",
        "--directory",
        authority / "directory.bin",
    )
    assert code == 1 and "the log itself does not verify" in out


ENVELOPE, RECEIPT, OTHER = b"e" * 32, b"r" * 32, b"x" * 32


def _e(event: str, node: str, mid: str, peer: str, **fields: object) -> Evidence:
    values: dict[str, object] = {
        "envelope_digest": ENVELOPE,
        "detail": None,
        "receipt_digest": None,
        "actor": None,
        "content_digest": None,
        **fields,
    }
    return Evidence(
        event=event,
        node=node,
        message_id=mid,
        case_id=mid,
        peer=peer,
        at=0,
        kid="k",
        digest=b"",
        raw=b"",
        **values,  # type: ignore[arg-type]
    )


def _sent(mid: str, *, receipt: bytes | None = RECEIPT) -> list[Evidence]:
    out = [_e(Event.SUBMITTED, "AR", mid, "BR")]
    if receipt is not None:
        out.append(_e(Event.DELIVERED, "AR", mid, "BR", receipt_digest=receipt))
    return out


def _stored(
    mid: str, *, envelope: bytes = ENVELOPE, receipt: bytes = RECEIPT, content: bytes | None = None
) -> Evidence:
    return _e(
        Event.DELIVERED,
        "BR",
        mid,
        "AR",
        envelope_digest=envelope,
        receipt_digest=receipt,
        content_digest=content,
    )


def test_agreement_in_flight_and_refusals_are_counted() -> None:
    ar = [
        *_sent("M1"),
        *_sent("M2", receipt=None),  # in flight
        *_sent("M3", receipt=None),
        _e(Event.NOT_DELIVERED, "AR", "M3", "BR", detail="envelope_stale"),
    ]
    result = reconcile("AR", ar, "BR", [_stored("M1")])
    assert (result.matched, result.in_flight, result.refused, result.ok) == (1, 1, 1, True)


@pytest.mark.parametrize(
    ("ar", "br", "reason"),
    [
        (_sent("M1"), [], "records no delivery"),
        (_sent("M1"), [_stored("M1", envelope=OTHER)], "different envelopes"),
        (_sent("M1"), [_stored("M1", receipt=OTHER)], "not the one BR recorded issuing"),
        (
            [_e(Event.SUBMITTED, "AR", "M1", "BR", content_digest=ENVELOPE), *_sent("M1")[1:]],
            [_stored("M1", content=OTHER)],
            "different contents",
        ),
        ([], [_stored("M1")], "records no such message"),
        (
            [*_sent("M1", receipt=None), _e(Event.NOT_DELIVERED, "AR", "M1", "BR", detail="x")],
            [_stored("M1")],
            "recorded it as not delivered",
        ),
    ],
    ids=[
        "receipt-without-delivery",
        "other-envelope",
        "other-receipt",
        "other-content",
        "unsent",
        "refused",
    ],
)
def test_each_disagreement_is_named(ar: list[Evidence], br: list[Evidence], reason: str) -> None:
    result = reconcile("AR", ar, "BR", br)
    assert not result.ok
    assert [m.message_id for m in result.mismatches] == ["M1"]
    assert reason in str(result.mismatches[0])
