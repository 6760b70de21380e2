"""The shop as ``make run-cluster`` runs it: PostgreSQL, NATS and sixteen ``twofold serve`` processes.

One cluster serves the module. Checkout outcomes go through every part (gateway, command APIs,
JetStream work queues, relays, consumers, sagas, query replicas); the fault tests kill or
restart one part while orders flow, and then check what must hold whatever happened: every order
reaches exactly one final status, and the stock left is what the confirmed orders did not take.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from examples.shop import shop as system
from twofold.cli import app as cli
from twofold.cluster import Cluster
from twofold.embedded import console_runtimes, database_url_variable
from twofold.http.gateway import create_gateway

pytestmark = pytest.mark.slow

DEADLINE_SECONDS = 6  # the payment deadline inside the cluster, short enough to be seen passing
SETTLE_WITHIN = 60.0  # seconds an order may take to settle, faults included


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    environ = {"SHOP_PAYMENT_DEADLINE_SECONDS": str(DEADLINE_SECONDS), "SHOP_GATEWAY_SLOW_SECONDS": "0.2"}

    with Cluster(
        "examples.shop:shop", system, tmp_path_factory.mktemp("cluster"), environ={**os.environ, **environ}
    ) as running:
        yield running


@asynccontextmanager
async def gateway(cluster: Cluster, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_gateway(system, cluster.upstreams(), **options)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://shop") as http:
        yield http


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway(cluster) as http:
        yield http


@pytest.fixture(scope="module")
def checked_out(cluster: Cluster) -> str:
    """One checkout through the gateway, confirmed; the correlation id of everything it caused."""

    async def checkout() -> str:
        async with gateway(cluster) as http:
            await stock(http, "T-1", 3)
            placed = await ok(http, "PlaceOrder", {"order_id": "t1", "customer_id": "cust-t", "lines": [_line("T-1")]})
            await settled(http, "cust-t", ["t1"])
            return str(placed["command_id"])

    return asyncio.run(checkout())


def _line(sku: str, quantity: int = 1) -> dict[str, Any]:
    return {"sku": sku, "quantity": quantity}


async def ok(client: httpx.AsyncClient, command: str, body: dict[str, Any]) -> dict[str, Any]:
    for _ in range(100):  # a part being restarted answers 502/503 for a moment: a client retries
        response = await client.post(
            f"/commands/{command}", json=body, headers={"Idempotency-Key": _key(command, body)}
        )
        if response.status_code not in (502, 503, 504):
            break
        await asyncio.sleep(0.2)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def _key(command: str, body: dict[str, Any]) -> str:
    """The same request, the same key: a retry after a 502 is applied once."""
    return hashlib.sha256(json.dumps([command, body], sort_keys=True).encode()).hexdigest()[:40]


async def settled(client: httpx.AsyncClient, customer: str, order_ids: list[str]) -> dict[str, dict[str, Any]]:
    deadline = asyncio.get_running_loop().time() + SETTLE_WITHIN
    while True:
        answer = await client.get("/queries/OrderHistory", params={"customer_id": customer})
        orders = {o["order_id"]: o for o in answer.json()["orders"]} if answer.status_code == 200 else {}
        if all(orders.get(o, {}).get("status", "placed") != "placed" for o in order_ids):
            return orders
        assert asyncio.get_running_loop().time() < deadline, {o: orders.get(o) for o in order_ids}
        await asyncio.sleep(0.1)


async def available(client: httpx.AsyncClient, sku: str, expected: int) -> int:
    """Stock of ``sku`` once it reads ``expected``, or whatever it reads after a while."""
    found = -1
    for _ in range(100):
        answer = await client.get("/queries/StockLevel", params={"sku": sku})
        found = int(answer.json()["available"]) if answer.status_code == 200 else -1
        if found == expected:
            break
        await asyncio.sleep(0.1)
    return found


async def stock(client: httpx.AsyncClient, sku: str, quantity: int, price: str = "2.00") -> None:
    await ok(client, "AddProduct", {"sku": sku, "name": f"Product {sku}", "price": price})
    await ok(client, "ReceiveStock", {"sku": sku, "quantity": quantity})


async def order(
    client: httpx.AsyncClient, order_id: str, customer: str, sku: str, quantity: int, card: str | None = None
) -> None:
    body: dict[str, Any] = {
        "order_id": order_id,
        "customer_id": customer,
        "lines": [{"sku": sku, "quantity": quantity}],
    }
    if card:
        body["payment"] = card
    await ok(client, "PlaceOrder", body)


async def test_checkout_outcomes_through_the_cluster(client: httpx.AsyncClient) -> None:
    await stock(client, "C-1", 5, price="3.00")
    await order(client, "c1-ok", "cust-1", "C-1", 2)
    await order(client, "c1-declined", "cust-1", "C-1", 1, card="tok_declined")
    await order(client, "c1-short", "cust-1", "C-1", 9)
    await order(client, "c1-slow", "cust-1", "C-1", 1, card="tok_slow")
    await order(client, "c1-late", "cust-1", "C-1", 1, card="tok_unresponsive")
    orders = await settled(client, "cust-1", ["c1-ok", "c1-declined", "c1-short", "c1-slow", "c1-late"])
    outcome = {o: (orders[o]["status"], orders[o]["reason"]) for o in orders}
    assert outcome == {
        "c1-ok": ("confirmed", None),
        "c1-declined": ("rejected", "payment declined: card declined"),
        "c1-short": ("rejected", "out of stock: C-1"),
        "c1-slow": ("confirmed", None),
        "c1-late": ("cancelled", "not paid in time"),
    }
    assert orders["c1-ok"]["total"] == "6.00"
    assert await available(client, "C-1", 2) == 2


async def test_query_replicas_give_the_same_answers(cluster: Cluster, client: httpx.AsyncClient) -> None:
    await stock(client, "R-1", 4)
    await order(client, "r1-a", "cust-r", "R-1", 1)
    await settled(client, "cust-r", ["r1-a"])
    answers = []
    for replica in range(cluster.query_replicas):
        url = cluster.part("orders", "queries", replica).process.url
        async with httpx.AsyncClient(base_url=url) as direct:
            answers.append((await direct.get("/queries/OrderHistory", params={"customer_id": "cust-r"})).json())
    assert answers[0] == answers[1]
    assert answers[0]["orders"][0]["status"] == "confirmed"


async def test_query_apis_read_the_replica_and_wait_for_what_it_has_replayed(
    cluster: Cluster, client: httpx.AsyncClient
) -> None:
    assert cluster.replica is not None
    databases = {
        name: cluster.part(name, "commands").process.environ[database_url_variable(name)] for name in system.names
    }
    for name, url in databases.items():
        query_url = cluster.part(name, "queries").process.environ[database_url_variable(name, query=True)]
        assert query_url == cluster.replica.url(url.rsplit("/", 1)[1])
    # Nothing but the query APIs connects to the replica: every service's read store is open there.
    readers = (
        "SELECT string_agg(DISTINCT datname, ',') FROM pg_stat_activity WHERE application_name = 'twofold-read-store'"
    )
    assert set(cluster.replica.sql(readers).split(",")) == {u.rsplit("/", 1)[1] for u in databases.values()}

    await stock(client, "Y-1", 3)
    placed = await ok(
        client, "PlaceOrder", {"order_id": "y1-a", "customer_id": "cust-y", "lines": [{"sku": "Y-1", "quantity": 1}]}
    )
    wait = {"X-Min-Position": str(placed["position"])}
    answer = await client.get("/queries/OrderHistory", params={"customer_id": "cust-y"}, headers=wait)

    assert answer.status_code == 200, answer.text
    assert [o["order_id"] for o in answer.json()["orders"]] == ["y1-a"]
    async with httpx.AsyncClient(base_url=cluster.part("orders", "queries").process.url) as direct:
        saga = await direct.get("/sagas/checkout")  # the saga tables, as replicated: nothing to create
    assert saga.status_code == 200, saga.text


async def test_each_query_replica_projects_its_own_warehouse_and_answers_the_reports(
    cluster: Cluster, client: httpx.AsyncClient
) -> None:
    await stock(client, "W-1", 6, price="1.25")
    await order(client, "w1-a", "cust-w", "W-1", 3)
    await settled(client, "cust-w", ["w1-a"])
    files = sorted(p.name for p in (cluster.directory / "replicas").glob("orders-queries*-warehouse.duckdb"))
    tops = []
    for replica in range(cluster.query_replicas):
        url = cluster.part("orders", "queries", replica).process.url
        async with httpx.AsyncClient(base_url=url) as direct:
            deadline = asyncio.get_running_loop().time() + SETTLE_WITHIN
            while True:  # the replica's own runner follows the event store: it may be a moment behind
                top = (await direct.get("/queries/TopProducts", params={"period": "all", "limit": 100})).json()
                skus = {p["sku"]: p for p in top.get("products", [])}
                if "W-1" in skus or asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.1)
            tops.append(skus.get("W-1"))
    assert files == ["orders-queries1-warehouse.duckdb", "orders-queries2-warehouse.duckdb"]
    assert tops[0] == tops[1] == {"rank": tops[0]["rank"], "sku": "W-1", "revenue": "3.75", "units": 3, "orders": 1}


async def test_the_gateway_reports_every_process_and_reaches_a_service_s_dead_letters(
    client: httpx.AsyncClient,
) -> None:
    ready = (await client.get("/ready")).json()
    assert ready["status"] == "ready"
    assert {"orders/commands", "orders/queries0", "orders/queries1", "orders/workers"} <= set(ready["services"])
    metrics = (await client.get("/metrics")).text
    assert 'twofold_dead_letters{part="workers",service="orders",source="inventory"} 0.0' in metrics
    parked = await client.get("/services/orders/dead-letters")
    assert parked.status_code == 200


async def test_the_gateway_s_console_traces_a_checkout_across_every_service_s_store(
    cluster: Cluster, checked_out: str
) -> None:
    async with gateway(cluster, console=console_runtimes(system, cluster.process_environ), close_console=True) as http:
        page = await http.get("/console/trace", params={"correlation_id": checked_out})
        streams = {name: (await http.get("/console/streams", params={"service": name})).text for name in system.names}
    assert page.status_code == 200, page.text
    commands = re.findall(
        r'<li class="command">\s*<span class="kind">command</span> <span class="service">(\w+)', page.text
    )
    events = re.findall(r'<li class="event">\s*<span class="kind">event</span> <span class="service">(\w+)', page.text)
    assert set(commands) == set(events) == set(system.names)
    assert "orders.OrderConfirmed" in page.text
    shown = {"catalog": "product-T-1", "inventory": "stock-T-1", "orders": "order-t1", "payments": "payment-t1"}
    for name, stream_id in shown.items():
        assert f'href="/console/streams/{name}/{stream_id}"' in streams[name]


def test_twofold_trace_draws_a_checkout_from_the_cluster_s_stores(cluster: Cluster, checked_out: str) -> None:
    shown = CliRunner().invoke(
        cli, ["trace", "examples.shop:shop", checked_out, "--json"], env=cluster.process_environ, catch_exceptions=False
    )
    assert shown.exit_code == 0, shown.output
    nodes = list(_walk(json.loads(shown.stdout)["roots"][0]))
    events = [n for n in nodes if n["kind"] == "event"]
    assert (
        {n["service"] for n in nodes if n["kind"] == "command"} == {e["service"] for e in events} == set(system.names)
    )
    assert events[-1]["type"] == "orders.OrderConfirmed"


def _walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node["children"]:
        yield from _walk(child)


async def orders_under_fault(client: httpx.AsyncClient, prefix: str, fault: Any) -> None:
    """Place orders before, during and after ``fault``; then check what must hold."""
    sku = f"{prefix}-S"
    await stock(client, sku, 12)
    customer = f"cust-{prefix}"
    ids = [f"{prefix}-{n}" for n in range(16)]
    await asyncio.gather(*(order(client, i, customer, sku, 1) for i in ids[:6]))
    await fault()
    await asyncio.gather(*(order(client, i, customer, sku, 1) for i in ids[6:]))
    orders = await settled(client, customer, ids)
    confirmed = sum(1 for i in ids if orders[i]["status"] == "confirmed")
    assert confirmed <= 12
    assert await available(client, sku, 12 - confirmed) == 12 - confirmed


async def test_a_workers_process_killed_mid_flow_and_restarted_loses_nothing(
    cluster: Cluster, client: httpx.AsyncClient
) -> None:
    part = cluster.part("orders", "workers")  # its consumers, relay, saga and projections all die at once

    async def fault() -> None:
        part.process.stop(fast=False)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(part.process.start)

    await orders_under_fault(client, "kw", fault)


async def test_the_inventory_relay_killed_and_restarted_has_no_duplicate_effect(
    cluster: Cluster, client: httpx.AsyncClient
) -> None:
    part = cluster.part("inventory", "workers")

    async def fault() -> None:
        part.process.stop(fast=False)
        await asyncio.to_thread(part.process.start)

    await orders_under_fault(client, "kr", fault)


async def test_nats_restarted_during_traffic_loses_nothing(cluster: Cluster, client: httpx.AsyncClient) -> None:
    async def fault() -> None:
        await asyncio.to_thread(cluster.nats.restart, fast=False)

    await orders_under_fault(client, "kn", fault)
