"""Two tenants in one shop: each sees its own catalogue, stock and orders, and nothing of the other's.

The shop runs embedded behind bearer tokens whose ``tenant`` claim names the tenant, with every
service's stores in SQLite files and then in real PostgreSQL databases. The checkout saga runs
across all four services for each tenant; every event it causes carries the tenant, and each
service's read models keep each tenant's rows where no query for another tenant can reach them.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from examples.shop import shop as system
from examples.shop.orders import PAYMENT_DEADLINE
from twofold import Runtime
from twofold.config import AuthSettings
from twofold.embedded import embedded_runtimes
from twofold.http.auth import Authenticator
from twofold.http.gateway import gateway_in_process
from twofold.testing.servers import PostgresServer

SETTLE_WITHIN = 10.0  # seconds an order may take to reach its final status
AUTH = Authenticator(AuthSettings(hs256_secret="a-development-secret-of-at-least-32-bytes"))
_databases = itertools.count(1)


class Tenant:
    """One tenant's view of the shop: every request carries its token."""

    def __init__(self, client: httpx.AsyncClient, name: str | None, subject: str) -> None:
        self.client, self.name, self.subject = client, name, subject
        signed = AUTH.token(subject, ["commands:*", "queries:*"], tenant=name)
        self.headers = {"Authorization": f"Bearer {signed}"}

    async def command(self, type_name: str, body: dict[str, Any]) -> httpx.Response:
        return await self.client.post(f"/commands/{type_name}", json=body, headers=self.headers)

    async def ok(self, type_name: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.command(type_name, body)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def query(self, type_name: str, **params: Any) -> httpx.Response:
        return await self.client.get(f"/queries/{type_name}", params=params, headers=self.headers)

    async def stock(self, sku: str, name: str, quantity: int = 5) -> int:
        await self.ok("AddProduct", {"sku": sku, "name": name, "price": "2.50"})
        return int((await self.ok("ReceiveStock", {"sku": sku, "quantity": quantity}))["position"])

    async def order(self, order_id: str, sku: str, card: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"order_id": order_id, "customer_id": "c-1", "lines": [{"sku": sku, "quantity": 2}]}
        if card is not None:
            body["payment"] = card
        return await self.ok("PlaceOrder", body)

    async def history(self) -> list[dict[str, Any]]:
        response = await self.query("OrderHistory", customer_id="c-1")
        assert response.status_code == 200, response.text
        orders: list[dict[str, Any]] = response.json()["orders"]
        return orders

    async def settled(self, order_id: str) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + SETTLE_WITHIN
        while True:
            order = next((o for o in await self.history() if o["order_id"] == order_id), None)
            if order is not None and order["status"] != "placed":
                return order
            assert asyncio.get_running_loop().time() < deadline, f"{order_id} still {order}"
            await asyncio.sleep(0.02)

    async def search(self, text: str, position: int) -> list[str]:
        response = await self.client.get(
            "/queries/SearchProducts", params={"text": text}, headers={**self.headers, "X-Min-Position": str(position)}
        )
        assert response.status_code == 200, response.text
        return [p["name"] for p in response.json()["products"]]


class Shop:
    def __init__(self, client: httpx.AsyncClient, runtimes: dict[str, Runtime]) -> None:
        self.runtimes = runtimes
        self.acme = Tenant(client, "acme", "ada@acme")
        self.globex = Tenant(client, "globex", "grace@globex")
        self.operator = Tenant(client, None, "ops")  # a token without a tenant: the untenanted shop

    async def events_about(self, order_id: str) -> list[tuple[str, str, Any]]:
        """Every event in any service's store that mentions the order: (service, type, tenant)."""
        found = []
        for name, runtime in self.runtimes.items():
            assert runtime.store is not None
            async for event in runtime.store.read_all():
                if order_id in str(event.data) or order_id in event.stream_id:
                    found.append((name, event.type, event.metadata.get("tenant")))
        return found


@pytest.fixture(params=["sqlite", "postgresql"])
def environ(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)  # SQLite: data/<service>.db under the working directory
    if request.param == "sqlite":
        return {}
    server: PostgresServer = request.getfixturevalue("postgres_server")
    run = next(_databases)
    return server.databases_for(system.names, prefix=f"tenants_{run}_")


@pytest.fixture
async def shop(environ: dict[str, str]) -> AsyncIterator[Shop]:
    runtimes = embedded_runtimes(system, environ=environ)
    app = gateway_in_process(system, runtimes, auth=AUTH)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://shop") as c:
        yield Shop(c, runtimes)


async def test_each_tenant_s_checkout_runs_across_the_services_and_only_it_sees_its_orders(shop: Shop) -> None:
    await shop.acme.stock("A-1", "Blue mug")
    await shop.globex.stock("G-1", "Blue teapot")
    await shop.acme.order("o-acme", "A-1")
    await shop.globex.order("o-globex", "G-1")

    acme, globex = await shop.acme.settled("o-acme"), await shop.globex.settled("o-globex")

    assert (acme["status"], acme["placed_by"]) == ("confirmed", "ada@acme")
    assert (globex["status"], globex["placed_by"]) == ("confirmed", "grace@globex")
    # the same customer id in both tenants: each tenant's history holds its own order only
    assert [o["order_id"] for o in await shop.acme.history()] == ["o-acme"]
    assert [o["order_id"] for o in await shop.globex.history()] == ["o-globex"]
    assert await shop.operator.history() == []
    caused = await shop.events_about("o-acme")
    assert {service for service, _, _ in caused} == {"catalog", "inventory", "payments", "orders"}
    assert {tenant for _, _, tenant in caused} == {"acme"}, caused


async def test_search_finds_only_the_asking_tenant_s_products(shop: Shop) -> None:
    await shop.acme.stock("A-1", "Blue mug")
    await shop.globex.stock("G-1", "Blue teapot")
    position = await shop.operator.stock("M-1", "Blue rack")

    assert await shop.acme.search("blue", position) == ["Blue mug"]
    assert await shop.globex.search("blue", position) == ["Blue teapot"]
    assert await shop.operator.search("blue", position) == ["Blue rack"]
    assert await shop.acme.search("teapot", position) == []
    assert await shop.acme.search("", position) == ["Blue mug"]  # no text: every product, the tenant's only


async def test_a_tenant_cannot_read_or_change_another_tenant_s_aggregates(shop: Shop) -> None:
    await shop.acme.stock("A-1", "Blue mug")
    await shop.acme.order("o-acme", "A-1")
    await shop.acme.settled("o-acme")
    before = await shop.events_about("o-acme")

    looked = await shop.globex.query("StockLevel", sku="A-1")
    cancelled = await shop.globex.command("CancelOrder", {"order_id": "o-acme"})
    taken = await shop.globex.command("AddProduct", {"sku": "A-1", "name": "Mine now", "price": "0.01"})

    assert looked.status_code == 404
    assert (cancelled.status_code, cancelled.json()["title"]) == (403, "Forbidden")
    assert cancelled.json()["detail"] == "Stream order-o-acme belongs to another tenant"  # never whose
    assert taken.status_code == 403
    assert await shop.events_about("o-acme") == before
    assert (await shop.acme.settled("o-acme"))["status"] == "confirmed"
    assert (await shop.acme.query("StockLevel", sku="A-1")).json()["available"] == 3


async def test_a_tenant_nothing_was_projected_for_reads_empty_answers(shop: Shop) -> None:
    await shop.acme.stock("A-1", "Blue mug")
    newcomer = Tenant(shop.acme.client, "initech", "bill@initech")

    assert await newcomer.history() == []
    assert await newcomer.search("blue", 0) == []
    assert (await newcomer.query("StockLevel", sku="A-1")).status_code == 404


async def test_a_deadline_acts_for_the_tenant_whose_order_it_is(shop: Shop) -> None:
    await shop.acme.stock("A-1", "Blue mug")
    placed = await shop.acme.order("o-late", "A-1", card="tok_unresponsive")
    checkout = shop.runtimes["orders"].sagas["checkout"]
    for _ in range(500):  # until the reservation is made and the payment asked for
        state = await checkout.state("o-late")
        if state is not None and state.saga.stage == "paying":
            break
        await asyncio.sleep(0.02)

    placed_at = datetime.fromisoformat(placed["events"][0]["recorded_at"])
    await checkout.fire_due(placed_at + PAYMENT_DEADLINE + timedelta(seconds=1))  # time passes, not slept

    order = await shop.acme.settled("o-late")
    assert (order["status"], order["reason"]) == ("cancelled", "not paid in time")
    await shop.runtimes["inventory"].catch_up()
    assert (await shop.acme.query("StockLevel", sku="A-1")).json()["available"] == 5
    assert {tenant for _, _, tenant in await shop.events_about("o-late")} == {"acme"}
