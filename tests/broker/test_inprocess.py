"""The in-process feed (embedded mode), and the dead letters on both read stores."""

from __future__ import annotations

import asyncio
from pathlib import Path

from conftest import StoreFactory

from tests.broker.consumer_app import orders_service
from tests.broker.test_consumer import reserve, streams
from twofold import Runtime
from twofold.broker.inprocess import InProcessFeed
from twofold.deadletters import DeadLetter, DeadLetters
from twofold.readmodels.sqlite import SQLiteReadStore
from twofold.store.sqlite import SQLiteEventStore

WAIT_POLLS = 1000  # 10 ms apart


async def test_a_feed_imports_the_subscribed_streams_of_a_store_in_the_same_process_and_resumes(
    tmp_path: Path,
) -> None:
    source = SQLiteEventStore(tmp_path / "inventory.db")
    for number in range(40):
        await reserve(source, f"reservation-o-{number % 4}", number)
    await source.append("stock-1", [])
    service = orders_service("orders", "inventory")

    def feed_for(store: SQLiteEventStore, read_store: SQLiteReadStore) -> InProcessFeed:
        return InProcessFeed(source, "inventory", service, store, read_store, service.subscriptions[0])

    store, read_store = SQLiteEventStore(tmp_path / "orders.db"), SQLiteReadStore(tmp_path / "orders-read.db")
    feed = feed_for(store, read_store)
    async with Runtime(service, store=store, read_store=read_store, workers=[feed]):
        for _ in range(WAIT_POLLS):
            if (await feed.progress()).lag == 0 and await store.head_position() == 40:
                break
            await asyncio.sleep(0.01)
        assert await streams(store, "inventory.") == await streams(source)
    for number in range(40, 50):
        await reserve(source, f"reservation-o-{number % 4}", number)

    store, read_store = SQLiteEventStore(tmp_path / "orders.db"), SQLiteReadStore(tmp_path / "orders-read.db")
    feed = feed_for(store, read_store)
    async with Runtime(service, store=store, read_store=read_store, workers=[feed], project=False):
        assert feed.position == 40  # its checkpoint: the last source position it finished with
        await feed.catch_up()
        assert await store.head_position() == 50
        assert await streams(store, "inventory.") == await streams(source)
    await source.close()


async def test_a_feed_parks_poison_with_the_rest_of_its_stream_and_other_streams_flow(tmp_path: Path) -> None:
    source = SQLiteEventStore(tmp_path / "inventory.db")
    await reserve(source, "reservation-a", "many")
    await reserve(source, "reservation-a")
    await reserve(source, "reservation-b")
    service = orders_service("orders", "inventory")
    store, read_store = SQLiteEventStore(tmp_path / "orders.db"), SQLiteReadStore(tmp_path / "orders-read.db")
    feed = InProcessFeed(
        source, "inventory", service, store, read_store, service.subscriptions[0], max_attempts=2, retry_delays=[0]
    )
    async with Runtime(service, store=store, read_store=read_store, workers=[feed], project=False):
        await feed.catch_up()
        parked = await feed.importer.dead_letters.parked("inventory")
        assert [(p.stream_id, p.version) for p in parked] == [("reservation-a", 1), ("reservation-a", 2)]
        assert list(await streams(store, "inventory.")) == ["reservation-b"]
    await source.close()


async def test_the_dead_letters_work_alike_on_sqlite_and_postgresql(open_stores: StoreFactory) -> None:
    store, read_store = open_stores()
    letters = DeadLetters(read_store)
    await letters.setup()
    await letters.setup()
    first = DeadLetter("inventory", "reservation-a", 2, '{"x": 1}', "ValidationError: quantity", 3, "e-2")
    await letters.park(first)
    await letters.park(DeadLetter("inventory", "reservation-a", 2, "{}", "parked again", 9))  # harmless
    await letters.park(DeadLetter("inventory", "reservation-a", 3, "{}", "waiting behind"))
    await letters.park(DeadLetter("billing", "invoice-1", 1, "{}", "gap"))

    assert await letters.counts() == {"inventory": 2, "billing": 1}
    assert await letters.parked_streams("inventory") == {"reservation-a"}
    [kept, _] = await letters.parked("inventory", "reservation-a")
    assert (kept.version, kept.payload, kept.error, kept.attempts, kept.event_id) == (
        2,
        first.payload,
        first.error,
        3,
        "e-2",
    )
    await letters.failed_again(kept, "still failing")
    await letters.remove("inventory", "reservation-a", 3)
    [again] = await letters.parked("inventory")
    assert (again.error, again.attempts) == ("still failing", 4)
    assert [letter.source for letter in await letters.parked()] == ["billing", "inventory"]
    await store.close()
    await read_store.close()
