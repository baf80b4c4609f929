"""What the dashboard shows of a case thread: its legal state and its deadline, derived from the
thread's messages and their evidence (read-only: nothing here records a view)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from mla_node.protocol import forms
from mla_node.protocol.evidence import Event
from mla_node.service.context import NodeContext
from mla_node.storage import repo

# The state a follow-up of each type puts its case in.
_AFTER: dict[str, str] = {
    "acknowledgement": "acknowledged",
    "additional_info_request": "additional_info_requested",
    "supplement": "supplemented",
    "return_with_reasons": "returned",
    "execution_result": "executed",
    "withdrawal": "withdrawn",
}
CLOSED = frozenset({"returned", "executed", "withdrawn"})
STATES = (
    "submitted",
    "delivered",
    "acknowledged",
    "additional_info_requested",
    "supplemented",
    "returned",
    "executed",
    "withdrawn",
    "undeliverable",
    "rejected",
)
MAX_CASES = 200


@dataclass(frozen=True)
class CaseLine:
    case_id: str
    box: str  # outbox: we asked; inbox: we were asked
    form_type: str
    peer: str
    opened_at: int
    state: str
    deadline: str | None  # YYYY-MM-DD
    overdue: bool
    messages: int
    unread: int


def legal_state(thread: list[repo.MessageRow], acknowledged: bool) -> str:
    opener = thread[0]
    if opener.status in ("undeliverable", "rejected"):
        state = opener.status
    elif opener.status == "queued":
        state = "submitted"
    else:
        state = "acknowledged" if acknowledged else "delivered"
    for m in thread[1:]:
        state = _AFTER.get(m.form_type, state)
    return state


def deadline_of(thread: list[repo.MessageRow]) -> str | None:
    """The date the case waits for: an open request for more information's, the request's own,
    or the formal request due after a provisional arrest."""
    due: str | None = None  # the request's own
    asked: str | None = None  # an open request for more information's
    for m in thread:
        form = m.form or {}
        if m.form_type == "provisional_arrest" and form.get("formal_request_due_days"):
            opened = dt.datetime.fromtimestamp(m.created_at / 1000, dt.UTC).date()
            due = (opened + dt.timedelta(days=int(form["formal_request_due_days"]))).isoformat()
        elif m.form_type == "extradition_request" and due is not None:
            due = None  # the formal request came
        elif m.form_type in forms.REQUEST_TYPES and isinstance(form.get("deadline"), str):
            due = form["deadline"]
        elif m.form_type == "additional_info_request":
            asked = form.get("deadline") if isinstance(form.get("deadline"), str) else None
        elif m.form_type == "supplement":
            asked = None  # the information asked for came
    return asked or due


async def case_lines(
    ctx: NodeContext,
    *,
    box: str | None,
    status: str | None,
    form_type: str | None,
    peer: str | None,
    search: str | None,
    with_dates: bool,
) -> list[CaseLine]:
    today = dt.datetime.fromtimestamp(ctx.clock() / 1000, dt.UTC).date().isoformat()
    openers: list[repo.MessageRow] = []
    for direction in ("out", "in"):
        if box is not None and {"outbox": "out", "inbox": "in"}[box] != direction:
            continue
        for kind in sorted(forms.REQUEST_TYPES):
            if form_type is not None and form_type != kind:
                continue
            openers += await repo.list_messages(
                ctx.db,
                repo.ListFilter(direction=direction, form_type=kind, peer=peer, limit=MAX_CASES),
            )
    lines = []
    for opener in sorted(openers, key=lambda m: m.id, reverse=True)[:MAX_CASES]:
        if opener.case_id != opener.id:
            continue  # a resend's re-sealed copy; the case is its original's
        if search and search.upper() not in opener.id:
            continue
        thread = await repo.case_messages(ctx.db, opener.case_id)
        acknowledged = await repo.has_evidence(ctx.db, opener.id, Event.ACKNOWLEDGED) or any(
            m.form_type == "acknowledgement" for m in thread
        )
        state = legal_state(thread, acknowledged)
        if status is not None and state != status:
            continue
        deadline = deadline_of(thread) if with_dates else None
        lines.append(
            CaseLine(
                case_id=opener.case_id,
                box="outbox" if opener.direction == "out" else "inbox",
                form_type=opener.form_type,
                peer=opener.peer,
                opened_at=opener.created_at,
                state=state,
                deadline=deadline,
                overdue=bool(deadline and deadline < today and state not in CLOSED),
                messages=len(thread),
                unread=sum(1 for m in thread if m.direction == "in" and m.status == "received"),
            )
        )
    return lines


def inbox_line(m: dict[str, Any]) -> dict[str, Any]:
    return {**m, "unread": m["status"] == "received"}
