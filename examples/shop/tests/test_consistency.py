"""The shop's read models equal a rebuild from their events, and a corrupted row is caught and explained.

The shop runs embedded behind the gateway, on SQLite files and then on real PostgreSQL databases;
orders go through the checkout saga for the untenanted shop and for a tenant. Then the checker
rebuilds every projection of every service aside and compares it with the live tables.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from examples.shop import shop as system
from examples.shop.inventory import levels
from twofold import Runtime
from twofold.checking import check_consistency
from twofold.config import AuthSettings
from twofold.embedded import embedded_runtimes, settle
from twofold.http.auth import Authenticator
from twofold.http.gateway import gateway_in_process
from twofold.readmodels import Database
from twofold.testing import assert_consistent
from twofold.testing.servers import PostgresServer

SETTLE_WITHIN = 10.0  # seconds an order may take to reach its final status
AUTH = Authenticator(AuthSettings(hs256_secret="a-development-secret-of-at-least-32-bytes"))
SCRATCH_SCHEMAS = "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'twofold_scratch%'"
_databases = itertools.count(1)


class Shop:
    def __init__(self, client: httpx.AsyncClient, runtimes: dict[str, Runtime], backend: str) -> None:
        self.client, self.runtimes, self.backend = client, runtimes, backend

    async def ok(self, tenant: str | None, command: str, body: dict[str, Any]) -> None:
        headers = {"Authorization": f"Bearer {AUTH.token('ops', ['commands:*', 'queries:*'], tenant=tenant)}"}
        response = await self.client.post(f"/commands/{command}", json=body, headers=headers)
        assert response.status_code == 200, response.text

    async def trade(self, tenant: str | None = None) -> None:
        """Two products, and three orders: one confirmed, one declined, one short of stock.

        A tenant's ids start with its name: a stream belongs to one tenant.
        """
        at = f"{tenant}-" if tenant else ""
        for sku, name in ((f"{at}A-1", "Blue mug"), (f"{at}B-2", "Green teapot")):
            await self.ok(tenant, "AddProduct", {"sku": sku, "name": name, "price": "9.50"})
            await self.ok(tenant, "ReceiveStock", {"sku": sku, "quantity": 5})
        orders = {"o-1": ("A-1", 2, None), "o-2": ("B-2", 1, "tok_declined"), "o-3": ("A-1", 10, None)}
        for order_id, (sku, quantity, card) in orders.items():
            line = {"sku": at + sku, "quantity": quantity}
            body = {"order_id": at + order_id, "customer_id": "c-1", "lines": [line]}
            await self.ok(tenant, "PlaceOrder", {**body, "payment": card} if card else body)
        await self.settle()

    async def settle(self) -> None:
        """Wait until no order is still placed, with every projection caught up."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_WITHIN
        orders = self.runtimes["orders"]
        assert orders.read_store is not None
        while await orders.read_store.read(lambda db: db.fetch_all("SELECT 1 FROM orders WHERE status = 'placed'")):
            assert loop.time() < deadline, "orders still placed"
            await asyncio.sleep(0.02)
        # A rejection's compensations (stock released, payment voided) follow it.
        await settle(self.runtimes)

    async def corrupt(self, service: str, sql: str, tenant: str | None = None, store: str = "sql") -> None:
        """Run ``sql`` on a service's read database, or on another of its target stores (``store="warehouse"``)."""
        read_store = self.runtimes[service].targets[store]
        target = read_store if tenant is None else read_store.for_tenant(tenant)
        await target.transact("test.corruption", lambda db: db.execute(sql))

    async def scratch_left(self) -> list[str]:
        """Scratch stores still there: files on SQLite, schemas on PostgreSQL."""
        if self.backend == "sqlite":
            return sorted(str(p) for p in await asyncio.to_thread(lambda: list(Path("data").rglob("*scratch*"))))
        left = []
        for runtime in self.runtimes.values():
            assert runtime.read_store is not None
            left += [row["nspname"] for row in await runtime.read_store.read(lambda db: db.fetch_all(SCRATCH_SCHEMAS))]
        return left


@pytest.fixture(params=["sqlite", "postgresql"])
def environ(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)  # SQLite: data/<service>.db under the working directory
    if request.param == "sqlite":
        return {}
    server: PostgresServer = request.getfixturevalue("postgres_server")
    run = next(_databases)
    return server.databases_for(system.names, prefix=f"check_{run}_")


@pytest.fixture
async def shop(environ: dict[str, str]) -> AsyncIterator[Shop]:
    runtimes = embedded_runtimes(system, environ=environ)
    app = gateway_in_process(system, runtimes, auth=AUTH)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://shop") as c:
        yield Shop(c, runtimes, "sqlite" if not environ else "postgresql")


async def test_every_read_model_of_the_shop_equals_a_rebuild_from_its_events(shop: Shop) -> None:
    await shop.trade()
    await shop.trade("acme")

    reports = {name: await assert_consistent(runtime) for name, runtime in shop.runtimes.items()}

    checked = {check.label: check.rows_compared for report in reports.values() for check in report.checks}
    assert checked["orders.history"] == checked["orders.history@acme"] == 3
    assert checked["orders.sales"] == checked["orders.sales@acme"] == 1  # the one confirmed order's line
    assert checked["inventory.stock"] == checked["inventory.stock@acme"] == 2
    assert checked["catalog.products"] == checked["catalog.products@acme"] == 2
    assert checked["catalog.product-search"] == checked["catalog.product-search@acme"] == 2  # an index, as a table
    assert await shop.scratch_left() == []


async def test_a_corrupted_row_is_reported_with_the_events_that_produced_it(shop: Shop) -> None:
    await shop.trade()
    await shop.corrupt("inventory", "UPDATE stock_levels SET available = 99 WHERE sku = 'A-1'")
    await shop.corrupt("orders", "DELETE FROM orders WHERE order_id = 'o-2'")
    await shop.corrupt(
        "orders",
        "INSERT INTO orders (order_id, customer_id, status, lines, placed_at, position)"
        " VALUES ('o-stray', 'c-9', 'placed', '[]', '2026-01-01', 0)",
    )
    inventory, orders = shop.runtimes["inventory"], shop.runtimes["orders"]

    with pytest.raises(AssertionError, match="stock_levels changed sku='A-1': available live 99, rebuilt 3"):
        await assert_consistent(inventory)
    assert orders.store is not None
    assert orders.read_store is not None
    report = await check_consistency(orders.service, orders.store, orders.read_store)

    assert not report.consistent
    [check] = report.checks
    missing, extra = check.differences
    assert (missing.kind, missing.key, missing.rebuilt and missing.rebuilt["status"]) == (
        "missing",
        {"order_id": "o-2"},
        "rejected",
    )
    assert [e.type for e in missing.events] == ["orders.OrderPlaced", "catalog.OrderPriced", "orders.OrderRejected"]
    assert (extra.kind, extra.key, extra.events) == ("extra", {"order_id": "o-stray"}, ())
    assert check.rows_compared == 4
    assert await shop.scratch_left() == []


async def test_each_tenants_copy_is_checked_apart(shop: Shop) -> None:
    await shop.trade()
    await shop.trade("acme")
    await shop.corrupt("inventory", "UPDATE stock_levels SET available = 0 WHERE sku = 'acme-B-2'", tenant="acme")
    inventory = shop.runtimes["inventory"]
    assert inventory.store is not None
    assert inventory.read_store is not None

    report = await check_consistency(inventory.service, inventory.store, inventory.read_store)

    outcome = {check.label: [d.describe() for d in check.differences] for check in report.checks}
    assert outcome == {
        "inventory.stock": [],
        "inventory.stock@acme": ["stock_levels changed sku='acme-B-2': available live 0, rebuilt 5"],
    }
    [(_, events)] = [(c, d.events) for c in report.checks for d in c.differences]
    assert [(e.type, e.stream_id) for e in events] == [
        ("inventory.StockReceived", "stock-acme-B-2"),
        ("inventory.StockAllocated", "stock-acme-B-2"),
        ("inventory.StockDeallocated", "stock-acme-B-2"),
    ]


async def test_the_checker_leaves_no_scratch_store_behind_when_it_fails(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    await shop.trade()
    inventory = shop.runtimes["inventory"]
    assert inventory.store is not None
    assert inventory.read_store is not None

    def fails(event: object, db: Database, record: object) -> None:
        raise RuntimeError("a handler that fails on replay")

    monkeypatch.setattr(levels, "apply", fails)
    with pytest.raises(RuntimeError, match="a handler that fails on replay"):
        await check_consistency(inventory.service, inventory.store, inventory.read_store)

    assert await shop.scratch_left() == []
