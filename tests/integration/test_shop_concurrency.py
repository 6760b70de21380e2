"""Many concurrent orders for scarce stock, on SQLite: the shop never oversells and leaves no trace of a refusal.

Sixty orders of one to three units race for ten. Half of them also take a unit of a plentiful
product, so that a refused order shows it reserved nothing anywhere. Two ``Runtime`` objects on
the same files have their own connections and threads, as two processes would.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

import pytest

from tests.monolith import shop
from tests.monolith.messages import AddProduct, OrderHistory, OrderLine, PlaceOrder, ReceiveStock, StockLevel
from twofold import CommandResult, ConcurrencyError, DomainError, Runtime
from twofold.store import AppendResult, StreamWrite

if TYPE_CHECKING:
    from conftest import StoreFactory

STOCK = 10
PLENTY = 1000
ORDERS = 60
CUSTOMERS = [f"c-{n}" for n in range(6)]
WAIT = 30.0  # seconds the whole race may take before the test fails rather than hangs


@dataclass(frozen=True)
class Outcome:
    order: PlaceOrder
    result: CommandResult | None
    error: Exception | None

    @property
    def scarce_quantity(self) -> int:
        return next(line.quantity for line in self.order.lines if line.sku == "A-1")


def orders(seed: int) -> list[PlaceOrder]:
    rng = random.Random(seed)
    placed = []
    for number in range(ORDERS):
        lines = [OrderLine(sku="A-1", quantity=rng.randint(1, 3))]
        if number % 2:
            lines.append(OrderLine(sku="B-2", quantity=1))
        placed.append(PlaceOrder(order_id=f"o-{number}", customer_id=CUSTOMERS[number % len(CUSTOMERS)], lines=lines))
    return placed


def runtime_on(open_stores: StoreFactory) -> Runtime:
    store, read_store = open_stores()
    return Runtime(shop, store=store, read_store=read_store)


@pytest.fixture
async def first(open_stores: StoreFactory) -> AsyncIterator[Runtime]:
    async with runtime_on(open_stores) as runtime:
        await runtime.execute(AddProduct(sku="A-1", name="Rare mug", price=Decimal("12.50")))
        await runtime.execute(ReceiveStock(sku="A-1", quantity=STOCK))
        await runtime.execute(AddProduct(sku="B-2", name="Common tea", price=Decimal("3.00")))
        await runtime.execute(ReceiveStock(sku="B-2", quantity=PLENTY))
        yield runtime


@pytest.fixture
async def second(open_stores: StoreFactory, first: Runtime) -> AsyncIterator[Runtime]:
    async with runtime_on(open_stores) as runtime:
        yield runtime


async def place(runtime: Runtime, order: PlaceOrder) -> Outcome:
    try:
        return Outcome(order, await runtime.execute(order), None)
    except (DomainError, ConcurrencyError) as exc:  # anything else fails the test
        return Outcome(order, None, exc)


async def race(placements: Sequence[tuple[Runtime, PlaceOrder]]) -> list[Outcome]:
    conflicts = Counter[str]()
    for runtime in {runtime for runtime, _ in placements}:
        count_conflicts(runtime, conflicts)
    async with asyncio.timeout(WAIT):
        outcomes = await asyncio.gather(*(place(runtime, order) for runtime, order in placements))
    assert conflicts.total() > 0, "the orders never actually raced for the same stream"
    return outcomes


RACERS = 8  # the first appends wait until this many are ready, so that they surely collide


def count_conflicts(runtime: Runtime, conflicts: Counter[str]) -> None:
    """Count the appends refused for a stale expected version: proof the orders really raced.

    Loads are quick enough that, left alone, one order could commit before the next one loads;
    holding the first appends back until several orders have decided makes the race certain.
    """
    store = runtime.store
    assert store is not None
    append_streams = store.append_streams
    arrived = 0
    gate = asyncio.Event()

    async def counting(writes: Sequence[StreamWrite], command_id: str | None = None) -> AppendResult:
        nonlocal arrived
        arrived += 1
        if arrived >= RACERS:
            gate.set()
        await gate.wait()
        try:
            return await append_streams(writes, command_id)
        except ConcurrencyError as conflict:
            conflicts[conflict.stream_id] += 1
            raise

    store.append_streams = counting  # type: ignore[method-assign]


async def check_nothing_oversold(outcomes: list[Outcome], runtimes: Sequence[Runtime]) -> None:
    accepted = [o for o in outcomes if o.result is not None]
    refused = [o for o in outcomes if o.error is not None]
    sold = sum(o.scarce_quantity for o in accepted)
    assert accepted, "no order got through at all"
    assert len(accepted) + len(refused) == ORDERS
    assert sold <= STOCK

    store = runtimes[0].store
    assert store is not None
    head = await store.head_position()
    reserved: Counter[str] = Counter()
    reserving_orders, placed_orders = set(), set()
    async for event in store.read_all():
        if event.type == "shop.StockReserved":
            reserved[event.data["sku"]] += event.data["quantity"]
            reserving_orders.add(event.data["order_id"])
        elif event.type == "shop.OrderPlaced":
            placed_orders.add(event.data["order_id"])
    accepted_ids = {o.order.order_id for o in accepted}
    assert placed_orders == reserving_orders == accepted_ids  # a refused order left nothing behind
    assert (reserved["A-1"], reserved["B-2"]) == (sold, sum(len(o.order.lines) - 1 for o in accepted))
    for outcome in refused:
        assert await store.stream_version(f"order-{outcome.order.order_id}") == 0

    for runtime in runtimes:
        async with asyncio.timeout(WAIT):
            level = await runtime.query(StockLevel(sku="A-1"), min_position=head, timeout=WAIT)
            histories = [
                await runtime.query(OrderHistory(customer_id=c), min_position=head, timeout=WAIT) for c in CUSTOMERS
            ]
        assert level.available == STOCK - sold
        listed = [order.order_id for history in histories for order in history.orders]
        assert sorted(listed) == sorted(accepted_ids)


async def test_concurrent_orders_on_one_runtime_never_oversell(first: Runtime) -> None:
    outcomes = await race([(first, order) for order in orders(seed=1)])

    await check_nothing_oversold(outcomes, [first])


async def test_concurrent_orders_through_two_runtimes_on_the_same_files_never_oversell(
    first: Runtime, second: Runtime
) -> None:
    outcomes = await race([((first, second)[n % 2], order) for n, order in enumerate(orders(seed=2))])

    await check_nothing_oversold(outcomes, [first, second])


async def test_a_refusal_for_short_stock_names_what_was_left(first: Runtime, second: Runtime) -> None:
    outcomes = await race([((first, second)[n % 2], order) for n, order in enumerate(orders(seed=3))])

    short = [o.error for o in outcomes if isinstance(o.error, DomainError)]
    assert short, "with sixty orders for ten units, some must be refused for short stock"
    for error in short:
        assert str(error).startswith("Not enough stock for A-1: ordered ")
    for error in (o.error for o in outcomes if isinstance(o.error, ConcurrencyError)):
        assert error.stream_id in {"product-A-1", "product-B-2"}
