"""Internal commands: meant for other services' sagas, they need their own scope over HTTP, never ``commands:*``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from examples.shop import shop as shop_system
from examples.shop.catalog import AddProduct, PriceOrder, catalog
from tests.http import Api, assert_problem, serve
from tests.http.test_auth import SETTINGS, bearer, token
from twofold import Command
from twofold.embedded import embedded_runtimes
from twofold.http.auth import Authenticator, scopes_for
from twofold.http.gateway import gateway_in_process

PRICE = {"order_id": "o-1", "lines": [{"sku": "A-1", "quantity": 2}]}
MUG = {"sku": "A-1", "name": "Mug", "price": "4.00"}


@pytest.fixture
async def guarded_catalog(tmp_path: Path) -> AsyncIterator[Api]:
    async with serve(catalog, tmp_path, auth=Authenticator(SETTINGS)) as api:
        assert (await api.command("AddProduct", MUG, **bearer(token(scope="commands:*")))).status_code == 200
        yield api


def test_a_command_is_public_unless_declared_internal() -> None:
    class Shout(Command):
        text: str

    class Whisper(Command, name="t.Whisper", internal=True):
        text: str

    class Echo(Whisper, name="t.Echo"):  # each class says for itself
        pass

    assert (Shout.internal, Whisper.internal, Echo.internal) == (False, True, False)
    assert (PriceOrder.internal, AddProduct.internal) == (True, False)
    assert Whisper(text="hi").model_dump() == {"text": "hi"}  # a class option, not a field


def test_an_internal_command_s_scopes_leave_out_commands_star() -> None:
    internal = {"catalog.PriceOrder"}
    assert scopes_for("POST", "/commands/catalog.PriceOrder", internal) == (
        "commands:catalog.PriceOrder",
        "commands:internal",
    )
    assert scopes_for("POST", "/services/catalog/commands/catalog.PriceOrder", internal)[-1] == "commands:internal"
    assert scopes_for("POST", "/commands/AddProduct", internal) == ("commands:AddProduct", "commands:*")


@pytest.mark.parametrize("prefer", ["", "respond-async"])
async def test_commands_star_is_refused_on_an_internal_command_with_403_naming_its_scope(
    guarded_catalog: Api, prefer: str
) -> None:
    before = await guarded_catalog.head()
    refused = await guarded_catalog.command(
        "catalog.PriceOrder", PRICE, Prefer=prefer, **bearer(token(scope="commands:* queries:*"))
    )

    problem = assert_problem(refused, 403, "forbidden")
    assert problem["scope"] == "commands:catalog.PriceOrder"
    assert "commands:internal" in problem["detail"]
    assert "commands:* does not cover it" in problem["detail"]
    assert 'scope="commands:catalog.PriceOrder"' in refused.headers["www-authenticate"]
    await guarded_catalog.runtime.catch_up()
    assert await guarded_catalog.head() == before


@pytest.mark.parametrize("scope", ["commands:catalog.PriceOrder", "commands:internal"])
async def test_an_internal_command_is_allowed_with_its_exact_scope_or_commands_internal(
    guarded_catalog: Api, scope: str
) -> None:
    priced = await guarded_catalog.ok("catalog.PriceOrder", PRICE, **bearer(token(scope=scope, sub="orders")))
    assert [e["type"] for e in priced["events"]] == ["catalog.OrderPriced"]
    assert priced["events"][0]["metadata"]["principal"] == "orders"


async def test_commands_internal_does_not_reach_public_commands(guarded_catalog: Api) -> None:
    refused = await guarded_catalog.command(
        "AddProduct", {**MUG, "sku": "B-2"}, **bearer(token(scope="commands:internal"))
    )
    assert assert_problem(refused, 403, "forbidden")["scope"] == "commands:AddProduct"


async def test_with_auth_off_an_internal_command_stays_callable(tmp_path: Path) -> None:
    async with serve(catalog, tmp_path) as api:
        await api.ok("AddProduct", MUG)
        assert [e["type"] for e in (await api.ok("catalog.PriceOrder", PRICE))["events"]] == ["catalog.OrderPriced"]


async def test_openapi_marks_internal_commands(guarded_catalog: Api) -> None:
    document = await guarded_catalog.client.get("/openapi.json", headers=bearer(token(scope="operations:read")))
    paths = document.json()["paths"]
    internal, public = paths["/commands/catalog.PriceOrder"]["post"], paths["/commands/AddProduct"]["post"]
    assert internal["x-twofold-internal"] is True
    assert "Internal" in internal["description"]
    assert "commands:internal" in internal["description"]
    assert public["x-twofold-internal"] is False
    assert "description" not in public


async def test_the_gateway_refuses_commands_star_on_internal_commands_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app = gateway_in_process(shop_system, embedded_runtimes(shop_system, environ={}), auth=Authenticator(SETTINGS))
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://g") as client:
        everything = bearer(token(scope="commands:*"))
        for path in ("/commands/inventory.ReserveStock", "/services/inventory/commands/inventory.ReserveStock"):
            refused = await client.post(path, json=PRICE, headers=everything)
            assert assert_problem(refused, 403, "forbidden")["scope"] == "commands:inventory.ReserveStock"
        assert (await client.post("/commands/AddProduct", json=MUG, headers=everything)).status_code == 200
        allowed = await client.post(
            "/commands/inventory.ReserveStock", json=PRICE, headers=bearer(token(scope="commands:internal"))
        )
        assert allowed.status_code == 200, allowed.text
