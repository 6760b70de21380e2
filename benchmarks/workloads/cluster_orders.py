"""``cluster_orders``: orders through the whole shop as ``make run-cluster`` runs it.

A :class:`~twofold.cluster.Cluster` of the shop (PostgreSQL, NATS, and for each of its four
services a command API, two query APIs and a workers process) behind the gateway, reached
in-process. Clients place orders (one product line each, enough stock for all) from
``CLIENTS`` concurrent clients; each then polls ``OrderHistory`` every ``POLL`` seconds until
its order shows its final status. Figures: orders settled per second over the whole run
(``PlaceOrder`` of the first to the final status of the last), and per order the time from
sending ``PlaceOrder`` to the final status being visible (p50, p99; the polling interval is in it).
Every order must end confirmed: a run where one does not has failed.

There is no anchor: no other system in the comparison runs this topology.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.shape import Shape
from benchmarks.workloads._common import Progress, percentile, row
from twofold.testing.servers import PostgresServer

WORKLOAD = "cluster_orders"
CLIENTS = 16
POLL = 0.05  # seconds between a client's looks at its order (its own load must not be what is measured)
SKUS = 20
TIMEOUT = 120.0  # seconds one order may take before the run has failed


async def measure(shape: Shape, postgres: PostgresServer, folder: Path, progress: Progress) -> list[dict[str, Any]]:
    from examples.shop import shop
    from twofold.cluster import Cluster
    from twofold.http.gateway import create_gateway

    orders = 1_000 if shape.runs >= 5 else 200  # the full shape, or QUICK=1
    environ = {**os.environ, "SHOP_PAYMENT_DEADLINE_SECONDS": "600"}
    progress(f"  {WORKLOAD}: starting the shop's cluster")
    cluster = Cluster("examples.shop:shop", shop, folder / "cluster", environ=environ)
    await asyncio.to_thread(cluster.start)
    try:
        app = create_gateway(shop, cluster.upstreams())
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://shop") as client,
        ):
            await _stock(client, orders)
            progress(f"  {WORKLOAD}: {orders} orders from {CLIENTS} clients")
            rate, latencies = await _run(client, orders)
    finally:
        await asyncio.to_thread(cluster.stop)
    common = {"backend": "postgresql+nats", "system": "twofold"}
    return [
        row(WORKLOAD, common["backend"], "twofold", [rate], "orders/s", orders=orders, clients=CLIENTS),
        row(
            WORKLOAD,
            common["backend"],
            "twofold",
            [percentile(latencies, 50) * 1000],
            "ms",
            statistic="p50",
            lower_is_better=True,
            orders=orders,
        ),
        row(
            WORKLOAD,
            common["backend"],
            "twofold",
            [percentile(latencies, 99) * 1000],
            "ms",
            statistic="p99",
            lower_is_better=True,
            orders=orders,
        ),
    ]


async def _stock(client: httpx.AsyncClient, orders: int) -> None:
    for n in range(SKUS):
        await _ok(client, "AddProduct", {"sku": f"B-{n}", "name": f"Bench product {n}", "price": "1.00"})
        await _ok(client, "ReceiveStock", {"sku": f"B-{n}", "quantity": orders})


async def _run(client: httpx.AsyncClient, orders: int) -> tuple[float, list[float]]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(orders):
        queue.put_nowait(n)
    latencies: list[float] = []

    async def customer() -> None:
        while not queue.empty():
            n = queue.get_nowait()
            started = time.perf_counter()
            body = {"order_id": f"b-{n}", "customer_id": f"bc-{n}", "lines": [{"sku": f"B-{n % SKUS}", "quantity": 1}]}
            await _ok(client, "PlaceOrder", body)
            while True:
                answer = (await client.get("/queries/OrderHistory", params={"customer_id": f"bc-{n}"})).json()
                status = answer["orders"][0]["status"] if answer.get("orders") else "placed"
                if status != "placed":
                    break
                if time.perf_counter() - started > TIMEOUT:
                    raise RuntimeError(f"order b-{n} did not settle within {TIMEOUT} s")
                await asyncio.sleep(POLL)
            if status != "confirmed":
                raise RuntimeError(f"order b-{n} ended {status}: {answer}")
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(customer() for _ in range(CLIENTS)))
    return orders / (time.perf_counter() - began), latencies


async def _ok(client: httpx.AsyncClient, command: str, body: dict[str, Any]) -> None:
    response = await client.post(f"/commands/{command}", json=body)
    if response.status_code != 200:
        raise RuntimeError(f"{command} answered {response.status_code}: {response.text}")
