"""``twofold check``, ``projections`` and ``dead-letters`` against the shop's real files and databases.

The shop trades first (embedded, behind the gateway, for the untenanted shop and a tenant) and
stops; then each command runs as an operator would run it, with the environment ``twofold serve``
reads, on SQLite files and on PostgreSQL databases.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner, Result

from examples.shop import shop as system
from examples.shop.tests.test_consistency import AUTH, Shop
from twofold.cli_projections import register
from twofold.deadletters import DeadLetter, DeadLetters
from twofold.embedded import embedded_runtimes
from twofold.http.gateway import gateway_in_process
from twofold.projections import projection_failures
from twofold.testing.servers import PostgresServer

SHOP = "examples.shop:shop"
app = typer.Typer()  # the commands as the twofold command line registers them
register(app)
_databases = itertools.count(1)


@pytest.fixture(params=["sqlite", "postgresql"])
def environ(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)  # SQLite: data/<service>.db under the working directory
    if request.param == "sqlite":
        return {}
    server: PostgresServer = request.getfixturevalue("postgres_server")
    run = next(_databases)
    return server.databases_for(system.names, prefix=f"cli_{run}_")


def in_the_shop(environ: dict[str, str], work: Callable[[Shop], Awaitable[None]]) -> None:
    """Run the shop, do ``work`` in it, and stop it again."""

    async def run() -> None:
        runtimes = embedded_runtimes(system, environ=environ)
        gateway = gateway_in_process(system, runtimes, auth=AUTH)
        transport = httpx.ASGITransport(app=gateway)
        async with (
            gateway.router.lifespan_context(gateway),
            httpx.AsyncClient(transport=transport, base_url="http://shop") as client,
        ):
            await work(Shop(client, runtimes, "postgresql" if environ else "sqlite"))

    asyncio.run(run())


@pytest.fixture
def traded(environ: dict[str, str]) -> dict[str, str]:
    async def trade(shop: Shop) -> None:
        await shop.trade()
        await shop.trade("acme")

    in_the_shop(environ, trade)
    return environ


def twofold(
    environ: dict[str, str], *arguments: str, answer: str | None = None, env: dict[str, str] | None = None
) -> Result:
    return CliRunner().invoke(app, list(arguments), env={**environ, **(env or {})}, input=answer)


def as_json(result: Result) -> Any:
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def test_check_passes_on_the_shop_and_fails_with_the_difference_once_a_row_is_corrupted(
    traded: dict[str, str],
) -> None:
    clean = twofold(traded, "check", SHOP)
    assert clean.exit_code == 0, clean.output
    assert "inventory.stock@acme" in clean.output

    async def corrupt(shop: Shop) -> None:
        await shop.corrupt("inventory", "UPDATE stock_levels SET available = 99 WHERE sku = 'A-1'")

    in_the_shop(traded, corrupt)
    corrupted = twofold(traded, "check", SHOP, "--projection", "inventory.stock")
    report = as_json(twofold(traded, "check", SHOP, "--service", "inventory", "--json"))

    assert corrupted.exit_code == 1
    assert "stock_levels changed sku='A-1': available live 99, rebuilt 3" in corrupted.output
    assert "inventory.StockReceived (stock-A-1 v1)" in corrupted.output
    assert "orders.history" not in corrupted.output  # only the projection asked for
    assert report["consistent"] is False
    [main, acme] = report["services"]["inventory"]
    assert (main["tenant"], main["differences"][0]["columns"], acme["consistent"]) == (None, ["available"], True)


def test_status_shows_each_projection_caught_up_with_its_store(traded: dict[str, str]) -> None:
    rows = as_json(twofold(traded, "projections", "status", SHOP, "--json"))["projections"]

    main = {row["projection"]: row for row in rows if row["tenant"] is None}
    assert {name: row["target"] for name, row in main.items()} == {
        "catalog.products": "sql",
        "catalog.product-search": "search",
        "inventory.stock": "sql",
        "orders.history": "sql",
        "orders.sales": "warehouse",
    }
    assert all(row["lag"] == 0 and row["position"] == row["head"] > 0 for row in main.values())
    assert {row["tenant"] for row in rows} == {None, "acme"}


def test_status_shows_a_failing_projection_s_error_until_its_runner_gets_past_it(traded: dict[str, str]) -> None:
    async def break_stock(shop: Shop) -> None:
        inventory = shop.runtimes["inventory"].read_store
        assert inventory is not None
        await shop.corrupt("inventory", "DROP TABLE stock_levels")  # the next batch of inventory.stock fails
        await shop.ok(None, "ReceiveStock", {"sku": "A-1", "quantity": 1})
        async with asyncio.timeout(10):
            while "inventory.stock" not in await projection_failures(inventory):  # noqa: ASYNC110
                await asyncio.sleep(0.02)

    in_the_shop(traded, break_stock)
    rows = as_json(twofold(traded, "projections", "status", SHOP, "--service", "inventory", "--json"))["projections"]
    shown = twofold(traded, "projections", "status", SHOP, "--service", "inventory", env={"COLUMNS": "320"})

    [stock] = [row for row in rows if row["projection"] == "inventory.stock" and row["tenant"] is None]
    assert (stock["lag"], stock["failing"]["position"]) == (1, stock["head"])
    assert stock["failing"]["failures"] >= 1  # retried until the shop stopped
    assert "stock_levels" in stock["failing"]["error"]
    assert [row["failing"] for row in rows if row is not stock] == [None] * (len(rows) - 1)
    assert f"at {stock['head']}, {stock['failing']['failures']}× in a row:" in shown.output

    in_the_shop(traded, Shop.settle)  # started again, the projection makes its table and applies the event
    rows = as_json(twofold(traded, "projections", "status", SHOP, "--service", "inventory", "--json"))["projections"]
    assert all(row["failing"] is None and row["lag"] == 0 for row in rows)


def test_rebuild_replaces_a_corrupted_read_model_by_a_right_one(traded: dict[str, str]) -> None:
    async def corrupt(shop: Shop) -> None:
        await shop.corrupt("orders", "DELETE FROM orders")
        await shop.corrupt("orders", "DELETE FROM orders", tenant="acme")

    in_the_shop(traded, corrupt)

    rebuilt = twofold(traded, "projections", "rebuild", SHOP, "orders.history")
    report = as_json(twofold(traded, "check", SHOP, "--service", "orders", "--json"))

    assert rebuilt.exit_code == 0, rebuilt.output
    assert "orders.history rebuilt up to position" in rebuilt.output
    assert report["consistent"] is True
    compared = {
        c["projection"] + (f"@{c['tenant']}" if c["tenant"] else ""): c["rows_compared"]
        for c in report["services"]["orders"]
    }
    assert compared == {"orders.history": 3, "orders.history@acme": 3, "orders.sales": 1, "orders.sales@acme": 1}


def test_rebuild_swaps_in_a_search_index_rebuilt_from_the_events(traded: dict[str, str]) -> None:
    rebuilt = twofold(traded, "projections", "rebuild", SHOP, "catalog.product-search")
    report = as_json(twofold(traded, "check", SHOP, "--service", "catalog", "--json"))

    assert rebuilt.exit_code == 0, rebuilt.output
    assert "catalog.product-search rebuilt up to position" in rebuilt.output
    assert report["consistent"] is True
    compared = {
        c["projection"] + (f"@{c['tenant']}" if c["tenant"] else ""): c["rows_compared"]
        for c in report["services"]["catalog"]
    }
    assert compared["catalog.product-search"] == compared["catalog.product-search@acme"] == 2


def test_a_warehouse_model_is_checked_and_rebuilt_from_the_command_line(traded: dict[str, str]) -> None:
    async def corrupt(shop: Shop) -> None:
        await shop.corrupt("orders", "UPDATE sale_lines SET quantity = 7", store="warehouse")

    in_the_shop(traded, corrupt)

    broken = twofold(traded, "check", SHOP, "--projection", "orders.sales")
    rebuilt = twofold(traded, "projections", "rebuild", SHOP, "orders.sales")
    fixed = twofold(traded, "check", SHOP, "--projection", "orders.sales")

    assert broken.exit_code == 1, broken.output
    assert "sale_lines changed order_id='o-1', sku='A-1': quantity live 7, rebuilt 2" in " ".join(broken.output.split())
    assert rebuilt.exit_code == 0, rebuilt.output
    assert fixed.exit_code == 0, fixed.output


def test_reset_asks_first_then_drops_and_replays_the_read_model(traded: dict[str, str]) -> None:
    refused = twofold(traded, "projections", "reset", SHOP, "inventory.stock", answer="n\n")
    reset = as_json(twofold(traded, "projections", "reset", SHOP, "inventory.stock", "--yes", "--json"))
    report = as_json(twofold(traded, "check", SHOP, "--projection", "inventory.stock", "--json"))

    assert refused.exit_code == 1
    assert "Aborted" in refused.output
    assert reset["reset"] == "inventory.stock"
    assert reset["position"] > 0
    assert report["consistent"] is True


def test_dead_letters_are_listed_and_retried(traded: dict[str, str]) -> None:
    async def park(shop: Shop) -> None:
        read_store = shop.runtimes["orders"].read_store
        assert read_store is not None
        await DeadLetters(read_store).park(DeadLetter("inventory", "", 7, "not json", "ValueError: unreadable"))

    in_the_shop(traded, park)

    listed = as_json(twofold(traded, "dead-letters", "list", SHOP, "--json"))["dead_letters"]
    table = twofold(traded, "dead-letters", "list", SHOP, "--service", "orders")
    retried = as_json(twofold(traded, "dead-letters", "retry", SHOP, "--source", "inventory", "--json"))["retried"]

    assert [(d["service"], d["source"], d["version"], d["error"]) for d in listed] == [
        ("orders", "inventory", 7, "ValueError: unreadable")
    ]
    assert "unreadable" in table.output  # a column the width of the terminal may wrap
    assert retried == [{"service": "orders", "source": "inventory", "imported": 0, "parked": 1}]


def test_an_unknown_projection_is_refused_by_name(traded: dict[str, str]) -> None:
    result = twofold(traded, "projections", "rebuild", SHOP, "orders.nothing")

    assert result.exit_code == 2
    assert "no projection named 'orders.nothing'" in result.output
