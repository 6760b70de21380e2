"""Each read-model target on one log: catch-up speed, then query latency, over a million events.

    python -m benchmarks.read_targets                   # 1,000,000 events
    python -m benchmarks.read_targets --events 100000   # quicker

The log is a shop's: ``PRODUCTS`` products added, then sales, each a line of one product with a
quantity, a price and a day among ``DAYS``. Three projections read the same log through
twofold's runner, a page of 500 and its checkpoint per transaction, each into its own target:

- ``sql``: a row per sale in SQLite (the default read database), the lookup model;
- ``warehouse``: the same rows in DuckDB, for reports;
- ``search``: a document per product in tantivy.

Catch-up is reported as events read per second (every projection reads every event and skips
those it does not handle) and as handled events per second. Then the queries a shop asks: a
search for two words (one a prefix, one with a typo) with a price filter, and a sales report per
day over a month, grouped in the warehouse and — the anchor — in SQLite by the same SQL.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from twofold import Database, Event, Projection, StoredEvent
from twofold.projections import ProjectionRunner
from twofold.readmodels import ReadStore
from twofold.readmodels.duckdb import DuckDBReadStore
from twofold.readmodels.sqlite import SQLiteReadStore
from twofold.readmodels.tantivy import SearchIndex, TantivyReadStore
from twofold.store import NewEvent, StreamWrite
from twofold.store.sqlite import SQLiteEventStore

PRODUCTS = 20_000
DAYS = 90
FIRST_DAY = date(2026, 1, 1)
WORDS = [
    "blue",
    "red",
    "green",
    "mug",
    "plate",
    "bowl",
    "kettle",
    "teapot",
    "glass",
    "jar",
    "lamp",
    "chair",
    "table",
    "shelf",
    "rug",
    "towel",
]
SAMPLES = 200
PER_APPEND = 1_000


class ProductListed(Event, name="bench.ProductListed"):
    sku: str
    name: str
    price: float


class Sold(Event, name="bench.Sold"):
    sku: str
    quantity: int
    price: float
    day: str


SALES = (
    "CREATE TABLE IF NOT EXISTS sales"
    " (position BIGINT PRIMARY KEY, sku TEXT, quantity INTEGER, revenue DOUBLE PRECISION, day DATE)"
)
INSERT_SALE = "INSERT INTO sales VALUES (?, ?, ?, ?, ?)"
REPORT = (
    "SELECT day, sum(revenue) AS revenue, sum(quantity) AS units, count(*) AS lines FROM sales"
    " WHERE day >= ? AND day < ? GROUP BY day ORDER BY day"
)


class SalesRows(Projection, name="bench.sales"):
    tables = ("sales",)

    def setup(self, db: Database) -> None:
        db.execute(SALES)

    def apply(self, event: Sold, db: Database, record: StoredEvent) -> None:
        db.execute(INSERT_SALE, (record.position, event.sku, event.quantity, event.quantity * event.price, event.day))


class WarehouseSales(SalesRows, name="bench.warehouse_sales"):
    target = "warehouse"


class ProductSearch(Projection, name="bench.product_search"):
    target = "search"
    tables = ("products",)

    def setup(self, index: SearchIndex) -> None:
        index.define("products", fields={"sku": "keyword", "name": "text", "price": "float"})

    def apply(self, event: ProductListed, index: SearchIndex, record: StoredEvent) -> None:
        index.put("products", event.sku, {"sku": event.sku, "name": event.name, "price": event.price})


def product_name(rng: random.Random) -> str:
    return " ".join(rng.sample(WORDS, 3))


async def fill(store: SQLiteEventStore, events: int) -> dict[str, int]:
    """Products first, then sales; the count of each, to compute handled events per second."""
    rng = random.Random(7)
    products = min(PRODUCTS, events // 10)
    prices = [round(rng.uniform(1, 200), 2) for _ in range(products)]
    written = 0
    while written < events:
        batch = []
        for n in range(written, min(written + PER_APPEND, events)):
            if n < products:
                data: dict[str, Any] = {"sku": f"P-{n:06}", "name": product_name(rng), "price": prices[n]}
                batch.append(StreamWrite(f"product-P-{n:06}", [NewEvent(ProductListed.type_name, data)]))
            else:
                sku = rng.randrange(products)
                day = FIRST_DAY + timedelta(days=rng.randrange(DAYS))
                sale = {"sku": f"P-{sku:06}", "quantity": rng.randint(1, 5), "price": prices[sku], "day": str(day)}
                batch.append(StreamWrite(f"sale-{n}", [NewEvent(Sold.type_name, sale)]))
        await store.append_streams(batch)
        written += len(batch)
    return {"products": products, "sales": events - products}


async def catch_up(projection: Projection, store: SQLiteEventStore, read_store: ReadStore[Any]) -> float:
    runner = ProjectionRunner(projection, store, read_store)
    await read_store.transact(projection.name, projection.setup)
    started = time.perf_counter()
    await runner.catch_up()
    return time.perf_counter() - started


async def latencies(work: Callable[[int], Awaitable[object]]) -> tuple[float, float]:
    """p50 and p99 in milliseconds over ``SAMPLES`` calls."""
    times = []
    for sample in range(SAMPLES):
        started = time.perf_counter()
        await work(sample)
        times.append((time.perf_counter() - started) * 1000)
    cuts = statistics.quantiles(times, n=100)
    return cuts[49], cuts[98]


async def main(events: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        store = SQLiteEventStore(root / "events.db", durability="normal")
        started = time.perf_counter()
        counts = await fill(store, events)
        print(
            f"{events:,} events ({counts['products']:,} products, {counts['sales']:,} sales) written in"
            f" {time.perf_counter() - started:.0f} s"
        )
        sql, warehouse = SQLiteReadStore(root / "read.db"), DuckDBReadStore(root / "warehouse.duckdb")
        search = TantivyReadStore(root / "search")
        try:
            print(f"{'catch-up':<28}{'events read/s':>16}{'handled/s':>14}{'seconds':>10}")
            for label, projection, target, handled in [
                ("sql (SQLite)", SalesRows(), sql, counts["sales"]),
                ("warehouse (DuckDB)", WarehouseSales(), warehouse, counts["sales"]),
                ("search (tantivy)", ProductSearch(), search, counts["products"]),
            ]:
                took = await catch_up(projection, store, target)
                print(f"  {label:<26}{events / took:>16,.0f}{handled / took:>14,.0f}{took:>10.1f}")
            await report_latencies(sql, warehouse, search)
        finally:
            for closing in (sql, warehouse, search, store):
                await closing.close()


async def report_latencies(sql: ReadStore[Any], warehouse: ReadStore[Any], search: ReadStore[Any]) -> None:
    rng = random.Random(11)

    def month(sample: int) -> tuple[str, str]:
        start = FIRST_DAY + timedelta(days=sample % (DAYS - 30))
        return str(start), str(start + timedelta(days=30))

    def words() -> str:
        first, second = rng.sample(WORDS, 2)
        typo = second[:1] + second[2:] if len(second) >= 4 else second  # one letter dropped
        return f"{typo} {first[:3]}"  # ...and the last word a prefix

    async def searched(_: int) -> object:
        text, low = words(), rng.uniform(1, 150)
        return await search.read(
            lambda index: index.search("products", text, limit=20, filters={"price": (low, low + 50)})
        )

    async def warehouse_report(sample: int) -> object:
        return await warehouse.read(lambda db: db.fetch_all(REPORT, month(sample)))

    async def sqlite_report(sample: int) -> object:
        return await sql.read(lambda db: db.fetch_all(REPORT, month(sample)))

    print(f"{'query':<44}{'p50 ms':>10}{'p99 ms':>10}")
    for label, work in [
        ("search: prefix + typo + price filter", searched),
        ("sales report, a month by day (DuckDB)", warehouse_report),
        ("  the same SQL on SQLite (anchor)", sqlite_report),
    ]:
        p50, p99 = await latencies(work)
        print(f"  {label:<42}{p50:>10.2f}{p99:>10.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    asyncio.run(main(parser.parse_args().events))
