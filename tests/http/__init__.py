"""HTTP API tests, and what they share: an in-process app on SQLite files, and problem+json checks.

ASGITransport runs no lifespan, so each fixture enters the app's own lifespan (which starts the
runtime and, on the way out, drains background commands and stops it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from twofold import Runtime, Service
from twofold.config import Settings, open_targets
from twofold.http import create_app
from twofold.readmodels import ReadStore
from twofold.readmodels.sqlite import SQLiteReadStore
from twofold.runtime import Worker
from twofold.store import EventStore, StoredEvent
from twofold.store.sqlite import SQLiteEventStore

PROBLEM = "application/problem+json"
QUERY_TIMEOUT = 0.3  # seconds a read-your-writes query waits before 504, kept short for the tests
LEAKS = ("Traceback", 'File "', "site-packages", "/twofold/")


@dataclass
class Api:
    """A running app, its runtime and a client that talks to it in-process."""

    app: FastAPI
    runtime: Runtime
    client: httpx.AsyncClient

    @property
    def store(self) -> EventStore:
        assert self.runtime.store is not None
        return self.runtime.store

    async def head(self) -> int:
        return await self.store.head_position()

    async def events(self) -> list[StoredEvent]:
        return [e async for e in self.store.read_all(1)]

    async def command(self, type_name: str, body: Any, **headers: str) -> httpx.Response:
        return await self.client.post(f"/commands/{type_name}", json=body, headers=headers)

    async def ok(self, type_name: str, body: Any, **headers: str) -> dict[str, Any]:
        """Send a command that must succeed; its result."""
        response = await self.command(type_name, body, **headers)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def query(self, type_name: str, min_position: int | None = None, **params: str) -> httpx.Response:
        headers = {} if min_position is None else {"X-Min-Position": str(min_position)}
        return await self.client.get(f"/queries/{type_name}", params=params, headers=headers)

    async def add_product(self, sku: str, name: str, price: str = "1.50", stock: int = 0) -> dict[str, Any]:
        result = await self.ok("AddProduct", {"sku": sku, "name": name, "price": price})
        if stock:
            result = await self.ok("ReceiveStock", {"sku": sku, "quantity": stock})
        return result


@asynccontextmanager
async def serve(
    service: Service,
    tmp_path: Path,
    *,
    read_models: bool = True,
    max_attempts: int = 5,
    raise_app_exceptions: bool = True,
    stores: Callable[[], tuple[EventStore, ReadStore]] | None = None,
    workers: Sequence[Worker] = (),
    **app_options: Any,
) -> AsyncIterator[Api]:
    """Run ``service`` on ``stores`` (fresh SQLite files under ``tmp_path`` by default); yield a client."""
    if stores is not None:
        store, read_store = stores()
    else:
        store, read_store = SQLiteEventStore(tmp_path / "events.db"), SQLiteReadStore(tmp_path / "read.db")
    if not read_models:
        await read_store.close()
    # The warehouse and search targets the service's projections name, embedded beside the event store.
    targets = open_targets(service, Settings(f"sqlite:///{tmp_path / 'events.db'}", "")) if read_models else {}
    runtime = Runtime(
        service,
        store=store,
        read_store=read_store if read_models else None,
        targets=targets,
        max_attempts=max_attempts,
        workers=workers,
    )
    app_options.setdefault("query_timeout", QUERY_TIMEOUT)
    app = create_app(runtime, **app_options)
    transport = httpx.ASGITransport(app, raise_app_exceptions=raise_app_exceptions)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client,
    ):
        yield Api(app, runtime, client)


def assert_problem(response: httpx.Response, status: int, kind: str | None = None) -> dict[str, Any]:
    """Check an RFC 9457 problem response and return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"]
    assert body["type"] == (f"urn:twofold:problem:{kind}" if kind else "about:blank")
    assert_no_leak(response)
    return body


def assert_no_leak(response: httpx.Response) -> None:
    """No stack trace or source path ever reaches a client."""
    for leak in LEAKS:
        assert leak not in response.text, response.text


def order(order_id: str, customer_id: str, *lines: tuple[str, int]) -> dict[str, Any]:
    """A PlaceOrder body."""
    return {
        "order_id": order_id,
        "customer_id": customer_id,
        "lines": [{"sku": sku, "quantity": quantity} for sku, quantity in lines],
    }
