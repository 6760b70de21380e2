"""Many stores, in one process and in several, open the same fresh PostgreSQL database at once.

Services start together (a command API, workers, replicas), so schema creation races itself: every
opener must succeed, and each migration must run exactly once.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from tests.monolith import shop
from twofold import Runtime
from twofold.deadletters import DeadLetters
from twofold.readmodels.postgres import PostgresReadStore
from twofold.saga_runner import ensure_saga_tables, saga_instances
from twofold.store import NewEvent
from twofold.store.postgres import MIGRATIONS, PostgresEventStore

ROOT = Path(__file__).resolve().parents[2]
STORES = 12
PROCESSES = 4
WAIT = 30.0  # seconds for each phase before the test fails rather than hangs

OPENER = """
import asyncio, sys
from twofold.readmodels.postgres import PostgresReadStore
from twofold.store.postgres import PostgresEventStore

async def main(url):
    store = PostgresEventStore(url, pool_size=1)
    try:
        print("head", await store.head_position())
    finally:
        await store.close()
    read_store = await asyncio.to_thread(PostgresReadStore, url, readers=1)
    try:
        print("checkpoint", await read_store.checkpoint("nothing"))
    finally:
        await read_store.close()

asyncio.run(main(sys.argv[1]))
"""


async def _schema(url: str) -> tuple[list[int], int, int]:
    """Migration rows, how many ``events`` tables and how many ``twofold_checkpoints`` tables exist."""
    conn = await asyncpg.connect(url)
    try:
        versions: list[int] = []
        if await conn.fetchval("SELECT to_regclass('twofold_schema') IS NOT NULL"):
            versions = [r[0] for r in await conn.fetch("SELECT version FROM twofold_schema ORDER BY version")]
        events = await conn.fetchval("SELECT count(*) FROM pg_class WHERE relname = 'events' AND relkind = 'r'")
        checkpoints = await conn.fetchval(
            "SELECT count(*) FROM pg_class WHERE relname = 'twofold_checkpoints' AND relkind = 'r'"
        )
        return versions, events, checkpoints
    finally:
        await conn.close()


async def test_event_stores_opening_one_fresh_database_together_migrate_it_once(postgres_url: str) -> None:
    stores = [PostgresEventStore(postgres_url, pool_size=2) for _ in range(STORES)]
    try:
        async with asyncio.timeout(WAIT):
            heads = await asyncio.gather(*(s.head_position() for s in stores))
            assert heads == [0] * STORES
            # Every one of them works: each appends to a stream of its own, and all see one order.
            await asyncio.gather(
                *(s.append(f"opener-{n}", [NewEvent("test.Opened", {"n": n})]) for n, s in enumerate(stores))
            )
            seen = [e async for e in stores[0].read_all()]
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    assert sorted(e.stream_id for e in seen) == sorted(f"opener-{n}" for n in range(STORES))
    assert [e.position for e in seen] == list(range(1, STORES + 1))
    versions, events, _ = await _schema(postgres_url)
    assert versions == list(range(1, len(MIGRATIONS) + 1))  # one row per migration: each ran once
    assert events == 1


async def test_read_stores_and_runtimes_opening_one_fresh_database_together_all_succeed(postgres_url: str) -> None:
    async with asyncio.timeout(WAIT):
        read_stores = await asyncio.gather(
            *(asyncio.to_thread(PostgresReadStore, postgres_url, readers=1) for _ in range(STORES))
        )
    try:
        assert await asyncio.gather(*(r.checkpoint("shop.catalog") for r in read_stores)) == [0] * STORES
    finally:
        await asyncio.gather(*(r.close() for r in read_stores))
    assert await _schema(postgres_url) == ([], 0, 1)  # the read store made its table once, and nothing else

    # Whole runtimes too: each creates the shop's read-model tables in its projections' setup.
    runtimes = [
        Runtime(
            shop,
            store=PostgresEventStore(postgres_url, pool_size=2),
            read_store=await asyncio.to_thread(PostgresReadStore, postgres_url, readers=1),
        )
        for _ in range(4)
    ]
    try:
        async with asyncio.timeout(WAIT):
            await asyncio.gather(*(r.start() for r in runtimes))
            assert all(runner.running for r in runtimes for runner in r.runners.values())
            await asyncio.gather(*(r.catch_up() for r in runtimes))  # each opens its event store too
            assert [dict(await r.positions()) for r in runtimes] == [{"shop.catalog": 0, "shop.orders": 0}] * 4
    finally:
        await asyncio.gather(*(r.stop() for r in runtimes))
    versions, events, checkpoints = await _schema(postgres_url)
    assert versions == list(range(1, len(MIGRATIONS) + 1))
    assert (events, checkpoints) == (1, 1)


@pytest.mark.slow
def test_processes_opening_one_fresh_database_together_all_succeed(postgres_url: str) -> None:
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", OPENER, postgres_url],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(PROCESSES)
    ]
    outputs: list[str] = []
    try:
        for process in processes:
            try:
                out, _ = process.communicate(timeout=WAIT)
            except subprocess.TimeoutExpired:
                process.kill()
                out, _ = process.communicate()
                pytest.fail(f"opener {process.pid} hung:\n{out.decode(errors='replace')}")
            outputs.append(out.decode(errors="replace"))
            assert process.returncode == 0, outputs[-1]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert all(o.split() == ["head", "0", "checkpoint", "0"] for o in outputs), outputs
    versions, events, checkpoints = asyncio.run(_schema(postgres_url))
    assert versions == list(range(1, len(MIGRATIONS) + 1))
    assert (events, checkpoints) == (1, 1)


async def test_a_role_that_may_only_read_opens_both_stores_of_a_schema_already_made_and_reads_them(
    postgres_url: str,
) -> None:
    """What a console or a tool is given in production: SELECT, and no right to create anything."""
    store = PostgresEventStore(postgres_url, pool_size=1)
    read_store = await asyncio.to_thread(PostgresReadStore, postgres_url, readers=1)
    try:
        await store.append("order-1", [NewEvent("test.Placed", {}, metadata={"correlation_id": "c-1"})])
        await ensure_saga_tables(read_store)  # as a saga runner and a consumer would have
        await DeadLetters(read_store).setup()
    finally:
        await store.close()
        await read_store.close()
    database = postgres_url.rsplit("/", 1)[1]
    reader = f"reader_{database}"
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(f'CREATE ROLE "{reader}" LOGIN')  # names from this test, not from input
        await conn.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{reader}"')
        await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    finally:
        await conn.close()
    as_reader = postgres_url.replace("://postgres@", f"://{reader}@", 1)
    store = PostgresEventStore(as_reader, pool_size=1)
    read_store = await asyncio.to_thread(PostgresReadStore, as_reader, readers=1)
    try:
        assert [e.stream_id async for e in store.read_correlated("c-1")] == ["order-1"]
        assert await read_store.checkpoint("shop.catalog") == 0
        await ensure_saga_tables(read_store)  # what the console's and the API's saga pages do first
        assert await saga_instances(read_store, "checkout") == []
        assert await DeadLetters(read_store).page() == []
    finally:
        await store.close()
        await read_store.close()
