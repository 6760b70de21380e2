"""How long inspection takes on a store of a million events: a page of streams, and one correlation.

    python benchmarks/inspection.py                 # SQLite and PostgreSQL, 1,000,000 events each
    python benchmarks/inspection.py --events 100000

The store holds 100,000 streams of 10 events in 4 categories; each correlation is one stream's
10 events. Both answers come from indexes, so they take about as long on a million events as on
a thousand; filling the store takes most of the run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from twofold.store import EventStore, NewEvent, StreamWrite
from twofold.store.postgres import PostgresEventStore
from twofold.store.sqlite import SQLiteEventStore
from twofold.testing.servers import PostgresServer

PER_STREAM = 10
STREAMS_PER_APPEND = 100
CATEGORIES = ("order", "payment", "stock", "cart")
SAMPLES = 50


async def fill(store: EventStore, events: int) -> None:
    streams = events // PER_STREAM
    for first in range(0, streams, STREAMS_PER_APPEND):
        writes = [
            StreamWrite(
                f"{CATEGORIES[n % len(CATEGORIES)]}-{n:07}",
                [NewEvent("bench.Happened", {"n": i}, {"correlation_id": f"c-{n}"}) for i in range(PER_STREAM)],
            )
            for n in range(first, min(first + STREAMS_PER_APPEND, streams))
        ]
        await store.append_streams(writes)


async def median_ms(work: Callable[[int], Awaitable[object]]) -> float:
    times = []
    for sample in range(SAMPLES):
        started = time.perf_counter()
        await work(sample)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def measure(name: str, store: EventStore, events: int) -> None:
    started = time.perf_counter()
    await fill(store, events)
    print(f"{name}: {events:,} events written in {time.perf_counter() - started:.0f} s")
    streams = events // PER_STREAM

    async def first_page(_: int) -> object:
        return await store.streams(limit=100)

    async def category_page(sample: int) -> object:
        return await store.streams(category="payment", after=f"payment-{sample * streams // SAMPLES:07}", limit=100)

    async def correlation(sample: int) -> object:
        return [e async for e in store.read_correlated(f"c-{sample * streams // SAMPLES}")]

    for label, work in [
        ("streams, first page of 100", first_page),
        ("streams of a category, a later page", category_page),
        ("read_correlated, 10 events", correlation),
    ]:
        print(f"  {label:<38} {await median_ms(work):7.2f} ms (median of {SAMPLES})")


async def main(events: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = SQLiteEventStore(Path(folder) / "events.db", durability="normal")
        try:
            await measure("SQLite", store, events)
        finally:
            await store.close()
        with PostgresServer(Path(folder) / "postgres", settings={"fsync": "off"}) as server:
            pg = PostgresEventStore(server.create_database("inspection"))
            try:
                await measure("PostgreSQL", pg, events)
            finally:
                await pg.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    asyncio.run(main(parser.parse_args().events))
