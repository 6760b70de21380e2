"""``memory_replay``: the peak memory of a fresh process projecting the whole store from position 0.

A projection reads the log in pages and applies each page in one transaction, so the memory it
holds should not grow with the length of the log. A SQLite event store is seeded (untimed,
straight into twofold's tables) with 100,000 events and, separately, with 1,000,000 (20,000 and
200,000 with ``--quick``), over 1,000 streams; then a new Python process
(``benchmarks/workloads/_replay_child.py``) runs a ``Runtime`` whose one projection upserts one row
per stream, waits until its checkpoint reaches the head, checks that every event was counted, and
reports its peak resident set (``VmHWM``, not ``ru_maxrss``, which Linux
carries over from the parent). Each row is one measurement; ``events`` says how
many were replayed and ``baseline`` the peak before the stores were opened (the interpreter and
imports). The larger figure over the smaller is the ratio to watch: 1.0 is flat.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.shape import FULL, Shape
from benchmarks.workloads._common import ROOT, Progress, row, seed_sqlite
from twofold.testing.servers import PostgresServer

WORKLOAD = "memory_replay"
STREAMS = 1_000
SIZES = {True: (100_000, 1_000_000), False: (20_000, 200_000)}  # by full / quick
CHILD_TIMEOUT = 900.0  # seconds


async def measure(shape: Shape, postgres: PostgresServer, folder: Path, progress: Progress) -> list[dict[str, Any]]:
    results = []
    for events in SIZES[shape == FULL]:
        events_db = folder / f"memory-{events}.db"
        await seed_sqlite(events_db, STREAMS, events // STREAMS)
        found = await _child(events_db, folder / f"memory-{events}-read.db")
        events_db.unlink()  # a million events is a few hundred MB: give the space back at once
        if found["events"] != events or found["streams"] != STREAMS:
            raise AssertionError(f"replayed {found}, expected {events} events over {STREAMS} streams")
        peak, baseline = found["peak_kib"] / 1024, found["baseline_kib"] / 1024
        progress(
            f"  {WORKLOAD:22} sqlite     {events:>9,} events: peak {peak:6.1f} MiB"
            f" (baseline {baseline:.1f} MiB), {events / found['seconds']:,.0f} events/s"
        )
        results.append(
            row(
                WORKLOAD,
                "sqlite",
                "twofold",
                [peak],
                "MiB",
                statistic="peak",
                lower_is_better=True,
                events=events,
                baseline=round(baseline, 1),
                events_per_s=round(events / found["seconds"]),
            )
        )
    return results


async def _child(events_db: Path, read_db: Path) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.workloads._replay_child",
        str(events_db),
        str(read_db),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), CHILD_TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"the replay process failed ({process.returncode}):\n{err.decode(errors='replace')[-3000:]}")
    return dict(json.loads(out.decode().strip().splitlines()[-1]))
