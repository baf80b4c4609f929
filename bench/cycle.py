"""One contender's codec cycle at one payload size, in a process of its own.

    python -m bench.cycle --contender mla_node --size 1024 --max-seconds 3 --repeats 3

Prints one JSON object on its last line of output. Its own process, so that the peak resident
set size it reports (``ru_maxrss``) is this contender's alone and not the largest any contender
reached before it. The orchestrator (``bench/codec.py``) starts it with the main environment's
Python for mla_node, and with the competitors' for as4 and pyas2lib; so this module imports
nothing from mla_node or the competitors until it knows which contender it runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.common import (
    NotApplicable,
    current_rss_mib,
    load_average,
    peak_rss_mib,
    repeat_for,
    reset_peak_rss,
    xml_payload,
)

MLA_CONTENDERS = ("mla_node", "mla_node_attachment", "mla_node_primitives")
PEER_CONTENDERS = ("as4", "pyas2lib")


def _factory(contender: str) -> Callable[[bytes], Callable[[], bytes]]:
    if contender in MLA_CONTENDERS:
        from bench import contenders_mla

        return contenders_mla.CONTENDERS[contender]
    from bench import contenders_peers

    return contenders_peers.CONTENDERS[contender]


def measure(
    contender: str, size: int, max_seconds: float, max_count: int, repeats: int = 3
) -> dict[str, Any]:
    """``repeats`` timed runs of ``max_seconds / repeats`` each (and ``max_count`` cycles at
    most each); the best rate counts, as in ``timeit``: on a shared machine interference only
    ever slows a run down, so the fastest run is the one nearest to the code's own cost."""
    payload = xml_payload(size)
    result: dict[str, Any] = {"contender": contender, "size": size}
    try:
        cycle = _factory(contender)(payload)
    except NotApplicable as exc:
        return {**result, "status": "n/a", "note": str(exc)}
    # The peak RSS reported is that of the cycles (with the payload and keys resident, as in a
    # node), not of generating the payload, which briefly holds it twice.
    peak_reset = reset_peak_rss()
    # One cycle outside the timing: imports and caches warm up, and the payload must come back
    # intact (as4 returns it inside its SBDH envelope, hence "in").
    warm = time.perf_counter()
    if payload not in cycle():
        raise AssertionError(f"{contender} did not deliver the payload intact")
    warmup_s = time.perf_counter() - warm
    base_rss = current_rss_mib()
    load_before = load_average()
    runs = [
        repeat_for(cycle, max_seconds=max_seconds / repeats, max_count=max_count)
        for _ in range(repeats)
    ]
    best = max(runs, key=lambda t: t.rate())
    best_cpu = max(t.cpu_rate() for t in runs)
    return {
        **result,
        "status": "ok",
        "cycles": sum(t.count for t in runs),
        "repeats": repeats,
        "wall_s": round(sum(t.wall_s for t in runs), 4),
        "cpu_s": round(sum(t.cpu_s for t in runs), 4),
        "warmup_s": round(warmup_s, 4),
        "msg_per_s": round(best.rate(), 3),
        "mb_per_s": round(best.rate() * size / 1e6, 3),
        "msg_per_cpu_s": round(best_cpu, 3),
        "every_msg_per_s": [round(t.rate(), 3) for t in runs],
        "base_rss_mib": round(base_rss, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "peak_rss_of_cycles_only": peak_reset,
        "load_before": load_before,
        "load_after": load_average(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contender", required=True, choices=[*MLA_CONTENDERS, *PEER_CONTENDERS])
    parser.add_argument("--size", type=int, required=True, help="payload bytes")
    parser.add_argument("--max-seconds", type=float, default=2.0)
    parser.add_argument("--max-count", type=int, default=100_000, help="per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best counts")
    args = parser.parse_args(argv)
    result = measure(args.contender, args.size, args.max_seconds, args.max_count, args.repeats)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
