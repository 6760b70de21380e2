"""The shop end to end in one process: four services, the checkout saga, one API in front.

Each test runs ``make run``'s embedded mode on SQLite files in a fresh folder and drives it over
HTTP through the gateway, as a client would: an order ends confirmed, or rejected or cancelled
with its stock released, and stock is never oversold.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from examples.shop import shop as system
from examples.shop.orders import PAYMENT_DEADLINE
from twofold import Runtime
from twofold.embedded import embedded_runtimes
from twofold.http.gateway import gateway_in_process

SETTLE_WITHIN = 10.0  # seconds an order may take to reach its final status


class Shop:
    def __init__(self, client: httpx.AsyncClient, runtimes: dict[str, Runtime]) -> None:
        self.client, self.runtimes = client, runtimes

    async def ok(self, command: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.client.post(f"/commands/{command}", json=body)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def stock(self, sku: str, **product: Any) -> None:
        await self.ok(
            "AddProduct", {"sku": sku, "name": product.get("name", sku), "price": product.get("price", "2.50")}
        )
        await self.ok("ReceiveStock", {"sku": sku, "quantity": product.get("quantity", 5)})

    async def order(self, order_id: str, *lines: tuple[str, int], card: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "order_id": order_id,
            "customer_id": "c-1",
            "lines": [{"sku": s, "quantity": q} for s, q in lines],
        }
        if card is not None:
            body["payment"] = card
        return await self.ok("PlaceOrder", body)

    async def settled(self, order_id: str, customer: str = "c-1") -> dict[str, Any]:
        """The order once the checkout has given it its final status."""
        deadline = asyncio.get_running_loop().time() + SETTLE_WITHIN
        while True:
            history = (await self.client.get("/queries/OrderHistory", params={"customer_id": customer})).json()
            order = next((o for o in history["orders"] if o["order_id"] == order_id), None)
            if order is not None and order["status"] != "placed":
                return order
            assert asyncio.get_running_loop().time() < deadline, f"{order_id} still {order}"
            await asyncio.sleep(0.02)

    async def available(self, sku: str) -> int:
        inventory = self.runtimes["inventory"]
        await inventory.catch_up()
        answer = (await self.client.get("/queries/StockLevel", params={"sku": sku})).json()
        return int(answer["available"])


@pytest.fixture
async def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Shop]:
    monkeypatch.chdir(tmp_path)  # the default stores are data/<service>.db under the working directory
    runtimes = embedded_runtimes(system, environ={})
    app = gateway_in_process(system, runtimes)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            yield Shop(client, runtimes)


async def test_an_order_paid_with_a_good_card_is_confirmed_at_its_price(shop: Shop) -> None:
    await shop.stock("A-1", price="9.50")
    await shop.order("o-1", ("A-1", 2))
    order = await shop.settled("o-1")
    assert (order["status"], order["total"], order["reason"]) == ("confirmed", "19.00", None)
    assert await shop.available("A-1") == 3


@pytest.mark.parametrize(
    ("card", "reason"),
    [("tok_declined", "payment declined: card declined"), ("tok_no_funds", "payment declined: insufficient funds")],
)
async def test_a_declined_card_rejects_the_order_and_releases_its_stock(shop: Shop, card: str, reason: str) -> None:
    await shop.stock("A-1")
    await shop.order("o-1", ("A-1", 2), card=card)
    order = await shop.settled("o-1")
    assert (order["status"], order["reason"]) == ("rejected", reason)
    assert await shop.available("A-1") == 5


async def test_a_shortage_or_an_unknown_product_rejects_the_order(shop: Shop) -> None:
    await shop.stock("A-1", quantity=1)
    await shop.order("o-1", ("A-1", 2))
    await shop.order("o-2", ("Z-9", 1))
    assert (await shop.settled("o-1"))["reason"] == "out of stock: A-1"
    assert (await shop.settled("o-2"))["reason"] == "unknown products: Z-9"
    assert await shop.available("A-1") == 1


async def test_an_order_not_paid_by_its_deadline_is_cancelled_and_its_stock_released(shop: Shop) -> None:
    await shop.stock("A-1")
    placed = await shop.order("o-1", ("A-1", 2), card="tok_unresponsive")
    checkout = shop.runtimes["orders"].sagas["checkout"]
    for _ in range(500):  # until the reservation is made and the payment asked for
        state = await checkout.state("o-1")
        if state is not None and state.saga.stage == "paying":
            break
        await asyncio.sleep(0.02)
    assert await shop.available("A-1") == 3

    placed_at = datetime.fromisoformat(placed["events"][0]["recorded_at"])
    await checkout.fire_due(placed_at + PAYMENT_DEADLINE + timedelta(seconds=1))  # time passes, not slept
    order = await shop.settled("o-1")
    assert (order["status"], order["reason"]) == ("cancelled", "not paid in time")
    assert await shop.available("A-1") == 5
    payments = shop.runtimes["payments"].store
    assert payments is not None
    assert [e.type async for e in payments.read_stream("payment-o-1")][-1] == "payments.PaymentVoided"


async def test_concurrent_orders_never_oversell(shop: Shop) -> None:
    await shop.stock("A-1", quantity=10)
    await asyncio.gather(*(shop.order(f"o-{n}", ("A-1", 1)) for n in range(16)))
    statuses = [(await shop.settled(f"o-{n}"))["status"] for n in range(16)]
    assert statuses.count("confirmed") == 10
    assert statuses.count("rejected") == 6
    assert await shop.available("A-1") == 0


async def test_the_saga_of_an_order_is_inspectable_through_the_gateway(shop: Shop) -> None:
    await shop.stock("A-1")
    await shop.order("o-1", ("A-1", 1))
    await shop.settled("o-1")
    await shop.runtimes["orders"].catch_up()
    saga = (await shop.client.get("/sagas/checkout/o-1")).json()
    assert (saga["status"], saga["state"]["stage"], saga["deadlines"]) == ("completed", "confirmed", {})
