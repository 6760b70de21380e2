"""Hostile headers and path parameters: injection in ``Idempotency-Key``, ``X-Correlation-Id`` and
``X-Min-Position``, traversal and SQL in ``/commands/{id}`` and ``/sagas/{name}/{instance}``, on one
service and through the shop's gateway. Every answer is a problem or data, and nothing is written.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from examples.shop import shop as shop_system
from tests.http import PROBLEM, Api, assert_no_leak, assert_problem, serve
from tests.http.test_hostile_input import NASTY
from tests.integration.test_sagas import shop as saga_shop
from twofold.embedded import embedded_runtimes
from twofold.http.gateway import gateway_in_process

HOSTILE = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
HEADER_VALUES = {  # as bytes: what a raw client can put on the wire, not only what httpx would send
    "crlf": b"k-1\r\nSet-Cookie: session=stolen",
    "lf": b"k-1\nX-Injected: 1",
    "cr": b"k-1\rX",
    "nul": b"k\x00",
    "100k": b"k" * 100_000,
    "latin-1": b"k\xe9",
    "utf-8": "ключ".encode(),
    "sql": b"'; DROP TABLE events; --",
    "traversal": b"../../etc/passwd",
    "space": b"k 1",
}
POSITIONS = {
    "crlf": b"5\r\nX-Injected: 1",
    "nul": b"5\x00",
    "100k-digits": b"9" * 100_000,
    "negative": b"-5",
    "arabic-indic-digit": "٣".encode(),
    "fullwidth-digit": "５".encode(),
    "sql": b"0 OR 1=1",
    "underscore": b"1_000",
}
path_parts = st.one_of(st.sampled_from(NASTY), st.text(min_size=1, max_size=40))


def quoted(part: str) -> str:
    return quote(part.encode("utf-8", "surrogatepass"), safe="")


@pytest.mark.parametrize(
    ("header", "value"), [(h, v) for h in ("Idempotency-Key", "X-Correlation-Id") for v in HEADER_VALUES.values()]
)
@pytest.mark.parametrize("prefer", ["", "respond-async"])
async def test_hostile_command_headers_are_400_and_nothing_is_written_or_queued(
    stocked: Api, header: str, value: bytes, prefer: str
) -> None:
    head = await stocked.head()
    headers = [(b"content-type", b"application/json"), (header.lower().encode(), value), (b"prefer", prefer.encode())]

    response = await stocked.client.post(
        "/commands/ReceiveStock", content=b'{"sku": "A-1", "quantity": 1}', headers=headers
    )

    body = assert_problem(response, 400, "bad-request")
    assert body["detail"] == f"{header} must be 1 to 128 letters, digits or . _ : ~ -"
    assert not {"set-cookie", "x-injected", "location"} & set(response.headers)
    assert await stocked.head() == head


@pytest.mark.parametrize("value", POSITIONS.values(), ids=POSITIONS.keys())
async def test_hostile_x_min_position_is_400_at_once(stocked: Api, value: bytes) -> None:
    response = await stocked.client.get(
        "/queries/StockLevel", params={"sku": "A-1"}, headers=[(b"x-min-position", value)]
    )

    body = assert_problem(response, 400, "bad-request")
    assert body["detail"] == "X-Min-Position must be a whole number of at most 18 digits"
    assert "x-injected" not in response.headers


@HOSTILE
@given(command_id=path_parts)
async def test_any_command_id_in_the_status_path_is_a_400_or_404_problem(stocked: Api, command_id: str) -> None:
    response = await stocked.client.get(f"/commands/{quoted(command_id)}")

    assert response.status_code in {307, 400, 404, 405}, response.text
    assert response.status_code == 307 or response.headers["content-type"] == PROBLEM  # a redirect has no body
    assert_no_leak(response)


@pytest.fixture
async def sagas(tmp_path: Path) -> AsyncIterator[Api]:
    async with serve(saga_shop, tmp_path) as api:
        await api.ok("Restock", {"sku": "A", "quantity": 1})
        await api.ok("PlaceOrder", {"order_id": "o-1", "sku": "A", "quantity": 1})
        await api.runtime.catch_up()
        yield api


@HOSTILE
@given(name=st.one_of(st.just("checkout"), path_parts), instance=path_parts, after=path_parts)
async def test_any_saga_name_instance_or_page_key_is_data_never_sql(
    sagas: Api, name: str, instance: str, after: str
) -> None:
    shown = await sagas.client.get(f"/sagas/{quoted(name)}/{quoted(instance)}")
    listed = await sagas.client.get(f"/sagas/{quoted(name)}", params=f"after={quoted(after)}&status=active")

    # 307: an empty part leaves a double or trailing slash, which the router redirects away.
    assert shown.status_code in {307, 404, 405}, shown.text
    assert listed.status_code in {200, 307, 404, 405, 422}, listed.text
    for response in (shown, listed):
        assert_no_leak(response)
    if listed.status_code == 200:
        assert all(i["instance"] > after for i in listed.json()["instances"])
    assert (await sagas.client.get("/sagas/checkout/o-1")).status_code == 200


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    environ = {f"TWOFOLD_{name.upper()}_DATABASE_URL": f"sqlite:///{tmp_path / name}.db" for name in shop_system.names}
    app = gateway_in_process(shop_system, embedded_runtimes(shop_system, environ=environ), query_timeout=0.3)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://shop") as client,
    ):
        yield client


@pytest.mark.parametrize(
    "path",
    [
        "/commands/%1F",
        "/commands/%0D%0AX-Injected:%201",
        "/commands/..%2F..%2Fetc%2Fpasswd",
        "/commands/" + quote("'; DROP TABLE events; --", safe=""),
        "/sagas/checkout/%00",
        "/sagas/checkout/%0D%0A",
        "/sagas/checkout/..%2F..%2Fx",
        "/sagas/checkout?after=%1F%00",
        "/queries/StockLevel?sku=%1F",
        "/queries/StockLevel?sku=" + quote("' OR '1'='1", safe=""),
        "/services/orders/..%2F..%2Fhealth",
        "/services/orders/%1Fhealth",
    ],
)
async def test_hostile_paths_through_the_gateway_are_answered_by_a_service_or_refused_never_a_500(
    gateway: httpx.AsyncClient, path: str
) -> None:
    response = await gateway.get(path)

    assert response.status_code in {200, 307, 400, 404, 422}, (response.status_code, response.text)
    assert "x-injected" not in response.headers
    assert response.headers.get("location", "/").startswith("/")  # never a service's own address
    assert_no_leak(response)
