"""Source store → relay → JetStream → consumer → target store, against a real nats-server."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import pytest
from conftest import StoreFactory

from tests.broker.consumer_app import orders_service
from tests.http import assert_problem, serve
from tests.http.test_operations import metric
from twofold.broker.cloudevents import CONTENT_TYPE, encode
from twofold.broker.consumer import JetStreamConsumer, consumer_name
from twofold.broker.nats import JetStreamRelay
from twofold.broker.subjects import events_subject
from twofold.errors import StoreError
from twofold.readmodels.sqlite import SQLiteReadStore
from twofold.store import EventStore, NewEvent
from twofold.store.sqlite import SQLiteEventStore
from twofold.subscriptions import imported_stream_id

_names = itertools.count(1)
WAIT = 20.0  # seconds for the consumer to catch up before a test fails

Streams = dict[str, list[tuple[int, str, str, Any]]]


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"not within {WAIT}s: {what}")
        await asyncio.sleep(0.02)


async def streams(store: EventStore, prefix: str = "") -> Streams:
    """Every stream under ``prefix`` (which is cut off), as (version, id, type, data) in version order."""
    found: Streams = {}
    async for event in store.read_all(1):
        if event.stream_id.startswith(prefix) and event.category in (f"{prefix}reservation",):
            found.setdefault(event.stream_id.removeprefix(prefix), []).append(
                (event.version, event.event_id, event.type, dict(event.data))
            )
    return found


async def reserve(store: EventStore, stream: str, quantity: object = 1) -> None:
    await store.append(stream, [NewEvent("inventory.StockReserved", {"sku": "A-1", "quantity": quantity})])


class Pair:
    """A source service relayed to JetStream, and a target service's stores, on fresh SQLite files."""

    def __init__(self, tmp_path: Path, nats_url: str) -> None:
        number = next(_names)
        self.source, self.target = f"inv{number}", f"ord{number}"
        self.nats_url = nats_url
        self.source_store = SQLiteEventStore(tmp_path / "source.db", durability="normal")
        self.source_read = SQLiteReadStore(tmp_path / "source-read.db")
        self.store = SQLiteEventStore(tmp_path / "target.db", durability="normal")
        self.read_store = SQLiteReadStore(tmp_path / "target-read.db")
        self.relay = JetStreamRelay(self.source, self.source_store, self.source_read, nats_url)
        self.consumers: list[JetStreamConsumer] = []

    def consumer(self, *, fixed: bool = False, **options: Any) -> JetStreamConsumer:
        service = orders_service(self.target, self.source, fixed=fixed)
        made = JetStreamConsumer(
            service, self.store, self.read_store, service.subscriptions[0], self.nats_url, **options
        )
        self.consumers.append(made)
        return made

    async def imported(self) -> Streams:
        return await streams(self.store, f"{self.source}.")

    async def close(self) -> None:
        for consumer in self.consumers:
            await consumer.stop()
        await self.relay.stop()
        for store in (self.source_store, self.source_read, self.store, self.read_store):
            await store.close()


@pytest.fixture
async def pair(tmp_path: Path, nats_url: str) -> AsyncIterator[Pair]:
    made = Pair(tmp_path, nats_url)
    yield made
    await made.close()


async def test_relayed_streams_arrive_whole_at_the_same_versions_and_other_categories_stay_out(pair: Pair) -> None:
    for number in range(300):
        await reserve(pair.source_store, f"reservation-o-{number % 7}", number)
        if number % 10 == 0:
            await pair.source_store.append(f"stock-{number}", [NewEvent("inventory.StockReceived", {"n": number})])
    await pair.relay.start()
    consumer = pair.consumer(batch_size=64)
    await consumer.start()
    expected = await streams(pair.source_store)

    async def arrived() -> bool:
        return await pair.imported() == expected

    await eventually(arrived, "every reservation stream imported")
    assert await pair.store.head_position() == 300  # no stock events, nothing twice
    imported = [e async for e in pair.store.read_stream(imported_stream_id(pair.source, "reservation-o-0"))]
    assert imported[0].metadata["source"] == pair.source
    assert [e.metadata["source_position"] for e in imported][:2] == [1, 9]
    assert consumer.name == consumer_name(pair.target, pair.source) == f"twofold_{pair.target}_from_{pair.source}"


async def test_a_restarted_consumer_resumes_where_it_was_and_a_late_duplicate_changes_nothing(pair: Pair) -> None:
    for number in range(50):
        await reserve(pair.source_store, f"reservation-o-{number % 3}")
    await pair.relay.start()
    first = pair.consumer()
    await first.start()
    await eventually(lambda: _head_is(pair.store, 50), "the first 50 imported")
    await first.stop()
    # Only the relay writes to the stream; with it running, a message slipped in beside its
    # pipelined publishes would be out of its numbering, which is not what this test is about.
    await pair.relay.stop()

    [original] = [e async for e in pair.source_store.read_all(1, limit=1)]
    client = await nats.connect(pair.nats_url)
    try:  # the same event again, past JetStream's deduplication: another message id
        subject = events_subject(pair.source, original.category, original.type)
        headers = {"Nats-Msg-Id": "another-id", "Content-Type": CONTENT_TYPE}
        await client.jetstream().publish(subject, encode(original, pair.source), headers=headers)
    finally:
        await client.close()
    for number in range(50, 80):
        await reserve(pair.source_store, f"reservation-o-{number % 3}")
    await pair.relay.start()
    second = pair.consumer()
    await second.start()

    await eventually(lambda: _head_is(pair.store, 80), "the next 30 imported")
    await asyncio.sleep(0.2)
    assert await pair.store.head_position() == 80
    assert await pair.imported() == await streams(pair.source_store)
    assert (await second.progress()).lag == 0


async def _head_is(store: EventStore, position: int) -> bool:
    return await store.head_position() >= position


async def test_poison_is_parked_shown_in_metrics_and_drained_through_the_api_after_the_fix(
    pair: Pair, tmp_path: Path
) -> None:
    await reserve(pair.source_store, "reservation-a")
    await reserve(pair.source_store, "reservation-a", "many")  # the class says int: poison
    await reserve(pair.source_store, "reservation-a")
    await reserve(pair.source_store, "reservation-b")
    await pair.relay.start()
    consumer = pair.consumer(max_attempts=2, retry_delays=[0.05])
    service = orders_service(pair.target, pair.source)
    stores = lambda: (pair.store, pair.read_store)  # noqa: E731

    async with serve(service, tmp_path, stores=stores, workers=[consumer]) as api:

        async def parked() -> bool:
            return len((await api.client.get("/dead-letters")).json()["dead_letters"]) == 2

        await eventually(parked, "the poison and the event behind it parked")
        await eventually(lambda: _head_is(pair.store, 2), "the other stream imported")
        listed = (await api.client.get("/dead-letters", params={"source": pair.source})).json()["dead_letters"]
        assert [(d["stream_id"], d["version"]) for d in listed] == [("reservation-a", 2), ("reservation-a", 3)]
        assert "quantity" in listed[0]["error"]
        assert listed[0]["attempts"] == 2
        text = (await api.client.get("/metrics")).text
        assert metric(text, "twofold_dead_letters", source=pair.source) == 2
        assert metric(text, "twofold_worker_lag_events", worker=consumer.name) == 0
        retried = await api.client.post("/dead-letters/retry", json={"source": pair.source})
        assert retried.json() == {"retried": {pair.source: {"imported": 0, "parked": 2}}}  # no fix yet
        assert_problem(await api.client.get("/dead-letters", params={"source": "nobody"}), 404, "not-found")
        assert_problem(await api.client.post("/dead-letters/retry", content=b"{oops"), 400, "bad-request")
        source = await streams(pair.source_store)
        assert await pair.imported() == {
            "reservation-a": source["reservation-a"][:1],
            "reservation-b": source["reservation-b"],
        }

    pair.store = SQLiteEventStore(tmp_path / "target.db")  # the app closed them: the same files, opened again
    pair.read_store = SQLiteReadStore(tmp_path / "target-read.db")
    fixed = pair.consumer(fixed=True)
    service = orders_service(pair.target, pair.source, fixed=True)
    async with serve(service, tmp_path, stores=lambda: (pair.store, pair.read_store), workers=[fixed]) as api:
        retried = await api.client.post("/dead-letters/retry", params={"source": pair.source})
        assert retried.json() == {"retried": {pair.source: {"imported": 2, "parked": 0}}}
        assert (await api.client.get("/dead-letters")).json() == {"dead_letters": []}
        assert metric((await api.client.get("/metrics")).text, "twofold_dead_letters", source=pair.source) == 0
        assert await pair.imported() == await streams(pair.source_store)
    pair.store = SQLiteEventStore(tmp_path / "target.db")  # for the fixture to close
    pair.read_store = SQLiteReadStore(tmp_path / "target-read.db")


class FailingStore:
    """The target store, failing its first ``failures`` appends as a database that is down would."""

    def __init__(self, store: EventStore, failures: int) -> None:
        self._store, self.failures = store, failures

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def _fail(self) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("the database is down")

    async def append(self, *args: Any, **kwargs: Any) -> Any:
        await self._fail()
        return await self._store.append(*args, **kwargs)

    async def append_streams(self, *args: Any, **kwargs: Any) -> Any:
        await self._fail()
        return await self._store.append_streams(*args, **kwargs)


async def test_a_store_failure_mid_batch_is_retried_and_loses_nothing(pair: Pair) -> None:
    for number in range(40):
        await reserve(pair.source_store, f"reservation-o-{number % 5}")
    await pair.relay.start()
    failing = FailingStore(pair.store, failures=3)
    service = orders_service(pair.target, pair.source)
    consumer = JetStreamConsumer(
        service, failing, pair.read_store, service.subscriptions[0], pair.nats_url, batch_size=8, retry_delays=[0.05]
    )
    pair.consumers.append(consumer)
    await consumer.start()

    await eventually(lambda: _head_is(pair.store, 40), "everything imported once the store is back")
    assert failing.failures == 0
    assert await pair.imported() == await streams(pair.source_store)
    assert await pair.store.head_position() == 40


async def test_a_consumer_that_cannot_import_while_messages_wait_turns_ready_red(pair: Pair, tmp_path: Path) -> None:
    for number in range(5):
        await reserve(pair.source_store, f"reservation-o-{number}")
    await pair.relay.start()
    failing = FailingStore(pair.store, failures=10**6)  # the database stays down
    service = orders_service(pair.target, pair.source)
    consumer = JetStreamConsumer(service, failing, pair.read_store, service.subscriptions[0], pair.nats_url)
    pair.consumers.append(consumer)
    stores = lambda: (pair.store, pair.read_store)  # noqa: E731

    async with serve(service, tmp_path, stores=stores, workers=[consumer], stall_after=0.3) as api:

        async def stuck() -> bool:
            return (await api.client.get("/ready")).status_code == 503

        await eventually(stuck, "/ready to say the consumer is stuck")
        body = assert_problem(await api.client.get("/ready"), 503, "not-ready")
        assert list(body["stuck"]) == [consumer.name]
        text = (await api.client.get("/metrics")).text
        assert metric(text, "twofold_worker_stuck", worker=consumer.name) == 1
        assert metric(text, "twofold_worker_lag_events", worker=consumer.name) == 5
    pair.store = SQLiteEventStore(tmp_path / "target.db")  # the app closed them; the fixture closes these
    pair.read_store = SQLiteReadStore(tmp_path / "target-read.db")


async def test_a_consumer_imports_into_either_backend(tmp_path: Path, nats_url: str, open_stores: StoreFactory) -> None:
    source, number = Pair(tmp_path, nats_url), next(_names)
    target_name = f"pgord{number}"
    store, read_store = open_stores()
    for count in range(60):
        await reserve(source.source_store, f"reservation-o-{count % 4}", count)
    await source.relay.start()
    service = orders_service(target_name, source.source)
    consumer = JetStreamConsumer(service, store, read_store, service.subscriptions[0], nats_url, batch_size=16)
    try:
        await consumer.start()
        await eventually(lambda: _head_is(store, 60), "every event imported")
        assert await streams(store, f"{source.source}.") == await streams(source.source_store)
        assert await store.head_position() == 60
    finally:
        await consumer.stop()
        await store.close()
        await read_store.close()
        await source.close()
