"""``twofold streams``, ``stream``, ``events tail`` and ``trace`` on stores where the shop checked out an order."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from examples.shop import shop
from tests.cli.checkout import checkout
from twofold.cli import app
from twofold.store import NewEvent
from twofold.store.sqlite import SQLiteEventStore
from twofold.testing.servers import PostgresServer

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("catalog", "inventory", "orders", "payments")
CHECKOUT_COMMANDS = [
    "PlaceOrder",
    "catalog.PriceOrder",
    "inventory.ReserveStock",
    "payments.AuthorizePayment",
    "orders.ConfirmOrder",
]


def _variable(service: str) -> str:
    return f"TWOFOLD_{service.upper()}_DATABASE_URL"


@pytest.fixture(scope="module")
def on_sqlite(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], str]:
    """Each service's SQLite file, named by the environment, after one checkout; and its correlation id."""
    folder = tmp_path_factory.mktemp("shop")
    environ = {_variable(s): f"sqlite:///{folder / s}.db" for s in SERVICES}
    environ.update({f"TWOFOLD_{s.upper()}_READ_DATABASE_URL": f"sqlite:///{folder / s}-read.db" for s in SERVICES})
    return environ, asyncio.run(checkout(environ))


@pytest.fixture(scope="module")
def on_postgres(postgres_server: PostgresServer) -> tuple[dict[str, str], str]:
    """A PostgreSQL database per service after one checkout; and its correlation id."""
    environ = {_variable(s): postgres_server.create_database(f"inspect_{s}") for s in SERVICES}
    return environ, asyncio.run(checkout(environ))


def _invoke(args: list[str], env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, args, env={"TWOFOLD_DATABASE_URL": "", **(env or {})}, catch_exceptions=False)


def _json(args: list[str], env: dict[str, str] | None = None) -> Any:
    result = _invoke([*args, "--json"], env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node["children"]:
        yield from _walk(child)


def _check_checkout_tree(tree: dict[str, Any]) -> None:
    assert len(tree["roots"]) == 1
    nodes = list(_walk(tree["roots"][0]))
    commands = [n for n in nodes if n["kind"] == "command"]
    events = [n for n in nodes if n["kind"] == "event"]
    assert [c["type"] for c in commands] == CHECKOUT_COMMANDS
    assert {c["service"] for c in commands} == set(SERVICES)
    assert len({e["event_id"] for e in events}) == len(events)
    assert events[-1]["type"] == "orders.OrderConfirmed"
    imported = {e["type"]: e["imported_into"] for e in events if e["imported_into"]}
    assert imported["payments.PaymentAuthorized"] == ["orders"]


@pytest.mark.parametrize("shop_on", ["on_sqlite", "on_postgres"])
def test_trace_shows_one_checkout_across_every_services_store(shop_on: str, request: pytest.FixtureRequest) -> None:
    environ, correlation_id = request.getfixturevalue(shop_on)
    _check_checkout_tree(_json(["trace", "examples.shop:shop", correlation_id], environ))
    shown = _invoke(["trace", "examples.shop:shop", correlation_id], {**environ, "COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    for line in ["PlaceOrder", "→ catalog", "→ inventory", "→ payments", "orders.OrderConfirmed order-o-1@2"]:
        assert line in shown.stdout
    assert "(imported into orders)" in shown.stdout


def test_trace_of_one_store_shows_what_that_service_recorded_and_imported(
    on_sqlite: tuple[dict[str, str], str],
) -> None:
    environ, correlation_id = on_sqlite
    tree = _json(["trace", correlation_id], {"TWOFOLD_DATABASE_URL": environ[_variable("orders")]})
    events = [n for n in _walk(tree["roots"][0]) if n["kind"] == "event"]
    assert events[0]["type"] == "orders.OrderPlaced"
    assert {e["service"] for e in events} == {"catalog", "inventory", "orders", "payments"}  # copies name their source
    assert "inventory.StockAllocated" not in {e["type"] for e in events}  # never imported into orders


def test_trace_of_an_unknown_correlation_says_so_and_fails(on_sqlite: tuple[dict[str, str], str]) -> None:
    environ, _ = on_sqlite
    result = _invoke(["trace", "examples.shop:shop", "nothing-here"], environ)
    assert result.exit_code == 1
    assert "No events with correlation id nothing-here in catalog, inventory, orders, payments" in result.stderr


def test_streams_pages_through_a_services_streams(on_sqlite: tuple[dict[str, str], str]) -> None:
    environ, _ = on_sqlite
    url = environ[_variable("orders")]
    first = _json(["streams", "--url", url, "--limit", "2"])
    rest = _json(["streams", "--url", url, "--after", first["next_after"]])
    ids = [s["stream_id"] for s in first["streams"] + rest["streams"]]
    assert ids == sorted(ids)
    assert "order-o-1" in ids
    assert rest["next_after"] is None
    orders = _json(["streams", "--target", "examples.shop:shop", "--service", "orders", "--category", "order"], environ)
    assert [(s["stream_id"], s["version"]) for s in orders["streams"]] == [("order-o-1", 2)]
    table = _invoke(["streams", "--url", url], {"COLUMNS": "200"})
    assert "order-o-1" in table.stdout
    assert "last event at" in table.stdout


@pytest.mark.parametrize("shop_on", ["on_sqlite", "on_postgres"])
def test_stream_at_a_version_shows_its_events_and_the_aggregate_then(
    shop_on: str, request: pytest.FixtureRequest
) -> None:
    environ, _ = request.getfixturevalue(shop_on)
    placed = _json(["stream", "order-o-1", "--at", "1", "--target", "examples.shop:shop"], environ)
    assert [e["type"] for e in placed["events"]] == ["orders.OrderPlaced"]
    assert placed["state"] == {"id": "o-1", "version": 1, "status": "placed"}
    now = _invoke(["stream", "order-o-1", "--target", "examples.shop:shop"], {**environ, "COLUMNS": "200"})
    assert "orders.OrderConfirmed" in now.stdout
    assert '"status": "confirmed"' in now.stdout


def test_stream_without_a_declared_aggregate_shows_events_only(on_sqlite: tuple[dict[str, str], str]) -> None:
    environ, _ = on_sqlite
    shown = _json(["stream", "saga.checkout-o-1", "--url", environ[_variable("orders")]])
    assert (len(shown["events"]), shown["state"]) == (4, None)


def test_an_unknown_stream_or_version_is_named_and_fails(on_sqlite: tuple[dict[str, str], str]) -> None:
    environ, _ = on_sqlite
    missing = _invoke(["stream", "order-o-9", "--target", "examples.shop:shop"], environ)
    assert missing.exit_code == 1
    assert "No stream order-o-9 in sqlite:///" in missing.stderr
    past = _invoke(["stream", "order-o-1", "--at", "3", "--target", "examples.shop:shop"], environ)
    assert past.exit_code == 1
    assert "Stream order-o-1 is at version 2; --at 3 is past its end" in past.stderr


@pytest.mark.parametrize("shop_on", ["on_sqlite", "on_postgres"])
def test_tail_from_a_position_prints_one_json_object_a_line(shop_on: str, request: pytest.FixtureRequest) -> None:
    environ, _ = request.getfixturevalue(shop_on)
    url = environ[_variable("orders")]
    result = _invoke(["events", "tail", "--url", url, "--from", "1", "--count", "2", "--json"])
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["position"] for e in lines] == [1, 2]
    confirmed = _invoke(
        ["events", "tail", "--url", url, "--from", "1", "--count", "1", "--type", "orders.OrderConfirmed"]
    )
    assert "order-o-1@2  orders.OrderConfirmed" in confirmed.stdout
    one_stream = _invoke(
        ["events", "tail", "--url", url, "--from", "1", "--count", "2", "--stream", "order-o-1", "--json"]
    )
    assert [json.loads(line)["version"] for line in one_stream.stdout.splitlines()] == [1, 2]


def test_tail_follows_new_events_until_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    asyncio.run(_append(path, "order-1"))
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", "TWOFOLD_DATABASE_URL": f"sqlite:///{path}"}
    command = [sys.executable, "-m", "twofold.cli", "events", "tail", "--json"]
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) as tail:
        try:
            asyncio.run(_append_until_seen(path, tail))
            tail.send_signal(signal.SIGINT)
            assert tail.wait(timeout=10) == 0
        finally:
            if tail.poll() is None:
                tail.kill()


async def _append(path: Path, stream_id: str) -> None:
    store = SQLiteEventStore(path)
    try:
        await store.append(stream_id, [NewEvent("test.Happened", {"stream": stream_id})])
    finally:
        await store.close()


async def _append_until_seen(path: Path, tail: subprocess.Popen[str]) -> None:
    """Append until the tail prints one: it starts at the head, so the first appends may precede it."""
    assert tail.stdout is not None
    reading = asyncio.create_task(asyncio.to_thread(tail.stdout.readline))
    async with asyncio.timeout(20):
        while not reading.done():
            await _append(path, "order-2")
            await asyncio.wait({reading}, timeout=0.5)
    seen = json.loads(reading.result())
    assert (seen["stream_id"], seen["type"]) == ("order-2", "test.Happened")
    assert seen["position"] >= 2  # never the event recorded before the tail began


def test_a_bad_url_is_refused_naming_where_it_came_from(
    tmp_path: Path, on_sqlite: tuple[dict[str, str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = _invoke(["streams", "--url", "mysql://db/orders"])
    assert bad.exit_code == 2
    assert "--url='mysql://db/orders' is not a database" in bad.stderr
    environ = {**on_sqlite[0], _variable("orders"): f"sqlite:///{tmp_path}/none.db"}
    missing = _invoke(["trace", "examples.shop:shop", "x"], environ)
    assert missing.exit_code == 2
    assert f"TWOFOLD_ORDERS_DATABASE_URL=sqlite:///{tmp_path}/none.db: no such database file" in missing.stderr
    monkeypatch.chdir(tmp_path)
    default = _invoke(["trace", "examples.shop:shop", "x"], {_variable("catalog"): ""})
    assert "No database file data/catalog.db, catalog's default: set TWOFOLD_CATALOG_DATABASE_URL" in default.stderr
    unnamed = _invoke(["streams"])
    assert unnamed.exit_code == 2
    assert "pass --url, set TWOFOLD_DATABASE_URL or name a --target" in unnamed.stderr


def test_a_system_target_needs_a_service_for_one_store_commands() -> None:
    result = _invoke(["streams", "--target", "examples.shop:shop"])
    assert result.exit_code == 2
    assert f"examples.shop:shop has several stores ({', '.join(s.name for s in shop.services)})" in result.stderr
