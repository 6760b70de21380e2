"""The limit on PostgreSQL: raw asyncpg writing and reading rows of twofold's shape, in its transaction shape.

No framework: no models, no validation, no command record, no stream lock, no NOTIFY, no pool
beyond one connection per writer. Each append is the least PostgresEventStore's shape allows: one
statement, committed alone, that inserts the events unnumbered at versions read in the same
statement, then a second one-statement transaction that numbers every committed event gap-free.
That is the least a gap-free global order costs with concurrent writers; the rows are twofold's
(``json`` payload and metadata, recorded time, category). Payloads are encoded and decoded as JSON.
Skipping the stream lock is only safe because no two writers here share a stream.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime

import asyncpg

from benchmarks.shape import EVENT_TYPE, PAYLOAD, Shape, share, stream_key

SCHEMA = """
CREATE TABLE events (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    position       bigint UNIQUE,
    stream_id      text        NOT NULL,
    version        bigint      NOT NULL,
    event_id       text        NOT NULL UNIQUE,
    type           text        NOT NULL,
    schema_version integer     NOT NULL,
    data           json        NOT NULL,
    metadata       json        NOT NULL,
    recorded_at    timestamptz NOT NULL,
    category       text        NOT NULL,
    UNIQUE (stream_id, version)
);
CREATE INDEX events_unnumbered ON events (id) WHERE position IS NULL;
CREATE INDEX events_by_category ON events (category, position);
CREATE FUNCTION bench_number() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    top bigint;
    numbered bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(7302, 0);
    SELECT coalesce(max(position), 0) INTO top FROM events;
    WITH waiting AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM events WHERE position IS NULL)
    UPDATE events SET position = top + waiting.n FROM waiting WHERE events.id = waiting.id;
    GET DIAGNOSTICS numbered = ROW_COUNT;
    RETURN numbered;
END
$$;
"""
INSERT_EVENTS = """
INSERT INTO events (stream_id, version, event_id, type, schema_version, data, metadata, recorded_at, category)
SELECT $1, (SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1) + n, e, $3, 1, d::json, $5::json, $6, $7
FROM unnest($2::text[], $4::text[]) WITH ORDINALITY AS u(e, d, n)
ORDER BY n
"""
NUMBER = "SELECT bench_number()"
READ_STREAM = "SELECT version, data FROM events WHERE stream_id = $1 ORDER BY version"
READ_ALL = (
    "SELECT position, stream_id, version, event_id, type, data, metadata, recorded_at FROM events ORDER BY position"
)
CHECK = "SELECT count(*) = count(position) AND coalesce(max(position), 0) = count(*), count(*) FROM events"
METADATA = json.dumps({"command_id": str(uuid.UUID(int=0)), "command_type": "bench.RecordHappening"})


async def _append(conn: asyncpg.Connection, stream_id: str, count: int) -> None:
    data = [json.dumps(PAYLOAD, separators=(",", ":")) for _ in range(count)]
    await conn.execute(
        INSERT_EVENTS,
        stream_id,
        [str(uuid.uuid4()) for _ in range(count)],
        EVENT_TYPE,
        data,
        METADATA,
        datetime.now(UTC),
        "counter",
    )
    await conn.fetchval(NUMBER)


async def _fill(conn: asyncpg.Connection, shape: Shape) -> None:
    for n in range(shape.streams):
        await _append(conn, f"counter-{stream_key(n)}", shape.events_per_stream)


async def _check(conn: asyncpg.Connection, expected: int) -> None:
    """Every event written and numbered 1..N without a gap."""
    found = await conn.fetchrow(CHECK)
    assert found is not None
    gap_free, count = found
    assert gap_free, "positions are not 1..N"
    assert count == expected, (count, expected)


class LimitPostgres:
    name = "limit"

    def settings(self) -> dict[str, str]:
        return {
            "driver": "asyncpg",
            "connections": "one per writer",
            "transactions_per_append": "2 statements: insert at the read versions (autocommit); then number",
        }

    async def append_per_command(self, url: str, shape: Shape, writers: int) -> float:
        conns = [await asyncpg.connect(url) for _ in range(writers)]
        try:
            await conns[0].execute(SCHEMA)

            async def writer(k: int) -> None:
                for _ in range(shape.rounds):
                    for n in share(shape.streams, writers, k):
                        await _append(conns[k], f"counter-{stream_key(n)}", 1)

            started = time.perf_counter()
            await asyncio.gather(*(writer(k) for k in range(writers)))
            elapsed = time.perf_counter() - started
            await _check(conns[0], shape.commands)
        finally:
            for conn in conns:
                await conn.close()
        return elapsed

    async def append_batch_then_read(self, url: str, shape: Shape) -> dict[str, float]:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(SCHEMA)
            started = time.perf_counter()
            await _fill(conn, shape)
            seconds = {"append_batch": time.perf_counter() - started}
            started = time.perf_counter()
            replayed = 0
            for n in range(shape.streams):
                rows = await conn.fetch(READ_STREAM, f"counter-{stream_key(n)}")
                replayed += len([json.loads(row[1]) for row in rows])
            seconds["load_aggregate"] = time.perf_counter() - started
            assert replayed == shape.events, (replayed, shape.events)
            started = time.perf_counter()
            count = len([(json.loads(row[5]), json.loads(row[6])) for row in await conn.fetch(READ_ALL)])
            seconds["read_all"] = time.perf_counter() - started
            assert count == shape.events, (count, shape.events)
            await _check(conn, shape.events)
        finally:
            await conn.close()
        return seconds
