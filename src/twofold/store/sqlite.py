"""The embedded event store: one SQLite file in WAL mode, from the standard library.

    store = SQLiteEventStore("data/shop.db")
    result = await store.append("order-1", [NewEvent("shop.OrderPlaced", {...})], NO_STREAM)

SQLite lets one transaction write at a time. Every append takes the write lock first
(``BEGIN IMMEDIATE``), so positions are handed out in commit order and a reader can never see
position N+1 before N: the global order is gap-free by construction, across processes too.

A whole append runs in a single hop to the writer thread, and appends that arrive together share
one transaction and one sync (group commit), each in its own savepoint so that one refused append
leaves the others alone. Reads are short and indexed, so they run on the caller's thread.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from twofold._notify import Notifier
from twofold._sqlite import SQLiteThreads
from twofold.errors import StoreError
from twofold.messages import utc_now
from twofold.personal import new_key
from twofold.store import (
    AppendResult,
    NewEvent,
    StoredEvent,
    StreamSummary,
    StreamWrite,
    _json,
    category_of,
    check_expected_version,
    validate_writes,
)
from twofold.store._base import EventStoreBase

__all__ = ["SQLiteEventStore"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    -- AUTOINCREMENT: a position is never reused, even if the newest row were ever deleted.
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
-- For inspection: listing a category's streams, and a correlation's events. IF NOT EXISTS, and
-- this script runs at every open, so an older file gets them the first time a newer twofold opens it.
CREATE INDEX IF NOT EXISTS events_by_category_stream ON events (category, stream_id);
CREATE INDEX IF NOT EXISTS events_by_correlation ON events (json_extract(metadata, '$.correlation_id'), position);
CREATE TABLE IF NOT EXISTS commands (
    command_id     TEXT    PRIMARY KEY,
    versions       TEXT    NOT NULL,
    first_position INTEGER,
    last_position  INTEGER
) WITHOUT ROWID;
-- One secret key per subject, for its personal fields (twofold.personal); deleting it forgets them.
CREATE TABLE IF NOT EXISTS subject_keys (
    subject        TEXT    PRIMARY KEY,
    key            BLOB    NOT NULL
) WITHOUT ROWID;
"""

COLUMNS = "position, stream_id, version, event_id, type, schema_version, data, metadata, recorded_at"
STREAM_VERSION = "SELECT coalesce(max(version), 0) FROM events WHERE stream_id = ?"
HEAD_POSITION = "SELECT coalesce(max(position), 0) FROM events"
INSERT_EVENT = """
INSERT INTO events (stream_id, version, event_id, type, schema_version, data, metadata, recorded_at, category)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
LAST_POSITION = "SELECT last_insert_rowid()"
FIND_COMMAND = "SELECT versions, first_position, last_position FROM commands WHERE command_id = ?"
INSERT_COMMAND = "INSERT INTO commands (command_id, versions, first_position, last_position) VALUES (?, ?, ?, ?)"
READ_RANGE = f"SELECT {COLUMNS} FROM events WHERE position BETWEEN ? AND ? ORDER BY position"
READ_STREAM = f"""
SELECT {COLUMNS} FROM events WHERE stream_id = ? AND version BETWEEN ? AND ? ORDER BY version LIMIT ?
"""
# Filters arrive as one JSON array parameter each, so the statement text never changes.
READ_ALL = f"""
SELECT {COLUMNS} FROM events
WHERE position >= ?1
  AND (?2 IS NULL OR category IN (SELECT value FROM json_each(?2)))
  AND (?3 IS NULL OR type IN (SELECT value FROM json_each(?3)))
ORDER BY position LIMIT ?4
"""
FIND_KEYS = "SELECT subject, key FROM subject_keys WHERE subject IN (SELECT value FROM json_each(?))"
# A concurrent writer may have made a subject's key first: its key stands, never replaced.
INSERT_KEY = "INSERT INTO subject_keys (subject, key) VALUES (?, ?) ON CONFLICT (subject) DO NOTHING"
DELETE_KEY = "DELETE FROM subject_keys WHERE subject = ?"
# A stream listing never scans events: each step of the recursion jumps to the next stream id in
# the (stream_id, version) index, or in (category, stream_id) for one category (a loose index scan),
# and each stream's first and last events are looked up by (stream_id, version).
_STREAM_PAGE = """
WITH RECURSIVE ids(stream_id, n) AS (
    SELECT ({next_id} ?1), 1
    UNION ALL
    SELECT ({next_id} ids.stream_id), n + 1 FROM ids WHERE ids.stream_id IS NOT NULL AND n < ?3
)
SELECT ids.stream_id, last.version, first.position, last.position, last.recorded_at
FROM ids
JOIN events AS first ON first.stream_id = ids.stream_id AND first.version = 1
JOIN events AS last ON last.stream_id = ids.stream_id
    AND last.version = (SELECT max(version) FROM events WHERE stream_id = ids.stream_id)
ORDER BY ids.stream_id
"""
STREAMS = _STREAM_PAGE.format(next_id="SELECT min(stream_id) FROM events WHERE stream_id >")
STREAMS_OF_CATEGORY = _STREAM_PAGE.format(
    next_id="SELECT min(stream_id) FROM events WHERE category = ?2 AND stream_id >"
)
# The expression is spelt exactly as in events_by_correlation, or SQLite would not use the index.
READ_CORRELATED = f"""
SELECT {COLUMNS} FROM events
WHERE json_extract(metadata, '$.correlation_id') = ? AND position > ? ORDER BY position LIMIT ?
"""

PAGE_SIZE = 500
POLL_INTERVAL = 0.05  # seconds between checks for commits made by other processes
Row = tuple[Any, ...]
Durability = Literal["full", "normal"]


class SQLiteEventStore(EventStoreBase):
    """An :class:`~twofold.store.EventStore` in a SQLite file.

    Args:
        path: the database file; its folder is created when missing.
        durability: ``"full"`` (default) syncs the log on every commit, so an acknowledged append
            survives a power cut; ``"normal"`` survives a crashed process but not a power cut.
    """

    def __init__(self, path: str | Path, *, durability: Durability = "full") -> None:
        if durability not in ("full", "normal"):
            # SQLite reads an unknown synchronous level as NORMAL: a typo would silently weaken durability.
            raise ValueError(f"Unknown durability {durability!r}: use 'full' (survives a power cut) or 'normal'")
        self._threads = SQLiteThreads(
            path, schema=SCHEMA, synchronous=durability.upper(), readers=0, translate=_translate
        )
        self.path = self._threads.path
        self._notifier = Notifier()
        with closing(sqlite3.connect(self.path)) as conn:
            self._notifier.announce(conn.execute(HEAD_POSITION).fetchone()[0])

    # -- writing ---------------------------------------------------------------------------------

    async def append_streams(self, writes: Sequence[StreamWrite], command_id: str | None = None) -> AppendResult:
        validate_writes(writes)
        rows = [(w, [_encode(e) for e in w.events]) for w in writes]  # JSON outside the lock
        result = await self._threads.write_grouped(self._append, rows, command_id)
        if result.events:
            self._notifier.announce(result.events[-1].position)
        return result

    def _append(
        self,
        conn: sqlite3.Connection,
        rows: list[tuple[StreamWrite, list[tuple[str, str, NewEvent]]]],
        command_id: str | None,
    ) -> AppendResult:
        # Runs inside the writer's BEGIN IMMEDIATE transaction: the write lock is held before versions
        # are read, so check and insert see one state.
        if command_id is not None and (found := self._find_command(conn, command_id)) is not None:
            return found
        versions: dict[str, int] = {}
        recorded_at = utc_now()
        written: list[tuple[str, int, str, str, NewEvent]] = []
        for write, encoded in rows:
            actual = conn.execute(STREAM_VERSION, (write.stream_id,)).fetchone()[0]
            check_expected_version(write.stream_id, write.expected_version, actual)
            category = category_of(write.stream_id)
            conn.executemany(
                INSERT_EVENT,
                [
                    (
                        write.stream_id,
                        actual + i,
                        new.event_id,
                        new.type,
                        new.schema_version,
                        data,
                        meta,
                        recorded_at.isoformat(),
                        category,
                    )
                    for i, (data, meta, new) in enumerate(encoded, start=1)
                ],
            )
            versions[write.stream_id] = actual + len(encoded)
            written.extend((write.stream_id, actual + i, d, m, new) for i, (d, m, new) in enumerate(encoded, 1))
        # Under the write lock positions are consecutive, so the last one gives them all; the
        # events are built from what was written rather than read back.
        last = conn.execute(LAST_POSITION).fetchone()[0] if written else None
        first = None if last is None else last - len(written) + 1
        if command_id is not None:
            conn.execute(INSERT_COMMAND, (command_id, json.dumps(versions), first, last))
        stored = _built(written, first or 0, recorded_at)
        return AppendResult(command_id, versions, stored)

    def _find_command(self, conn: sqlite3.Connection, command_id: str) -> AppendResult | None:
        row = conn.execute(FIND_COMMAND, (command_id,)).fetchone()
        if row is None:
            return None
        return AppendResult(command_id, json.loads(row[0]), self._range(conn, row[1], row[2]))

    @staticmethod
    def _range(conn: sqlite3.Connection, first: int | None, last: int | None) -> list[StoredEvent]:
        if first is None:
            return []
        return [_decode(row) for row in conn.execute(READ_RANGE, (first, last))]

    # -- reading ---------------------------------------------------------------------------------

    async def read_stream(
        self, stream_id: str, from_version: int = 1, to_version: int | None = None
    ) -> AsyncIterator[StoredEvent]:
        version, last = max(from_version, 1), to_version if to_version is not None else 2**62
        while version <= last:
            page = await self._threads.read(_fetch, READ_STREAM, (stream_id, version, last, PAGE_SIZE))
            for event in page:
                yield event
            if len(page) < PAGE_SIZE:
                return
            version = page[-1].version + 1

    async def read_all(
        self,
        from_position: int = 1,
        limit: int | None = None,
        categories: Collection[str] | None = None,
        types: Collection[str] | None = None,
    ) -> AsyncIterator[StoredEvent]:
        position, remaining = max(from_position, 1), limit
        category_filter = None if categories is None else json.dumps(sorted(categories))
        type_filter = None if types is None else json.dumps(sorted(types))
        while remaining is None or remaining > 0:
            size = PAGE_SIZE if remaining is None else min(PAGE_SIZE, remaining)
            params = (position, category_filter, type_filter, size)
            page = await self._threads.read(_fetch, READ_ALL, params)
            for event in page:
                yield event
            if len(page) < size:
                return
            position = page[-1].position + 1
            remaining = None if remaining is None else remaining - len(page)

    async def streams(
        self, *, category: str | None = None, after: str | None = None, limit: int = 100
    ) -> list[StreamSummary]:
        if limit <= 0:
            return []
        sql = STREAMS if category is None else STREAMS_OF_CATEGORY
        rows = await self._threads.read(_rows, sql, (after or "", category, limit))
        return [StreamSummary(r[0], r[1], r[2], r[3], datetime.fromisoformat(r[4])) for r in rows]

    async def read_correlated(self, correlation_id: str) -> AsyncIterator[StoredEvent]:
        position = 0
        while True:
            page = await self._threads.read(_fetch, READ_CORRELATED, (correlation_id, position, PAGE_SIZE))
            for event in page:
                yield event
            if len(page) < PAGE_SIZE:
                return
            position = page[-1].position

    async def wait_for_events(self, after_position: int, timeout: float) -> bool:
        # The notifier knows the head as of opening plus every append from this process, and wakes
        # waiters at once; other processes' appends are found by reading the head every poll.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if await self._notifier.wait(after_position, max(min(left, POLL_INTERVAL), 0)):
                return True
            head = await self.head_position()
            if head > after_position:
                self._notifier.announce(head)
                return True
            if left <= POLL_INTERVAL:
                return False

    async def head_position(self) -> int:
        return int(await self._threads.read(_scalar, HEAD_POSITION, ()))

    async def stream_version(self, stream_id: str) -> int:
        return int(await self._threads.read(_scalar, STREAM_VERSION, (stream_id,)))

    async def command_result(self, command_id: str) -> AppendResult | None:
        return await self._threads.read(self._find_command, command_id)

    async def close(self) -> None:
        self._threads.close()

    # -- personal data keys (twofold.personal.KeyStore) -----------------------------------------

    async def subject_keys(self, subjects: Collection[str], *, create: bool = False) -> dict[str, bytes]:
        found: dict[str, bytes] = await self._threads.read(_keys, sorted(subjects))
        missing = sorted(set(subjects) - found.keys())
        if create and missing:
            found |= await self._threads.write_grouped(_create_keys, missing)
        return found

    async def forget_subject(self, subject: str) -> None:
        await self._threads.write_grouped(_forget_key, subject)


def _keys(conn: sqlite3.Connection, subjects: list[str]) -> dict[str, bytes]:
    return {subject: bytes(key) for subject, key in conn.execute(FIND_KEYS, (json.dumps(subjects),))}


def _create_keys(conn: sqlite3.Connection, subjects: list[str]) -> dict[str, bytes]:
    conn.executemany(INSERT_KEY, [(subject, new_key()) for subject in subjects])
    return _keys(conn, subjects)


def _forget_key(conn: sqlite3.Connection, subject: str) -> None:
    # secure_delete zeroes the freed bytes in the database file rather than leaving them in a free page.
    conn.execute("PRAGMA secure_delete = ON")
    conn.execute(DELETE_KEY, (subject,))


def _encode(event: NewEvent) -> tuple[str, str, NewEvent]:
    return _json.dumps(event.data), _json.dumps(event.metadata), event


def _built(written: list[tuple[str, int, str, str, NewEvent]], first: int, recorded_at: datetime) -> list[StoredEvent]:
    """The stored form of what an append wrote, numbered from ``first``, without reading it back."""
    return [
        StoredEvent(
            position=first + index,
            stream_id=stream_id,
            version=version,
            event_id=new.event_id,
            type=new.type,
            schema_version=new.schema_version,
            data=_json.loads(data),
            metadata=_json.loads(meta),
            recorded_at=recorded_at,
        )
        for index, (stream_id, version, data, meta, new) in enumerate(written)
    ]


def _decode(row: Row) -> StoredEvent:
    return StoredEvent(
        position=row[0],
        stream_id=row[1],
        version=row[2],
        event_id=row[3],
        type=row[4],
        schema_version=row[5],
        data=_json.loads(row[6]),
        metadata=_json.loads(row[7]),
        recorded_at=datetime.fromisoformat(row[8]),
    )


def _fetch(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[StoredEvent]:
    return [_decode(row) for row in conn.execute(sql, params)]


def _rows(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[Row]:
    return conn.execute(sql, params).fetchall()


def _scalar(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> Any:
    return conn.execute(sql, params).fetchone()[0]


def _translate(exc: sqlite3.Error) -> Exception:
    """Map sqlite3's errors to twofold's, most specific first."""
    if isinstance(exc, sqlite3.IntegrityError) and "event_id" in str(exc):
        return ValueError(f"An event id in this append is already stored ({exc})")
    if isinstance(exc, sqlite3.IntegrityError):
        return StoreError(f"SQLite refused the write: {exc}")
    if isinstance(exc, sqlite3.OperationalError):
        return StoreError(f"SQLite could not complete the operation: {exc}")
    return StoreError(f"SQLite failed: {exc}")
