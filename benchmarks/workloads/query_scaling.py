"""``query_scaling``: query requests/s served by one query process, and by two sharing one read database.

Query processes share nothing but the read store, so adding one should add capacity. The read
model is built first, untimed: an in-process ``Runtime`` of the shop adds ``shape.streams``
products through ``runtime.execute`` and its projections catch up. Then two
``twofold serve tests.monolith:shop --role queries`` processes start on their own ports, on the same
SQLite read database. Each run, ``CLIENTS`` keep-alive clients ask ``GET /queries/StockLevel`` for
random skus as fast as they are answered for a few seconds, first all against one process, then
split evenly over both; every answer must be 200 and name the sku asked for. A row's ``writers``
and ``processes`` both give the number of query processes. The load generator runs in this process
on the same two cores, so two server processes cannot double the figure here; the ratio says how
much of the second core a second process turns into answers.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

from benchmarks.shape import FULL, Shape
from benchmarks.workloads._common import Pool, Progress, row, start_servers, stop_all
from tests.monolith import shop
from tests.monolith.messages import AddProduct
from twofold import Runtime
from twofold.readmodels.sqlite import SQLiteReadStore
from twofold.store.sqlite import SQLiteEventStore
from twofold.testing.servers import PostgresServer, free_port

WORKLOAD = "query_scaling"
CLIENTS = 16  # concurrent keep-alive connections, in total


async def measure(shape: Shape, postgres: PostgresServer, folder: Path, progress: Progress) -> list[dict[str, Any]]:
    seconds = 4.0 if shape == FULL else 1.5
    events_db, read_db = folder / "query-shop.db", folder / "query-shop-read.db"
    skus = await _build_read_model(events_db, read_db, shape.streams)
    env = {"TWOFOLD_DATABASE_URL": f"sqlite:///{events_db}", "TWOFOLD_READ_DATABASE_URL": f"sqlite:///{read_db}"}
    ports = [free_port(), free_port()]
    servers = await start_servers([("queries", p, env, folder / f"query-{p}.log") for p in ports])
    rates: dict[int, list[float]] = {1: [], 2: []}
    try:
        await _load(ports, skus, seconds / 3)  # warm both processes and the read database's pages
        for run in range(shape.runs):
            for processes in rates:
                rates[processes].append(await _load(ports[:processes], skus, seconds))
                progress(
                    f"  {WORKLOAD:22} sqlite     run {run + 1}/{shape.runs} {processes} process(es)"
                    f" {rates[processes][-1]:8.0f} requests/s"
                )
    finally:
        stop_all(servers)
    return [
        row(WORKLOAD, "sqlite", "twofold", values, "requests/s", writers=processes, processes=processes)
        for processes, values in rates.items()
    ]


async def _build_read_model(events_db: Path, read_db: Path, products: int) -> list[str]:
    """The shop's catalogue with ``products`` products, through the public API; untimed."""
    skus = [f"sku-{n:06d}" for n in range(products)]
    async with Runtime(shop, store=SQLiteEventStore(events_db), read_store=SQLiteReadStore(read_db)) as runtime:
        for sku in skus:
            result = await runtime.execute(AddProduct(sku=sku, name=f"Product {sku}", price="1.00"))
        assert result.position is not None
        for runner in runtime.runners.values():
            if not await runner.wait_for(result.position, 60):
                raise RuntimeError(f"projection {runner.name} did not catch up to {result.position}")
    return skus


async def _load(ports: list[int], skus: list[str], seconds: float) -> float:
    """Closed loop: ``CLIENTS`` connections, split evenly over ``ports``; answered requests per second."""
    pools = [Pool(port) for port in ports]
    deadline = time.perf_counter() + seconds
    answered = 0

    async def client(pool: Pool) -> None:
        nonlocal answered
        while time.perf_counter() < deadline:
            sku = random.choice(skus)
            status, body = await pool.request("GET", f"/queries/StockLevel?sku={sku}")
            if status != 200 or json.loads(body)["sku"] != sku:
                raise AssertionError(f"StockLevel for {sku} on port {pool.port}: {status} {body!r}")
            answered += 1

    started = time.perf_counter()
    try:
        await asyncio.gather(*(client(pools[n % len(pools)]) for n in range(CLIENTS)))
    finally:
        for pool in pools:
            await pool.close()
    return answered / (time.perf_counter() - started)
