"""``http_command_to_query``: the shop as a real process, from a command sent to the query that sees it.

``twofold serve tests.monolith:shop`` (role ``all``: command API, query API and projections in one
process) runs on a free port with a fresh database. Each operation is ``POST /commands/AddProduct``
for a new sku, then ``GET /queries/StockLevel?sku=…`` with ``X-Min-Position`` set to the position
the command answered, so the query waits until the catalogue has applied it; the answer must name
the sku (read-your-writes held) or the run fails. Operations start open-loop, on a fixed schedule
whatever the earlier ones are doing, and each latency runs from the operation's scheduled start to
the query's answer, so a server falling behind shows up as latency rather than as a slower client.

First a short ramp (25, 50, 100, 200, … operations/s, a few seconds and at least 100 operations
each, 50 with ``--quick``, stopping at the first step that fails) finds ``max_sustained``: the
highest rate whose p99 stays under 50 ms with no errors. A step whose backlog passes a quarter of a second of operations
has already failed and stops early. Then p50 and p99 at a steady 200 operations/s, split into
``runs`` windows (each window's percentile is a run); where the machine sustains less than 200/s,
the steady rate is the highest sustained one instead (a rate it cannot keep up with has no stable
latency, only a queue that grows with the duration), and the rows' ``rate`` says which.

The client is the lean keep-alive HTTP/1.1 client in ``_common``, not httpx: on the 2-core machine
httpx spent more CPU per request than the server, and would have set the ceiling itself.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

from benchmarks.shape import FULL, Shape
from benchmarks.workloads._common import (
    HTTPError,
    Pool,
    Progress,
    database_name,
    percentile,
    row,
    start_servers,
    stop_all,
)
from twofold.testing.servers import PostgresServer, free_port

WORKLOAD = "http_command_to_query"
STEADY_RATE = 200  # operations/s
RAMP = (25, 50, 100, 200, 400, 800, 1600, 3200)  # operations/s, until one fails
P99_LIMIT = 50.0  # ms: what a ramp step's p99 must stay under
BACKLOG = 0.25  # seconds of operations in flight past which a step has failed
WARMUP = (50, 1.0)  # operations/s and seconds before anything is measured
MIN_OPERATIONS = {True: 100, False: 50}  # per ramp step (full / quick), so its p99 is not its slowest operation


async def measure(shape: Shape, postgres: PostgresServer, folder: Path, progress: Progress) -> list[dict[str, Any]]:
    full = shape == FULL
    steady, step = (20.0, 4.0) if full else (5.0, 2.0)
    step_operations = MIN_OPERATIONS[full]
    sqlite_env = {
        "TWOFOLD_DATABASE_URL": f"sqlite:///{folder / 'http-shop.db'}",
        "TWOFOLD_READ_DATABASE_URL": f"sqlite:///{folder / 'http-shop-read.db'}",
    }
    results = await _backend("sqlite", sqlite_env, folder, shape, steady, (step, step_operations), progress)
    url = postgres.create_database(database_name("http"))
    pg_env = {"TWOFOLD_DATABASE_URL": url, "TWOFOLD_READ_DATABASE_URL": url}
    results += await _backend("postgresql", pg_env, folder, shape, steady, (step, step_operations), progress)
    return results


async def _backend(
    backend: str,
    env: dict[str, str],
    folder: Path,
    shape: Shape,
    steady: float,
    step: tuple[float, int],
    progress: Progress,
) -> list[dict[str, Any]]:
    """Ramp, then steady latency, against one fresh server on ``env``'s databases; ``step`` is (seconds, operations)."""
    port = free_port()
    servers = await start_servers([("all", port, env, folder / f"http-{backend}.log")])
    load = Load(Pool(port), backend)
    try:
        await load.run(*WARMUP)  # connections opened, caches warm
        sustained = 0
        for rate in RAMP:
            (latencies,) = await load.run(rate, max(step[0], step[1] / rate))
            p99 = percentile(latencies, 99) * 1000 if latencies else float("inf")
            passed = p99 < P99_LIMIT and load.failures == 0
            verdict = "pass" if passed else f"FAIL ({load.failures} failed or not started {dict(load.reasons)})"
            progress(f"  {WORKLOAD:22} {backend:10} ramp {rate:5}/s: p99 {p99:8.1f} ms {verdict}")
            if not passed:
                break
            sustained = rate
        rate = min(STEADY_RATE, sustained) or RAMP[0]
        windows = await load.run(rate, steady, windows=shape.runs, give_up=False)
        steady_failures = load.failures
        p50s = [percentile(w, 50) * 1000 for w in windows]
        p99s = [percentile(w, 99) * 1000 for w in windows]
        progress(
            f"  {WORKLOAD:22} {backend:10} {rate}/s for {steady:.0f} s ({load.failures} failed):"
            f" p50 {', '.join(f'{v:.1f}' for v in p50s)} ms; p99 {', '.join(f'{v:.1f}' for v in p99s)} ms"
        )
    finally:
        await load.pool.close()
        stop_all(servers)
    kw: dict[str, Any] = {"lower_is_better": True, "rate": rate, "errors": steady_failures}
    return [
        row(WORKLOAD, backend, "twofold", p50s, "ms", statistic="p50", **kw),
        row(WORKLOAD, backend, "twofold", p99s, "ms", statistic="p99", **kw),
        row(WORKLOAD, backend, "twofold", [sustained], "commands/s", statistic="max_sustained", digits=0),
    ]


class Load:
    """Open-loop operations against one server: each starts at its slot on the clock."""

    def __init__(self, pool: Pool, backend: str) -> None:
        self.pool = pool
        self._prefix = f"bench-{backend}-{int(time.time())}"
        self._count = 0
        self.failures = 0  # in the last run: errors, and operations never started for the backlog
        self.reasons: Counter[str] = Counter()  # in the last run: what the errors were

    async def run(self, rate: float, seconds: float, windows: int = 1, *, give_up: bool = True) -> list[list[float]]:
        """Latencies (s) of ``rate * seconds`` operations, split by start time into ``windows``.

        With ``give_up`` (a ramp step), stops starting operations once more than ``BACKLOG``
        seconds' worth are in flight: the step has failed by then, and waiting for the rest would
        only measure a growing queue.
        """
        self.failures = 0
        self.reasons.clear()
        total = round(rate * seconds)
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.05
        tasks: list[asyncio.Task[float | None]] = []
        in_flight = 0

        async def operation(slot: float) -> float | None:
            nonlocal in_flight
            in_flight += 1
            try:
                return await self._operation(slot)
            finally:
                in_flight -= 1

        for i in range(total):
            slot = start + i / rate
            if (delay := slot - loop.time()) > 0:
                await asyncio.sleep(delay)
            if give_up and in_flight > max(rate * BACKLOG, 8):
                self.failures += total - i
                break
            tasks.append(asyncio.create_task(operation(slot)))
        latencies = await asyncio.gather(*tasks)
        self.failures += sum(1 for v in latencies if v is None)
        per_window = -(-len(latencies) // windows)
        return [[v for v in latencies[w * per_window : (w + 1) * per_window] if v is not None] for w in range(windows)]

    async def _operation(self, slot: float) -> float | None:
        self._count += 1
        sku = f"{self._prefix}-{self._count}"
        body = json.dumps({"sku": sku, "name": f"Bench product {sku}", "price": "1.00"}).encode()
        try:
            status, answer = await self.pool.request("POST", "/commands/AddProduct", body)
            if status != 200:
                self.reasons[f"command {status}"] += 1
                return None
            position = json.loads(answer)["position"]
            status, answer = await self.pool.request(
                "GET", f"/queries/StockLevel?sku={quote(sku)}", headers={"X-Min-Position": str(position)}
            )
        except (HTTPError, OSError) as exc:
            self.reasons[type(exc).__name__] += 1
            return None
        if status == 404 or (status == 200 and json.loads(answer).get("sku") != sku):
            raise AssertionError(f"the query after position {position} did not see {sku}: {status} {answer!r}")
        if status != 200:
            self.reasons[f"query {status}"] += 1
            return None
        return asyncio.get_running_loop().time() - slot
