"""A saga's guarantees under random interleavings of orders, payments, time and crashes (Hypothesis).

Whatever the order of placing, paying, time passing and the saga runner crashing and reacting
again from its first event: stock is never oversold, each command a reaction sends takes effect
once, and once every deadline has passed each order ends exactly one way — confirmed if it was
paid and had stock, cancelled otherwise, its reservation released.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.integration.test_sagas import PAYMENT_DEADLINE, PayOrder, PlaceOrder, Restock, shop
from twofold import DomainError, Runtime
from twofold.readmodels.sqlite import SQLiteReadStore
from twofold.saga_runner import REACTED
from twofold.store.memory import MemoryEventStore

STOCK = 6
ORDERS = 5

steps = st.lists(
    st.one_of(
        st.tuples(st.just("place"), st.integers(0, ORDERS - 1), st.integers(1, 3)),
        st.tuples(st.just("pay"), st.integers(0, ORDERS - 1), st.just(0)),
        st.tuples(st.just("wait"), st.integers(1, 12), st.just(0)),
        st.tuples(st.just("react"), st.just(0), st.just(0)),
        st.tuples(st.just("crash"), st.just(0), st.just(0)),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None)
@given(steps)
def test_orders_end_one_way_and_stock_is_never_oversold(plan: list[tuple[str, int, int]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(run(plan, Path(folder)))


async def run(plan: list[tuple[str, int, int]], folder: Path) -> None:
    store = MemoryEventStore()
    async with Runtime(shop, store=store, read_store=SQLiteReadStore(folder / "read.db")) as runtime:
        runner = runtime.sagas["checkout"]
        await runtime.execute(Restock(sku="A", quantity=STOCK))
        start: datetime | None = None  # when the first order was placed: deadlines count from there
        minutes = 0
        placed: dict[str, int] = {}
        paid: set[str] = set()
        for step, n, quantity in plan:
            order_id = f"o-{n}"
            if step == "place" and order_id not in placed:
                result = await runtime.execute(PlaceOrder(order_id=order_id, sku="A", quantity=quantity))
                placed[order_id] = quantity
                start = start or result.events[0].recorded_at
            elif step == "pay" and order_id in placed:
                try:
                    await runtime.execute(PayOrder(order_id=order_id))
                    paid.add(order_id)
                except DomainError:
                    pass  # already paid, or cancelled at its deadline
            elif step == "wait":
                minutes += quantity
                await runtime.catch_up()
                if start is not None:
                    await runner.fire_due(start + timedelta(minutes=minutes))
            elif step == "react":
                await runtime.catch_up()
            elif step == "crash":  # the runner forgets how far it got and reacts to everything again
                await runner.stop()
                await runtime.read_store.transact(runner.name, lambda db: None, position=0)  # type: ignore[union-attr]
                await runner.start()
            assert await available(store) >= 0

        await runtime.catch_up()
        if start is not None:
            await runner.fire_due(start + timedelta(minutes=minutes) + PAYMENT_DEADLINE * 2)
        await runtime.catch_up()

        ends = {order_id: await terminal_events(store, order_id) for order_id in placed}
        confirmed = {o for o, found in ends.items() if found == ["OrderConfirmed"]}
        assert all(len(found) == 1 for found in ends.values()), ends
        assert confirmed <= paid
        assert await available(store) == STOCK - sum(placed[o] for o in confirmed)
        sent = Counter([(e.type, e.data["order_id"]) async for e in store.read_all() if e.type.startswith("Stock")])
        assert all(count == 1 for count in sent.values()), sent
        reactions = [e.data["trigger"] async for e in store.read_all() if e.type == REACTED]
        triggers = Counter(t["event_id"] for t in reactions if t["event_id"] is not None)  # None: a deadline
        assert all(count == 1 for count in triggers.values()), "an event was reacted to twice"


async def available(store: MemoryEventStore) -> int:
    total = 0
    async for record in store.read_stream("stock-A"):
        sign = {"Restocked": 1, "StockReleased": 1, "StockReserved": -1}.get(record.type, 0)
        total += sign * record.data.get("quantity", 0)
    return total


async def terminal_events(store: MemoryEventStore, order_id: str) -> list[str]:
    ends = ("OrderConfirmed", "OrderCancelled")
    return [e.type async for e in store.read_stream(f"order-{order_id}") if e.type in ends]
