"""``bank_transfers``: transfers through the bank's transfer saga, embedded and as a cluster.

The bank (accounts, transfers, loans, fraud) serves behind its gateway, reached in-process:
first embedded in this process on SQLite files (``make run APP=bank``), then as ``make
run-cluster APP=bank`` runs it (PostgreSQL, NATS, a command API, a query API and a workers
process per service). ``ACCOUNTS`` accounts in a ring each start with the same balance;
``CLIENTS`` concurrent clients request transfers to the next account in the ring and poll
``TransferStatus`` every ``POLL`` seconds until it is completed. Figures: transfers completed per
second over the whole run, and per transfer the time from ``RequestTransfer`` to ``completed``
being visible (p50, p99). Afterwards the balances must add up to what was deposited — a run with
any imbalance, or any transfer not completed, has failed.

There is no anchor: no other system in the comparison runs this topology.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from benchmarks.shape import Shape
from benchmarks.workloads._common import Progress, percentile, row
from twofold.testing.servers import PostgresServer

WORKLOAD = "bank_transfers"
CLIENTS = 16
ACCOUNTS = 32
OPENING = Decimal(1_000_000)
POLL = 0.05  # seconds between a client's looks at its transfer
TIMEOUT = 120.0  # seconds one transfer may take before the run has failed


async def measure(shape: Shape, postgres: PostgresServer, folder: Path, progress: Progress) -> list[dict[str, Any]]:
    transfers = 1_000 if shape.runs >= 5 else 200  # the full shape, or QUICK=1
    rows: list[dict[str, Any]] = []
    for backend, opened in (("sqlite", _embedded(folder)), ("postgresql+nats", _cluster(folder))):
        progress(f"  {WORKLOAD}: {transfers} transfers from {CLIENTS} clients, {backend}")
        async with opened as client:
            await _open_accounts(client)
            rate, latencies = await _run(client, transfers)
            await _check_balances(client)
        rows += [
            row(WORKLOAD, backend, "twofold", [rate], "transfers/s", transfers=transfers, clients=CLIENTS),
            *(
                row(
                    WORKLOAD,
                    backend,
                    "twofold",
                    [percentile(latencies, p) * 1000],
                    "ms",
                    statistic=f"p{p}",
                    lower_is_better=True,
                    transfers=transfers,
                )
                for p in (50, 99)
            ),
        ]
    return rows


@contextlib.asynccontextmanager
async def _embedded(folder: Path) -> AsyncIterator[httpx.AsyncClient]:
    from examples.bank import bank
    from twofold.embedded import database_url_variable, embedded_runtimes
    from twofold.http.gateway import gateway_in_process

    data = folder / "embedded"
    environ = {database_url_variable(n): f"sqlite:///{data}/{n}.db" for n in bank.names}
    app = gateway_in_process(bank, embedded_runtimes(bank, environ))
    async with _client(app) as client:
        yield client


@contextlib.asynccontextmanager
async def _cluster(folder: Path) -> AsyncIterator[httpx.AsyncClient]:
    from examples.bank import bank
    from twofold.cluster import Cluster
    from twofold.http.gateway import create_gateway

    cluster = Cluster("examples.bank:bank", bank, folder / "cluster", query_replicas=1, environ=dict(os.environ))
    await asyncio.to_thread(cluster.start)
    try:
        async with _client(create_gateway(bank, cluster.upstreams())) as client:
            yield client
    finally:
        await asyncio.to_thread(cluster.stop)


@contextlib.asynccontextmanager
async def _client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://bank") as c:
        yield c


async def _open_accounts(client: httpx.AsyncClient) -> None:
    for n in range(ACCOUNTS):
        await _ok(client, "OpenAccount", {"account_id": f"ring-{n}", "owner": "bench"})
        await _ok(client, "Deposit", {"account_id": f"ring-{n}", "amount": str(OPENING)})


async def _run(client: httpx.AsyncClient, transfers: int) -> tuple[float, list[float]]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(transfers):
        queue.put_nowait(n)
    latencies: list[float] = []

    async def customer() -> None:
        while not queue.empty():
            n = queue.get_nowait()
            started = time.perf_counter()
            source, target = n % ACCOUNTS, (n + 1) % ACCOUNTS
            body = {"transfer_id": f"bt-{n}", "from_account": f"ring-{source}", "to_account": f"ring-{target}"}
            await _ok(client, "RequestTransfer", {**body, "amount": "1.25"})
            while True:
                answer = await client.get("/queries/TransferStatus", params={"transfer_id": f"bt-{n}"})
                status = answer.json()["status"] if answer.status_code == 200 else "requested"
                if status != "requested":
                    break
                if time.perf_counter() - started > TIMEOUT:
                    raise RuntimeError(f"transfer bt-{n} did not settle within {TIMEOUT} s")
                await asyncio.sleep(POLL)
            if status != "completed":
                raise RuntimeError(f"transfer bt-{n} ended {status}: {answer.text}")
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(customer() for _ in range(CLIENTS)))
    return transfers / (time.perf_counter() - began), latencies


async def _check_balances(client: httpx.AsyncClient) -> None:
    """The balances add up to what was deposited once the last credit is visible; else the run failed."""
    expected = OPENING * ACCOUNTS
    deadline = time.perf_counter() + TIMEOUT
    while True:
        total = Decimal(0)
        for n in range(ACCOUNTS):
            answer = await client.get("/queries/Balance", params={"account_id": f"ring-{n}"})
            total += Decimal(answer.json()["balance"])
        if total == expected:
            return
        if time.perf_counter() > deadline:
            raise RuntimeError(f"imbalance: the balances add up to {total}, not {expected}")
        await asyncio.sleep(POLL)


async def _ok(client: httpx.AsyncClient, command: str, body: dict[str, Any]) -> None:
    response = await client.post(f"/commands/{command}", json=body)
    if response.status_code != 200:
        raise RuntimeError(f"{command} answered {response.status_code}: {response.text}")
