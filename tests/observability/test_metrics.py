"""The metrics of sagas, imports and lag in seconds, read from a service's /metrics after a checkout."""

from __future__ import annotations

import asyncio

import httpx

from tests.http.test_operations import metric
from tests.observability.test_shop_trace import checkout, shop  # noqa: F401 - the fixture
from twofold import Runtime


async def orders_metrics(client: httpx.AsyncClient) -> str:
    response = await client.get("/services/orders/metrics")
    assert response.status_code == 200
    return response.text


async def test_a_settled_checkout_shows_in_the_saga_import_and_lag_metrics(
    shop: tuple[httpx.AsyncClient, dict[str, Runtime]],  # noqa: F811
) -> None:
    client, runtimes = shop
    await checkout(client, runtimes)
    text = await orders_metrics(client)

    assert metric(text, "twofold_saga_instances", saga="checkout", status="completed") == 1
    assert metric(text, "twofold_saga_instances", saga="checkout", status="active") == 0
    # One reaction per step: placed, priced, reserved, paid.
    assert metric(text, "twofold_saga_reactions_total", saga="checkout") == 4
    for source in ("catalog", "inventory", "payments"):
        feed = f"twofold.feed.orders.from.{source}"
        assert metric(text, "twofold_imported_events_total", worker=feed, source=source) >= 1
        assert metric(text, "twofold_worker_lag_seconds", worker=feed) == 0
    assert metric(text, "twofold_projection_lag_seconds", projection="orders.history") == 0


async def test_a_projection_left_behind_shows_how_long_its_oldest_event_has_waited(
    shop: tuple[httpx.AsyncClient, dict[str, Runtime]],  # noqa: F811
) -> None:
    client, runtimes = shop
    await runtimes["orders"].runners["orders.history"].stop()
    order = {"order_id": "o-2", "customer_id": "c-1", "lines": [{"sku": "Z-9", "quantity": 1}]}
    assert (await client.post("/commands/PlaceOrder", json=order)).status_code == 200
    await asyncio.sleep(0.2)
    text = await orders_metrics(client)

    assert metric(text, "twofold_projection_lag_events", projection="orders.history") >= 1
    assert 0.2 <= metric(text, "twofold_projection_lag_seconds", projection="orders.history") < 30
    assert metric(text, "twofold_worker_lag_seconds", worker="orders.history") >= 0.2
