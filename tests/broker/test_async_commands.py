"""Asynchronous commands on a real nats-server: 202, a work queue, workers, outcomes any process can read."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from tests.http import Api, assert_problem, order
from tests.http.test_operations import metric
from tests.monolith.domain import Product
from tests.monolith.handlers import add_product, place_order, receive_stock
from tests.monolith.messages import AddProduct, PlaceOrder, ReceiveStock
from twofold import Runtime, Service, UnitOfWork
from twofold.broker._jetstream import outcome_key
from twofold.broker.command_messages import QueuedCommand, decode_command, encode_command
from twofold.broker.commands import CommandWorker, JetStreamCommands, JetStreamCommandSender
from twofold.broker.subjects import commands_stream, commands_subject
from twofold.errors import StoreError
from twofold.http import create_app
from twofold.messages import Envelope
from twofold.store.sqlite import SQLiteEventStore
from twofold.testing.servers import NatsServer, free_port

_services = itertools.count(1)
WAIT = 15.0  # seconds for an outcome to appear before the test fails
RESULT_FIELDS = {"command_id", "stream_id", "version", "position", "events"}


def shop_service(adding: Any = add_product) -> Service:
    """The shop's commands under a service name of this test's own, hence its own work queue."""
    commands: dict[Any, Any] = {AddProduct: adding, ReceiveStock: receive_stock, PlaceOrder: place_order}
    return Service(f"cmds{next(_services)}", commands=commands)


@asynccontextmanager
async def command_api(
    service: Service, database: Path, nats_url: str, *, workers: int = 0, timeout: float = 5.0, **worker_options: Any
) -> AsyncIterator[Api]:
    """A command API process on ``database`` that queues 202s on NATS, with ``workers`` command workers in it."""
    runtime = Runtime(service, store=SQLiteEventStore(database))
    runtime.workers.extend(CommandWorker(runtime, nats_url, **worker_options) for _ in range(workers))
    app = create_app(runtime, queries=False, async_commands=JetStreamCommands(runtime, nats_url, timeout=timeout))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://shop.test") as client,
    ):
        yield Api(app, runtime, client)


@asynccontextmanager
async def worker_runtime(service: Service, database: Path, nats_url: str, **options: Any) -> AsyncIterator[Runtime]:
    """A command-worker process: the service's store and one worker, no HTTP."""
    runtime = Runtime(service, store=SQLiteEventStore(database))
    runtime.workers.append(CommandWorker(runtime, nats_url, **options))
    async with runtime:
        yield runtime


async def queued(api: Api, type_name: str, body: Any, **headers: str) -> dict[str, Any]:
    response = await api.command(type_name, body, Prefer="respond-async", **headers)
    assert response.status_code == 202, response.text
    assert response.headers["location"] == response.json()["status_url"]
    assert response.headers["preference-applied"] == "respond-async"
    accepted: dict[str, Any] = response.json()
    return accepted


async def status_until(api: Api, url: str, wanted: str, *, unknown_at_first: bool = False) -> dict[str, Any]:
    """Poll a status URL until it says ``wanted``; ``unknown_at_first``: 404 until a worker records it."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while True:
        response = await api.client.get(url)
        if unknown_at_first and response.status_code == 404 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
            continue
        assert response.status_code == 200, response.text
        status: dict[str, Any] = response.json()
        if status["status"] == wanted or asyncio.get_running_loop().time() > deadline:
            assert status["status"] == wanted, status
            return status
        await asyncio.sleep(0.02)


async def wait_for(condition: Any, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def publish_raw(nats_url: str, subject: str, payload: bytes, message_id: str) -> None:
    client = await nats.connect(nats_url)
    try:
        await client.jetstream().publish(subject, payload, headers={"Nats-Msg-Id": message_id})
    finally:
        await client.close()


def stocked_commands(skus: Sequence[str]) -> list[Envelope[Any]]:
    return [Envelope(AddProduct(sku=sku, name=f"Product {sku}", price="1.50"), message_id=f"add-{sku}") for sku in skus]


# -- through the command API ---------------------------------------------------------------------


async def test_a_queued_command_is_pending_until_a_worker_runs_it_then_succeeded_with_the_synchronous_result(
    tmp_path: Path, nats_url: str
) -> None:
    service = shop_service()
    async with command_api(service, tmp_path / "events.db", nats_url) as api:
        accepted = await queued(api, "AddProduct", {"sku": "A-1", "name": "Apple", "price": "1.50"})
        assert accepted == {"command_id": accepted["command_id"], "status_url": f"/commands/{accepted['command_id']}"}
        assert (await api.client.get(accepted["status_url"])).json() == {
            "command_id": accepted["command_id"],
            "status": "pending",
        }
        assert await api.head() == 0  # nobody works the queue yet

        async with worker_runtime(service, tmp_path / "events.db", nats_url):
            status = await status_until(api, accepted["status_url"], "succeeded")
        synchronous = await api.ok("ReceiveStock", {"sku": "A-1", "quantity": 3})

    result = status["result"]
    assert set(result) == RESULT_FIELDS == set(synchronous)
    assert result["command_id"] == accepted["command_id"]
    assert (result["stream_id"], result["version"], result["position"]) == ("product-A-1", 1, 1)
    assert [e["type"] for e in result["events"]] == ["shop.ProductAdded"]
    assert set(result["events"][0]) == set(synchronous["events"][0])


async def test_a_command_the_domain_refuses_is_failed_with_the_rule_and_appends_nothing(
    tmp_path: Path, nats_url: str
) -> None:
    async with command_api(shop_service(), tmp_path / "events.db", nats_url, workers=1) as api:
        await api.add_product("A-1", "Apple", stock=3)
        head = await api.head()

        key = {"Idempotency-Key": "order:o-1~1"}  # keys of the outcomes bucket refuse ':' and '~'
        accepted = await queued(api, "PlaceOrder", order("o-1", "c-1", ("A-1", 9)), **key)

        status = await status_until(api, accepted["status_url"], "failed")
        assert status == {
            "command_id": accepted["command_id"],
            "status": "failed",
            "error": "DomainError",
            "detail": "Not enough stock for A-1: ordered 9, available 3",
        }
        assert await api.head() == head


async def test_the_same_idempotency_key_twice_is_applied_once(tmp_path: Path, nats_url: str) -> None:
    async with command_api(shop_service(), tmp_path / "events.db", nats_url, workers=1) as api:
        await api.add_product("A-1", "Apple", stock=3)
        key = {"Idempotency-Key": "order-o-1"}

        first = await queued(api, "PlaceOrder", order("o-1", "c-1", ("A-1", 1)), **key)
        second = await queued(api, "PlaceOrder", order("o-1", "c-1", ("A-1", 1)), **key)
        done = await status_until(api, first["status_url"], "succeeded")
        third = await queued(api, "PlaceOrder", order("o-1", "c-1", ("A-1", 1)), **key)  # after it succeeded
        again = await status_until(api, third["status_url"], "succeeded")

        assert first == second == third
        assert again == done
        assert [e.type for e in await api.events()].count("shop.OrderPlaced") == 1


async def test_a_retry_under_the_same_key_after_a_failure_runs_again_and_reports_its_own_outcome(
    tmp_path: Path, nats_url: str
) -> None:
    async with command_api(shop_service(), tmp_path / "events.db", nats_url, workers=1) as api:
        await api.add_product("A-1", "Apple", stock=3)
        body, key = order("o-1", "c-1", ("A-1", 5)), {"Idempotency-Key": "order-o-1"}
        refused = await queued(api, "PlaceOrder", body, **key)
        await status_until(api, refused["status_url"], "failed")
        await api.ok("ReceiveStock", {"sku": "A-1", "quantity": 2})

        retried = await queued(api, "PlaceOrder", body, **key)

        status = await status_until(api, retried["status_url"], "succeeded")
        assert status["result"]["stream_id"] == "order-o-1"


async def test_the_status_is_readable_from_another_command_api_process(tmp_path: Path, nats_url: str) -> None:
    service = shop_service()
    async with (
        command_api(service, tmp_path / "events.db", nats_url, workers=1) as first,
        command_api(service, tmp_path / "events.db", nats_url) as second,
    ):
        await first.add_product("A-1", "Apple", stock=1)
        refused = await queued(first, "PlaceOrder", order("o-1", "c-1", ("A-1", 2)))
        placed = await queued(first, "PlaceOrder", order("o-2", "c-1", ("A-1", 1)))

        failed = await status_until(second, refused["status_url"], "failed")
        succeeded = await status_until(second, placed["status_url"], "succeeded")
        unknown = await second.client.get("/commands/never-sent")

    assert failed["detail"] == "Not enough stock for A-1: ordered 2, available 1"
    assert succeeded["result"]["stream_id"] == "order-o-2"
    assert unknown.status_code == 404


# -- workers -------------------------------------------------------------------------------------


async def test_two_workers_on_one_queue_handle_every_command_exactly_once(tmp_path: Path, nats_url: str) -> None:
    service, database = shop_service(), tmp_path / "events.db"
    skus = [f"P-{n}" for n in range(400)]
    sender = JetStreamCommandSender(nats_url, source="test")
    for envelope in stocked_commands(skus):
        await sender.send(service.name, envelope)
    await sender.close()

    async with (
        worker_runtime(service, database, nats_url, concurrency=4) as one,
        worker_runtime(service, database, nats_url, concurrency=4) as two,
    ):
        store = one.store
        assert store is not None
        await wait_for(lambda: _head_is(store, len(skus)), "every command to be handled")
        await asyncio.sleep(0.3)  # a second run of any of them would show now
        handled = [w.handled for w in (*one.workers, *two.workers)]  # type: ignore[attr-defined]
        events = [e async for e in store.read_all(1)]
        progress = await one.workers[0].progress()

    assert sorted(e.stream_id for e in events) == sorted(f"product-{sku}" for sku in skus)
    assert sorted(e.metadata["command_id"] for e in events) == sorted(f"add-{sku}" for sku in skus)
    assert sum(handled) == len(skus)
    assert all(handled), handled  # both took a share
    assert (progress.lag, progress.head) == (0, len(skus))


async def _head_is(store: Any, position: int) -> bool:
    return bool(await store.head_position() >= position)


async def test_a_sender_queues_commands_for_another_service_that_its_worker_runs(tmp_path: Path, nats_url: str) -> None:
    inventory = shop_service()
    sender = JetStreamCommandSender(nats_url, source="orders")
    envelope = Envelope(
        AddProduct(sku="A-1", name="Apple", price="1.50"),
        message_id="saga-7-step-1",
        correlation_id="order-7",
        causation_id="event-42",
        principal="saga:orders",
        tenant="acme",
    )
    await sender.send(inventory.name, envelope)
    await sender.send(inventory.name, envelope)  # sent again after a crash, say: queued once
    await sender.close()

    async with worker_runtime(inventory, tmp_path / "inventory.db", nats_url) as runtime:
        store = runtime.store
        assert store is not None
        await wait_for(lambda: _head_is(store, 1), "the command to be handled")
        [event] = [e async for e in store.read_all(1)]
        await asyncio.sleep(0.2)
        assert await store.head_position() == 1

    assert event.type == "shop.ProductAdded"
    assert {k: event.metadata[k] for k in ("command_id", "correlation_id", "principal", "tenant")} == {
        "command_id": "saga-7-step-1",
        "correlation_id": "order-7",
        "principal": "saga:orders",
        "tenant": "acme",
    }


def test_a_command_envelope_survives_the_wire_whole() -> None:
    envelope = Envelope(
        AddProduct(sku="A-1", name="Äpple", price="1.50"),
        message_id="c-1",
        correlation_id="order-7",
        causation_id="event-42",
        principal="saga:orders",
    )

    decoded = decode_command(encode_command(envelope, source="orders"))

    assert decoded == QueuedCommand(
        command_id="c-1",
        type="AddProduct",
        data={"sku": "A-1", "name": "Äpple", "price": "1.50"},
        source="orders",
        time=envelope.time,
        correlation_id="order-7",
        causation_id="event-42",
        principal="saga:orders",
        tenant=None,
    )


@pytest.mark.parametrize(
    ("payload", "error", "detail"),
    [
        (b"{not json", "InvalidMessage", "is not a command: Invalid CloudEvent: attribute '(message)' is not JSON"),
        (
            b'{"specversion":"1.0","id":"bad","source":"x","type":"Teleport","time":"2026-11-26T15:00:00Z","data":{}}',
            "NotFound",
            "No command type 'Teleport'; service",
        ),
        (
            b'{"specversion":"1.0","id":"bad","source":"x","type":"AddProduct","time":"2026-11-26T15:00:00Z",'
            b'"data":{"sku":"A-1"}}',
            "InvalidMessage",
            "Invalid AddProduct: name: Field required; price: Field required",
        ),
    ],
    ids=["not-json", "unknown-type", "invalid-fields"],
)
async def test_a_malformed_message_is_recorded_failed_and_the_worker_keeps_going(
    tmp_path: Path, nats_url: str, payload: bytes, error: str, detail: str
) -> None:
    service = shop_service()
    async with command_api(service, tmp_path / "events.db", nats_url, workers=1) as api:
        before = await queued(api, "AddProduct", {"sku": "A-1", "name": "Apple", "price": "1.50"})
        await status_until(api, before["status_url"], "succeeded")

        await publish_raw(nats_url, commands_subject(service.name, "AddProduct"), payload, "bad")

        failed = await status_until(api, "/commands/bad", "failed", unknown_at_first=True)
        after = await queued(api, "AddProduct", {"sku": "B-2", "name": "Banana", "price": "1.50"})
        await status_until(api, after["status_url"], "succeeded")

    assert failed["error"] == error
    assert detail in failed["detail"], failed["detail"]


async def test_a_command_that_fails_on_the_store_is_tried_again_until_it_succeeds(
    tmp_path: Path, nats_url: str
) -> None:
    attempts = 0

    async def flaky(command: AddProduct, uow: UnitOfWork) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise StoreError("the database is restarting")
        await add_product(command, uow)

    async with command_api(shop_service(flaky), tmp_path / "e.db", nats_url, workers=1) as api:
        accepted = await queued(api, "AddProduct", {"sku": "A-1", "name": "Apple", "price": "1.50"})
        await status_until(api, accepted["status_url"], "succeeded")

    assert attempts == 3


async def test_a_command_that_keeps_failing_unexpectedly_is_failed_after_its_last_attempt(
    tmp_path: Path, nats_url: str
) -> None:
    async def broken(command: AddProduct, uow: UnitOfWork) -> None:
        raise RuntimeError("password=hunter2")

    service = shop_service(broken)
    async with command_api(service, tmp_path / "e.db", nats_url, workers=1, max_attempts=2) as api:
        accepted = await queued(api, "AddProduct", {"sku": "A-1", "name": "Apple", "price": "1.50"})
        status = await status_until(api, accepted["status_url"], "failed")

    assert status == {
        "command_id": accepted["command_id"],
        "status": "failed",
        "error": "InternalError",
        "detail": "The command failed unexpectedly",
    }


async def test_the_work_queue_is_a_file_backed_work_queue_stream_with_a_duplicate_window(nats_url: str) -> None:
    sender = JetStreamCommandSender(nats_url)
    await sender.send("stream-shape", stocked_commands(["A-1"])[0])
    await sender.close()
    client = await nats.connect(nats_url)
    try:
        info = await client.jetstream().stream_info(commands_stream("stream-shape"))
    finally:
        await client.close()
    assert info.config.subjects == ["twofold.stream-shape.commands.>"]
    assert (info.config.retention, info.config.storage) == ("workqueue", "file")
    assert info.config.duplicate_window == 120.0
    assert info.state.messages == 1


async def test_while_nats_is_unreachable_a_queued_command_is_refused_with_503_and_successes_still_answer(
    tmp_path: Path,
) -> None:
    nobody = f"nats://127.0.0.1:{free_port()}"
    async with command_api(shop_service(), tmp_path / "events.db", nobody, timeout=0.5) as api:
        response = await api.command(
            "AddProduct", {"sku": "A-1", "name": "Apple", "price": "1.50"}, Prefer="respond-async"
        )
        body = {"sku": "B-2", "name": "Banana", "price": "2.25"}
        synchronous = await api.ok("AddProduct", body, **{"Idempotency-Key": "sync-1"})
        applied = await api.client.get("/commands/sync-1")
        unknown = await api.client.get("/commands/who-knows")
        assert await api.head() == 1  # only the synchronous one

    body = assert_problem(response, 503, "broker")
    assert body["detail"] == "The message broker could not take the request; try again"
    assert applied.json() == {"command_id": "sync-1", "status": "succeeded", "result": synchronous}
    assert_problem(unknown, 503, "broker")  # it may be queued: NATS alone could say


async def test_a_worker_frozen_with_commands_waiting_is_stuck_on_ready_and_metrics(
    tmp_path: Path, nats_url: str
) -> None:
    gate = asyncio.Event()

    async def frozen(command: AddProduct, uow: UnitOfWork) -> None:
        await gate.wait()

    service = shop_service(frozen)
    runtime = Runtime(service, store=SQLiteEventStore(tmp_path / "events.db"))
    worker = CommandWorker(runtime, nats_url)
    runtime.workers.append(worker)
    app = create_app(runtime, async_commands=JetStreamCommands(runtime, nats_url), stall_after=0.3)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://shop.test") as client,
    ):
        api = Api(app, runtime, client)
        try:
            await queued(api, "AddProduct", {"sku": "A-1", "name": "Apple", "price": "1.50"})
            await asyncio.sleep(0.8)

            body = assert_problem(await client.get("/ready"), 503, "not-ready")
            assert list(body["stuck"]) == [worker.name]
            text = (await client.get("/metrics")).text
            assert metric(text, "twofold_worker_stuck", worker=worker.name) == 1
        finally:
            gate.set()


def test_every_command_id_has_a_key_of_its_own_in_the_outcomes_bucket() -> None:
    ids = ["order-o-1", "order:o-1", "order~o-1", "order.o-1", "=b3JkZXI", "a" * 128]
    keys = [outcome_key(command_id) for command_id in ids]
    assert keys[0] == "order-o-1"
    assert len(set(keys)) == len(ids)
    assert all(re.fullmatch(r"[-/_=.a-zA-Z0-9]+", key) for key in keys)


async def test_a_worker_stopped_while_a_command_runs_finishes_it_first(tmp_path: Path, nats_url: str) -> None:
    started, gate = asyncio.Event(), asyncio.Event()

    async def slow(command: AddProduct, uow: UnitOfWork) -> None:
        started.set()
        await gate.wait()
        await add_product(command, uow)

    service = shop_service(slow)
    async with command_api(service, tmp_path / "events.db", nats_url) as api:
        accepted = await queued(api, "AddProduct", {"sku": "A-1", "name": "Apple", "price": "1.50"})
        async with worker_runtime(service, tmp_path / "events.db", nats_url) as runtime:
            await asyncio.wait_for(started.wait(), WAIT)
            asyncio.get_running_loop().call_later(0.2, gate.set)
        # the runtime has stopped: the command finished, and was acknowledged, before it did
        status = await status_until(api, accepted["status_url"], "succeeded")
        assert runtime.workers[0].handled == 1  # type: ignore[attr-defined]
    assert status["result"]["stream_id"] == "product-A-1"


async def test_a_queued_command_that_appends_nothing_still_reports_succeeded(tmp_path: Path, nats_url: str) -> None:
    async def nothing_to_do(command: AddProduct, uow: UnitOfWork) -> None:
        await uow.load(Product, command.sku)

    async with command_api(shop_service(nothing_to_do), tmp_path / "events.db", nats_url, workers=1) as api:
        accepted = await queued(api, "AddProduct", {"sku": "A-1", "name": "Apple", "price": "1.50"})
        status = await status_until(api, accepted["status_url"], "succeeded")
        assert await api.head() == 0

    assert status["result"] == {
        "command_id": accepted["command_id"],
        "stream_id": "product-A-1",
        "version": 0,
        "position": None,
        "events": [],
    }


@pytest.mark.slow
async def test_nats_crashing_and_restarting_while_commands_run_loses_none_and_applies_none_twice(
    tmp_path: Path,
) -> None:
    service, skus = shop_service(), [f"P-{n}" for n in range(600)]
    with NatsServer(tmp_path / "nats") as server:
        sender = JetStreamCommandSender(server.url, source="test")
        for envelope in stocked_commands(skus):
            await sender.send(service.name, envelope)
        await sender.close()
        async with worker_runtime(service, tmp_path / "events.db", server.url, concurrency=4) as runtime:
            store = runtime.store
            assert store is not None
            await wait_for(lambda: _head_is(store, 1), "the first command to be handled")
            server.stop(fast=False)  # a crash (SIGKILL) with commands in flight
            await asyncio.sleep(1.0)
            at_crash = await store.head_position()
            server.start()  # the same store and port
            await wait_for(lambda: _head_is(store, len(skus)), "every command after the restart")
            await asyncio.sleep(0.5)  # a second run of any of them would show now
            events = [e async for e in store.read_all(1)]

    assert sorted(e.metadata["command_id"] for e in events) == sorted(f"add-{sku}" for sku in skus)
    assert at_crash < len(skus)  # it really went down with commands queued
