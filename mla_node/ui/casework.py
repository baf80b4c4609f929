"""What the dashboard shows of a case thread: its legal state and its deadline, derived from the
thread's messages and their evidence (read-only: nothing here records a view)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any

from mla_node.protocol import forms
from mla_node.protocol.evidence import Event
from mla_node.service.context import NodeContext
from mla_node.storage import repo
from mla_node.ui import paging

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
PAGE = 100  # cases on one page of the dashboard
BATCH = 100  # rows read at a time from each list merged


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


async def _openers(
    ctx: NodeContext,
    *,
    box: str | None,
    form_type: str | None,
    peer: str | None,
    after: str | None,
) -> AsyncGenerator[repo.MessageRow, None]:
    """Every request (a case's first message) below ``after``, newest first: the lists of each
    direction and request type, read a batch at a time and merged by id."""
    sources = [
        repo.ListFilter(direction=direction, form_type=kind, peer=peer, after_id=after, limit=BATCH)
        for direction in ("out", "in")
        if box is None or {"outbox": "out", "inbox": "in"}[box] == direction
        for kind in sorted(forms.REQUEST_TYPES)
        if form_type is None or form_type == kind
    ]
    buffers = [await repo.list_messages(ctx.db, f) for f in sources]
    more = [len(rows) == BATCH for rows in buffers]  # a short batch was a list's last
    while True:
        heads = [i for i, rows in enumerate(buffers) if rows]
        if not heads:
            return
        newest = max(heads, key=lambda i: buffers[i][0].id)
        row = buffers[newest].pop(0)
        yield row
        if not buffers[newest] and more[newest]:
            sources[newest] = replace(sources[newest], after_id=row.id)
            buffers[newest] = await repo.list_messages(ctx.db, sources[newest])
            more[newest] = len(buffers[newest]) == BATCH


async def _line(
    ctx: NodeContext, opener: repo.MessageRow, today: str, with_dates: bool
) -> CaseLine:
    thread = await repo.case_messages(ctx.db, opener.case_id)
    acknowledged = await repo.has_evidence(ctx.db, opener.id, Event.ACKNOWLEDGED) or any(
        m.form_type == "acknowledgement" for m in thread
    )
    state = legal_state(thread, acknowledged)
    deadline = deadline_of(thread) if with_dates else None
    return CaseLine(
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


async def case_page(
    ctx: NodeContext,
    *,
    box: str | None,
    status: str | None,
    form_type: str | None,
    peer: str | None,
    search: str | None,
    with_dates: bool,
    after: str | None = None,
    before: str | None = None,
    size: int = PAGE,
) -> paging.Page[CaseLine]:
    """One page of the dashboard: the cases matching the filters, newest first, ``size`` at a
    time (``after``/``before``: mla_node/ui/paging.py)."""
    today = dt.datetime.fromtimestamp(ctx.clock() / 1000, dt.UTC).date().isoformat()

    async def matching(below: str | None) -> AsyncGenerator[_Match, None]:
        openers = _openers(ctx, box=box, form_type=form_type, peer=peer, after=below)
        async with aclosing(openers):
            async for opener in openers:
                if opener.case_id != opener.id:
                    continue  # a resend's re-sealed copy; the case is its original's
                if search and search.upper() not in opener.id:
                    continue
                if status is None:
                    yield _Match(opener, None)  # its line is made only if it is shown
                    continue
                line = await _line(ctx, opener, today, with_dates)
                if line.state == status:
                    yield _Match(opener, line)

    page = await paging.page_of(
        matching, lambda m: m.opener.id, after=after, before=before, size=size
    )
    lines = [m.line or await _line(ctx, m.opener, today, with_dates) for m in page.items]
    return paging.Page(lines, page.newer, page.older)


@dataclass(frozen=True)
class _Match:
    opener: repo.MessageRow
    line: CaseLine | None


def inbox_line(m: dict[str, Any]) -> dict[str, Any]:
    return {**m, "unread": m["status"] == "received"}
