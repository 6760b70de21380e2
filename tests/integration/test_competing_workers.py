"""Three projection workers, real processes, compete over one PostgreSQL database; two are killed.

    twofold serve tests.monolith:shop --role projections    # ×3, TWOFOLD_DATABASE_URL=postgresql://…

A backlog of thousands of events is appended first, then the workers start and race each other
for every batch (the checkpoint row lock lets one win; the others resume from where it got to).
While a writer keeps handling commands, one worker is killed with SIGKILL mid-stream, then a
second. The last one must finish the work alone, and the shop's read model must equal both an
independent fold of ``read_all`` and a rebuild into a fresh database: no event lost, none applied
twice, whichever worker applied it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.monolith import shop
from tests.monolith.messages import (
    OrderCancelled,
    OrderLine,
    OrderPlaced,
    PlaceOrder,
    PricedLine,
    ProductAdded,
    ReceiveStock,
    StockReceived,
    StockReleased,
    StockReserved,
)
from twofold import Event, Runtime
from twofold.readmodels.postgres import PostgresReadStore
from twofold.store import ANY, NewEvent, StoredEvent, StreamWrite
from twofold.store.postgres import PostgresEventStore
from twofold.testing.servers import PostgresServer, free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PRODUCTS = 200
RECEIPTS = 20  # per product, in the product's first append
ORDERS = 1500  # a quarter of them cancelled
WORKERS = 3
START_SECONDS = 20.0
CATCH_UP_SECONDS = 30.0
PROJECTIONS = ("shop.catalog", "shop.orders")
PRICE = Decimal("2.35")


@dataclass
class Worker:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]


def launch(url: str, directory: Path, n: int) -> Worker:
    port = free_port()
    log = directory / f"worker-{n}.log"
    env = {**os.environ, "TWOFOLD_DATABASE_URL": url, "PORT": str(port)}
    env.pop("TWOFOLD_READ_DATABASE_URL", None)  # the read models live beside the events
    command = [sys.executable, "-m", "twofold.cli", "serve", "tests.monolith:shop", "--role", "projections"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    return Worker(port, process, log)


def stop(worker: Worker) -> None:
    if worker.process.poll() is None:
        worker.process.terminate()
        try:
            worker.process.wait(10.0)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait(10.0)


@contextlib.contextmanager
def workers(url: str, directory: Path) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    try:
        for n in range(WORKERS):
            started.append(launch(url, directory, n))
        yield started
    finally:
        for worker in started:
            stop(worker)


def logs(workers: list[Worker]) -> str:
    return "\n".join(f"--- worker {w.process.pid} (exit {w.process.poll()}):\n{w.output()}" for w in workers)


def new(event: Event) -> NewEvent:
    return NewEvent(event.type_name, event.model_dump(mode="json"), {"principal": "backlog"})


def backlog() -> Iterator[list[StreamWrite]]:
    """Every product with its stock, then orders, a quarter of them cancelled: one list per append."""
    for p in range(PRODUCTS):
        sku = f"P-{p}"
        receipts = [new(StockReceived(sku=sku, quantity=5 + r)) for r in range(RECEIPTS)]
        yield [
            StreamWrite(
                f"product-{sku}", [new(ProductAdded(sku=sku, name=f"Product {p}", price=PRICE)), *receipts], ANY
            )
        ]
    for o in range(ORDERS):
        sku, order_id, quantity = f"P-{o % PRODUCTS}", f"o-{o}", 1 + o % 3
        line = PricedLine(sku=sku, quantity=quantity, price=PRICE)
        placed = OrderPlaced(order_id=order_id, customer_id=f"c-{o % 40}", lines=[line], total=PRICE * quantity)
        reserved = StockReserved(sku=sku, order_id=order_id, quantity=quantity)
        yield [
            StreamWrite(f"product-{sku}", [new(reserved)], ANY),
            StreamWrite(f"order-{order_id}", [new(placed)], ANY),
        ]
        if o % 4 == 3:
            cancelled = OrderCancelled(order_id=order_id, customer_id=placed.customer_id, lines=[line])
            released = StockReleased(sku=sku, order_id=order_id, quantity=quantity)
            yield [
                StreamWrite(f"order-{order_id}", [new(cancelled)], ANY),
                StreamWrite(f"product-{sku}", [new(released)], ANY),
            ]


async def append_backlog(url: str) -> int:
    store = PostgresEventStore(url, pool_size=8)
    try:
        appends = list(backlog())
        # Eight appenders over disjoint products (orders follow their product), so each stream's order holds.
        lanes: list[list[list[StreamWrite]]] = [[] for _ in range(8)]
        for writes in appends:
            product = next(w.stream_id for w in writes if w.stream_id.startswith("product-"))
            lanes[int(product.removeprefix("product-P-")) % 8].append(writes)

        async def run(lane: list[list[StreamWrite]]) -> None:
            for writes in lane:
                await store.append_streams(writes)

        await asyncio.gather(*(run(lane) for lane in lanes))
        return await store.head_position()
    finally:
        await store.close()


async def checkpoints(conn: asyncpg.Connection[Any]) -> dict[str, int]:
    rows = await conn.fetch("SELECT projection, position FROM twofold_checkpoints")
    return {r["projection"]: r["position"] for r in rows}


async def tables(conn: asyncpg.Connection[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    products = [dict(r) for r in await conn.fetch("SELECT * FROM products ORDER BY sku")]
    orders = [dict(r) for r in await conn.fetch("SELECT * FROM orders ORDER BY order_id")]
    return products, orders


def fold(events: list[StoredEvent]) -> tuple[dict[str, tuple[str, str, int]], dict[str, tuple[str, str, str, int]]]:
    """The shop's read model computed straight from the events: sku → (name, price, available), orders."""
    products: dict[str, tuple[str, str, int]] = {}
    orders: dict[str, tuple[str, str, str, int]] = {}
    for e in events:
        match e.type:
            case "shop.ProductAdded":
                added = ProductAdded.model_validate(e.data)
                products[added.sku] = (added.name, str(added.price), 0)
            case "shop.StockReceived" | "shop.StockReleased" | "shop.StockReserved":
                sign = -1 if e.type == "shop.StockReserved" else 1
                name, price, available = products[e.data["sku"]]
                products[e.data["sku"]] = (name, price, available + sign * int(e.data["quantity"]))
            case "shop.OrderPlaced":
                placed = OrderPlaced.model_validate(e.data)
                orders[placed.order_id] = (placed.customer_id, "placed", str(placed.total), e.position)
            case "shop.OrderCancelled":
                customer, _, total, position = orders[e.data["order_id"]]
                orders[e.data["order_id"]] = (customer, "cancelled", total, position)
    return products, orders


async def test_competing_projection_workers_survive_kill_9_and_apply_every_event_exactly_once(
    postgres_server: PostgresServer, postgres_url: str, tmp_path: Path
) -> None:
    url = postgres_url
    backlog_head = await append_backlog(url)
    assert backlog_head > 5000

    writer = Runtime(shop, store=PostgresEventStore(url, pool_size=4), project=False)
    conn = await asyncpg.connect(url)
    writing = True
    written = 0

    async def write_commands() -> None:
        nonlocal written
        rng = random.Random(7)
        while writing:
            sku = f"P-{rng.randrange(PRODUCTS)}"
            if rng.random() < 0.5:
                await writer.execute(ReceiveStock(sku=sku, quantity=3))
            else:
                order = f"live-{written}"
                await writer.execute(
                    PlaceOrder(order_id=order, customer_id="c-live", lines=[OrderLine(sku=sku, quantity=1)])
                )
            written += 1

    with workers(url, tmp_path) as running:
        try:
            deadline = time.monotonic() + START_SECONDS
            # Kill one as soon as the workers are part-way through the backlog.
            while True:
                reached = (
                    (await checkpoints(conn))
                    if await conn.fetchval("SELECT to_regclass('twofold_checkpoints') IS NOT NULL")
                    else {}
                )
                if any(reached.get(p, 0) > 0 for p in PROJECTIONS):
                    break
                if time.monotonic() > deadline or any(w.process.poll() is not None for w in running):
                    pytest.fail(f"the workers did not start projecting: {reached}\n{logs(running)}")
                await asyncio.sleep(0.005)
            async with writer:
                live = asyncio.create_task(write_commands())
                try:
                    running[0].process.kill()  # SIGKILL: no shutdown, possibly mid-transaction
                    running[0].process.wait(5.0)
                    killed_at = await checkpoints(conn)
                    assert min(killed_at.get(p, 0) for p in PROJECTIONS) < backlog_head, (
                        "the backlog was done before the kill"
                    )
                    # The two others go on; after a while, a second is killed too.
                    await asyncio.sleep(1.5)
                    progress = await checkpoints(conn)
                    assert all(progress.get(p, 0) > killed_at.get(p, 0) for p in PROJECTIONS), (
                        killed_at,
                        progress,
                        logs(running),
                    )
                    running[1].process.kill()
                    running[1].process.wait(5.0)
                    await asyncio.sleep(1.0)
                finally:
                    writing = False
                    await live
            assert written > 0
            head = await head_of(url)

            # The last worker alone brings both projections to the head.
            deadline = time.monotonic() + CATCH_UP_SECONDS
            while (reached := await checkpoints(conn)) != dict.fromkeys(PROJECTIONS, head):
                if time.monotonic() > deadline or running[2].process.poll() is not None:
                    pytest.fail(f"projections stuck at {reached}, head {head}\n{logs(running)}")
                await asyncio.sleep(0.05)
            async with httpx.AsyncClient(timeout=5.0) as http:
                ready = await http.get(f"http://127.0.0.1:{running[2].port}/ready")
            assert ready.status_code == 200, ready.text
            assert ready.json()["projections"] == dict.fromkeys(PROJECTIONS, head)
            live_products, live_orders = await tables(conn)
        finally:
            await conn.close()
        assert running[2].process.poll() is None, logs(running)

    # An independent fold of every event in the store…
    store = PostgresEventStore(url, pool_size=2)
    try:
        events = [e async for e in store.read_all()]
    finally:
        await store.close()
    assert [e.position for e in events] == list(range(1, head + 1))
    products, orders = fold(events)
    assert {r["sku"]: (r["name"], r["price"], r["available"]) for r in live_products} == products
    assert {r["order_id"]: (r["customer_id"], r["status"], r["total"], r["position"]) for r in live_orders} == orders
    assert len(orders) == ORDERS + sum(
        1 for e in events if e.type == "shop.OrderPlaced" and e.data["order_id"].startswith("live-")
    )

    # …and a rebuild from position 0 into a fresh database, compared column for column.
    fresh = postgres_server.create_database(f"rebuild_{os.getpid()}_{int(time.time() * 1000) % 10**9}")
    rebuild = Runtime(
        shop, store=PostgresEventStore(url, pool_size=2), read_store=await asyncio.to_thread(PostgresReadStore, fresh)
    )
    async with rebuild:
        await rebuild.catch_up()
        assert dict(await rebuild.positions()) == dict.fromkeys(PROJECTIONS, head)
    conn = await asyncpg.connect(fresh)
    try:
        assert await tables(conn) == (live_products, live_orders)
    finally:
        await conn.close()
    assert json.loads(live_orders[0]["lines"])  # the lines column really holds the order's lines


async def head_of(url: str) -> int:
    store = PostgresEventStore(url, pool_size=1)
    try:
        return await store.head_position()
    finally:
        await store.close()
