"""Prometheus metrics of one node, in the text exposition format (version 0.0.4).

Two kinds, chosen so that the hot path costs a dictionary increment and a scrape a few indexed
reads:

- **counters and the latency histogram live in memory** (:class:`DeliveryMetrics`), bumped by
  the delivery loop and the peer endpoint; they start at zero with the process, as Prometheus
  expects of counters (``rate()`` handles the reset);
- **gauges are computed on scrape from the database and the files** (:func:`render`): the
  outbox per peer, peer health, certificate and key expiry, the directory, the evidence log, the
  split views, the legal deadlines and the alerts.

Written here rather than with ``prometheus-client``: a dozen families need about a hundred lines,
the node gains no dependency, and ``prometheus-client``'s process-wide default registry does not
fit several nodes in one process (every in-process test network).
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterable, Mapping
from importlib import metadata

from mla_node.errors import MlaError
from mla_node.service.alerts import AlertMonitor
from mla_node.service.context import NodeContext
from mla_node.service.counters import DeliveryMetrics, Histogram, Labels
from mla_node.service.health import peer_certificate_expiries
from mla_node.storage import ops_repo, repo

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Submitted -> verified receipt, seconds: sub-second on a healthy network, up to the 72 h
# delivery deadline when a peer is down.
LATENCY_BUCKETS = (
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
    1800,
    3600,
    21600,
    86400,
    259200,
)

# --- exposition -------------------------------------------------------------------------------


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(
        self, name: str, kind: str, help_text: str, samples: Iterable[tuple[Labels, float]]
    ) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self.lines.append(f"{name}{_labels(labels)} {_number(value)}")

    def gauge(self, name: str, help_text: str, samples: Iterable[tuple[Labels, float]]) -> None:
        self.family(name, "gauge", help_text, samples)

    def counter(self, name: str, help_text: str, counts: Mapping[Labels, float]) -> None:
        self.family(name, "counter", help_text, sorted(counts.items()))

    def histogram(self, name: str, help_text: str, h: Histogram) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} histogram")
        for labels, counts in sorted(h.counts.items()):
            running = 0
            for bound, count in zip([*h.buckets, float("inf")], counts, strict=True):
                running += count
                le = "+Inf" if bound == float("inf") else _number(bound)
                self.lines.append(f"{name}_bucket{_labels((*labels, ('le', le)))} {running}")
            self.lines.append(f"{name}_sum{_labels(labels)} {_number(h.sums[labels])}")
            self.lines.append(f"{name}_count{_labels(labels)} {running}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _peer(state: str) -> Labels:
    return (("peer", state),)


def _seconds(ms: int) -> float:
    return ms / 1000


async def render(ctx: NodeContext, counters: DeliveryMetrics, monitor: AlertMonitor) -> str:
    """Every metric as it stands now."""
    now = ctx.clock()
    out = Exposition()
    try:
        version = metadata.version("mla-node")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        version = "unknown"
    out.gauge(
        "mla_build_info",
        "The node's state and program version.",
        [((("state", ctx.state), ("version", version)), 1)],
    )

    # The outbox and the peers: gauges from small tables.
    queues = await repo.outbox_summary(ctx.db)
    out.gauge(
        "mla_outbox_queued",
        "Envelopes waiting for delivery, per peer.",
        [(_peer(p), q[0]) for p, q in sorted(queues.items())],
    )
    out.gauge(
        "mla_outbox_oldest_age_seconds",
        "Age of the oldest envelope waiting, per peer.",
        [(_peer(p), max(0.0, _seconds(now - q[1]))) for p, q in sorted(queues.items()) if q[1]],
    )
    statuses = await repo.peer_statuses(ctx.db)
    out.gauge(
        "mla_peer_consecutive_failures",
        "Failed attempts since the last success.",
        [(_peer(p), s.consecutive_failures) for p, s in sorted(statuses.items())],
    )
    out.gauge(
        "mla_peer_last_success_timestamp_seconds",
        "When a peer last took an envelope.",
        [
            (_peer(p), _seconds(s.last_success_at))
            for p, s in sorted(statuses.items())
            if s.last_success_at
        ],
    )
    out.counter(
        "mla_delivery_deadlines_passed_total",
        "Envelopes that passed their delivery deadline (undeliverable), ever.",
        {_peer(p): s.deadlines_passed for p, s in statuses.items()},
    )

    # In-memory counters since the process started.
    out.counter("mla_delivery_attempts_total", "Delivery attempts.", counters.attempts)
    out.counter(
        "mla_delivery_exchanges_total",
        "HTTP exchanges that carried the attempts (a batch of envelopes counts once).",
        counters.exchanges,
    )
    out.counter(
        "mla_delivery_retries_total",
        "Attempts that left the envelope queued for a retry.",
        counters.retries,
    )
    out.counter(
        "mla_delivery_failures_total",
        "Failed attempts by code (delivery_failed: no answer; else the peer's refusal code).",
        counters.failures,
    )
    out.counter(
        "mla_receipts_total",
        "Verified receipts recorded for this node's envelopes, by status.",
        counters.receipts,
    )
    out.counter(
        "mla_envelopes_received_total",
        "Envelopes the peer endpoint answered, by outcome (delivered, repeat or the refusal code).",
        counters.received,
    )
    out.histogram(
        "mla_delivery_latency_seconds",
        "From submission to the verified delivered receipt.",
        counters.latency,
    )

    # Trust material: certificates, keys, the directory.
    try:
        mine = monitor.certs.expiries()
    except MlaError:  # the alert and /readyz say why; the scrape goes on
        mine = []
    expiries: list[tuple[Labels, float]] = [
        ((("which", c.which),), _seconds(c.not_after - now)) for c in mine
    ]
    directory = ctx.trust.current
    if directory is not None:
        peers = peer_certificate_expiries(directory, ctx.state)
        expiries += [
            ((("which", "peer"), ("peer", p)), _seconds(t - now)) for p, t in sorted(peers.items())
        ]
    out.gauge(
        "mla_certificate_expires_in_seconds",
        "Seconds until a TLS certificate ends "
        "(this node's, its CA, each peer's); negative once ended.",
        expiries,
    )
    own = directory.node(ctx.state) if directory else None
    out.gauge(
        "mla_key_expires_in_seconds",
        "Seconds until each key of this node in the directory ends.",
        [
            ((("kid", k.kid), ("use", k.use)), _seconds(k.not_after - now))
            for k in (own.keys if own else ())
        ],
    )
    if directory is not None:
        out.gauge(
            "mla_directory_version", "Version of the directory in use.", [((), directory.version)]
        )
        out.gauge(
            "mla_directory_age_seconds",
            "Since the directory in use was issued.",
            [((), _seconds(now - directory.issued_at))],
        )
        out.gauge(
            "mla_directory_expires_in_seconds",
            "Until the directory in use ends.",
            [((), _seconds(directory.expires_at - now))],
        )

    # The evidence log and what the alerts see.
    latest = await repo.latest_checkpoint(ctx.db)
    out.gauge(
        "mla_evidence_log_records",
        "Records in the node's evidence log.",
        [((), await repo.log_size(ctx.db))],
    )
    if latest is not None:
        out.gauge(
            "mla_evidence_checkpoint_age_seconds",
            "Since the newest signed checkpoint.",
            [((), _seconds(now - latest.at))],
        )
        out.gauge(
            "mla_evidence_checkpoint_size",
            "Records the newest checkpoint covers.",
            [((), latest.size)],
        )
    splits = await ops_repo.split_view_counts(ctx.db)
    out.gauge(
        "mla_split_views",
        "Split views of a peer's log detected (split_views table).",
        [(_peer(p), n) for p, n in sorted(splits.items())],
    )
    slow = await monitor.slow_facts()
    overdue: Counter[Labels] = Counter((("box", d.box), ("kind", d.kind)) for d in slow.deadlines)
    out.gauge(
        "mla_legal_deadlines_overdue",
        "Open cases whose legal date passed, by box (inbox: this state owes the answer) and kind.",
        sorted(overdue.items()),
    )
    waiting = [(_peer(p), n) for p, n in sorted(slow.undeliverable.items())]
    out.gauge(
        "mla_undeliverable_messages",
        "Messages past their delivery deadline waiting for a resend.",
        waiting,
    )
    alerts: Counter[Labels] = Counter(
        (("name", a.name), ("severity", a.severity)) for a in await monitor.current()
    )
    out.gauge(
        "mla_alerts", "Alerts standing now (GET /api/v1/alerts lists them).", sorted(alerts.items())
    )

    # The database and its disk (a PostgreSQL server is watched with its own exporter).
    if ctx.config.database_url is None:
        path = ctx.config.database_path
        files = (path, path.with_name(path.name + "-wal"))
        size = sum(p.stat().st_size for p in files if p.exists())
        out.gauge("mla_database_bytes", "Size of the database file and its WAL.", [((), size)])
        out.gauge(
            "mla_database_free_bytes",
            "Free space on the database's file system.",
            [((), shutil.disk_usage(path.parent).free)],
        )
    out.counter(
        "mla_database_commits_total", "Group commits (one fsync each).", {(): ctx.db.commits}
    )
    return out.text()
