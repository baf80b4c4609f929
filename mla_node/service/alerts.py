"""The conditions a human must act on, computed from the node's state whenever asked.

One list, three outlets: ``GET /api/v1/alerts`` (the admin's view), the ``mla_alerts`` metric,
and ``ALERT <name> <subject> ...`` log lines (WARNING, ERROR once critical), given when an
alert appears or worsens and again every ``ops.alert_repeat_s`` while it stands, so a log alert
rule fires without the log filling up. Nothing is stored: an alert is gone once its cause is.

- ``certificate_expiring``: this node's TLS certificate, or the CA that issued it, ends within
  ``ops.expiry_alert_days`` (critical once ended);
- ``key_expiring``: the newest key of a kind this node publishes ends within that;
- ``directory_stale``: the directory nears its end (``keys.directory_alert_fraction``) or ended;
- ``peer_unreachable``: deliveries to a peer failed for over ``ops.peer_unreachable_alert_s``;
- ``legal_deadline_overdue``: a case's date passed with no answer (:func:`legal_deadlines`);
- ``undeliverable``: messages passed their delivery deadline and wait for an admin's resend;
- ``split_view``: a peer showed two histories of its log.

The last three are logged where they happen (service/trust.py, dead_letters.py, witness.py);
this module logs the others, so no line is doubled.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from mla_node.errors import MlaError
from mla_node.protocol.legal_dates import legal_due
from mla_node.service.context import NodeContext
from mla_node.service.health import MS_PER_DAY, CertificateWatch
from mla_node.service.trust import Staleness, staleness
from mla_node.storage import ops_repo, repo
from mla_node.storage.repo import Reader

log = logging.getLogger(__name__)

WARNING = "warning"
CRITICAL = "critical"
LOGGED_ELSEWHERE = frozenset({"directory_stale", "undeliverable", "split_view"})
# The legal deadlines and dead letters are read through indexes but grow with the years of
# cases: read them at most this often, whatever the number of scrapes and API calls.
SLOW_REFRESH_S = 60.0


@dataclass(frozen=True)
class Alert:
    name: str
    severity: str  # warning | critical
    subject: str  # what it is about: tls, ca, a key id, a state, a message id
    detail: str
    since: int | None = None  # ms since the epoch, when known
    due: int | None = None  # ms: the expiry or deadline concerned, when there is one

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "severity": self.severity,
            "subject": self.subject,
            "detail": self.detail,
            "since": iso(self.since),
            "due": iso(self.due),
        }


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")


# --- legal deadlines --------------------------------------------------------------------------


@dataclass(frozen=True)
class LegalDeadline:
    message_id: str
    case_id: str
    box: str  # inbox: this state owes the answer; outbox: the other state does
    peer: str
    kind: str  # assistance | additional_info | formal_extradition_request
    due: int  # ms


def legal_deadlines(forms: list[ops_repo.FormRow], now: int) -> list[LegalDeadline]:
    """The dates of open cases that have passed at ``now``.

    The dates are protocol/legal_dates.py's; ``forms`` holds the forms that set them and those
    that may settle them:

    - a request's date passes with no ``execution_result``, ``return_with_reasons`` or
      ``withdrawal`` in its case;
    - an ``additional_info_request``'s passes with no ``supplement`` answering it;
    - a ``provisional_arrest``'s passes with no ``extradition_request`` between the same states
      with the same ``case_reference``, and no closing follow-up.
    """
    closed_cases = {f.case_id for f in forms if f.form_type in SETTLED_BY_CASE}
    answered = {f.in_reply_to for f in forms if f.form_type == "supplement"}
    formal = {
        (f.sender, f.recipient, f.form.get("case_reference"))
        for f in forms
        if f.form_type == "extradition_request"
    }
    out: list[LegalDeadline] = []
    for f in forms:
        dated = legal_due(f.form_type, f.form, f.created_at)
        if dated is None:
            continue
        kind, due = dated
        if kind == "additional_info" and f.id in answered:
            continue
        if kind == "formal_extradition_request" and (
            (f.sender, f.recipient, f.form.get("case_reference")) in formal
        ):
            continue
        if due > now or f.case_id in closed_cases:
            continue
        box = "outbox" if f.direction == "out" else "inbox"
        peer = f.recipient if f.direction == "out" else f.sender
        out.append(LegalDeadline(f.id, f.case_id, box, peer, kind, due))
    return out


SETTLED_BY_CASE = ("execution_result", "return_with_reasons", "withdrawal")


async def deadline_forms(db: Reader, now: int) -> list[ops_repo.FormRow]:
    """What :func:`legal_deadlines` needs at ``now``: the forms whose date has passed in cases
    still open, and the extradition requests that may settle a provisional arrest among them
    (matched by the form's ``case_reference``, which only :func:`legal_deadlines` reads)."""
    passed = await ops_repo.open_passed_dates(
        db, now, settled_by=SETTLED_BY_CASE, answered_by="supplement"
    )
    forms = list(passed)
    arrests = {(f.sender, f.recipient) for f in passed if f.form_type == "provisional_arrest"}
    for sender, recipient in sorted(arrests):
        forms += await ops_repo.forms_between(db, "extradition_request", sender, recipient)
    return forms


# --- the monitor ------------------------------------------------------------------------------


@dataclass
class _Slow:
    at: float = float("-inf")  # monotonic time of the last refresh
    deadlines: list[LegalDeadline] = field(default_factory=list)
    undeliverable: dict[str, int] = field(default_factory=dict)


class AlertMonitor:
    """Computes the current alerts of one node; :meth:`run` logs them as they come and go."""

    def __init__(self, ctx: NodeContext, certs: CertificateWatch) -> None:
        self.ctx = ctx
        self.certs = certs
        self._slow = _Slow()
        self._slow_lock = asyncio.Lock()
        self._logged: dict[tuple[str, str], tuple[str, float]] = {}  # -> severity, when

    def forget(self) -> None:
        """Read the legal deadlines and dead letters again at the next call, not up to
        SLOW_REFRESH_S later."""
        self._slow = _Slow()

    async def slow_facts(self) -> _Slow:
        async with self._slow_lock:  # concurrent scrapes share one refresh
            if time.monotonic() - self._slow.at >= SLOW_REFRESH_S:
                now = self.ctx.clock()
                forms = await deadline_forms(self.ctx.db, now)
                self._slow = _Slow(
                    time.monotonic(),
                    legal_deadlines(forms, now),
                    await repo.undeliverable_by_peer(self.ctx.db),
                )
        return self._slow

    async def current(self) -> list[Alert]:
        now = self.ctx.clock()
        ops = self.ctx.config.ops
        alerts = self._certificates(now, ops.expiry_alert_days) + self._keys(
            now, ops.expiry_alert_days
        )
        alerts += self._directory(now)
        alerts += await self._peers(now, ops.peer_unreachable_alert_s * 1000)
        slow = await self.slow_facts()
        alerts += [
            Alert(
                "legal_deadline_overdue",
                WARNING,
                d.message_id,
                f"{d.kind} due from {d.peer if d.box == 'outbox' else 'this state'} "
                f"({d.box}, case {d.case_id})",
                due=d.due,
            )
            for d in slow.deadlines
        ]
        alerts += [
            Alert("undeliverable", WARNING, peer, f"{n} message(s) to {peer} wait for a resend")
            for peer, n in sorted(slow.undeliverable.items())
        ]
        for peer, n in sorted((await ops_repo.split_view_counts(self.ctx.db)).items()):
            alerts.append(Alert("split_view", CRITICAL, peer, f"{n} split view(s) of {peer}'s log"))
        return alerts

    def _certificates(self, now: int, days: int) -> list[Alert]:
        try:
            expiries = self.certs.expiries()
        except MlaError as exc:
            return [Alert("certificate_expiring", CRITICAL, "tls", exc.detail)]
        out = []
        for cert in expiries:
            if cert.not_after - now <= days * MS_PER_DAY:
                severity = CRITICAL if cert.not_after <= now else WARNING
                left = cert.days_left(now)
                what = "ended" if left <= 0 else f"ends in {left:.1f} days"
                detail = f"the {cert.which} certificate {cert.subject} {what}"
                out.append(
                    Alert("certificate_expiring", severity, cert.which, detail, due=cert.not_after)
                )
        return out

    def _keys(self, now: int, days: int) -> list[Alert]:
        directory = self.ctx.trust.current
        node = directory.node(self.ctx.state) if directory else None
        if node is None:
            return []
        newest: dict[tuple[str, str], Any] = {}
        for key in node.keys:  # the newest key of each kind is the one that must not end
            kind = (key.use, key.alg)
            if kind not in newest or key.not_after > newest[kind].not_after:
                newest[kind] = key
        out = []
        for key in newest.values():
            if key.not_after - now <= days * MS_PER_DAY:
                severity = CRITICAL if key.not_after <= now else WARNING
                detail = f"the {key.use} key {key.alg} ends at {iso(key.not_after)}: rotate it"
                out.append(Alert("key_expiring", severity, key.kid, detail, due=key.not_after))
        return out

    def _directory(self, now: int) -> list[Alert]:
        directory = self.ctx.trust.current
        if directory is None:
            return [Alert("directory_stale", CRITICAL, "directory", "no directory accepted")]
        level = staleness(directory, now, self.ctx.config.keys.directory_alert_fraction)
        if level is Staleness.FRESH:
            return []
        severity = CRITICAL if level is Staleness.EXPIRED else WARNING
        detail = f"directory version {directory.version} {level.value}"
        return [Alert("directory_stale", severity, "directory", detail, due=directory.expires_at)]

    async def _peers(self, now: int, threshold_ms: int) -> list[Alert]:
        statuses = await repo.peer_statuses(self.ctx.db)
        queues = await repo.outbox_summary(self.ctx.db)
        out = []
        for peer, st in sorted(statuses.items()):
            if st.consecutive_failures == 0:
                continue
            oldest = queues.get(peer, (0, None, None))[1]
            # Failing since the last success, or since the oldest envelope still waiting for it,
            # whichever is later: when the trouble started as near as the database knows.
            known = [t for t in (st.last_success_at, oldest) if t is not None]
            since = max(known) if known else st.last_failure_at
            if since is None or now - since < threshold_ms:
                continue
            hours = (now - since) / 3_600_000
            detail = (
                f"{st.consecutive_failures} failed attempt(s) over {hours:.1f} h; last error: "
                f"{st.last_error or 'none'}"
            )
            out.append(Alert("peer_unreachable", WARNING, peer, detail, since=since))
        return out

    async def check_and_log(self) -> list[Alert]:
        """Compute the alerts and log those due (new, worse, or standing for repeat_s)."""
        alerts = await self.current()
        repeat_s = self.ctx.config.ops.alert_repeat_s
        now = time.monotonic()
        seen: set[tuple[str, str]] = set()
        for alert in alerts:
            if alert.name in LOGGED_ELSEWHERE:
                continue
            key = (alert.name, alert.subject)
            seen.add(key)
            previous = self._logged.get(key)
            if previous is None or previous[0] != alert.severity or now - previous[1] >= repeat_s:
                self._logged[key] = (alert.severity, now)
                level = logging.ERROR if alert.severity == CRITICAL else logging.WARNING
                log.log(level, "ALERT %s %s: %s", alert.name, alert.subject, alert.detail)
        for key in set(self._logged) - seen:
            del self._logged[key]
            log.info("alert %s %s cleared", *key)
        return alerts

    async def run(self, interval_s: float) -> None:
        """The periodic task the runtime starts; the first check runs at once."""
        while True:
            try:
                await self.check_and_log()
            except Exception:  # keep watching whatever one check did
                log.exception("alert check failed")
            await asyncio.sleep(interval_s)
