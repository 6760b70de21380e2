"""Listing streams and reading a correlation are served by indexes, on old databases too.

A store of a million events must answer ``twofold streams`` and ``twofold trace`` at once: these
tests read the query plans rather than time them (timing lives in benchmarks/).
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import asyncpg

from twofold.store import NewEvent
from twofold.store import postgres as pg
from twofold.store import sqlite as lite
from twofold.store.postgres import PostgresEventStore
from twofold.store.sqlite import SQLiteEventStore

INSPECTION_INDEXES = {"events_by_category_stream", "events_by_correlation"}


def _sqlite_plan(path: Path, sql: str, params: tuple[object, ...]) -> str:
    with closing(sqlite3.connect(path)) as conn:
        return "\n".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params))


async def test_sqlite_answers_stream_listings_and_correlations_from_indexes_only(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    await store.close()
    for sql, params in [
        (lite.STREAMS, ("", None, 100)),
        (lite.STREAMS_OF_CATEGORY, ("", "order", 100)),
        (lite.READ_CORRELATED, ("c-1", 0, 500)),
    ]:
        plan = _sqlite_plan(tmp_path / "events.db", sql, params)
        scanned = [table for table in ("events", "first", "last") if f"SCAN {table}" in plan]
        assert not scanned, plan
    assert "events_by_correlation" in _sqlite_plan(tmp_path / "events.db", lite.READ_CORRELATED, ("c", 0, 1))


async def test_an_older_sqlite_file_gets_the_inspection_indexes_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = SQLiteEventStore(path)
    await store.append("order-1", [NewEvent("test.Placed", {}, {"correlation_id": "c-1"})])
    await store.close()
    with closing(sqlite3.connect(path)) as conn:
        for index in INSPECTION_INDEXES:
            conn.execute(f"DROP INDEX {index}")
    store = SQLiteEventStore(path)
    try:
        assert [e.stream_id async for e in store.read_correlated("c-1")] == ["order-1"]
    finally:
        await store.close()
    with closing(sqlite3.connect(path)) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert names >= INSPECTION_INDEXES


async def test_postgres_can_answer_stream_listings_and_correlations_from_indexes_only(postgres_url: str) -> None:
    store = PostgresEventStore(postgres_url)
    await store.head_position()  # migrates
    await store.close()
    conn = await asyncpg.connect(postgres_url)
    try:
        # A near-empty table is cheaper to scan than to search: forbid scans to see that an index serves.
        await conn.execute("SET enable_seqscan = off")
        for sql, params in [
            (pg.STREAMS, ("", 100)),
            (pg.STREAMS_OF_CATEGORY, ("", 100, "order")),
            (pg.READ_CORRELATED, ("c-1", 0, 500)),
        ]:
            plan = "\n".join(row[0] for row in await conn.fetch("EXPLAIN " + sql, *params))
            assert "Seq Scan" not in plan, plan
    finally:
        await conn.close()


async def test_an_older_postgres_database_gets_the_inspection_indexes_when_opened(postgres_url: str) -> None:
    store = PostgresEventStore(postgres_url)
    await store.append("order-1", [NewEvent("test.Placed", {}, {"correlation_id": "c-1"})])
    await store.close()
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute("DROP INDEX events_by_category_stream, events_by_correlation")
        await conn.execute("DELETE FROM twofold_schema WHERE version = $1", len(pg.MIGRATIONS))
        store = PostgresEventStore(postgres_url)
        try:
            assert [e.stream_id async for e in store.read_correlated("c-1")] == ["order-1"]
        finally:
            await store.close()
        names = {r[0] for r in await conn.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 'events'")}
    finally:
        await conn.close()
    assert names >= INSPECTION_INDEXES
