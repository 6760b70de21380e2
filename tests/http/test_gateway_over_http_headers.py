"""Hostile headers through the gateway to services over real HTTP: CR/LF, NUL and oversized values in
``Idempotency-Key``, ``X-Correlation-Id`` and ``X-Min-Position`` are refused, never forwarded as headers
of their own, never a 500, and nothing is written."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from examples.shop import shop as shop_system
from tests.http import assert_problem
from tests.http.test_hostile_headers_and_paths import HEADER_VALUES, POSITIONS
from twofold.embedded import embedded_runtimes
from twofold.http import create_app
from twofold.http.gateway import Upstream, create_gateway
from twofold.testing.servers import free_port

INJECTED = {"set-cookie", "x-injected"}


@contextmanager
def serve_over_http(apps: Mapping[str, FastAPI]) -> Iterator[dict[str, str]]:
    """Each app on a loopback port of its own, all in one thread with one event loop (their runtimes
    talk to one another in process); their URLs by name. On the way out the servers stop one by one,
    last first, so no service outlives one it reads from."""
    servers = {
        name: uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
        for name, app in apps.items()
    }
    stopped: set[str] = set()

    async def serve(name: str) -> None:
        await servers[name].serve()
        stopped.add(name)

    async def run() -> None:
        await asyncio.gather(*(serve(name) for name in servers))

    thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
    thread.start()
    wait_until(lambda: all(server.started for server in servers.values()), thread, "start")
    try:
        yield {name: f"http://127.0.0.1:{server.config.port}" for name, server in servers.items()}
    finally:
        for name in reversed(list(servers)):
            servers[name].should_exit = True
            wait_until(lambda name=name: name in stopped, thread, "stop")  # type: ignore[misc]
        thread.join(timeout=20)


def wait_until(done: Callable[[], bool], thread: threading.Thread, what: str) -> None:
    deadline = time.monotonic() + 20
    while not done():
        assert thread.is_alive() or what == "stop", f"the service apps failed to {what}"
        assert time.monotonic() < deadline, f"the service apps did not {what} within 20 s"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The shop's four services over HTTP, with A-1 (2 in stock) received; their URLs by name."""
    data = tmp_path_factory.mktemp("shop")
    environ = {f"TWOFOLD_{name.upper()}_DATABASE_URL": f"sqlite:///{data / name}.db" for name in shop_system.names}
    runtimes = embedded_runtimes(shop_system, environ=environ)
    with serve_over_http({name: create_app(r, query_timeout=0.3) for name, r in runtimes.items()}) as urls:
        received = httpx.post(f"{urls['inventory']}/commands/ReceiveStock", json={"sku": "A-1", "quantity": 2})
        assert received.status_code == 200, received.text
        yield urls


@dataclass
class Gateway:
    client: httpx.AsyncClient
    services: dict[str, str]

    async def heads(self) -> dict[str, int]:
        """Each service's store head, as its own /ready reports it."""
        async with httpx.AsyncClient() as client:
            return {name: (await client.get(f"{url}/ready")).json()["head"] for name, url in self.services.items()}


@pytest.fixture
async def gateway(services: dict[str, str]) -> AsyncIterator[Gateway]:
    app = create_gateway(shop_system, {name: Upstream.over_http(url, [url]) for name, url in services.items()})
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://shop") as client,
    ):
        yield Gateway(client, services)


@pytest.mark.parametrize("value", HEADER_VALUES.values(), ids=HEADER_VALUES.keys())
@pytest.mark.parametrize("header", ["Idempotency-Key", "X-Correlation-Id"])
@pytest.mark.parametrize("prefer", ["", "respond-async"])
async def test_hostile_command_headers_through_the_gateway_over_http_are_400_and_never_forwarded(
    gateway: Gateway, header: str, value: bytes, prefer: str
) -> None:
    before = await gateway.heads()
    headers = [(b"content-type", b"application/json"), (header.lower().encode(), value), (b"prefer", prefer.encode())]

    response = await gateway.client.post(
        "/commands/ReceiveStock", content=b'{"sku": "A-1", "quantity": 1}', headers=headers
    )

    body = assert_problem(response, 400, "bad-request")
    assert header.lower() in body["detail"].lower()
    assert not INJECTED & set(response.headers)
    assert await gateway.heads() == before


@pytest.mark.parametrize("value", POSITIONS.values(), ids=POSITIONS.keys())
async def test_hostile_x_min_position_through_the_gateway_over_http_is_400_and_never_forwarded(
    gateway: Gateway, value: bytes
) -> None:
    response = await gateway.client.get(
        "/queries/StockLevel", params={"sku": "A-1"}, headers=[(b"x-min-position", value)]
    )

    body = assert_problem(response, 400, "bad-request")
    assert "x-min-position" in body["detail"].lower()
    assert not INJECTED & set(response.headers)
