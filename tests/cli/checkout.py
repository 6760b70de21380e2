"""One checkout of the shop, run embedded against whatever stores the environment names."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import httpx

from examples.shop import shop
from twofold.embedded import embedded_runtimes
from twofold.http.gateway import gateway_in_process

SETTLE_WITHIN = 10.0  # seconds the order may take to be confirmed


async def checkout(environ: Mapping[str, str]) -> str:
    """Stock a mug, order two, wait until the order is confirmed; the order's correlation id."""
    runtimes = embedded_runtimes(shop, environ)
    app = gateway_in_process(shop, runtimes)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            await _ok(client, "AddProduct", {"sku": "A-1", "name": "Blue mug", "price": "9.50"})
            await _ok(client, "ReceiveStock", {"sku": "A-1", "quantity": 5})
            lines = [{"sku": "A-1", "quantity": 2}]
            placed = await _ok(client, "PlaceOrder", {"order_id": "o-1", "customer_id": "c-1", "lines": lines})
            await _confirmed(client, "o-1")
    return str(placed["command_id"])  # a client's command starts its own correlation


async def _ok(client: httpx.AsyncClient, command: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(f"/commands/{command}", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def _confirmed(client: httpx.AsyncClient, order_id: str) -> None:
    async with asyncio.timeout(SETTLE_WITHIN):
        while True:
            history = (await client.get("/queries/OrderHistory", params={"customer_id": "c-1"})).json()
            if any(o["order_id"] == order_id and o["status"] == "confirmed" for o in history["orders"]):
                return
            await asyncio.sleep(0.02)
