"""``projection_catchup``: a projection building a SQL read model from position 0, in events/s.

twofold runs its ``Projection`` the way a service does: a ``Runtime`` starts the projection runner,
which reads pages of 500 and applies each page and its checkpoint in one read-store transaction;
the clock stops when the runner's committed checkpoint reaches the head. The limit does the same
work with the raw driver and nothing else: read 500 rows, decode their JSON, upsert the rows and the
checkpoint in one transaction. Both write the same table with the same upsert, and both are checked
afterwards (every stream present, every event counted once).

eventsourcing is left out. Its documented projection API (``eventsourcing.projection``:
``Projection``, ``ProjectionRunner`` and a ``TrackingRecorder`` as the materialised view) follows
the application through ``ApplicationRecorder.subscribe``, which its SQLite recorder does not
implement (it raises ``NotImplementedError``), so there is nothing to run on SQLite. On PostgreSQL
it runs, one event and its tracking record per transaction; that comparison is left for later.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks.shape import EVENT_TYPE, Shape
from benchmarks.workloads._common import Progress, database_name, row, seed_postgres, seed_sqlite
from benchmarks.workloads._projection import BENCH, TABLE, StreamTotals, totals
from twofold import Runtime
from twofold.readmodels import ReadStore
from twofold.readmodels.postgres import PostgresReadStore
from twofold.readmodels.sqlite import SQLiteReadStore
from twofold.store import EventStore
from twofold.store.postgres import PostgresEventStore
from twofold.store.sqlite import SQLiteEventStore
from twofold.testing.servers import PostgresServer

WORKLOAD = "projection_catchup"
PAGE = 500  # as twofold's runner
TIMEOUT = 600.0  # seconds; a catch-up that takes longer has failed

LIMIT_TABLE = "limit_stream_totals"
LIMIT_UPSERT = (
    f"INSERT INTO {LIMIT_TABLE} (stream_id, events, quantity, last_position) VALUES ($1, 1, $2, $3)"
    f" ON CONFLICT (stream_id) DO UPDATE SET events = {LIMIT_TABLE}.events + 1,"
    f" quantity = {LIMIT_TABLE}.quantity + excluded.quantity, last_position = excluded.last_position"
)
LIMIT_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {LIMIT_TABLE} (stream_id TEXT PRIMARY KEY, events INTEGER NOT NULL,"
    " quantity INTEGER NOT NULL, last_position BIGINT NOT NULL);"
    " CREATE TABLE IF NOT EXISTS limit_checkpoints (projection TEXT PRIMARY KEY, position BIGINT NOT NULL)"
)
LIMIT_CHECKPOINT = (
    "INSERT INTO limit_checkpoints (projection, position) VALUES ('limit', $1)"
    " ON CONFLICT (projection) DO UPDATE SET position = excluded.position"
)
READ_PAGE = "SELECT position, stream_id, type, data FROM events WHERE position > $1 ORDER BY position LIMIT $2"


async def measure(shape: Shape, postgres: PostgresServer, folder: Path, progress: Progress) -> list[dict[str, Any]]:
    results = []
    events_db = folder / "catchup-events.db"
    head = await seed_sqlite(events_db, shape.streams, shape.events_per_stream)
    systems: dict[str, Callable[[int], Awaitable[float]]] = {
        "twofold": lambda run: _twofold(
            SQLiteEventStore(events_db), SQLiteReadStore(folder / f"catchup-read-{run}.db"), head, shape
        ),
        "limit": lambda run: asyncio.to_thread(_limit_sqlite, events_db, folder / f"catchup-limit-{run}.db", shape),
    }
    results += await _runs("sqlite", systems, head, shape, progress)

    url = postgres.create_database(database_name("catchup"))
    head = await seed_postgres(url, shape.streams, shape.events_per_stream)

    async def twofold_pg(run: int) -> float:
        await _execute(url, f"DROP TABLE IF EXISTS {TABLE}; DROP TABLE IF EXISTS twofold_checkpoints")
        return await _twofold(PostgresEventStore(url), PostgresReadStore(url), head, shape)

    systems = {"twofold": twofold_pg, "limit": lambda run: _limit_postgres(url, shape)}
    results += await _runs("postgresql", systems, head, shape, progress)
    return results


async def _runs(
    backend: str, systems: dict[str, Callable[[int], Awaitable[float]]], head: int, shape: Shape, progress: Progress
) -> list[dict[str, Any]]:
    """Systems take turns within each run, so drift on the machine hits them alike."""
    rates: dict[str, list[float]] = {name: [] for name in systems}
    for run in range(shape.runs):
        for name, once in systems.items():
            seconds = await once(run)
            rates[name].append(head / seconds)
            progress(f"  {WORKLOAD:22} {backend:10} run {run + 1}/{shape.runs} {name:8} {seconds:7.2f} s")
    return [row(WORKLOAD, backend, name, values, "events/s") for name, values in rates.items()]


async def _twofold(store: EventStore, read_store: ReadStore, head: int, shape: Shape) -> float:
    """Start a runtime on an empty read model; stop the clock when its runner has committed the head."""
    started = time.perf_counter()
    async with Runtime(BENCH, store=store, read_store=read_store) as runtime:
        runner = runtime.runners[StreamTotals.name]
        if not await runner.wait_for(head, TIMEOUT):
            raise RuntimeError(f"twofold's projection reached {runner.position} of {head} in {TIMEOUT} s")
        elapsed = time.perf_counter() - started
        _check(await read_store.read(totals), shape, "twofold")
    return elapsed


def _check(found: dict[str, Any], shape: Shape, system: str) -> None:
    expected = {"streams": shape.streams, "events": shape.events}
    if found != expected:
        raise AssertionError(f"{system}'s read model holds {found}, expected {expected}")


def _limit_sqlite(events_db: Path, read_db: Path, shape: Shape) -> float:
    """sqlite3 alone: a page of rows, their JSON decoded, upserted with the checkpoint in one transaction."""
    select = READ_PAGE.replace("$1", "?").replace("$2", "?")
    upsert = LIMIT_UPSERT.replace("$1", "?").replace("$2", "?").replace("$3", "?")
    with (
        closing(sqlite3.connect(events_db, isolation_level=None)) as events,
        closing(sqlite3.connect(read_db, isolation_level=None)) as reads,
    ):
        started = time.perf_counter()
        reads.execute("PRAGMA journal_mode=WAL")
        reads.execute("PRAGMA synchronous=NORMAL")  # as twofold's read store: a read model can be rebuilt
        reads.executescript(LIMIT_SCHEMA)
        position = 0
        while page := events.execute(select, (position, PAGE)).fetchall():
            rows = [(s, json.loads(d)["quantity"], p) for p, s, t, d in page if t == EVENT_TYPE]
            reads.execute("BEGIN IMMEDIATE")
            reads.executemany(upsert, rows)
            reads.execute(LIMIT_CHECKPOINT.replace("$1", "?"), (page[-1][0],))
            reads.execute("COMMIT")
            position = page[-1][0]
        elapsed = time.perf_counter() - started
        found = reads.execute(f"SELECT count(*), coalesce(sum(events), 0) FROM {LIMIT_TABLE}").fetchone()
    _check({"streams": found[0], "events": found[1]}, shape, "limit")
    return elapsed


async def _limit_postgres(url: str, shape: Shape) -> float:
    """asyncpg alone, the same shape: a page read on one connection, upserted with its checkpoint on another."""
    await _execute(url, f"DROP TABLE IF EXISTS {LIMIT_TABLE}; DROP TABLE IF EXISTS limit_checkpoints")
    events, reads = await asyncpg.connect(url), await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        await reads.execute(LIMIT_SCHEMA)
        position = 0
        while page := await events.fetch(READ_PAGE, position, PAGE):
            rows = [(r[1], json.loads(r[3])["quantity"], r[0]) for r in page if r[2] == EVENT_TYPE]
            async with reads.transaction():
                await reads.executemany(LIMIT_UPSERT, rows)
                await reads.execute(LIMIT_CHECKPOINT, page[-1][0])
            position = page[-1][0]
        elapsed = time.perf_counter() - started
        streams = await reads.fetchval(f"SELECT count(*) FROM {LIMIT_TABLE}")
        counted = await reads.fetchval(f"SELECT coalesce(sum(events), 0) FROM {LIMIT_TABLE}")
    finally:
        await events.close()
        await reads.close()
    _check({"streams": streams, "events": counted}, shape, "limit")
    return elapsed


async def _execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()
