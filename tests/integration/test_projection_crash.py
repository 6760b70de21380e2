"""A projection killed mid-way, or failing mid-batch, resumes to exactly the read model a rebuild gives.

The first test does it for real: a worker process projects a backlog of 20,000 events into a
SQLite read model and is killed with SIGKILL while it is part-way through; this process then
resumes the projections from their checkpoints, and the read model must equal one rebuilt from
position 0 into another file. Any event applied twice, or lost, shows up as a differing row.
The second test makes a projection raise part-way through a batch, in this process: none of the
batch's events may be visible, and the retried batch must leave the read model a rebuild gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.monolith import shop
from tests.monolith.messages import (
    OrderCancelled,
    OrderPlaced,
    PricedLine,
    ProductAdded,
    StockReceived,
    StockReleased,
    StockReserved,
)
from tests.monolith.projections import Catalog
from twofold import Database, Event, Projection, Runtime, StoredEvent
from twofold.projections import ProjectionRunner
from twofold.readmodels.sqlite import SQLiteReadStore
from twofold.store import ANY, NewEvent, StreamWrite
from twofold.store.sqlite import SQLiteEventStore

ROOT = Path(__file__).resolve().parents[2]
PRODUCTS = 200
RECEIPTS = 24  # per product
ORDER_ROUNDS = 30  # each round, one order per product
TOTAL = PRODUCTS * (1 + RECEIPTS) + ORDER_ROUNDS * PRODUCTS * 2 + (ORDER_ROUNDS * PRODUCTS // 4) * 2
CATALOG = {"products": "sku", "product_search": "sku"}
TABLES = {**CATALOG, "orders": "order_id"}
WAIT = 30.0  # seconds any one phase may take before the test fails rather than hangs

WORKER = """
import asyncio, sys
from tests.monolith import shop
from twofold import Runtime
from twofold.readmodels.sqlite import SQLiteReadStore
from twofold.store.sqlite import SQLiteEventStore

async def project_forever():
    events, read, batch_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    runtime = Runtime(shop, store=SQLiteEventStore(events), read_store=SQLiteReadStore(read), batch_size=batch_size)
    await runtime.start()
    await asyncio.Event().wait()

asyncio.run(project_forever())
"""


def new(event: Event, principal: str | None = None) -> NewEvent:
    return NewEvent(event.type_name, event.model_dump(mode="json"), {"principal": principal})


def write(stream_id: str, *events: NewEvent) -> StreamWrite:
    return StreamWrite(stream_id, events, ANY)


def backlog() -> Iterator[list[StreamWrite]]:
    """Appends, in order: every product with its stock, then rounds of orders, a quarter cancelled."""
    skus = [f"P-{n}" for n in range(PRODUCTS)]
    price = Decimal("2.35")
    yield [
        write(
            f"product-{sku}",
            new(ProductAdded(sku=sku, name=f"Thing {sku} (NEAR-mint)", price=price)),
            *(new(StockReceived(sku=sku, quantity=50)) for _ in range(RECEIPTS)),
        )
        for sku in skus
    ]
    for round_ in range(ORDER_ROUNDS):
        placed = []
        for number, sku in enumerate(skus):
            order_id, quantity = f"o-{round_}-{number}", 1 + (round_ + number) % 3
            lines = [PricedLine(sku=sku, quantity=quantity, price=price)]
            placed.append((order_id, sku, quantity, lines))
        yield [
            write(
                f"order-{order_id}",
                new(
                    OrderPlaced(order_id=order_id, customer_id=f"c-{number % 7}", lines=lines, total=price * quantity),
                    principal=f"u-{number % 3}",
                ),
            )
            for number, (order_id, _, quantity, lines) in enumerate(placed)
        ] + [
            write(f"product-{sku}", new(StockReserved(sku=sku, order_id=order_id, quantity=quantity)))
            for order_id, sku, quantity, _ in placed
        ]
        cancelled = placed[round_ % 4 :: 4]
        yield [
            write(f"order-{order_id}", new(OrderCancelled(order_id=order_id, customer_id="c-x", lines=lines)))
            for order_id, _, _, lines in cancelled
        ] + [
            write(f"product-{sku}", new(StockReleased(sku=sku, order_id=order_id, quantity=quantity)))
            for order_id, sku, quantity, _ in cancelled
        ]


async def append_backlog(path: Path) -> int:
    store = SQLiteEventStore(path, durability="normal")
    try:
        for writes in backlog():
            await store.append_streams(writes)
        return await store.head_position()
    finally:
        await store.close()


def checkpoints(read_path: Path) -> dict[str, int]:
    """The projections' checkpoints, read straight from the file the worker writes."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{read_path}?mode=ro", uri=True)) as conn:
            return dict(conn.execute("SELECT projection, position FROM twofold_checkpoints").fetchall())
    except sqlite3.OperationalError:  # the worker has not created the file or its table yet
        return {}


def part_way(positions: dict[str, int], head: int) -> bool:
    """Both projections half-way or further, at least one not yet done."""
    return len(positions) == 2 and min(positions.values()) >= head // 2 and min(positions.values()) < head


def project_until_killed(events: Path, read: Path, head: int, log: Path) -> dict[str, int]:
    """Start a worker process projecting the backlog; SIGKILL it once it is part-way through."""
    args = [sys.executable, "-c", WORKER, str(events), str(read), "20"]
    with log.open("wb") as output, subprocess.Popen(args, cwd=ROOT, stdout=output, stderr=output) as worker:
        try:
            deadline = time.monotonic() + WAIT
            while not part_way(checkpoints(read), head):
                assert worker.poll() is None, f"the worker exited early:\n{log.read_text()}"
                assert time.monotonic() < deadline, f"the worker never got part-way:\n{log.read_text()}"
                time.sleep(0.002)
        finally:
            worker.kill()
            worker.wait(WAIT)
    assert worker.returncode == -9
    return checkpoints(read)


async def rows(read_store: SQLiteReadStore, tables: dict[str, str] = TABLES) -> dict[str, list[dict[str, Any]]]:
    def read(db: Database) -> dict[str, list[dict[str, Any]]]:
        # Table and key names are the constants above, never input.
        return {table: db.fetch_all(f"SELECT * FROM {table} ORDER BY {key}") for table, key in tables.items()}

    return await read_store.read(read)


async def rebuild(events: Path, path: Path, *, up_to: int | None = None) -> dict[str, list[dict[str, Any]]]:
    """Every projection replayed from position 0 into a fresh file (up to ``up_to`` if given)."""
    store, read_store = SQLiteEventStore(events), SQLiteReadStore(path)
    try:
        for projection in shop.projections:
            await read_store.transact(projection.name, projection.setup)
            runner = ProjectionRunner(projection, store, read_store, batch_size=1000)
            if up_to is None:
                await runner.catch_up()
            elif up_to:
                await runner.apply_page([e async for e in store.read_all(1, up_to)])
        return await rows(read_store)
    finally:
        await store.close()
        await read_store.close()


async def test_a_projection_killed_mid_backlog_resumes_to_exactly_the_rebuilt_read_model(tmp_path: Path) -> None:
    events, read = tmp_path / "events.db", tmp_path / "read.db"
    head = await append_backlog(events)
    assert head == TOTAL == 20_000

    at_kill = await asyncio.to_thread(project_until_killed, events, read, head, tmp_path / "worker.log")

    assert min(at_kill.values()) < head, f"the worker finished before it was killed: {at_kill}"
    async with asyncio.timeout(WAIT):
        read_store = SQLiteReadStore(read)
        async with Runtime(shop, store=SQLiteEventStore(events), read_store=read_store) as runtime:
            for runner in runtime.runners.values():
                assert runner.position == at_kill.get(runner.name, 0)  # resumed from the checkpoint
            await runtime.catch_up()
            assert await runtime.positions() == {p.name: head for p in shop.projections}
            resumed = await rows(read_store)
        rebuilt = await rebuild(events, tmp_path / "rebuilt.db")

    assert len(resumed["products"]) == PRODUCTS
    assert len(resumed["orders"]) == ORDER_ROUNDS * PRODUCTS
    for table in TABLES:
        assert resumed[table] == rebuilt[table], f"table {table} differs from the rebuild"


class FailingCatalog(Catalog, name="shop.catalog"):
    """The shop's catalogue, failing once at one position, after applying the batch's earlier events."""

    def __init__(self, fail_at: int) -> None:
        self.fail_at: int | None = fail_at

    def apply(
        self,
        event: ProductAdded | StockReceived | StockReserved | StockReleased,
        db: Database,
        record: StoredEvent,
    ) -> None:
        if record.position == self.fail_at:
            self.fail_at = None
            raise RuntimeError(f"projection bug at position {record.position}")
        super().apply(event, db, record)


async def test_a_batch_that_fails_part_way_leaves_none_of_its_events_visible(tmp_path: Path) -> None:
    events, read = tmp_path / "events.db", tmp_path / "read.db"
    head = await append_backlog(events)
    failing: Projection = FailingCatalog(fail_at=5_250)
    store, read_store = SQLiteEventStore(events), SQLiteReadStore(read)
    try:
        runner = ProjectionRunner(failing, store, read_store, batch_size=100)
        await read_store.transact(failing.name, failing.setup)
        async with asyncio.timeout(WAIT):
            with pytest.raises(RuntimeError, match="projection bug at position 5250"):
                await runner.catch_up()
            assert await read_store.checkpoint(failing.name) == runner.position == 5_200
            after_failure = await rows(read_store, CATALOG)
            before_batch = await rebuild(events, tmp_path / "up-to-5200.db", up_to=5_200)

            await runner.catch_up()  # the bug was transient: the same batch now goes through
            resumed = await rows(read_store, CATALOG)
            rebuilt = await rebuild(events, tmp_path / "rebuilt.db")
    finally:
        await store.close()
        await read_store.close()

    for table in CATALOG:
        assert after_failure[table] == before_batch[table], f"table {table} shows part of the failed batch"
        assert resumed[table] == rebuilt[table], f"table {table} differs from the rebuild"
    assert runner.position == head
