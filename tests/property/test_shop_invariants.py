"""The shop's invariants under random command sequences (Hypothesis).

1. Stock is never oversold: folding the global log independently, each sku's available stock,
   received − reserved + released, never drops below zero at any point, and it equals what a
   plain reference model of the rules, the aggregates and the read model each say.
2. A read model rebuilt from position 0 equals the one projected live, row for row.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.monolith import shop
from tests.monolith.domain import Product
from tests.monolith.messages import AddProduct, CancelOrder, PlaceOrder, ReceiveStock, StockLevel
from tests.monolith.projections import Stock
from tests.property.strategies import SKUS, shop_commands
from twofold import Command, DomainError, Envelope, EventStore, Runtime, UnitOfWork
from twofold.projections import ProjectionRunner
from twofold.readmodels import ReadStore
from twofold.readmodels.sqlite import SQLiteReadStore
from twofold.store.memory import MemoryEventStore

WAIT = 10.0  # seconds any one example may wait on its projections before it fails
TABLES = {"products": "sku", "product_search": "sku", "orders": "order_id"}


@dataclass
class ReferenceShop:
    """The shop's rules in a few lines of plain Python, to judge the real thing against."""

    prices: dict[str, Decimal] = field(default_factory=dict)
    available: Counter[str] = field(default_factory=Counter)
    orders: dict[str, tuple[dict[str, int], bool]] = field(default_factory=dict)  # lines, cancelled

    def accepts(self, command: Command) -> bool:
        """Apply ``command`` if the rules allow it; say whether they did."""
        match command:
            case AddProduct(sku=sku, price=price) if sku not in self.prices:
                self.prices[sku] = price
            case ReceiveStock(sku=sku, quantity=quantity) if sku in self.prices:
                self.available[sku] += quantity
            case PlaceOrder(order_id=order_id, lines=lines) if order_id not in self.orders and all(
                line.sku in self.prices and line.quantity <= self.available[line.sku] for line in lines
            ):
                self.orders[order_id] = ({line.sku: line.quantity for line in lines}, False)
                self.available.subtract({line.sku: line.quantity for line in lines})
            case CancelOrder(order_id=order_id) if order_id in self.orders and not self.orders[order_id][1]:
                lines, _ = self.orders[order_id]
                self.orders[order_id] = (lines, True)
                self.available.update(lines)
            case _:
                return False
        return True


async def run_commands(runtime: Runtime, commands: Sequence[Command]) -> ReferenceShop:
    """Execute each command; every acceptance and refusal must be the reference shop's."""
    reference = ReferenceShop()
    for command in commands:
        try:
            await runtime.execute(command)
            accepted = True
        except DomainError:
            accepted = False
        assert accepted == reference.accepts(command), f"{command!r} accepted={accepted}"
    return reference


async def stock_by_folding_the_log(store: EventStore) -> dict[str, int]:
    """received − reserved + released per sku, checked never negative after any event."""
    available: defaultdict[str, int] = defaultdict(int)
    sign = {"shop.StockReceived": 1, "shop.StockReserved": -1, "shop.StockReleased": 1}
    async for event in store.read_all():
        if event.type in sign:
            sku = event.data["sku"]
            available[sku] += sign[event.type] * event.data["quantity"]
            assert available[sku] >= 0, f"{sku} oversold at position {event.position}"
    return dict(available)


async def stock_by_loading_aggregates(store: EventStore) -> dict[str, int]:
    uow = UnitOfWork(store, Envelope(AddProduct(sku="X", name="x", price=Decimal(0))))
    products = [await uow.load(Product, sku) for sku in SKUS]
    return {p.id: p.available for p in products if p.exists}


@settings(max_examples=50, deadline=None)
@given(commands=shop_commands())
def test_random_command_sequences_never_oversell_stock(commands: list[Command]) -> None:
    async def scenario() -> None:
        store = MemoryEventStore()
        async with Runtime(shop, store=store) as runtime:
            reference = await run_commands(runtime, commands)
            folded = await stock_by_folding_the_log(store)
            loaded = await stock_by_loading_aggregates(store)

        expected = {sku: reference.available[sku] for sku in reference.prices}
        assert {sku: folded.get(sku, 0) for sku in reference.prices} == expected
        assert set(folded) <= set(reference.prices)
        assert loaded == expected
        assert all(quantity >= 0 for quantity in expected.values())

    asyncio.run(scenario())


async def table_rows(read_store: ReadStore) -> dict[str, list[dict[str, Any]]]:
    def read(db: Any) -> dict[str, list[dict[str, Any]]]:
        # Table and key names are the constants above, never input.
        return {table: db.fetch_all(f"SELECT * FROM {table} ORDER BY {key}") for table, key in TABLES.items()}

    return await read_store.read(read)


async def rebuild(store: EventStore, path: Path, batch_size: int) -> dict[str, list[dict[str, Any]]]:
    """A fresh read store, every projection replayed into it from position 0."""
    read_store = SQLiteReadStore(path)
    try:
        for projection in shop.projections:
            await read_store.transact(projection.name, projection.setup)
            runner = ProjectionRunner(projection, store, read_store, batch_size=batch_size)
            await runner.catch_up()
            assert await read_store.checkpoint(projection.name) == await store.head_position()
        return await table_rows(read_store)
    finally:
        await read_store.close()


@settings(max_examples=30, deadline=None)
@given(
    commands=shop_commands(),
    live_batch=st.integers(min_value=1, max_value=8),
    rebuild_batch=st.integers(min_value=1, max_value=500),
)
def test_a_read_model_rebuilt_from_position_zero_equals_the_live_one(
    commands: list[Command], live_batch: int, rebuild_batch: int
) -> None:
    async def scenario(folder: Path) -> None:
        store = MemoryEventStore()
        live = SQLiteReadStore(folder / "live.db")
        async with asyncio.timeout(WAIT), Runtime(shop, store=store, read_store=live, batch_size=live_batch) as runtime:
            reference = await run_commands(runtime, commands)  # projected live, while commands run
            head = await store.head_position()
            for runner in runtime.runners.values():
                assert await runner.wait_for(head, WAIT)
            levels = [await runtime.query(StockLevel(sku=sku)) for sku in sorted(reference.prices)]
            live_rows = await table_rows(live)
            rebuilt_rows = await rebuild(store, folder / "rebuilt.db", rebuild_batch)

        assert rebuilt_rows == live_rows
        assert levels == [Stock(sku=sku, available=reference.available[sku]) for sku in sorted(reference.prices)]
        assert len(live_rows["orders"]) == len(reference.orders)

    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(scenario(Path(folder)))
