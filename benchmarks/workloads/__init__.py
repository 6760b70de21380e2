"""End-to-end workloads for the side-by-side benchmark, beyond the core append and read workloads.

    rows = await measure_all(shape, postgres, progress)

One module per workload, each measuring real processes and real databases on 127.0.0.1:

- ``catchup``: ``projection_catchup``, a projection building a SQL read model from position 0 (events/s)
- ``subscribe``: ``subscribe_latency``, from an append to a live subscriber (p50/p99 ms)
- ``http_latency``: ``http_command_to_query``, a command over HTTP until the query that sees it answers
- ``query_scaling``: query requests/s from one query process and from two
- ``memory``: ``memory_replay``, the peak memory of a fresh process replaying 100,000 and 1,000,000 events
- ``cluster_orders``: orders through the shop's whole cluster (PostgreSQL, NATS, sixteen processes):
  orders/s, and p50/p99 from ``PlaceOrder`` to the final status in ``OrderHistory``
- ``bank_transfers``: transfers through the bank's saga, embedded on SQLite and as a cluster:
  transfers/s, and p50/p99 from ``RequestTransfer`` to ``completed``; any imbalance fails the run
- ``social_feed``: p50/p99 from ``PublishPost`` to the post in its author's 1,000 followers' newsfeeds,
  embedded on SQLite, fanned out on write and merged on read

Every row has the keys ``benchmarks/run.py`` prints (``workload``, ``backend``, ``system``,
``writers``, ``value``, ``unit``, ``min``, ``max``, ``runs``); ``statistic`` names a percentile, a
peak or a maximum, ``better: "lower"`` marks latencies and memory, and a few rows carry more
(``rate``, ``processes``, ``events``, ``baseline``). Each module's docstring says what is timed.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.shape import Shape
from twofold.testing.servers import PostgresServer

__all__ = ["measure_all"]


async def measure_all(shape: Shape, postgres: PostgresServer, progress: Callable[[str], None]) -> list[dict[str, Any]]:
    """Run every end-to-end workload in turn; fresh files in a temporary folder, fresh databases in ``postgres``."""
    # Imported here, not at the top: the memory workload's child process imports this package's
    # ``_projection`` module, and its measured baseline must not carry asyncpg, psycopg and httpx.
    from benchmarks.workloads import (
        bank_transfers,
        catchup,
        cluster_orders,
        http_latency,
        memory,
        query_scaling,
        social_feed,
        subscribe,
    )

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="twofold-workloads-") as tmp:
        for module in (
            catchup,
            subscribe,
            http_latency,
            query_scaling,
            memory,
            cluster_orders,
            bank_transfers,
            social_feed,
        ):
            started = time.perf_counter()
            folder = Path(tmp) / module.WORKLOAD
            folder.mkdir()
            results += await module.measure(shape, postgres, folder, progress)
            progress(f"  {module.WORKLOAD} took {time.perf_counter() - started:.1f} s")
    return results
