"""The limit: raw ``sqlite3`` writing and reading rows of twofold's shape, in twofold's transaction shape.

No framework: no models, no validation, no command record, no threads but the writers' own. WAL and
``synchronous=FULL`` like twofold's ``durability="full"``. The payload is still encoded and decoded
as JSON, since every system has to do that. Concurrent writers are threads, each with its own
connection, taking turns at SQLite's one write lock (``BEGIN IMMEDIATE`` waits up to 5 s for it).
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime

from benchmarks.shape import EVENT_TYPE, PAYLOAD, Shape, share, stream_key
from benchmarks.systems import in_threads

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    position       INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_id      TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    event_id       TEXT    NOT NULL UNIQUE,
    type           TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    data           TEXT    NOT NULL,
    metadata       TEXT    NOT NULL,
    recorded_at    TEXT    NOT NULL,
    category       TEXT    NOT NULL,
    UNIQUE (stream_id, version)
);
CREATE INDEX IF NOT EXISTS events_by_category ON events (category, position);
"""
STREAM_VERSION = "SELECT coalesce(max(version), 0) FROM events WHERE stream_id = ?"
INSERT_EVENT = """
INSERT INTO events (stream_id, version, event_id, type, schema_version, data, metadata, recorded_at, category)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
READ_STREAM = "SELECT version, data FROM events WHERE stream_id = ? ORDER BY version"
READ_ALL = (
    "SELECT position, stream_id, version, event_id, type, data, metadata, recorded_at FROM events ORDER BY position"
)
METADATA = {"command_id": str(uuid.UUID(int=0)), "command_type": "bench.RecordHappening"}


@contextmanager
def _connect(path: str, *, schema: bool = True) -> Iterator[sqlite3.Connection]:
    """A connection syncing every commit; the first one also sets WAL (it sticks to the file) and the schema."""
    with closing(sqlite3.connect(path, isolation_level=None, check_same_thread=False)) as conn:
        conn.execute("PRAGMA synchronous=FULL")
        if schema:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)
        yield conn


def _append(conn: sqlite3.Connection, stream_id: str, count: int) -> None:
    """One transaction: take the write lock, read the stream's version, insert ``count`` events."""
    rows = [json.dumps(PAYLOAD, separators=(",", ":")) for _ in range(count)]
    meta = json.dumps(METADATA, separators=(",", ":"))
    conn.execute("BEGIN IMMEDIATE")  # the write lock before the version read, as twofold does
    try:
        version = conn.execute(STREAM_VERSION, (stream_id,)).fetchone()[0]
        recorded_at = datetime.now(UTC).isoformat()
        conn.executemany(
            INSERT_EVENT,
            [
                (stream_id, version + i, str(uuid.uuid4()), EVENT_TYPE, 1, data, meta, recorded_at, "counter")
                for i, data in enumerate(rows, start=1)
            ],
        )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _fill(conn: sqlite3.Connection, shape: Shape) -> None:
    for n in range(shape.streams):
        _append(conn, f"counter-{stream_key(n)}", shape.events_per_stream)


class LimitSQLite:
    name = "limit"

    def settings(self) -> dict[str, str]:
        return {"synchronous": "FULL", "journal_mode": "wal", "writers": "threads, a connection each"}

    async def append_per_command(self, path: str, shape: Shape, writers: int) -> float:
        def writer(k: int) -> None:
            with _connect(path, schema=False) as conn:
                for _ in range(shape.rounds):
                    for n in share(shape.streams, writers, k):
                        _append(conn, f"counter-{stream_key(n)}", 1)

        with _connect(path) as conn:
            started = time.perf_counter()
            if writers == 1:
                writer(0)  # on the event loop's thread, as before: no thread hop for one writer
            else:
                await in_threads(writer, writers)
            elapsed = time.perf_counter() - started
            count = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        assert count == shape.commands, (count, shape.commands)
        return elapsed

    async def append_batch_then_read(self, path: str, shape: Shape) -> dict[str, float]:
        with _connect(path) as conn:
            started = time.perf_counter()
            _fill(conn, shape)
            seconds = {"append_batch": time.perf_counter() - started}
            started = time.perf_counter()
            replayed = 0
            for n in range(shape.streams):
                rows = conn.execute(READ_STREAM, (f"counter-{stream_key(n)}",)).fetchall()
                replayed += len([json.loads(data) for _, data in rows])
            seconds["load_aggregate"] = time.perf_counter() - started
            assert replayed == shape.events, (replayed, shape.events)
            started = time.perf_counter()
            count = len([(json.loads(row[5]), json.loads(row[6])) for row in conn.execute(READ_ALL)])
            seconds["read_all"] = time.perf_counter() - started
            assert count == shape.events, (count, shape.events)
        return seconds
