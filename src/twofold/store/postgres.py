"""The production event store: PostgreSQL through asyncpg, with a gap-free global order.

    store = PostgresEventStore("postgresql://app@db.internal/shop")
    result = await store.append("order-1", [NewEvent("shop.OrderPlaced", {...})], NO_STREAM)

**Why positions are handed out after commit.** A sequence numbers rows when they are inserted, but
transactions commit in another order: a reader that trusted such numbers would move past an
event that a slower transaction commits later, and never see it. Here, appends insert their events
*without* a position and commit concurrently; then a short sequencing transaction, serialized by
an advisory lock, numbers every committed, unnumbered event in one go (``max(position) + 1, + 2…``)
and commits. Readers only read numbered events. Since each sequencing transaction sees every
earlier one and only numbers committed rows, a reader can never see position N+1 and later a
smaller one, and no event can be numbered below a position a reader has already passed.

An append is one statement, a call of ``twofold_append`` (see ``_postgres_schema``), which locks
the streams, checks their versions and inserts: one round trip and one commit. The appender runs
the sequencing step itself right after that commit, so its result carries positions; under load
one step numbers many appends at once. If an appender dies between the two, the next step, run
by any appender or by a waiting reader's poll, numbers what it left.
See docs/guarantees.md for the cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Collection, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

from twofold._notify import Notifier
from twofold.errors import ConcurrencyError, StoreError
from twofold.messages import utc_now
from twofold.personal import new_key
from twofold.store import (
    AppendResult,
    ExpectedVersion,
    StoredEvent,
    StreamSummary,
    StreamWrite,
    _json,
    category_of,
    validate_writes,
)
from twofold.store._base import EventStoreBase
from twofold.store._postgres_schema import CHANNEL, LOCK_MIGRATION, MIGRATIONS

if TYPE_CHECKING:
    from typing import TypeAlias

    from asyncpg.pool import PoolConnectionProxy

    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]

__all__ = ["PostgresEventStore"]

SCHEMA_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS twofold_schema (version integer NOT NULL)"
GET_SCHEMA_VERSION = "SELECT coalesce(max(version), 0) FROM twofold_schema"
HAS_SCHEMA_VERSION = "SELECT to_regclass('twofold_schema') IS NOT NULL"
SET_SCHEMA_VERSION = "INSERT INTO twofold_schema (version) VALUES ($1)"
LOCK = "SELECT pg_advisory_xact_lock($1, $2)"
APPEND = """
SELECT stream_id, stream_version
FROM twofold_append($1, $2::text[], $3::bigint[], $4::integer[], $5::text[],
                    $6::text[], $7::text[], $8::integer[], $9::text[], $10::text[], $11)
"""
WRONG_VERSION = "TF409"  # raised by twofold_append; DETAIL names the write and the stream's actual version
FIND_COMMAND = "SELECT versions, event_ids FROM commands WHERE command_id = $1"
COLUMNS = "position, stream_id, version, event_id, type, schema_version, data, metadata, recorded_at"
EVENTS_BY_ID = f"SELECT {COLUMNS} FROM events WHERE event_id = ANY($1::text[]) ORDER BY position"
NUMBER = "SELECT event_id, event_position FROM twofold_number($1::text[])"
SWEEP = "SELECT count(*) FROM twofold_number(NULL)"
HEAD_POSITION = "SELECT coalesce(max(position), 0) FROM events"
STREAM_VERSION = "SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1"
READ_STREAM = f"""
SELECT {COLUMNS} FROM events WHERE stream_id = $1 AND version BETWEEN $2 AND $3 ORDER BY version LIMIT $4
"""
READ_ALL = f"""
SELECT {COLUMNS} FROM events
WHERE position >= $1
  AND ($2::text[] IS NULL OR category = ANY($2))
  AND ($3::text[] IS NULL OR type = ANY($3))
ORDER BY position LIMIT $4
"""
# A stream listing never scans events: each step of the recursion jumps to the next stream id in
# the (stream_id, version) index, or in (category, stream_id) for one category (a loose index scan,
# which PostgreSQL does not do by itself), and each stream's first and last numbered events are
# looked up by (stream_id, version). Unnumbered events are not yet readable, so they do not count.
_STREAM_PAGE = """
WITH RECURSIVE ids(stream_id, n) AS (
    SELECT ({next_id} $1::text), 1
    UNION ALL
    SELECT ({next_id} ids.stream_id), n + 1 FROM ids WHERE ids.stream_id IS NOT NULL AND n < $2
)
SELECT ids.stream_id, last.version, first.position, last.position, last.recorded_at
FROM ids
JOIN events AS first ON first.stream_id = ids.stream_id AND first.version = 1
CROSS JOIN LATERAL (
    SELECT e.version, e.position, e.recorded_at FROM events AS e
    WHERE e.stream_id = ids.stream_id AND e.position IS NOT NULL ORDER BY e.version DESC LIMIT 1
) AS last
WHERE first.position IS NOT NULL
ORDER BY ids.stream_id
"""
STREAMS = _STREAM_PAGE.format(next_id="SELECT min(stream_id) FROM events WHERE position IS NOT NULL AND stream_id >")
STREAMS_OF_CATEGORY = _STREAM_PAGE.format(
    next_id="SELECT min(stream_id) FROM events WHERE category = $3 AND position IS NOT NULL AND stream_id >"
)
READ_CORRELATED = f"""
SELECT {COLUMNS} FROM events
WHERE metadata ->> 'correlation_id' = $1 AND position > $2 ORDER BY position LIMIT $3
"""

FIND_KEYS = "SELECT subject, key FROM subject_keys WHERE subject = ANY($1::text[])"
# A concurrent writer may have made a subject's key first: its key stands, never replaced.
INSERT_KEYS = """
INSERT INTO subject_keys (subject, key) SELECT * FROM unnest($1::text[], $2::bytea[])
ON CONFLICT (subject) DO NOTHING
"""
DELETE_KEY = "DELETE FROM subject_keys WHERE subject = $1"

PAGE_SIZE = 500
POLL_INTERVAL = 0.5  # seconds between head reads when no notification arrives (the fallback)


class PostgresEventStore(EventStoreBase):
    """An :class:`~twofold.store.EventStore` in PostgreSQL.

    Args:
        url: a ``postgresql://`` URL.
        pool_size: the most connections appends and reads use at once.
    """

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self._notifier = Notifier()
        self._listener: asyncpg.Connection[asyncpg.Record] | None = None
        self._listening = asyncio.Lock()

    # -- writing ---------------------------------------------------------------------------------

    async def append_streams(self, writes: Sequence[StreamWrite], command_id: str | None = None) -> AppendResult:
        validate_writes(writes)
        pool = await self._connected()
        with _translated():
            async with pool.acquire() as conn:
                try:
                    versions, written = await self._insert(conn, writes, command_id)
                except asyncpg.UniqueViolationError as exc:
                    if command_id is None or exc.constraint_name != "commands_pkey":
                        raise
                    versions, written = None, []  # a concurrent twin of this command committed first
                if versions is None:
                    assert command_id is not None  # only a recorded command id returns no versions
                    found = await self._command(conn, command_id)
                    assert found is not None
                    return found
                events = await self._numbered(conn, written)
        return AppendResult(command_id, versions, events)

    async def _insert(
        self, conn: Connection, writes: Sequence[StreamWrite], command_id: str | None
    ) -> tuple[dict[str, int] | None, list[StoredEvent]]:
        """The append's own transaction, one statement: check every stream's version and insert, unnumbered."""
        events = [e for w in writes for e in w.events]
        data, metadata = [_json.dumps(e.data) for e in events], [_json.dumps(e.metadata) for e in events]
        recorded_at = utc_now()
        try:
            rows = await conn.fetch(
                APPEND,
                command_id,
                [w.stream_id for w in writes],
                [_expected(w.expected_version) for w in writes],
                [len(w.events) for w in writes],
                [category_of(w.stream_id) for w in writes],
                [e.event_id for e in events],
                [e.type for e in events],
                [e.schema_version for e in events],
                data,
                metadata,
                recorded_at,
            )
        except asyncpg.PostgresError as exc:
            if exc.sqlstate != WRONG_VERSION:
                raise
            detail = json.loads(exc.detail or "{}")
            write = writes[detail["write"]]
            raise ConcurrencyError(write.stream_id, write.expected_version, detail["actual"]) from None
        if rows and rows[0][0] is None:
            return None, []
        versions: dict[str, int] = {row[0]: row[1] for row in rows}
        written: list[StoredEvent] = []
        index = 0
        for write in writes:
            first = versions[write.stream_id] - len(write.events) + 1
            for version, event in enumerate(write.events, start=first):
                written.append(
                    StoredEvent(
                        0,
                        write.stream_id,
                        version,
                        event.event_id,
                        event.type,
                        event.schema_version,
                        _json.loads(data[index]),
                        _json.loads(metadata[index]),
                        recorded_at,
                    )
                )
                index += 1
        return versions, written

    async def _numbered(self, conn: Connection, written: list[StoredEvent]) -> list[StoredEvent]:
        """This append's events with their positions, from the sequencing step run for them."""
        if not written:
            return []
        positions: dict[str, int] = {row[0]: row[1] for row in await conn.fetch(NUMBER, [e.event_id for e in written])}
        return [dataclasses.replace(e, position=positions[e.event_id]) for e in written]

    async def _stored(self, conn: Connection, event_ids: list[str]) -> list[StoredEvent]:
        """Stored events by id, numbering any that are still waiting for a position."""
        if event_ids:
            await conn.fetch(NUMBER, event_ids)
        return [_decode(row) for row in await conn.fetch(EVENTS_BY_ID, event_ids)]

    async def _sweep(self, conn: Connection) -> None:
        """Number every committed, unnumbered event, after every position handed out before."""
        await conn.fetchval(SWEEP)  # NOTIFY tells every listener, this process included, the new head

    async def _command(self, conn: Connection, command_id: str) -> AppendResult | None:
        row = await conn.fetchrow(FIND_COMMAND, command_id)
        if row is None:
            return None
        return AppendResult(command_id, json.loads(row[0]), await self._stored(conn, list(row[1])))

    # -- reading ---------------------------------------------------------------------------------

    async def read_stream(
        self, stream_id: str, from_version: int = 1, to_version: int | None = None
    ) -> AsyncIterator[StoredEvent]:
        version, last = max(from_version, 1), to_version if to_version is not None else 2**62
        while version <= last:
            page = await self._fetch(READ_STREAM, stream_id, version, last, PAGE_SIZE)
            if any(row["position"] is None for row in page):  # committed, not numbered yet
                await self._sweep_now()
                continue
            for row in page:
                yield _decode(row)
            if len(page) < PAGE_SIZE:
                return
            version = page[-1]["version"] + 1

    async def read_all(
        self,
        from_position: int = 1,
        limit: int | None = None,
        categories: Collection[str] | None = None,
        types: Collection[str] | None = None,
    ) -> AsyncIterator[StoredEvent]:
        position, remaining = max(from_position, 1), limit
        category_filter = None if categories is None else list(categories)
        type_filter = None if types is None else list(types)
        while remaining is None or remaining > 0:
            size = PAGE_SIZE if remaining is None else min(PAGE_SIZE, remaining)
            page = await self._fetch(READ_ALL, position, category_filter, type_filter, size)
            for row in page:
                yield _decode(row)
            if len(page) < size:
                return
            position = page[-1]["position"] + 1
            remaining = None if remaining is None else remaining - len(page)

    async def streams(
        self, *, category: str | None = None, after: str | None = None, limit: int = 100
    ) -> list[StreamSummary]:
        if limit <= 0:
            return []
        if category is None:
            rows = await self._fetch(STREAMS, after or "", limit)
        else:
            rows = await self._fetch(STREAMS_OF_CATEGORY, after or "", limit, category)
        return [StreamSummary(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def read_correlated(self, correlation_id: str) -> AsyncIterator[StoredEvent]:
        position = 0
        while True:
            page = await self._fetch(READ_CORRELATED, correlation_id, position, PAGE_SIZE)
            for row in page:
                yield _decode(row)
            if len(page) < PAGE_SIZE:
                return
            position = page[-1]["position"]

    async def wait_for_events(self, after_position: int, timeout: float) -> bool:
        # NOTIFY wakes waiters within milliseconds of a sequencing step; a poll that also numbers
        # what a dead appender left behind is the fallback when notifications are lost.
        await self._listen()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if await self._notifier.wait(after_position, max(min(left, POLL_INTERVAL), 0)):
                return True
            await self._sweep_now()
            head = await self.head_position()
            if head > after_position:
                self._notifier.announce(head)
                return True
            if left <= POLL_INTERVAL:
                return False

    async def head_position(self) -> int:
        return int(await self._fetchval(HEAD_POSITION))

    async def stream_version(self, stream_id: str) -> int:
        return int(await self._fetchval(STREAM_VERSION, stream_id))

    async def command_result(self, command_id: str) -> AppendResult | None:
        pool = await self._connected()
        with _translated():
            async with pool.acquire() as conn:
                return await self._command(conn, command_id)

    async def close(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    # -- connections -----------------------------------------------------------------------------

    # -- personal data keys (twofold.personal.KeyStore) -----------------------------------------

    async def subject_keys(self, subjects: Collection[str], *, create: bool = False) -> dict[str, bytes]:
        wanted = sorted(subjects)
        found = {row[0]: bytes(row[1]) for row in await self._fetch(FIND_KEYS, wanted)}
        missing = [s for s in wanted if s not in found]
        if create and missing:
            await self._fetch(INSERT_KEYS, missing, [new_key() for _ in missing])
            found |= {row[0]: bytes(row[1]) for row in await self._fetch(FIND_KEYS, missing)}
        return found

    async def forget_subject(self, subject: str) -> None:
        await self._fetch(DELETE_KEY, subject)

    async def _connected(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._pool is None:
                with _translated():
                    pool = await asyncpg.create_pool(
                        self.url, min_size=1, max_size=self._pool_size, reset=_keep_session
                    )
                    try:
                        async with pool.acquire() as conn:
                            await _migrate(conn)
                    except BaseException:  # failed or cancelled: leave no connection behind
                        pool.terminate()
                        raise
                self._pool = pool
        return self._pool

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        pool = await self._connected()
        with _translated():
            return list(await pool.fetch(sql, *args))

    async def _fetchval(self, sql: str, *args: Any) -> Any:
        pool = await self._connected()
        with _translated():
            return await pool.fetchval(sql, *args)

    async def _sweep_now(self) -> None:
        pool = await self._connected()
        with _translated():
            async with pool.acquire() as conn:
                await self._sweep(conn)

    async def _listen(self) -> None:
        """Keep one connection LISTENing; after a lost connection, the next wait opens another."""
        if self._listener is not None and not self._listener.is_closed():
            return
        async with self._listening:  # one connection, however many followers wait at once
            if self._listener is None or self._listener.is_closed():
                await self._open_listener()

    async def _open_listener(self) -> None:
        if self._listener is not None:
            self._listener.terminate()  # a lost connection; closing it only releases its resources
            self._listener = None
        try:
            listener = await asyncpg.connect(self.url)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return  # the poll still finds new events; the next wait tries again
        try:
            await listener.add_listener(CHANNEL, self._notified)
        except BaseException as exc:  # failed or cancelled: close the connection rather than leak it
            listener.terminate()
            if isinstance(exc, (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)):
                return
            raise
        self._listener = listener

    def _notified(self, connection: object, pid: int, channel: str, payload: object) -> None:
        with contextlib.suppress(ValueError):
            self._notifier.announce(int(str(payload)))


async def _keep_session(conn: Connection) -> None:
    """Skip asyncpg's reset on release: this store leaves no session state behind (its locks are
    transaction-scoped and it never LISTENs on pooled connections), and the reset costs a round trip."""


async def _migrate(conn: Connection) -> None:
    """Bring the schema to the newest version, once, whatever the number of processes starting.

    A schema already at the newest version is left alone without a lock or a write, so that a role
    that may only read (a console's, a tool's) can open the store. Versions only ever grow, so
    the look before the lock cannot miss a migration.
    """
    if await conn.fetchval(HAS_SCHEMA_VERSION) and await conn.fetchval(GET_SCHEMA_VERSION) >= len(MIGRATIONS):
        return
    async with conn.transaction():
        await conn.execute(LOCK, *LOCK_MIGRATION)
        await conn.execute(SCHEMA_VERSION_TABLE)
        version = await conn.fetchval(GET_SCHEMA_VERSION)
        for number, migration in enumerate(MIGRATIONS, start=1):
            if number > version:
                await conn.execute(migration)
                await conn.execute(SET_SCHEMA_VERSION, number)


def _expected(expected: int | ExpectedVersion) -> int | None:
    """An expected version as twofold_append takes it: a number, or NULL for any version."""
    if expected is ExpectedVersion.ANY:
        return None
    return 0 if expected is ExpectedVersion.NO_STREAM else int(expected)


def _decode(row: asyncpg.Record) -> StoredEvent:
    return StoredEvent(
        position=row[0],
        stream_id=row[1],
        version=row[2],
        event_id=row[3],
        type=row[4],
        schema_version=row[5],
        data=_json.loads(row[6]),
        metadata=_json.loads(row[7]),
        recorded_at=row[8],
    )


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """Map asyncpg's errors to twofold's, most specific first."""
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "events_event_id_key":
            raise ValueError(f"An event id in this append is already stored ({exc.detail})") from exc
        raise StoreError(f"PostgreSQL refused the write: {exc}") from exc
    except asyncpg.PostgresError as exc:
        raise StoreError(f"PostgreSQL failed: {exc}") from exc
    except (asyncpg.InterfaceError, asyncpg.InternalClientError, OSError) as exc:
        # InternalClientError: asyncpg's protocol state after the server cut the connection under
        # an open transaction (e.g. pg_terminate_backend, a restart) - a lost connection, not a bug.
        raise StoreError(f"PostgreSQL connection failed: {exc}") from exc
