"""Run in a fresh process by ``memory_replay``: project every event of a SQLite store from position 0.

    python -m benchmarks.workloads._replay_child EVENTS_DB READ_DB

Prints one line of JSON: the peak resident set once imports are done and once the projection has
caught up, the seconds the catch-up took, and what the read model holds. A process of its own, so
the peak is this replay's and nothing else's.

The peak is ``VmHWM`` from ``/proc/self/status``, the high-water mark of this process's own memory
map. Not ``ru_maxrss``: Linux carries that over from the parent through fork and exec, so a child
of a benchmark that has just seeded a large store starts with the parent's peak as its own.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from pathlib import Path

from benchmarks.workloads._projection import BENCH, StreamTotals, totals
from twofold import Runtime
from twofold.readmodels.sqlite import SQLiteReadStore
from twofold.store.sqlite import SQLiteEventStore

TIMEOUT = 900.0  # seconds


def peak_kib() -> int:
    """This process's peak resident set in KiB (``ru_maxrss`` where there is no /proc)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def replay(events_db: Path, read_db: Path) -> dict[str, int | float]:
    baseline = peak_kib()
    store, read_store = SQLiteEventStore(events_db), SQLiteReadStore(read_db)
    head = await store.head_position()
    started = time.perf_counter()
    async with Runtime(BENCH, store=store, read_store=read_store) as runtime:
        runner = runtime.runners[StreamTotals.name]
        if not await runner.wait_for(head, TIMEOUT):
            raise RuntimeError(f"the projection reached {runner.position} of {head} in {TIMEOUT} s")
        seconds = time.perf_counter() - started
        found = await read_store.read(totals)
    return {"baseline_kib": baseline, "peak_kib": peak_kib(), "seconds": seconds, "head": head, **found}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(replay(Path(sys.argv[1]), Path(sys.argv[2])))))
