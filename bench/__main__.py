"""mla_node's benchmarks, side by side with their peers, in one run: prints tables, writes JSON.

    .venv/bin/python -m bench                      # everything, full size (5 to 7 minutes)
    .venv/bin/python -m bench --quick              # CI-sized, under 2 minutes on 2 cores
    .venv/bin/python -m bench --only codec --only log --out results.json
    .venv/bin/python -m bench --setup-competitors  # once: as4 and pyas2lib in their own venv

Parts: ``codec`` (the message cycle in one process, against as4 and pyas2lib), ``e2e`` (two
nodes on loopback against plain aiohttp), ``transfer`` (a large evidence file node to node),
``log`` (offline verification of an evidence log), ``scale`` (the 35 OAS member states as 35
nodes on this machine: start-up, idle RSS, requests across the mesh) and ``ha`` (1 and 2 workers
per state on PostgreSQL against SQLite; needs ``--postgres URL`` or ``MLA_TEST_POSTGRES``).
bench/README.md says how to read the tables.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import codec, e2e, ha, log_head, log_part, scale, transfer
from bench.common import ROOT, load_average, load_label

PARTS = ("codec", "e2e", "transfer", "log", "scale", "ha")


def _machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": commit or None,
    }


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--quick", action="store_true", help="CI-sized run (under 2 minutes)")
    parser.add_argument(
        "--only", action="append", choices=PARTS, help="run only this part (repeatable)"
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results.json"), help="JSON file")
    parser.add_argument(
        "--sizes", help="codec payload sizes in bytes, comma-separated (default by --quick)"
    )
    parser.add_argument(
        "--contenders",
        default=",".join(codec.ALL_CONTENDERS),
        help=f"codec contenders, comma-separated, of {', '.join(codec.ALL_CONTENDERS)}",
    )
    parser.add_argument(
        "--seconds", type=float, help="measuring time per codec cell and per e2e level"
    )
    parser.add_argument(
        "--competitors-python",
        type=Path,
        default=codec.COMPETITORS_VENV / "bin" / "python",
        help="the Python of the venv holding as4 and pyas2lib",
    )
    parser.add_argument(
        "--setup-competitors",
        action="store_true",
        help=f"create {codec.COMPETITORS_VENV.relative_to(ROOT)} with as4 and pyas2lib, and exit",
    )
    parser.add_argument(
        "--scale-states",
        help="scale: comma-separated state codes of the nodes (default: the 35 OAS members)",
    )
    parser.add_argument(
        "--scale-requests",
        type=int,
        help=f"scale: requests across the mesh (default {scale.FULL_REQUESTS:,}, "
        f"{scale.QUICK_REQUESTS:,} with --quick)",
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help=f"ha: the PostgreSQL server (postgresql://USER@HOST:PORT/postgres; default "
        f"${ha.ENV_VAR}); without one the part is skipped",
    )
    parser.add_argument(
        "--ha-requests",
        type=int,
        help=f"ha: requests per cell (default {ha.FULL_REQUESTS:,}, "
        f"{ha.QUICK_REQUESTS:,} with --quick)",
    )
    args = parser.parse_args(argv)
    if args.scale_states is not None:
        states = [s.strip().upper() for s in args.scale_states.split(",") if s.strip()]
        if len(states) < 2 or len(set(states)) != len(states):
            parser.error("--scale-states needs at least two different states")
        args.scale_states = states
    if args.scale_requests is not None and args.scale_requests < 1:
        parser.error("--scale-requests must be at least 1")
    if args.ha_requests is not None and args.ha_requests < 1:
        parser.error("--ha-requests must be at least 1")
    unknown = set(args.contenders.split(",")) - set(codec.ALL_CONTENDERS)
    if unknown:
        parser.error(f"unknown contender(s): {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.setup_competitors:
        python = codec.setup_competitors()
        print(f"competitors installed: {python}")
        return 0
    parts = args.only or list(PARTS)
    quick: bool = args.quick
    results: dict[str, Any] = {
        "format": "mla-node-bench/1",
        "quick": quick,
        "argv": sys.argv[1:] if argv is None else argv,
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "load_at_start": load_average(),
        "parts": {},
    }
    m = results["machine"]
    print(
        f"mla_node bench ({'quick' if quick else 'full'}): {m['cpus']} CPUs {m['cpu_model']}, "
        f"Python {m['python']}, load {load_label(results['load_at_start'])} (1/5/15 min)",
        flush=True,
    )
    failed = False
    for part in (p for p in PARTS if p in parts):
        print(f"\n== {part}", flush=True)
        result, text, ok = _run_part(part, args)
        failed |= not ok
        results["parts"][part] = result
        print("\n" + text, flush=True)
        _write(args.out, results)  # after every part: an interrupted run keeps what it measured
    results["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    results["load_at_end"] = load_average()
    _write(args.out, results)
    print(f"\nresults: {args.out.resolve()}")
    return 1 if failed else 0


def _progress(text: str) -> None:
    print(text, flush=True)


def _run_part(part: str, args: argparse.Namespace) -> tuple[dict[str, Any], str, bool]:
    """Run one part; returns its results, its table and whether every measurement succeeded."""
    quick: bool = args.quick
    if part == "codec":
        default_sizes = codec.QUICK_SIZES if quick else codec.FULL_SIZES
        codec_settings = codec.CodecSettings(
            sizes=[int(s) for s in args.sizes.split(",")] if args.sizes else list(default_sizes),
            contenders=args.contenders.split(","),
            max_seconds=args.seconds or (1.0 if quick else 6.0),
            max_count=100_000,
            competitors_python=args.competitors_python,
        )
        result = codec.run(codec_settings, _progress)
        ok = not any(r["status"] == "error" for r in result["rows"])
        return result, codec.render(result), ok
    if part == "e2e":
        e2e_settings = e2e.E2ESettings(
            levels=(1, 16, 64),
            seconds=args.seconds or (2.0 if quick else 10.0),
            warmup_s=0.5 if quick else 2.0,
            max_ops=50_000 if quick else 500_000,
        )
        result = e2e.run(e2e_settings, _progress)
        ok = not any(r["errors"] or r.get("not_delivered") for r in result["rows"])
        return result, e2e.render(result), ok
    if part == "transfer":
        moved = transfer.run(quick)
        return dict(moved), transfer.render(moved), True
    if part == "scale":
        scale_settings = scale.ScaleSettings(
            states=args.scale_states or scale.OAS_MEMBERS,
            requests=args.scale_requests
            or (scale.QUICK_REQUESTS if quick else scale.FULL_REQUESTS),
            settle_s=5.0 if quick else 10.0,
        )
        result = scale.run(scale_settings, _progress)
        return result, scale.render(result), scale.ok(result)
    if part == "ha":
        ha_settings = ha.HASettings(
            postgres=ha.server_url(args.postgres),
            levels=(16,) if quick else (16, 64),
            requests=args.ha_requests or (ha.QUICK_REQUESTS if quick else ha.FULL_REQUESTS),
        )
        result = ha.run(ha_settings, _progress)
        return result, ha.render(result), ha.ok(result)
    result = log_part.run(log_part.QUICK_ENTRIES if quick else log_part.FULL_ENTRIES)
    head = log_head.run(log_head.QUICK_RECORDS if quick else log_head.FULL_RECORDS)
    text = log_part.render(result) + "\n\n" + log_head.render(head)
    return {**result, "checkpoint": head}, text, result["status"] == "ok" and head["same_answer"]


def _write(path: Path, results: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
