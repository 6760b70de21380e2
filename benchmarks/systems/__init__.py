"""The systems measured side by side; each runs every workload against a fresh database.

A database is named by a string: a file path for SQLite, a ``postgresql://`` URL for PostgreSQL.
A workload method returns the seconds its measured part took, after checking untimed that
everything was written or read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from benchmarks.shape import WRITERS, Shape

WORKLOADS = ("append_per_command", "append_batch", "load_aggregate", "read_all")
# How the workloads are run: append_per_command on its own, once per number of writers; the batch
# append, then the two reads of what it wrote, one after the other on the same database (its events
# are what the reads need, and writing them again untimed would double the time of a run).
CASES = (*(("append_per_command", n) for n in WRITERS), ("append_batch", 1))


class System(Protocol):
    name: str

    def settings(self) -> dict[str, Any]:
        """Durability and other settings, as read back from the database where possible."""
        ...

    async def append_per_command(self, db: str, shape: Shape, writers: int) -> float:
        """Seconds to execute ``shape.commands`` commands (one event each) with ``writers`` concurrent writers."""
        ...

    async def append_batch_then_read(self, db: str, shape: Shape) -> dict[str, float]:
        """Seconds for ``append_batch``, then for ``load_aggregate`` and ``read_all`` of what it wrote."""
        ...


async def run(system: System, case: str, db: str, shape: Shape, writers: int) -> dict[str, float]:
    """One run of a case: the seconds of each workload it measures."""
    if case == "append_per_command":
        return {case: await system.append_per_command(db, shape, writers)}
    assert case == "append_batch", case
    assert writers == 1, (case, writers)
    return await system.append_batch_then_read(db, shape)


async def in_threads(work: Callable[[int], None], writers: int) -> None:
    """``work(k)`` for each writer k, each on a thread of its own, all at once.

    A pool of exactly ``writers`` threads: ``asyncio.to_thread``'s default pool has only
    ``cpu_count + 4`` threads, fewer than 8 on a small machine, so some writers would wait their turn.
    """
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(writers, thread_name_prefix="bench-writer") as pool:
        await asyncio.gather(*(loop.run_in_executor(pool, work, k) for k in range(writers)))
