"""One checkout of the shop, embedded, is one trace: the request, the commands in every service,
the saga's reactions, the imports and the projection pages, each span under what caused it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from examples.shop import shop as system
from tests.observability.conftest import Spans, parent_of, span_id
from twofold import Runtime
from twofold.embedded import embedded_runtimes
from twofold.http.gateway import gateway_in_process
from twofold.store import StoredEvent

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
CLIENT_SPAN = 0x00F067AA0BA902B7
TRACEPARENT = f"00-{TRACE_ID:032x}-{CLIENT_SPAN:016x}-01"
SENT_BY_THE_SAGA = ["catalog.PriceOrder", "inventory.ReserveStock", "payments.AuthorizePayment", "orders.ConfirmOrder"]


@pytest.fixture
async def shop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, Runtime]]]:
    monkeypatch.chdir(tmp_path)
    runtimes = embedded_runtimes(system, environ={})
    app = gateway_in_process(system, runtimes)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://shop") as c:
        yield c, runtimes


async def checkout(client: httpx.AsyncClient, runtimes: dict[str, Runtime]) -> None:
    """Stock a product (a trace of its own), then place an order under the client's trace and let it settle."""
    for command, body in [
        ("AddProduct", {"sku": "A-1", "name": "A", "price": "2.50"}),
        ("ReceiveStock", {"sku": "A-1", "quantity": 5}),
    ]:
        assert (await client.post(f"/commands/{command}", json=body)).status_code == 200
    order = {"order_id": "o-1", "customer_id": "c-1", "lines": [{"sku": "A-1", "quantity": 2}]}
    headers = {"traceparent": TRACEPARENT, "X-Correlation-Id": "checkout-1"}
    placed = await client.post("/commands/PlaceOrder", json=order, headers=headers)
    assert placed.status_code == 200, placed.text
    for _ in range(500):
        history = (await client.get("/queries/OrderHistory", params={"customer_id": "c-1"})).json()
        if history["orders"] and history["orders"][0]["status"] == "confirmed":
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail(f"o-1 never confirmed: {history}")
    for runtime in runtimes.values():
        await runtime.catch_up()


async def all_events(runtimes: dict[str, Runtime]) -> dict[str, list[StoredEvent]]:
    found: dict[str, list[StoredEvent]] = {}
    for name, runtime in runtimes.items():
        assert runtime.store is not None
        found[name] = [e async for e in runtime.store.read_all(1, 10_000)]
    return found


def trace_id_of(metadata: dict[str, Any]) -> int:
    return int(metadata["traceparent"].split("-")[1], 16)


async def test_one_checkout_is_one_trace_from_the_request_to_the_projection_pages(
    shop: tuple[httpx.AsyncClient, dict[str, Runtime]], spans: Spans
) -> None:
    client, runtimes = shop
    await checkout(client, runtimes)
    traced = spans.in_trace(TRACE_ID)
    by_id = {span_id(s): s for s in traced}

    # Every span of the trace hangs from the client's span, through spans of the same trace.
    roots = [s for s in traced if parent_of(s) not in by_id]
    assert [(s.name, parent_of(s)) for s in roots] == [("POST /commands/{type_name}", CLIENT_SPAN)]

    gateway = roots[0]
    (service_request,) = [s for s in traced if parent_of(s) == span_id(gateway)]
    assert service_request.name == "POST /commands/PlaceOrder"
    (place,) = spans.named("twofold.command PlaceOrder", TRACE_ID)
    assert parent_of(place) == span_id(service_request)
    assert place.attributes is not None
    assert (place.attributes["twofold.service"], place.attributes["twofold.outcome"]) == ("orders", "ok")
    assert place.attributes["twofold.correlation_id"] == "checkout-1"

    # Each command the saga sent ran in its service, under the reaction that sent it.
    reactions = {span_id(s) for s in spans.named("twofold.saga checkout", TRACE_ID)}
    for type_name in SENT_BY_THE_SAGA:
        (command,) = spans.named(f"twofold.command {type_name}", TRACE_ID)
        assert parent_of(command) in reactions, type_name
        assert command.attributes is not None
        assert command.attributes["twofold.service"] == type_name.split(".")[0]
    # Each reaction is under the command whose event triggered it (in orders, or imported from another service).
    commands = {span_id(s) for s in spans.named("twofold.command", TRACE_ID)}
    assert reactions
    assert all(parent_of(by_id[r]) in commands for r in reactions)

    # Imports and projection pages are in the trace too, under the command whose event they begin with.
    imports = spans.named("twofold.import", TRACE_ID)
    assert {s.name for s in imports} >= {
        "twofold.import catalog",
        "twofold.import inventory",
        "twofold.import payments",
    }
    pages = spans.named("twofold.project", TRACE_ID)
    assert "twofold.project orders.history" in {s.name for s in pages}
    assert all(parent_of(s) in commands for s in [*imports, *pages])


async def test_correlation_causation_and_trace_context_reach_every_event_of_the_checkout(
    shop: tuple[httpx.AsyncClient, dict[str, Runtime]], spans: Spans
) -> None:
    client, runtimes = shop
    await checkout(client, runtimes)
    events = await all_events(runtimes)
    checkout_events = [
        e for found in events.values() for e in found if e.metadata.get("correlation_id") == "checkout-1"
    ]
    assert {e.metadata["command_type"] for e in checkout_events} >= {"PlaceOrder", *SENT_BY_THE_SAGA}
    assert all(trace_id_of(e.metadata) == TRACE_ID for e in checkout_events)
    # Causation walks back: an event to its command, a sent command to the reaction that recorded
    # it, a reaction to the event that triggered it, and so on up to the request's PlaceOrder.
    by_id = {e.event_id: e for e in checkout_events}
    sent_by = {
        sent["command_id"]: e for e in events["orders"] if e.type == "twofold.SagaReacted" for sent in e.data["sends"]
    }
    confirmed = next(e for e in checkout_events if e.metadata["command_type"] == "orders.ConfirmOrder")
    chain, event = [], confirmed
    while True:
        assert event.metadata["causation_id"] == event.metadata["command_id"]  # an event is caused by its command
        chain.append(event.metadata["command_type"])
        reaction = sent_by.get(event.metadata["command_id"])
        if reaction is None:
            break
        event = by_id[reaction.metadata["causation_id"]]  # the reaction's trigger
    assert chain == [
        "orders.ConfirmOrder",
        "payments.AuthorizePayment",
        "inventory.ReserveStock",
        "catalog.PriceOrder",
        "PlaceOrder",
    ]
    # An import keeps the event's own metadata: the orders service sees the catalog's command and trace.
    imported = [e for e in events["orders"] if e.stream_id.startswith("catalog.")]
    assert imported
    assert all(e.metadata["correlation_id"] == "checkout-1" for e in imported)


async def test_without_a_tracer_provider_a_requests_traceparent_still_reaches_the_events(
    shop: tuple[httpx.AsyncClient, dict[str, Runtime]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in a process with no SDK, whatever an earlier test of this session installed.
    for module in ("twofold.observability", "twofold.http.tracing"):
        monkeypatch.setattr(f"{module}.tracing_installed", lambda: False)
    client, runtimes = shop
    await checkout(client, runtimes)
    events = await all_events(runtimes)
    placed = [e for e in events["orders"] if e.metadata.get("command_type") == "PlaceOrder"]
    assert placed
    assert all(e.metadata["traceparent"].split("-")[1] == f"{TRACE_ID:032x}" for e in placed)
    confirmed = [e for e in events["orders"] if e.metadata.get("command_type") == "orders.ConfirmOrder"]
    assert confirmed  # and on, through the saga's reactions and the commands they sent
    assert all(e.metadata["traceparent"].split("-")[1] == f"{TRACE_ID:032x}" for e in confirmed)
    stocked = [e for e in events["inventory"] if e.metadata.get("command_type") == "ReceiveStock"]
    assert stocked
    assert all("traceparent" not in e.metadata for e in stocked)  # no trace came with it: none made up
