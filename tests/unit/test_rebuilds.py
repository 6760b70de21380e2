"""Zero-downtime rebuilds: built aside, swapped in at once, with queries answering all along."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest
from conftest import StoreFactory

from tests.monolith.messages import StockReceived
from twofold import Database, Projection, Service, StoredEvent
from twofold.readmodels import ReadStore
from twofold.rebuilds import rebuild_projection
from twofold.runtime import Runtime
from twofold.store import NewEvent
from twofold.testing import assert_consistent

NAME = "test.stock"
COUNT = "SELECT COUNT(*) AS n FROM stock"


class Stock(Projection, name=NAME):
    tables = ("stock",)

    def setup(self, db: Database) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, quantity INTEGER NOT NULL)")

    def apply(self, event: StockReceived, db: Database, record: StoredEvent) -> None:
        db.execute(
            "INSERT INTO stock (sku, quantity) VALUES (?, ?)"
            " ON CONFLICT (sku) DO UPDATE SET quantity = stock.quantity + excluded.quantity",
            (event.sku, event.quantity),
        )


def received(sku: str, tenant: str | None = None) -> NewEvent:
    metadata = {"tenant": tenant} if tenant else {}
    return NewEvent(StockReceived.type_name, StockReceived(sku=sku, quantity=1).model_dump(), metadata)


@pytest.fixture
async def runtime(open_stores: StoreFactory) -> AsyncIterator[Runtime]:
    store, read_store = open_stores()
    async with Runtime(Service("stock", projections=[Stock()]), store=store, read_store=read_store, batch_size=50) as r:
        yield r


async def receive(runtime: Runtime, skus: Sequence[str], tenant: str | None = None) -> None:
    assert runtime.store is not None
    for sku in skus:
        await runtime.store.append(f"stock-{sku}", [received(sku, tenant)])
    await runtime.catch_up()


async def count(store: ReadStore) -> int:
    row = await store.read(lambda db: db.fetch_one(COUNT))
    assert row is not None
    return int(row["n"])


def read_store_of(runtime: Runtime) -> ReadStore:
    assert runtime.read_store is not None
    return runtime.read_store


async def test_a_rebuild_puts_a_model_built_from_every_event_in_place_of_the_live_one(runtime: Runtime) -> None:
    await receive(runtime, [f"S-{n}" for n in range(120)])
    read_store = read_store_of(runtime)
    await read_store.transact("test.corruption", lambda db: db.execute("UPDATE stock SET quantity = 7"))
    progress: list[tuple[str, int, int]] = []

    await runtime.rebuild(NAME, progress=lambda *reached: progress.append(reached))

    await assert_consistent(runtime)
    assert await count(read_store) == 120
    assert await read_store.checkpoint(NAME) == 120
    assert progress[-1] == (NAME, 120, 120)
    assert len(progress) > 1  # a page at a time


async def test_queries_answer_from_the_old_model_during_a_rebuild_and_never_from_a_half_built_one(
    runtime: Runtime,
) -> None:
    await receive(runtime, [f"S-{n}" for n in range(300)])
    read_store = read_store_of(runtime)
    seen: list[int] = []
    rebuilding = True

    async def query_all_along() -> None:
        while rebuilding:
            seen.append(await count(read_store))  # raises, failing the test, if a query ever fails
            await asyncio.sleep(0)

    querying = asyncio.create_task(query_all_along())
    await asyncio.sleep(0.01)
    await runtime.rebuild(NAME)
    rebuilding = False
    await querying

    assert len(seen) > 3
    assert set(seen) == {300}
    assert await count(read_store) == 300


async def test_the_live_runner_carries_on_from_the_swapped_in_checkpoint(runtime: Runtime) -> None:
    await receive(runtime, ["A-1", "B-2"])
    await runtime.rebuild(NAME)

    await receive(runtime, ["A-1", "C-3"])

    rows = await read_store_of(runtime).read(lambda db: db.fetch_all("SELECT sku, quantity FROM stock ORDER BY sku"))
    assert rows == [{"sku": "A-1", "quantity": 2}, {"sku": "B-2", "quantity": 1}, {"sku": "C-3", "quantity": 1}]
    assert runtime.runners[NAME].position == 4


async def test_every_tenants_copy_is_rebuilt_too(runtime: Runtime) -> None:
    await receive(runtime, ["M-1"])
    await receive(runtime, ["A-1", "A-2"], tenant="acme")
    acme = read_store_of(runtime).for_tenant("acme")
    await acme.transact("test.corruption", lambda db: db.execute("DELETE FROM stock"))

    await runtime.rebuild(NAME)

    assert [await count(read_store_of(runtime)), await count(acme)] == [1, 2]
    await assert_consistent(runtime)


class MovesOnBeforeTheFirstSwap:
    """A read store whose live model gets ahead of the shadow just before the first swap."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime, self.read_store, self.swaps = runtime, read_store_of(runtime), 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.read_store, name)

    async def swap_in(self, shadow: ReadStore, name: str, tables: Sequence[str]) -> None:
        self.swaps += 1
        if self.swaps == 1:
            await receive(self.runtime, ["LATE-1"])
        await self.read_store.swap_in(shadow, name, tables)


async def test_a_shadow_the_live_model_got_ahead_of_catches_up_before_it_is_swapped_in(runtime: Runtime) -> None:
    await receive(runtime, ["A-1"])
    moving = MovesOnBeforeTheFirstSwap(runtime)
    assert runtime.store is not None

    await rebuild_projection(Stock(), runtime.store, moving)  # type: ignore[arg-type]

    assert moving.swaps == 2
    assert await count(read_store_of(runtime)) == 2
    await assert_consistent(runtime)
