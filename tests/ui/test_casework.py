"""The dashboard's legal state and deadline of a case thread, from its messages."""

from __future__ import annotations

from typing import Any

import pytest

from mla_node.storage import repo
from mla_node.ui.casework import deadline_of, legal_state

DAY = 86_400_000


def msg(
    form_type: str, status: str = "delivered", form: Any = None, at: int = 0
) -> repo.MessageRow:
    return repo.MessageRow(
        id="01M8FE0GKFMHMK21VV60X5YBGC",
        direction="out",
        sender="AR",
        recipient="BR",
        case_id="01M8FE0GKFMHMK21VV60X5YBGC",
        in_reply_to=None,
        form_type=form_type,
        form_version=1,
        form=form or {},
        status=status,
        envelope=b"",
        envelope_sha256=b"",
        created_at=at,
        updated_at=at,
        created_by=None,
    )


@pytest.mark.parametrize(
    ("types", "acknowledged", "state"),
    [
        ([("mla_request", "queued")], False, "submitted"),
        ([("mla_request", "delivered")], False, "delivered"),
        ([("mla_request", "undeliverable")], False, "undeliverable"),
        ([("mla_request", "retrieved")], True, "acknowledged"),
        ([("mla_request", "delivered"), ("acknowledgement", "received")], True, "acknowledged"),
        ([("mla_request", "delivered"), ("additional_info_request", "received")], True,
         "additional_info_requested"),
        ([("mla_request", "delivered"), ("additional_info_request", "received"),
          ("supplement", "delivered")], True, "supplemented"),
        ([("mla_request", "delivered"), ("return_with_reasons", "received")], True, "returned"),
        ([("mla_request", "delivered"), ("execution_result", "received")], True, "executed"),
        ([("mla_request", "delivered"), ("withdrawal", "delivered")], False, "withdrawn"),
    ],
)  # fmt: skip
def test_legal_state(types: list[tuple[str, str]], acknowledged: bool, state: str) -> None:
    assert legal_state([msg(t, s) for t, s in types], acknowledged) == state


def test_deadlines() -> None:
    assert deadline_of([msg("mla_request", form={"deadline": "2025-06-30"})]) == "2025-06-30"
    arrest = msg("provisional_arrest", form={"formal_request_due_days": 60}, at=0)
    assert deadline_of([arrest]) == "1970-03-02"  # the formal request is due 60 days after
    assert deadline_of([arrest, msg("extradition_request")]) is None
    asked = msg("additional_info_request", form={"deadline": "2025-01-10"})
    assert deadline_of([msg("mla_request"), asked]) == "2025-01-10"
    assert deadline_of([msg("mla_request"), asked, msg("supplement")]) is None
    own = msg("mla_request", form={"deadline": "2025-06-30"})
    assert deadline_of([own, asked, msg("supplement")]) == "2025-06-30"
