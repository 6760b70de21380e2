"""The side-by-side benchmark: twofold, eventsourcing and raw sqlite3 (the limit), on one machine.

    make bench              # 2,000 streams x 10 events, median of 5 runs
    make bench QUICK=1      # 200 streams x 10 events, median of 3 runs
    python -m benchmarks.run [--quick]

Prints a table and writes benchmarks/results/latest.json. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.shape import FULL, PAYLOAD_BYTES, QUICK, Shape
from benchmarks.systems import WORKLOADS, System
from benchmarks.systems.limit_sqlite import LimitSQLite
from benchmarks.systems.twofold_sqlite import DURABILITY, TwofoldSQLite

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
BACKEND = "sqlite"
UNITS = {"load_aggregate": "aggregates/s"}


def _eventsourcing(folder: Path) -> System:
    try:
        from benchmarks.systems.eventsourcing_sqlite import EventsourcingSQLite
    except ImportError:
        sys.exit('eventsourcing is not installed: pip install -e ".[bench]" (or run make bench)')
    return EventsourcingSQLite(folder)


async def measure(systems: list[System], shape: Shape, folder: Path) -> list[dict[str, Any]]:
    """Each workload, each run, each system in turn (so drift hits all alike), on a fresh file each time."""
    results = []
    for workload in WORKLOADS:
        seconds: dict[str, list[float]] = {s.name: [] for s in systems}
        for run in range(shape.runs):
            for system in systems:
                path = folder / f"{system.name}-{workload}-{run}.db"
                seconds[system.name].append(await getattr(system, workload)(path, shape))
                print(
                    f"  {workload:20} run {run + 1}/{shape.runs} {system.name:14} {seconds[system.name][-1]:7.2f} s",
                    file=sys.stderr,
                )
        count = shape.streams if workload == "load_aggregate" else shape.events
        for system in systems:
            rates = [count / s for s in seconds[system.name]]
            results.append(
                {
                    "workload": workload,
                    "backend": BACKEND,
                    "system": system.name,
                    "writers": 1,
                    "value": round(statistics.median(rates), 1),
                    "unit": UNITS.get(workload, "events/s"),
                    "min": round(min(rates), 1),
                    "max": round(max(rates), 1),
                    "runs": len(rates),
                }
            )
    return results


def ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by = {(r["workload"], r["system"]): r["value"] for r in results}
    return [
        {
            "workload": w,
            "backend": BACKEND,
            "twofold_vs_eventsourcing": round(by[w, "twofold"] / by[w, "eventsourcing"], 2),
            "twofold_vs_limit": round(by[w, "twofold"] / by[w, "limit"], 2),
        }
        for w in WORKLOADS
    ]


def table(results: list[dict[str, Any]], ratio_rows: list[dict[str, Any]]) -> str:
    header = f"| {'workload':20} | {'system':13} | {'median':>10} | {'min':>10} | {'max':>10} | {'unit':12} |"
    lines = [header, "|" + "|".join("-" * (len(c) + 0) for c in header.split("|")[1:-1]) + "|"]
    for r in results:
        lines.append(
            f"| {r['workload']:20} | {r['system']:13} | {r['value']:10,.0f} | {r['min']:10,.0f} | "
            f"{r['max']:10,.0f} | {r['unit']:12} |"
        )
    lines += ["", "| workload             | twofold / eventsourcing | twofold / limit |", "|---|---|---|"]
    lines += [
        f"| {r['workload']:20} | {r['twofold_vs_eventsourcing']:23.2f} | {r['twofold_vs_limit']:15.2f} |"
        for r in ratio_rows
    ]
    return "\n".join(lines)


def describe(systems: list[System], shape: Shape, quick: bool) -> dict[str, Any]:
    return {
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "versions": {
            "twofold": version("twofold"),
            "eventsourcing": version("eventsourcing"),
            "sqlite": sqlite3.sqlite_version,
        },
        "settings": {
            "durability": DURABILITY,
            "quick": quick,
            "streams": shape.streams,
            "events_per_stream": shape.events_per_stream,
            "payload_bytes": PAYLOAD_BYTES,
            "runs": shape.runs,
            "writers": 1,
            "systems": {s.name: s.settings() for s in systems},
        },
    }


async def main(quick: bool) -> None:
    shape = QUICK if quick else FULL
    with tempfile.TemporaryDirectory(prefix="twofold-bench-") as tmp:
        folder = Path(tmp)
        systems: list[System] = [TwofoldSQLite(), _eventsourcing(folder), LimitSQLite()]
        report = describe(systems, shape, quick)
        report["results"] = await measure(systems, shape, folder)
    report["ratios"] = ratios(report["results"])
    print(table(report["results"], report["ratios"]))
    print(f"\nsettings: {json.dumps(report['settings'])}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 streams and 3 runs (also QUICK=1)")
    args = parser.parse_args()
    asyncio.run(main(args.quick or os.environ.get("QUICK") == "1"))
