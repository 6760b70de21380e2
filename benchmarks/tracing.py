"""What tracing costs a command: ``append_per_command`` (benchmarks/systems/twofold.py) with tracing off and on.

    make bench-tracing                        # SQLite, 1 and 8 writers, median of 5 runs per figure
    python -m benchmarks.tracing --quick      # fewer commands, median of 3

Each figure runs in a fresh process, off and on taking turns, so that neither warms the other up.
Two figures per mode: commands per second (wall clock), and the process's CPU time per command
(every thread's, the span processor's included), which other load on the machine disturbs less.
Off is a process with no tracer provider, as ``twofold serve`` is unless ``OTEL_TRACES_EXPORTER``
or an OTLP endpoint is set: spans are non-recording. On installs the SDK's provider with a
``BatchSpanProcessor``, as ``twofold.telemetry`` does, in front of an exporter that drops the
batches, so that what is measured is twofold's side (making and ending spans, stamping
``traceparent``), not a collector's network. SQLite runs with ``durability="normal"``: no fsync
per commit, so the per-command CPU, where tracing's cost lies, is most of what is timed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.shape import Shape
from benchmarks.systems.twofold import Twofold
from twofold.store.sqlite import SQLiteEventStore

SHAPES = {
    "full": Shape(streams=200, events_per_stream=10, runs=5),
    "quick": Shape(streams=100, events_per_stream=10, runs=3),
}
WRITERS = (1, 8)
MODES = ("off", "on")


def _install_tracing() -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Dropped(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider(resource=Resource.create({"service.name": "bench", "twofold.part": "all"}))
    provider.add_span_processor(BatchSpanProcessor(Dropped()))
    trace.set_tracer_provider(provider)


async def _one_run(mode: str, shape: Shape, writers: int) -> dict[str, float]:
    """Commands per second and CPU microseconds per command of one ``append_per_command`` run, in this process."""
    if mode == "on":
        _install_tracing()
    system = Twofold(lambda path: SQLiteEventStore(Path(path), durability="normal"), {})
    with tempfile.TemporaryDirectory() as folder:
        cpu = time.process_time()
        seconds = await system.append_per_command(str(Path(folder) / "bench.db"), shape, writers)
        cpu = time.process_time() - cpu
    return {"per_second": shape.commands / seconds, "cpu_us": cpu / shape.commands * 1e6}


def _run_child(mode: str, shape_name: str, writers: int) -> dict[str, float]:
    child = ["-m", "benchmarks.tracing", "--child", mode, "--shape", shape_name, "--writers", str(writers)]
    figures: dict[str, float] = json.loads(
        subprocess.run([sys.executable, *child], check=True, capture_output=True, text=True).stdout
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--shape", default="full", choices=SHAPES, help=argparse.SUPPRESS)
    parser.add_argument("--writers", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(_one_run(args.child, SHAPES[args.shape], args.writers))))
        return
    shape_name = "quick" if args.quick else "full"
    shape = SHAPES[shape_name]
    rows = []
    for writers in WRITERS:
        runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
        for _ in range(shape.runs):
            for mode in MODES:
                runs[mode].append(_run_child(mode, shape_name, writers))
        rate = {mode: statistics.median(r["per_second"] for r in runs[mode]) for mode in MODES}
        cpu = {mode: statistics.median(r["cpu_us"] for r in runs[mode]) for mode in MODES}
        row = {"writers": writers, **{f"{m}_per_second": round(rate[m]) for m in MODES}}
        row |= {f"{m}_cpu_us": round(cpu[m]) for m in MODES}
        row |= {
            "rate_on_over_off": round(rate["on"] / rate["off"], 3),
            "cpu_on_over_off": round(cpu["on"] / cpu["off"], 3),
        }
        rows.append(row)
        print(
            f"{writers} writer(s): off {rate['off']:,.0f} commands/s ({cpu['off']:.0f} µs CPU each),"
            f" on {rate['on']:,.0f} commands/s ({cpu['on']:.0f} µs CPU each)"
        )
    print(json.dumps({"workload": "append_per_command", "backend": "sqlite (durability normal)", "rows": rows}))


if __name__ == "__main__":
    main()
