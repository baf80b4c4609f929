"""What every part of the benchmark shares: bounded timing, payloads, load, memory, tables.

Standard library only: the codec workers of the competitors import this module from their own
virtual environment (see ``bench/codec.py``), where mla_node and its dependencies are absent.
"""

from __future__ import annotations

import base64
import os
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KIB = 1024
MIB = 1024 * KIB


def size_label(size: int) -> str:
    for unit, name in ((MIB, "MiB"), (KIB, "KiB")):
        if size >= unit and size % unit == 0:
            return f"{size // unit} {name}"
    return f"{size} B"


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages: the machine is shared, so every figure says how
    busy it was while it was measured."""
    return [round(x, 2) for x in os.getloadavg()]


def load_label(load: Sequence[float]) -> str:
    return "/".join(f"{x:.2f}" for x in load)


def peak_rss_mib() -> float:
    """This process's peak resident set size so far.

    ``VmHWM`` from /proc where there is one, not ``ru_maxrss``: Linux carries the high-water mark
    of the image a process replaced with ``exec`` into its ``ru_maxrss``, so a child started by
    this 60 MiB orchestrator would report at least 60 MiB whatever it used itself.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / KIB
    except (OSError, ValueError, IndexError):
        pass
    scale = 1 if sys.platform == "darwin" else KIB  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / MIB


def reset_peak_rss() -> bool:
    """Make the peak so far the current RSS (Linux ≥ 4.0), so that the peak read later is that of
    what ran in between, not of building the payload. False where it cannot be done."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def current_rss_mib() -> float:
    """Resident set size now (Linux ``/proc``; the peak where there is no ``/proc``)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return peak_rss_mib()
    return pages * os.sysconf("SC_PAGE_SIZE") / MIB


def xml_payload(size: int) -> bytes:
    """Exactly ``size`` bytes of well-formed XML whose text is base64 of random bytes.

    Every contender carries these same bytes. XML because Peppol AS4 carries nothing else; random
    content because evidence files (PDFs, phone extractions, video) are already compressed, and
    AS4 gzips its payload before encrypting. The text is cut into 48 KiB elements, as a real
    document has many elements: libxml2 refuses a single text node over 10 MB unless told to
    accept huge trees, which the as4 library, rightly, does not.
    """
    head = b'<Evidence xmlns="urn:mla-node:bench">'
    tail = b"</Evidence>"
    open_tag, close_tag = b"<d>", b"</d>"
    room = size - len(head) - len(tail)
    if room < len(open_tag) + len(close_tag) + 4:
        raise ValueError(f"a payload needs at least {len(head) + len(tail) + 11} bytes")
    # Seeded with the size: the same bytes on every run, and no time spent in os.urandom.
    text = base64.b64encode(random.Random(size).randbytes(room * 3 // 4 + 3))  # ≥ room chars
    chunk = 48 * KIB
    parts = [head]
    used = 0
    while room - used > len(open_tag) + len(close_tag):
        n = min(chunk, room - used - len(open_tag) - len(close_tag))
        parts += [open_tag, text[used : used + n], close_tag]
        used += n + len(open_tag) + len(close_tag)
    parts.append(b" " * (room - used))  # whitespace between elements keeps it well-formed
    parts.append(tail)
    data = b"".join(parts)
    assert len(data) == size
    return data


class NotApplicable(Exception):
    """A contender cannot carry this payload at all; the message says why (it goes in the table)."""


@dataclass(frozen=True)
class Timing:
    count: int
    wall_s: float
    cpu_s: float  # this process only: the wall time depends on what else runs, this hardly

    def rate(self) -> float:
        return self.count / self.wall_s if self.wall_s > 0 else 0.0

    def cpu_rate(self) -> float:
        return self.count / self.cpu_s if self.cpu_s > 0 else 0.0


def repeat_for(step: Callable[[], object], *, max_seconds: float, max_count: int) -> Timing:
    """Run ``step`` until ``max_seconds`` have passed or it ran ``max_count`` times, whichever
    comes first; at least once."""
    if max_count < 1:
        raise ValueError("max_count must be at least 1")
    wall, cpu = time.perf_counter(), time.process_time()
    count = 0
    while count < max_count:
        step()
        count += 1
        if time.perf_counter() - wall >= max_seconds:
            break
    return Timing(count, time.perf_counter() - wall, time.process_time() - cpu)


def percentiles_ms(seconds: Sequence[float]) -> dict[str, float | None]:
    """p50, p95 and p99 in milliseconds (None without enough samples to tell)."""
    if len(seconds) < 2:
        value = round(seconds[0] * 1000, 3) if seconds else None
        return {"p50_ms": value, "p95_ms": value, "p99_ms": value}
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return {f"p{p}_ms": round(cuts[p - 1] * 1000, 3) for p in (50, 95, 99)}


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table: the first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in header], *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value >= 100:
            return f"{value:,.0f}"
        if value >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
