"""``python -m chaos``: run the chaos harness and print what the checker found.

    python -m chaos run --dir DIR [--requests 2000] [--kills 5] [--seed 1] [--max-seconds 900]
    python -m chaos crash-points --dir DIR [--cycles 20] [--point NAME ...]

Exits 0 when every invariant holds, 1 otherwise; writes DIR/chaos-report.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from chaos.checker import Verdict
from chaos.harness import Run, all_points, crash_points, default_seed, random_kills


def report(run: Run, verdict: Verdict, drained_s: float, elapsed_s: float) -> dict[str, object]:
    return {
        "seed": run.seed,
        "elapsed_s": round(elapsed_s, 1),
        "drain_s": round(drained_s, 2),
        "kills": run.kills,
        "crashes": run.crashes,
        "crash_points_not_reached": run.missed,
        "verdict": verdict.as_json(),
        "events": run.events,
    }


def print_table(summary: dict[str, object]) -> None:
    verdict = summary["verdict"]
    assert isinstance(verdict, dict)
    rows = [
        ("operations", verdict["operations"]),
        ("created (201 seen)", verdict["created"]),
        ("delivered", verdict["delivered"]),
        ("lost", len(verdict["lost"])),
        ("duplicated", len(verdict["duplicated"])),
        ("unexpected", len(verdict["unexpected"])),
        ("pending", len(verdict["pending"])),
        ("bad or missing receipts", len(verdict["bad_receipts"])),
        ("never created", len(verdict["not_created"])),
        ("integrity_check", ", ".join(f"{k}={v}" for k, v in verdict["integrity"].items())),
        ("SIGKILLs", summary["kills"]),
        ("crash point deaths", sum(summary["crashes"].values())),  # type: ignore[attr-defined]
        ("drain after last op (s)", summary["drain_s"]),
        ("elapsed (s)", summary["elapsed_s"]),
        ("verdict", "OK" if verdict["ok"] else "FAILED"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chaos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "crash-points"):
        p = sub.add_parser(name)
        p.add_argument("--dir", type=Path, help="network folder (default: a temporary one)")
        p.add_argument("--seed", type=int, default=default_seed())
        p.add_argument("--max-seconds", type=float, default=900.0)
        p.add_argument("--states", default="AR,BR,US")
    sub.choices["run"].add_argument("--requests", type=int, default=2000)
    sub.choices["run"].add_argument("--kills", type=int, default=5)
    sub.choices["crash-points"].add_argument("--cycles", type=int, default=20)
    sub.choices["crash-points"].add_argument("--point", action="append", choices=all_points())
    args = parser.parse_args(argv)

    folder = args.dir or Path(tempfile.mkdtemp(prefix="mla-chaos-"))
    states = args.states.split(",")
    started = time.monotonic()
    if args.command == "run":
        run, verdict, drained = random_kills(
            folder,
            states=states,
            requests=args.requests,
            kills=args.kills,
            seed=args.seed,
            max_s=args.max_seconds,
        )
    else:
        run, verdict, drained = crash_points(
            folder,
            points=args.point or all_points(),
            cycles=args.cycles,
            seed=args.seed,
            max_s=args.max_seconds,
        )
    summary = report(run, verdict, drained, time.monotonic() - started)
    (folder / "chaos-report.json").write_text(json.dumps(summary, indent=2))
    print_table(summary)
    print(f"report: {folder / 'chaos-report.json'}")
    if verdict.ok and args.dir is None:
        shutil.rmtree(folder, ignore_errors=True)
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
