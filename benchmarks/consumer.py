"""Imports/s through the JetStream consumer into a SQLite event store, NATS and stores on this machine.

    python -m benchmarks.consumer            # 20,000 events over 200 streams

The source's events are appended and relayed to JetStream first; the clock runs only while a
fresh consumer imports them all (fetch, decode, validate, append at the same versions, acknowledge).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from twofold import Database, Event, Projection, Service, StoredEvent
from twofold.broker.consumer import JetStreamConsumer
from twofold.broker.nats import JetStreamRelay
from twofold.readmodels.sqlite import SQLiteReadStore
from twofold.store import NewEvent
from twofold.store.sqlite import SQLiteEventStore
from twofold.subscriptions import Subscription
from twofold.testing.servers import NatsServer

EVENTS = 20_000
STREAMS = 200
PAYLOAD = {"sku": "A-1", "name": "x" * 150, "quantity": 3}


class StockReserved(Event, name="bench.StockReserved"):
    sku: str
    name: str
    quantity: int


class Reservations(Projection, name="bench.reservations"):
    def apply(self, event: StockReserved, db: Database, record: StoredEvent) -> None:
        pass


async def relayed(folder: Path, nats_url: str) -> None:
    source = SQLiteEventStore(folder / "source.db", durability="normal")
    for start in range(0, EVENTS, 500):
        for number in range(start, start + 500):
            await source.append(f"reservation-{number % STREAMS}", [NewEvent("bench.StockReserved", PAYLOAD)])
    read = SQLiteReadStore(folder / "source-read.db")
    relay = JetStreamRelay("benchsource", source, read, nats_url)
    await relay.start()
    while (await relay.progress()).lag:  # noqa: ASYNC110 - the relay works in its own task
        await asyncio.sleep(0.05)
    await relay.stop()
    await read.close()
    await source.close()


async def imports_per_second(folder: Path, nats_url: str, batch_size: int) -> float:
    service = Service(
        "benchtarget", projections=[Reservations()], subscriptions=[Subscription("benchsource", ["reservation"])]
    )
    store = SQLiteEventStore(folder / f"target-{batch_size}.db")  # durability "full": every commit synced
    read_store = SQLiteReadStore(folder / f"target-{batch_size}-read.db")
    consumer = JetStreamConsumer(service, store, read_store, service.subscriptions[0], nats_url, batch_size=batch_size)
    consumer.name = f"{consumer.name}_{batch_size}"  # a fresh durable consumer: from the first event
    started = time.perf_counter()
    await consumer.start()
    while await store.head_position() < EVENTS:  # noqa: ASYNC110 - the consumer works in its own task
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    await consumer.stop()
    await store.close()
    await read_store.close()
    return EVENTS / elapsed


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder, NatsServer(Path(folder) / "nats") as server:
        await relayed(Path(folder), server.url)
        for batch_size in (64, 256, 1000):
            rate = await imports_per_second(Path(folder), server.url, batch_size)
            print(f"consumer, SQLite (full durability), batch {batch_size:>4}: {rate:>8,.0f} imports/s")


if __name__ == "__main__":
    asyncio.run(main())
