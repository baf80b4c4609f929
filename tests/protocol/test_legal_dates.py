"""The date a form binds the other side to (protocol/legal_dates.py): worked out once, stored
beside the message, so it must be exactly what the alert rules used to compute at each check."""

from __future__ import annotations

import pytest

from mla_node.protocol.legal_dates import MS_PER_DAY, end_of_day, legal_due

JAN_31_END = 1_580_515_200_000  # 2020-02-01T00:00:00Z


def test_a_date_ends_at_the_end_of_its_utc_day() -> None:
    assert end_of_day("2020-01-31") == JAN_31_END
    assert end_of_day("2020-02-30") is None
    assert end_of_day("soon") is None


@pytest.mark.parametrize(
    ("form_type", "form", "expected"),
    [
        ("mla_request", {"deadline": "2020-01-31"}, ("assistance", JAN_31_END)),
        ("mla_request", {}, None),  # no date asked for
        ("mla_request", {"deadline": "not a date"}, None),
        ("mla_request", {"deadline": 20200131}, None),
        ("additional_info_request", {"deadline": "2020-01-31"}, ("additional_info", JAN_31_END)),
        (
            "provisional_arrest",
            {"formal_request_due_days": 40},
            ("formal_extradition_request", 7 + 40 * MS_PER_DAY),
        ),
        ("provisional_arrest", {}, ("formal_extradition_request", 7 + 60 * MS_PER_DAY)),
        ("provisional_arrest", {"formal_request_due_days": "40"}, None),  # storing never fails
        ("provisional_arrest", {"formal_request_due_days": True}, None),
        ("execution_result", {"deadline": "2020-01-31"}, None),  # sets no date of its own
    ],
)
def test_the_forms_that_set_a_date(
    form_type: str, form: dict[str, object], expected: tuple[str, int] | None
) -> None:
    assert legal_due(form_type, form, sent_at=7) == expected
