"""The limit: raw ``sqlite3`` writing and reading rows of twofold's shape, in twofold's transaction shape.

No framework: no models, no validation, no command record, no threads. WAL and
``synchronous=FULL`` like twofold's ``durability="full"``. The payload is still encoded and decoded
as JSON, since every system has to do that.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.shape import EVENT_TYPE, PAYLOAD, Shape, stream_key

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
def _connect(path: Path) -> Iterator[sqlite3.Connection]:
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
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
        return {"synchronous": "FULL", "journal_mode": "wal"}

    async def append_per_command(self, path: Path, shape: Shape) -> float:
        with _connect(path) as conn:
            started = time.perf_counter()
            for _ in range(shape.events_per_stream):
                for n in range(shape.streams):
                    _append(conn, f"counter-{stream_key(n)}", 1)
            return time.perf_counter() - started

    async def append_batch(self, path: Path, shape: Shape) -> float:
        with _connect(path) as conn:
            started = time.perf_counter()
            _fill(conn, shape)
            return time.perf_counter() - started

    async def load_aggregate(self, path: Path, shape: Shape) -> float:
        with _connect(path) as conn:
            _fill(conn, shape)
            started = time.perf_counter()
            replayed = 0
            for n in range(shape.streams):
                rows = conn.execute(READ_STREAM, (f"counter-{stream_key(n)}",)).fetchall()
                replayed += len([json.loads(data) for _, data in rows])
            elapsed = time.perf_counter() - started
        assert replayed == shape.events, (replayed, shape.events)
        return elapsed

    async def read_all(self, path: Path, shape: Shape) -> float:
        with _connect(path) as conn:
            _fill(conn, shape)
            started = time.perf_counter()
            count = len([(json.loads(row[5]), json.loads(row[6])) for row in conn.execute(READ_ALL)])
            elapsed = time.perf_counter() - started
        assert count == shape.events, (count, shape.events)
        return elapsed
