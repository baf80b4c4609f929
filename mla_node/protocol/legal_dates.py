"""The date a treaty form binds the other side to, read from the form alone. Pure.

- a request's ``deadline`` (the date the assistance is needed by);
- an ``additional_info_request``'s ``deadline``;
- a ``provisional_arrest``: the formal extradition request is due ``formal_request_due_days``
  after the arrest. The node does not know the arrest's date, so it counts from when the
  request was sent (the earliest the arrest could be).

A date is the end of that day, UTC: the node does not know the state's time zone. What settles a
date (an answer in the case) is for service/alerts.py; the date itself never changes, so the
node works it out once, when it stores the message (storage/repo.py, ``legal_due_at``), and an
alert check reads only the messages whose date has passed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

MS_PER_DAY = 86_400_000
# Forms that carry a date the other side is bound to.
DEADLINE_FORMS = ("mla_request", "provisional_arrest", "additional_info_request")
DEFAULT_FORMAL_REQUEST_DUE_DAYS = 60


def end_of_day(date: str) -> int | None:
    """The first ms after the UTC day ``date`` (ISO 8601); None when it is not a date."""
    try:
        day = dt.date.fromisoformat(date)
    except ValueError:
        return None
    return int(
        dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC).timestamp() * 1000
    )


def legal_due(form_type: str, form: Mapping[str, Any], sent_at: int) -> tuple[str, int] | None:
    """(kind, due in ms) of a form that sets a date, None for one that does not.

    kind: ``assistance``, ``additional_info`` or ``formal_extradition_request``."""
    if form_type == "mla_request" and isinstance(form.get("deadline"), str):
        due = end_of_day(form["deadline"])
        return None if due is None else ("assistance", due)
    if form_type == "additional_info_request" and isinstance(form.get("deadline"), str):
        due = end_of_day(form["deadline"])
        return None if due is None else ("additional_info", due)
    if form_type == "provisional_arrest":
        days = form.get("formal_request_due_days", DEFAULT_FORMAL_REQUEST_DUE_DAYS)
        if not isinstance(days, int) or isinstance(days, bool):
            return None  # the form's schema makes it a whole number; storing never fails on it
        return "formal_extradition_request", sent_at + days * MS_PER_DAY
    return None
