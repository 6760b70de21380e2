"""Trace context, correlation and causation across NATS: the relay → consumer hop and an asynchronous command."""

from __future__ import annotations

import uuid
from pathlib import Path

import nats
from opentelemetry.trace import SpanKind

from tests.broker.consumer_app import orders_service
from tests.broker.test_async_commands import command_api, queued, shop_service, status_until
from tests.broker.test_consumer import eventually
from tests.http.test_operations import metric
from tests.monolith.messages import AddProduct
from tests.observability.conftest import Spans, parent_of, span_id
from twofold.broker.cloudevents import decode
from twofold.broker.command_messages import decode_command
from twofold.broker.commands import JetStreamCommandSender
from twofold.broker.consumer import JetStreamConsumer
from twofold.broker.nats import JetStreamRelay
from twofold.broker.subjects import commands_stream, events_stream
from twofold.messages import Envelope
from twofold.readmodels.sqlite import SQLiteReadStore
from twofold.store import NewEvent
from twofold.store.sqlite import SQLiteEventStore

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SENDER_SPAN = 0xB7AD6B7169203331
TRACEPARENT = f"00-{TRACE_ID:032x}-{SENDER_SPAN:016x}-01"
CAUSE = {
    "traceparent": TRACEPARENT,
    "correlation_id": "conversation-1",
    "causation_id": "command-1",
    "command_id": "command-1",
}


async def test_the_relay_publishes_the_trace_context_and_the_consumers_import_continues_it(
    tmp_path: Path, nats_url: str, spans: Spans
) -> None:
    source = f"tracedinv{uuid.uuid4().hex[:8]}"  # a stream and a consumer of this test's own on the shared server
    source_store, source_read = SQLiteEventStore(tmp_path / "source.db"), SQLiteReadStore(tmp_path / "source-read.db")
    store, read_store = SQLiteEventStore(tmp_path / "target.db"), SQLiteReadStore(tmp_path / "target-read.db")
    relay = JetStreamRelay(source, source_store, source_read, nats_url)
    service = orders_service(f"tracedord{source[-8:]}", source)
    consumer = JetStreamConsumer(service, store, read_store, service.subscriptions[0], nats_url)
    try:
        data = {"sku": "A-1", "quantity": 1}
        await source_store.append("reservation-o-1", [NewEvent("inventory.StockReserved", data, CAUSE)])
        await relay.start()
        await consumer.start()

        async def imported() -> bool:
            return await store.head_position() == 1

        await eventually(imported, "the reservation imported")
        client = await nats.connect(nats_url)
        try:
            message = await client.jetstream().get_msg(events_stream(source), 1)
        finally:
            await client.close()
        (imported_event,) = [e async for e in store.read_stream(f"{source}.reservation-o-1")]
    finally:
        await consumer.stop()
        await relay.stop()
        for opened in (source_store, source_read, store, read_store):
            await opened.close()
    assert message.headers is not None
    assert message.headers["traceparent"] == TRACEPARENT  # for NATS tools
    assert decode(message.data or b"").event.metadata["traceparent"] == TRACEPARENT  # the CloudEvent's extension

    assert {k: imported_event.metadata[k] for k in CAUSE} == CAUSE
    (span,) = spans.named(f"twofold.import {source}", TRACE_ID)
    assert (parent_of(span), span.kind) == (SENDER_SPAN, SpanKind.CONSUMER)


async def test_a_queued_command_carries_the_trace_context_in_its_headers_and_cloudevent(nats_url: str) -> None:
    service = f"traced{id(object())}"
    sender = JetStreamCommandSender(nats_url, source="orders")
    envelope = Envelope(AddProduct(sku="A-1", name="Mug", price="1.50"), message_id="c-1", traceparent=TRACEPARENT)
    try:
        await sender.send(service, envelope)
        js = await sender.connection.jetstream()
        message = await js.get_msg(commands_stream(service), 1)
    finally:
        await sender.close()
    assert message.headers is not None
    assert message.headers["traceparent"] == TRACEPARENT
    assert decode_command(message.data or b"").traceparent == TRACEPARENT


async def test_an_asynchronous_command_runs_in_the_trace_of_the_request_that_queued_it(
    tmp_path: Path, nats_url: str, spans: Spans
) -> None:
    headers = {"traceparent": TRACEPARENT, "X-Correlation-Id": "conversation-2"}
    async with command_api(shop_service(), tmp_path / "events.db", nats_url, workers=1) as api:
        accepted = await queued(api, "AddProduct", {"sku": "A-1", "name": "Mug", "price": "1.50"}, **headers)
        await status_until(api, accepted["status_url"], "succeeded")
        (event,) = await api.events()
        worker = f"twofold.commands.{api.runtime.service.name}"
        metrics = (await api.client.get("/metrics")).text
    assert metric(metrics, "twofold_async_commands_total", worker=worker, outcome="succeeded") == 1
    assert metric(metrics, "twofold_async_commands_total", worker=worker, outcome="retried") == 0
    assert event.metadata["correlation_id"] == "conversation-2"
    assert event.metadata["causation_id"] == accepted["command_id"]
    (request,) = [s for s in spans.in_trace(TRACE_ID) if s.name == "POST /commands/AddProduct"]
    (command,) = spans.named("twofold.command AddProduct", TRACE_ID)
    assert parent_of(request) == SENDER_SPAN
    assert parent_of(command) == span_id(request)  # the worker's span, under the request that queued it
    assert event.metadata["traceparent"].split("-")[2] == f"{span_id(command):016x}"
