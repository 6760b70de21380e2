"""The web console over HTTP: who may see it, what it refuses, what it escapes, and how it pages."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from examples.shop import shop as shop_system
from tests.http import PROBLEM, Api, assert_no_leak, assert_problem, order, serve
from tests.http.test_auth import SETTINGS, bearer, token
from tests.monolith import shop
from twofold.embedded import embedded_runtimes
from twofold.http.auth import Authenticator, scopes_for
from twofold.http.console import _streams as console_streams
from twofold.http.console._streams import streams_by_activity, streams_by_id
from twofold.http.gateway import gateway_in_process
from twofold.store import NewEvent
from twofold.store.memory import MemoryEventStore

SETTLE_WITHIN = 10.0  # seconds the checkout may take to reach every service
PAGES = ("/console/streams", "/console/projections", "/console/sagas", "/console/dead-letters", "/console/trace")


def test_the_console_needs_console_read_or_queries_star() -> None:
    assert scopes_for("GET", "/console/streams") == ("console:read", "queries:*")
    assert scopes_for("GET", "/services/orders/console/trace") == ("console:read", "queries:*")


async def test_a_token_without_the_scope_is_403_and_one_with_it_sees_every_page(tmp_path: Path) -> None:
    async with serve(shop, tmp_path, auth=Authenticator(SETTINGS)) as api:
        for path in PAGES:
            assert (await api.client.get(path)).status_code == 401
            refused = await api.client.get(path, headers=bearer(token(scope="commands:* queries:StockLevel")))
            assert assert_problem(refused, 403, "forbidden")["scope"] == "console:read"
            for scope in ("console:read", "queries:*"):
                allowed = await api.client.get(path, headers=bearer(token(scope=scope)))
                assert allowed.status_code == 200, (path, allowed.text)
                assert allowed.headers["content-type"].startswith("text/html")


async def test_a_tenant_s_token_is_refused_because_the_console_shows_every_tenant(tmp_path: Path) -> None:
    async with serve(shop, tmp_path, auth=Authenticator(SETTINGS)) as api:
        for path in (*PAGES, "/services/shop/console/streams"):
            refused = await api.client.get(path, headers=bearer(token(scope="console:read queries:*", tenant="acme")))
            assert "every tenant" in assert_problem(refused, 403, "forbidden")["detail"]


async def test_the_gateway_s_console_asks_the_same_scope_and_refuses_a_tenant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app = gateway_in_process(shop_system, embedded_runtimes(shop_system, environ={}), auth=Authenticator(SETTINGS))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://shop") as client,
    ):
        for path in ("/console/trace", "/services/orders/console/streams"):
            refused = await client.get(path, headers=bearer(token(scope="commands:*")))
            assert assert_problem(refused, 403, "forbidden")["scope"] == "console:read"
            tenant = await client.get(path, headers=bearer(token(scope="console:read", tenant="acme")))
            assert "every tenant" in assert_problem(tenant, 403, "forbidden")["detail"]
            assert (await client.get(path, headers=bearer(token(scope="console:read")))).status_code == 200


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/console/streams?limit=0", 422),
        ("/console/streams?limit=201", 422),
        ("/console/streams?limit=ten", 422),
        ("/console/streams?order=oldest", 422),
        ("/console/streams?before=1", 422),
        ("/console/streams?category=a-b", 422),
        ("/console/streams?category=%00", 422),
        ("/console/streams?service=elsewhere", 400),
        ("/console/streams?after=" + "x" * 256 + "&order=id", 422),
        ("/console/streams/shop/product-A-1?after=-1", 422),
        ("/console/streams/shop/product-A-1?version=0", 422),
        ("/console/streams/shop/product-A-1?version=99", 400),
        ("/console/streams/shop/no-such-stream", 404),
        ("/console/streams/elsewhere/product-A-1", 404),
        ("/console/state/shop/product-A-1?version=1", 404),  # this service declares no aggregate for it
        ("/console/sagas?saga=nope", 400),
        ("/console/sagas?status=asleep", 422),
        ("/console/dead-letters?after_source=orders", 400),
        ("/console/dead-letters?service=shop", 400),
        ("/console/trace?correlation_id=", 422),
        ("/console/static/..%2Fpyproject.toml", 404),
        ("/console/static/console.py", 404),
    ],
)
async def test_a_bad_parameter_is_a_problem_never_a_500(stocked_api: Api, path: str, status: int) -> None:
    answer = await stocked_api.client.get(path)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM
    assert_no_leak(answer)


@pytest.mark.parametrize("path", ["/console/streams?service=shop&category=&order=recent", "/console/sagas?status="])
async def test_a_form_s_empty_field_means_no_filter(stocked_api: Api, path: str) -> None:
    answer = await stocked_api.client.get(path)
    assert answer.status_code == 200, answer.text


async def test_what_events_hold_is_shown_as_text_never_as_markup(stocked_api: Api) -> None:
    hostile = "<script>alert('x')</script>"
    await stocked_api.ok("AddProduct", {"sku": "Z-9", "name": hostile, "price": "1.00"})
    page = await stocked_api.client.get("/console/streams/shop/product-Z-9")
    assert page.status_code == 200
    assert hostile not in page.text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page.text


async def test_a_stream_s_events_page_by_version_with_their_metadata_and_trace_links(stocked_api: Api) -> None:
    placed = await stocked_api.ok("PlaceOrder", order("o-1", "c-1", ("A-1", 1)))
    correlation = placed["events"][0]["metadata"]["correlation_id"]
    first = await stocked_api.client.get("/console/streams/shop/product-A-1", params={"limit": 1})
    assert re.findall(r'<span class="version">@(\d+)</span>', first.text) == ["1"]
    assert "after=1" in first.text  # a link to the next page, by version
    second = await stocked_api.client.get("/console/streams/shop/product-A-1", params={"after": 1, "limit": 1})
    assert re.findall(r'<span class="version">@(\d+)</span>', second.text) == ["2"]
    page = await stocked_api.client.get("/console/streams/shop/order-o-1")
    assert f'href="/console/trace?correlation_id={correlation}"' in page.text


async def test_a_trace_across_the_shop_s_services_shows_each_service_s_commands(
    shop_gateway: httpx.AsyncClient,
) -> None:
    await shop_gateway.post("/commands/AddProduct", json={"sku": "A-1", "name": "Apple", "price": "2.00"})
    await shop_gateway.post("/commands/ReceiveStock", json={"sku": "A-1", "quantity": 5})
    placed = (await shop_gateway.post("/commands/PlaceOrder", json=order("o-1", "c-1", ("A-1", 1)))).json()
    services: set[str] = set()
    deadline = asyncio.get_running_loop().time() + SETTLE_WITHIN
    while services != {"orders", "catalog", "inventory", "payments"}:  # the checkout reaches each in turn
        assert asyncio.get_running_loop().time() < deadline, services
        await asyncio.sleep(0.05)
        page = await shop_gateway.get("/console/trace", params={"correlation_id": placed["command_id"]})
        services = set(
            re.findall(
                r'<li class="command">\s*<span class="kind">command</span> <span class="service">(\w+)', page.text
            )
        )


async def test_the_state_fragment_is_the_aggregate_at_the_version_asked(shop_gateway: httpx.AsyncClient) -> None:
    await shop_gateway.post("/commands/PlaceOrder", json=order("o-1", "c-1", ("Z-9", 1)))  # unknown: rejected
    deadline = asyncio.get_running_loop().time() + SETTLE_WITHIN
    while "version 2" not in (await shop_gateway.get("/console/streams/orders/order-o-1")).text:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    first = await shop_gateway.get("/console/state/orders/order-o-1", params={"version": 1})
    second = await shop_gateway.get("/console/state/orders/order-o-1", params={"version": 2})
    assert "&#34;status&#34;: &#34;placed&#34;" in first.text
    assert "&#34;status&#34;: &#34;rejected&#34;" in second.text


@pytest.mark.parametrize(("window", "budget"), [(500, 5_000), (2, 3)])  # (2, 3): pages that stop short of a full one
async def test_streams_page_by_id_and_by_latest_activity_each_stream_once(
    monkeypatch: pytest.MonkeyPatch, window: int, budget: int
) -> None:
    monkeypatch.setattr(console_streams, "WINDOW", window)
    monkeypatch.setattr(console_streams, "SCAN_BUDGET", budget)
    store = MemoryEventStore()
    for touch in ["a-1", "a-2", "b-1", "a-3", "a-1", "a-2", "a-4", "a-1"]:
        await store.append(touch, [NewEvent("T", {})])
    by_id, after = [], None
    while True:
        page = await streams_by_id(store, "a", after, 2)
        by_id += [s.stream_id for s in page.streams]
        if page.next_after is None:
            break
        after = page.next_after
    assert by_id == ["a-1", "a-2", "a-3", "a-4"]
    recent, before = [], None
    while True:
        activity = await streams_by_activity(store, "a", before, 2)
        recent += [s.stream_id for s in activity.streams]
        if activity.next_before is None:
            break
        before = activity.next_before
    assert recent == ["a-1", "a-4", "a-2", "a-3"]


@pytest.fixture
async def stocked_api(tmp_path: Path) -> AsyncIterator[Api]:
    async with serve(shop, tmp_path) as api:
        await api.add_product("A-1", "Apple", "1.50", stock=3)
        yield api


@pytest.fixture
async def shop_gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    """The example shop's four services behind their gateway, in this process."""
    monkeypatch.chdir(tmp_path)  # the default stores are data/<service>.db under the working directory
    app = gateway_in_process(shop_system, embedded_runtimes(shop_system, environ={}))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://shop") as client,
    ):
        yield client
