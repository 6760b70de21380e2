"""Operations routes: /health, /ready, /metrics and /openapi.json."""

from __future__ import annotations

import asyncio
import re
import threading
from pathlib import Path
from typing import Any

from tests.http import Api, assert_problem, order, serve
from tests.monolith import shop
from tests.monolith.handlers import add_product
from tests.monolith.messages import AddProduct, ProductAdded
from twofold import Command, Database, DomainError, Projection, Service, StoredEvent, UnitOfWork

POLLS = 500  # of /ready, 10 ms apart


class Exploding(Projection, name="test.exploding"):
    """A read model whose every update fails."""

    def apply(self, event: ProductAdded, db: Database, record: StoredEvent) -> None:
        raise RuntimeError(f"cannot project {record.type}")


class SoldOut(DomainError):
    """An application's own kind of rejection."""


class BuyTicket(Command):
    show: str


async def buy_ticket(command: BuyTicket, uow: UnitOfWork) -> None:
    raise SoldOut(f"Show {command.show} is sold out")


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text, found by its name and exactly its labels."""
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and match["name"] == name and dict(_LABEL.findall(match["labels"] or "")) == labels:
            return float(match["value"])
    raise AssertionError(f"no sample {name}{labels} in:\n{text}")


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


# -- /health and /ready --------------------------------------------------------------------------


async def test_health_answers_ok_while_the_process_is_up(api: Api) -> None:
    response = await api.client.get("/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_answers_200_with_the_head_and_every_projection_position(stocked: Api) -> None:
    head = await stocked.head()
    await stocked.query("OrderHistory", head, customer_id="c-1")
    await stocked.query("StockLevel", head, sku="A-1")

    response = await stocked.client.get("/ready")

    assert response.status_code == 200
    projections = {"shop.catalog": head, "shop.orders": head}
    assert response.json() == {"status": "ready", "head": head, "projections": projections}


async def test_ready_is_503_naming_a_projection_runner_that_stopped(stocked: Api) -> None:
    await stocked.runtime.runners["shop.orders"].stop()

    response = await stocked.client.get("/ready")

    body = assert_problem(response, 503, "not-ready")
    assert body["title"] == "Not ready"
    assert body["detail"] == "A projection or saga is stopped, failing, or stuck with events waiting"
    assert body["stopped"] == ["shop.orders"]
    assert body["failing"] == {}
    assert body["head"] == await stocked.head()
    assert set(body["projections"]) == {"shop.catalog", "shop.orders"}


async def test_ready_is_503_naming_a_projection_that_keeps_failing(tmp_path: Path) -> None:
    service = Service("broken", commands={AddProduct: add_product}, projections=[Exploding()])
    async with serve(service, tmp_path) as api:
        await api.add_product("A-1", "Apple")

        for _ in range(POLLS):  # the runner fails on its own task: poll until /ready notices
            response = await api.client.get("/ready")
            if response.status_code != 200:
                break
            await asyncio.sleep(0.01)

        body = assert_problem(response, 503, "not-ready")
        assert body["stopped"] == []
        assert body["failing"] == {"test.exploding": "RuntimeError: cannot project shop.ProductAdded"}
        assert body["stuck"] == {}
        assert body["projections"] == {"test.exploding": 0}
        assert body["head"] == 1


class Frozen(Projection, name="test.frozen"):
    """A read model whose loop freezes inside its first event until the test lets it go."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def apply(self, event: ProductAdded, db: Database, record: StoredEvent) -> None:
        self.release.wait(30)


async def test_ready_is_503_and_metrics_say_stuck_when_events_wait_on_a_frozen_projection(tmp_path: Path) -> None:
    frozen = Frozen()
    service = Service("frozen", commands={AddProduct: add_product}, projections=[frozen])
    try:
        async with serve(service, tmp_path, stall_after=0.3) as api:
            assert (await api.client.get("/ready")).status_code == 200  # idle is not stuck
            await api.add_product("A-1", "Apple")
            await asyncio.sleep(0.6)

            body = assert_problem(await api.client.get("/ready"), 503, "not-ready")
            assert body["stopped"] == []
            assert body["failing"] == {}
            assert list(body["stuck"]) == ["test.frozen"]
            assert body["stuck"]["test.frozen"] >= 0.3
            text = (await api.client.get("/metrics")).text
            assert metric(text, "twofold_worker_stuck", worker="test.frozen") == 1
            assert metric(text, "twofold_worker_stalled_seconds", worker="test.frozen") >= 0.3

            frozen.release.set()  # the loop moves on: ready again once it has applied the event
            for _ in range(POLLS):
                if (await api.client.get("/ready")).status_code == 200:
                    break
                await asyncio.sleep(0.01)
            assert (await api.client.get("/ready")).status_code == 200
            assert metric((await api.client.get("/metrics")).text, "twofold_worker_stuck", worker="test.frozen") == 0
    finally:
        frozen.release.set()


# -- /metrics ------------------------------------------------------------------------------------


async def test_metrics_count_commands_by_type_and_outcome_and_show_positions(stocked: Api) -> None:
    await stocked.ok("PlaceOrder", order("o-1", "c-1", ("A-1", 1)))
    await stocked.command("PlaceOrder", order("o-2", "c-1", ("A-1", 9)))
    await stocked.command("PlaceOrder", {"order_id": "o-3"})
    head = await stocked.head()
    await stocked.query("StockLevel", head, sku="A-1")
    await stocked.query("OrderHistory", head, customer_id="c-1")

    response = await stocked.client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert metric(text, "twofold_commands_total", command="AddProduct", outcome="ok") == 2
    assert metric(text, "twofold_commands_total", command="ReceiveStock", outcome="ok") == 2
    assert metric(text, "twofold_commands_total", command="PlaceOrder", outcome="ok") == 1
    assert metric(text, "twofold_commands_total", command="PlaceOrder", outcome="rejected") == 1
    assert metric(text, "twofold_commands_total", command="PlaceOrder", outcome="invalid") == 1
    assert metric(text, "twofold_queries_total", query="StockLevel", outcome="ok") == 1
    assert metric(text, "twofold_events_appended_total") == head
    assert metric(text, "twofold_store_head_position") == head
    assert metric(text, "twofold_projection_position", projection="shop.catalog") == head
    assert metric(text, "twofold_projection_position", projection="shop.orders") == head
    assert metric(text, "twofold_projection_lag_events", projection="shop.catalog") == 0
    assert metric(text, "twofold_command_seconds_count", command="PlaceOrder") == 3


async def test_a_rejection_by_a_domain_error_subclass_is_409_and_counted_as_rejected(tmp_path: Path) -> None:
    async with serve(Service("tickets", commands={BuyTicket: buy_ticket}), tmp_path, read_models=False) as api:
        response = await api.command("BuyTicket", {"show": "matinee"})

        body = assert_problem(response, 409, "rejected")
        assert body["detail"] == "Show matinee is sold out"
        text = (await api.client.get("/metrics")).text
        assert metric(text, "twofold_commands_total", command="BuyTicket", outcome="rejected") == 1


async def test_two_apps_in_one_process_keep_their_own_counters(tmp_path: Path) -> None:
    async with serve(shop, tmp_path / "one") as one, serve(shop, tmp_path / "two") as two:
        await one.add_product("A-1", "Apple")

        assert "twofold_commands_total{" in (await one.client.get("/metrics")).text
        assert "twofold_commands_total{" not in (await two.client.get("/metrics")).text


# -- /openapi.json -------------------------------------------------------------------------------


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Follow a local ``$ref`` to the schema it names."""
    while "$ref" in schema:
        node: Any = document
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


async def test_openapi_describes_every_command_with_its_request_body_schema(api: Api) -> None:
    document = (await api.client.get("/openapi.json")).json()

    for command in shop.commands:
        operation = document["paths"][f"/commands/{command.type_name}"]["post"]
        body = resolve(document, operation["requestBody"]["content"]["application/json"]["schema"])
        assert set(body["properties"]) == set(command.model_fields), command.type_name
        assert set(body["required"]) == {n for n, f in command.model_fields.items() if f.is_required()}
        assert body["additionalProperties"] is False
        assert {"200", "202"} <= set(operation["responses"])
    lines = resolve(document, document["components"]["schemas"]["PlaceOrder"])["properties"]["lines"]
    line = resolve(document, lines["items"])
    assert set(line["properties"]) == {"sku", "quantity"}
    assert line["properties"]["quantity"]["minimum"] == 1
    assert lines["minItems"] == 1


async def test_openapi_describes_every_query_with_its_parameters(api: Api) -> None:
    document = (await api.client.get("/openapi.json")).json()

    for query in shop.queries:
        operation = document["paths"][f"/queries/{query.type_name}"]["get"]
        parameters = {(p["name"], p["in"]): p for p in operation["parameters"]}
        assert {name for name, where in parameters if where == "query"} == set(query.model_fields)
        assert ("X-Min-Position", "header") in parameters
        assert "200" in operation["responses"]
    stock_level = document["paths"]["/queries/StockLevel"]["get"]
    [sku] = [p for p in stock_level["parameters"] if p["name"] == "sku"]
    assert sku["required"] is True
    assert sku["schema"]["type"] == "string"
    answer = resolve(document, stock_level["responses"]["200"]["content"]["application/json"]["schema"])
    assert set(answer["properties"]) == {"sku", "available"}


async def test_openapi_describes_the_operations_routes_and_the_command_status(api: Api) -> None:
    document = (await api.client.get("/openapi.json")).json()

    assert document["info"]["title"] == "shop API"
    for path in ("/health", "/ready", "/metrics", "/commands/{command_id}"):
        assert "get" in document["paths"][path], path
    assert not any("{command_type}" in p or "{query_type}" in p for p in document["paths"])
