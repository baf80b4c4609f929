"""The node's counters and its delivery latency histogram, kept in memory.

Bumped on the hot path (each delivery attempt, each receipt, each envelope answered), so each
bump is a dictionary increment; service/metrics.py writes them out on scrape. They start at zero
with the process, as Prometheus expects of counters.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

# Submitted -> verified receipt, seconds: sub-second on a healthy network, up to the 72 h
# delivery deadline when a peer is down.
LATENCY_BUCKETS = (
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 21600, 86400, 259200,
)  # fmt: skip

Labels = tuple[tuple[str, str], ...]


@dataclass
class Histogram:
    buckets: tuple[float, ...] = LATENCY_BUCKETS
    counts: dict[Labels, list[int]] = field(default_factory=dict)  # per bucket, not cumulative
    sums: dict[Labels, float] = field(default_factory=dict)

    def observe(self, labels: Labels, value: float) -> None:
        counts = self.counts.setdefault(labels, [0] * (len(self.buckets) + 1))
        counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sums[labels] = self.sums.get(labels, 0.0) + value


@dataclass
class DeliveryMetrics:
    """The node's counters, in memory. Label values are state codes and stable error codes:
    a bounded set, never an id or anything a peer chooses freely."""

    attempts: Counter[Labels] = field(default_factory=Counter)
    exchanges: Counter[Labels] = field(default_factory=Counter)
    retries: Counter[Labels] = field(default_factory=Counter)
    failures: Counter[Labels] = field(default_factory=Counter)
    receipts: Counter[Labels] = field(default_factory=Counter)
    received: Counter[Labels] = field(default_factory=Counter)
    latency: Histogram = field(default_factory=Histogram)

    def attempt(self, peer: str, envelopes: int = 1) -> None:
        """One exchange with ``peer`` carrying ``envelopes`` (more than one: a batch)."""
        self.exchanges[(("peer", peer),)] += 1
        self.attempts[(("peer", peer),)] += envelopes

    def failed(self, peer: str, code: str) -> None:
        """An attempt that left the envelope queued: it will be retried."""
        self.retries[(("peer", peer),)] += 1
        self.failures[(("peer", peer), ("code", _code(code)))] += 1

    def recorded(self, peer: str, status: str, latency_ms: int) -> None:
        """A verified receipt (delivered, or a signed permanent refusal) was recorded."""
        self.receipts[(("peer", peer), ("status", status))] += 1
        if status == "delivered":
            self.latency.observe((("peer", peer),), max(latency_ms, 0) / 1000)

    def answered(self, peer: str, outcome: str) -> None:
        """The peer endpoint answered an envelope: ``delivered``, or the refusal's code."""
        self.received[(("peer", peer), ("outcome", _code(outcome)))] += 1


def _code(value: str) -> str:
    # Codes are [a-z_]; anything else (a peer's made-up code) is folded into one label value.
    return (
        value
        if value.isascii() and value.replace("_", "").isalpha() and len(value) <= 48
        else "other"
    )
