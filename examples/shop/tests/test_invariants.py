"""The shop's invariants across its four services, under random orders (Hypothesis).

Whatever mix of quantities, cards (approved, declined, slow, never answering), customer
cancellations and passing deadlines: every order ends exactly one way, stock is never oversold —
what is left is exactly what was received minus what confirmed orders took — and a payment is
left authorized exactly for the confirmed orders.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from examples.shop import shop
from examples.shop.catalog import AddProduct
from examples.shop.common import Line
from examples.shop.inventory import ReceiveStock
from examples.shop.orders import PAYMENT_DEADLINE, CancelOrder, PlaceOrder
from twofold import DomainError, Runtime
from twofold.embedded import database_url_variable, embedded_runtimes, settle

STOCK = {"A": 4, "B": 2}
Plan = list[tuple[dict[str, int], str | None, bool]]  # each order: its lines, its card, cancelled at once
CARDS = [None, "tok_visa", "tok_declined", "tok_no_funds", "tok_unresponsive"]

orders = st.lists(
    st.tuples(
        st.dictionaries(st.sampled_from(sorted(STOCK)), st.integers(1, 3), min_size=1, max_size=2),
        st.sampled_from(CARDS),
        st.booleans(),  # the customer cancels right after placing it
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(orders)
def test_every_order_ends_one_way_and_stock_is_never_oversold(
    plan: Plan,
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(run(plan, Path(folder)))


async def run(plan: Plan, folder: Path) -> None:
    environ = {
        **{database_url_variable(n): f"sqlite:///{folder}/{n}.db" for n in shop.names},
        "SHOP_GATEWAY_SLOW_SECONDS": os.environ.get("SHOP_GATEWAY_SLOW_SECONDS", "1"),
    }
    runtimes = embedded_runtimes(shop, environ)
    for runtime in runtimes.values():
        await runtime.start()
    try:
        await check(runtimes, plan)
    finally:
        for runtime in reversed(runtimes.values()):  # importers first, before the stores they read close
            await runtime.stop()


async def check(runtimes: dict[str, Runtime], plan: Plan) -> None:
    catalog, inventory, orders = runtimes["catalog"], runtimes["inventory"], runtimes["orders"]
    for sku, quantity in STOCK.items():
        await catalog.execute(AddProduct(sku=sku, name=sku, price=Decimal("1.50")))
        await inventory.execute(ReceiveStock(sku=sku, quantity=quantity))
    placed = {}
    for n, (lines, card, cancel) in enumerate(plan):
        order_id = f"o-{n}"
        command = PlaceOrder(
            order_id=order_id, customer_id="c", lines=[Line(sku=s, quantity=q) for s, q in lines.items()], payment=card
        )
        result = await orders.execute(command)
        placed[order_id] = (lines, result.events[0].recorded_at)
        if cancel:
            with contextlib.suppress(DomainError):  # already settled by the saga
                await orders.execute(CancelOrder(order_id=order_id))
    await settle(runtimes)
    latest = max(at for _, at in placed.values())
    await orders.sagas["checkout"].fire_due(latest + PAYMENT_DEADLINE + timedelta(seconds=1))
    await settle(runtimes)

    final = {order_id: await final_events(orders, order_id) for order_id in placed}
    assert all(len(ends) == 1 for ends in final.values()), final
    confirmed = [o for o, ends in final.items() if ends == ["orders.OrderConfirmed"]]
    taken = Counter[str]()
    for order_id in confirmed:
        taken.update(placed[order_id][0])
    for sku, quantity in STOCK.items():
        left = await available(inventory, sku)
        assert left >= 0, f"{sku} oversold: {left}"
        assert left == quantity - taken[sku]
    authorized = {o for o in placed if await payment_status(runtimes["payments"], o) == "payments.PaymentAuthorized"}
    assert authorized == set(confirmed)


async def final_events(orders: Runtime, order_id: str) -> list[str]:
    assert orders.store is not None
    ends = ("orders.OrderConfirmed", "orders.OrderRejected", "orders.OrderCancelled")
    return [e.type async for e in orders.store.read_stream(f"order-{order_id}") if e.type in ends]


async def available(inventory: Runtime, sku: str) -> int:
    assert inventory.store is not None
    total = 0
    async for e in inventory.store.read_stream(f"stock-{sku}"):
        total += -e.data["quantity"] if e.type == "inventory.StockAllocated" else e.data["quantity"]
    return total


async def payment_status(payments: Runtime, order_id: str) -> str | None:
    assert payments.store is not None
    events = [e.type async for e in payments.store.read_stream(f"payment-{order_id}")]
    return events[-1] if events else None
