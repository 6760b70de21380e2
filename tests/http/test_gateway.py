"""The gateway in front of the shop's four services: routing, status lookup, health, metrics, OpenAPI, failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from examples.shop import shop
from tests.http import LEAKS, PROBLEM
from twofold.embedded import console_runtimes, embedded_runtimes
from twofold.http.gateway import Upstream, create_gateway, gateway_in_process
from twofold.projections import CREATE_FAILURES, RECORD_FAILURE
from twofold.testing.servers import free_port


@pytest.fixture
async def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.chdir(tmp_path)
    app = gateway_in_process(shop, embedded_runtimes(shop, environ={}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            yield client


async def test_each_command_and_query_reaches_the_service_that_owns_it(gateway: httpx.AsyncClient) -> None:
    added = await gateway.post("/commands/AddProduct", json={"sku": "A-1", "name": "Mug", "price": "1.00"})
    received = await gateway.post("/commands/ReceiveStock", json={"sku": "A-1", "quantity": 2})
    assert (added.status_code, added.headers["x-twofold-service"]) == (200, "catalog")
    assert (received.status_code, received.headers["x-twofold-service"]) == (200, "inventory")
    level = await gateway.get(
        "/queries/StockLevel", params={"sku": "A-1"}, headers={"X-Min-Position": str(received.json()["position"])}
    )
    assert (level.json(), level.headers["x-twofold-service"]) == ({"sku": "A-1", "available": 2}, "inventory")


async def test_unknown_types_and_services_are_404_problems_naming_the_system(gateway: httpx.AsyncClient) -> None:
    for response in (
        await gateway.post("/commands/Nope", json={}),
        await gateway.get("/queries/Nope"),
        await gateway.get("/sagas/nope"),
        await gateway.get("/services/billing/health"),
    ):
        assert response.status_code == 404
        assert response.headers["content-type"] == PROBLEM
        assert "shop" in response.json()["detail"]


async def test_an_asynchronous_command_s_status_is_found_in_whichever_service_ran_it(
    gateway: httpx.AsyncClient,
) -> None:
    queued = await gateway.post(
        "/commands/ReceiveStock", json={"sku": "A-1", "quantity": 2}, headers={"Prefer": "respond-async"}
    )
    assert queued.status_code == 202
    status_url = queued.json()["status_url"]
    for _ in range(200):
        status = (await gateway.get(status_url)).json()
        if status["status"] != "pending":
            break
        await asyncio.sleep(0.01)
    assert status["status"] == "succeeded"
    assert (await gateway.get("/commands/never-sent")).status_code == 404


async def test_one_service_s_own_endpoints_are_reachable_by_name(gateway: httpx.AsyncClient) -> None:
    docs = await gateway.get("/services/catalog/openapi.json")
    assert docs.json()["info"]["title"] == "catalog API"
    assert (await gateway.get("/services/orders/dead-letters")).status_code == 200


async def test_ready_metrics_and_openapi_cover_every_service(gateway: httpx.AsyncClient) -> None:
    ready = (await gateway.get("/ready")).json()
    assert ready["status"] == "ready"
    assert set(ready["services"]) == {f"{name}/commands" for name in shop.names}  # one app each, embedded

    await gateway.post("/commands/AddProduct", json={"sku": "A-1", "name": "Mug", "price": "1.00"})
    metrics = (await gateway.get("/metrics")).text
    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    services = {s.labels.get("service") for s in families["twofold_store_head_position"].samples}
    assert services == {"catalog", "inventory", "orders", "payments"}

    paths = set((await gateway.get("/openapi.json")).json()["paths"])
    assert {"/commands/AddProduct", "/commands/PlaceOrder", "/queries/StockLevel", "/queries/OrderHistory"} <= paths
    assert (await gateway.get("/docs")).status_code == 200


async def test_a_service_that_cannot_be_reached_is_a_502_problem_and_not_ready() -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    upstreams = {name: Upstream.over_http(closed, [closed]) for name in shop.names}
    app = create_gateway(shop, upstreams)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://g") as client:
        down = await client.post("/commands/PlaceOrder", json={})
        assert down.status_code == 502
        assert down.headers["content-type"] == PROBLEM
        assert "orders" in down.json()["detail"]
        assert not any(leak in down.text for leak in LEAKS)
        assert (await client.get("/ready")).status_code == 503


async def test_a_console_over_stores_of_its_own_serves_every_service_and_closes_them_when_the_gateway_stops(
    tmp_path: Path,
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    upstreams = {name: Upstream.over_http(closed, [closed]) for name in shop.names}
    environ = {f"TWOFOLD_{name.upper()}_DATABASE_URL": f"sqlite:///{tmp_path / name}.db" for name in shop.names}
    console = console_runtimes(shop, environ)
    orders = console["orders"].read_store
    assert orders is not None
    failure = ("orders.history", 7, "ValueError: no price", 3, "2026-11-26T21:00:00+00:00")
    await orders.transact("test", lambda db: (db.execute(CREATE_FAILURES), db.execute(RECORD_FAILURE, failure)))
    app = create_gateway(shop, upstreams, console=console, close_console=True)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://g") as client:
        for name in shop.names:
            page = await client.get("/console/streams", params={"service": name})
            assert f"Streams of {name}" in page.text
        projections = await client.get("/console/projections")  # run elsewhere: as their runners recorded them
        assert "ValueError: no price" in projections.text
    for runtime in console.values():
        assert runtime.store is not None
        with pytest.raises(RuntimeError, match="is closed"):
            await runtime.store.head_position()
        await runtime.stop()  # again, as the command line does after Ctrl-C: nothing left to close
