"""``subscribe_latency``: from an append to a live subscriber holding the event, p50 and p99 in ms.

A subscriber follows the store live (``store.subscribe(head + 1)``, already caught up and waiting)
while a writer appends one event at a time, one every 5 ms by the clock. Each event's latency runs
from the moment its append is called to the moment the subscriber yields it, so it includes the
append's own commit (and its sync to disk). SQLite: the writer and subscriber share the store, as
in one process (embedded), where the store wakes followers the moment an append returns; another
process would find the event by polling, every 50 ms. PostgreSQL: writer and subscriber each have
their own store, as two processes would, and the subscriber is woken by LISTEN/NOTIFY. The limit
(PostgreSQL only; SQLite has no notification to compare with) is asyncpg alone: one transaction
that inserts the row and NOTIFYs, and a listener on a second connection.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks.shape import EVENT_TYPE, PAYLOAD, Shape
from benchmarks.workloads._common import Progress, database_name, percentile, row
from twofold import ANY, EventStore, NewEvent
from twofold.store.postgres import PostgresEventStore
from twofold.store.sqlite import SQLiteEventStore
from twofold.testing.servers import PostgresServer

WORKLOAD = "subscribe_latency"
APPENDS = 300  # measured per run
WARMUP = 10  # appends before those, not measured: connections open, code paths warm
SPACING = 0.005  # seconds between appends, by the clock
STREAMS = 10  # appends go round these streams
TIMEOUT = 30.0  # seconds a run may take before it has failed
BODY = json.dumps(PAYLOAD)

Run = Callable[[], Awaitable[list[float]]]


async def measure(shape: Shape, postgres: PostgresServer, folder: Path, progress: Progress) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    counter = iter(range(1_000_000))

    def sqlite_run() -> Awaitable[list[float]]:
        store = SQLiteEventStore(folder / f"subscribe-{next(counter)}.db")
        return _twofold(store, store)

    results += await _runs("sqlite", {"twofold": sqlite_run}, shape, progress)

    url = postgres.create_database(database_name("subscribe"))
    systems: dict[str, Run] = {
        "twofold": lambda: _twofold(PostgresEventStore(url), PostgresEventStore(url)),
        "limit": lambda: _limit_postgres(url),
    }
    results += await _runs("postgresql", systems, shape, progress)
    return results


async def _runs(backend: str, systems: dict[str, Run], shape: Shape, progress: Progress) -> list[dict[str, Any]]:
    p50s: dict[str, list[float]] = {name: [] for name in systems}
    p99s: dict[str, list[float]] = {name: [] for name in systems}
    for run in range(shape.runs):
        for name, once in systems.items():
            latencies = await once()
            assert len(latencies) == APPENDS, (len(latencies), APPENDS)
            p50s[name].append(percentile(latencies, 50) * 1000)
            p99s[name].append(percentile(latencies, 99) * 1000)
            progress(
                f"  {WORKLOAD:22} {backend:10} run {run + 1}/{shape.runs} {name:8}"
                f" p50 {p50s[name][-1]:6.2f} ms  p99 {p99s[name][-1]:6.2f} ms"
            )
    results = []
    for name in systems:
        for statistic, values in (("p50", p50s[name]), ("p99", p99s[name])):
            results.append(
                row(WORKLOAD, backend, name, values, "ms", statistic=statistic, lower_is_better=True, digits=2)
            )
    return results


async def _paced(append: Callable[[int], Awaitable[None]]) -> None:
    """Call ``append(i)`` for every event, each at its slot on the clock (never two at once)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(WARMUP + APPENDS):
        delay = start + i * SPACING - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await append(i)


async def _twofold(writer: EventStore, reader: EventStore) -> list[float]:
    """Append through ``writer``; a task follows ``reader`` and stamps each event as it arrives."""
    sent: dict[str, float] = {}
    arrived: dict[str, float] = {}

    async def follow(head: int) -> None:
        async for event in reader.subscribe(head + 1):
            arrived[event.event_id] = time.perf_counter()
            if len(arrived) == WARMUP + APPENDS:
                return

    async def append(i: int) -> None:
        event = NewEvent(EVENT_TYPE, PAYLOAD)
        sent[event.event_id] = time.perf_counter()
        await writer.append(f"counter-s{i % STREAMS}", [event], ANY)

    follower: asyncio.Task[None] | None = None
    try:
        follower = asyncio.create_task(follow(await reader.head_position()))
        await asyncio.sleep(0.1)  # the subscriber reads the (empty) tail and starts waiting live
        await _paced(append)
        await asyncio.wait_for(follower, TIMEOUT)
    finally:
        if follower is not None and not follower.done():
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
        await writer.close()
        if reader is not writer:
            await reader.close()
    return _latencies(sent, arrived)


def _latencies(sent: dict[str, float], arrived: dict[str, float]) -> list[float]:
    """In append order, without the warm-up; every event sent must have arrived, exactly once."""
    assert sent.keys() == arrived.keys(), "the subscriber missed or invented events"
    ordered = sorted(sent, key=sent.__getitem__)[WARMUP:]
    return [arrived[k] - sent[k] for k in ordered]


async def _limit_postgres(url: str) -> list[float]:
    """asyncpg alone: INSERT … RETURNING and pg_notify in one transaction; LISTEN on another connection."""
    writer, listener = await asyncpg.connect(url), await asyncpg.connect(url)
    sent: dict[str, float] = {}
    arrived: dict[str, float] = {}
    done = asyncio.Event()

    def notified(connection: object, pid: int, channel: str, payload: object) -> None:
        arrived[str(payload)] = time.perf_counter()
        if len(arrived) == WARMUP + APPENDS:
            done.set()

    try:
        await writer.execute(
            "CREATE TABLE IF NOT EXISTS limit_events (position bigserial PRIMARY KEY, data json NOT NULL)"
        )
        await listener.add_listener("limit_events", notified)

        async def append(i: int) -> None:
            started = time.perf_counter()
            async with writer.transaction():
                position = await writer.fetchval("INSERT INTO limit_events (data) VALUES ($1) RETURNING position", BODY)
                await writer.execute("SELECT pg_notify('limit_events', $1)", str(position))
            sent[str(position)] = started

        await _paced(append)
        await asyncio.wait_for(done.wait(), TIMEOUT)
    finally:
        await writer.close()
        await listener.close()
    return _latencies(sent, arrived)
