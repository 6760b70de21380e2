"""Parked messages: what a subscription could not import, kept in order until a retry lets it in.

    letters = DeadLetters(read_store)
    await letters.setup()
    await letters.park(DeadLetter("inventory", "reservation-o-1", 2, payload, "KeyError: …", attempts=5))
    await letters.parked(source="inventory")  # [DeadLetter(source='inventory', stream_id='reservation-o-1', …)]

A dead letter is keyed by ``(source, stream_id, version)``: parking the same message twice keeps
one row (and the first error). A message that is not even a readable event has no stream; it is
kept under the stream id ``""`` and keyed by its place in the transport (``version``) instead.
The rows live in the service's read store, in one table, with SQL that runs on SQLite and
PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from twofold.messages import utc_now
from twofold.readmodels import Database, ReadStore, Row

__all__ = ["UNREADABLE_STREAM", "DeadLetter", "DeadLetters"]

UNREADABLE_STREAM = ""  # the stream id of a parked message that could not be read as an event at all
TRANSACTION_NAME = "twofold.dead_letters"  # the read store's name for these transactions; no checkpoint moves

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS twofold_dead_letters (
    source    TEXT NOT NULL,
    stream_id TEXT NOT NULL,
    version   BIGINT NOT NULL,
    event_id  TEXT NOT NULL,
    payload   TEXT NOT NULL,
    error     TEXT NOT NULL,
    attempts  INTEGER NOT NULL,
    parked_at TEXT NOT NULL,
    PRIMARY KEY (source, stream_id, version)
)
"""
INSERT = """
INSERT INTO twofold_dead_letters (source, stream_id, version, event_id, payload, error, attempts, parked_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (source, stream_id, version) DO NOTHING
"""
DELETE = "DELETE FROM twofold_dead_letters WHERE source = ? AND stream_id = ? AND version = ?"
FAILED_AGAIN = """
UPDATE twofold_dead_letters SET error = ?, attempts = attempts + 1
WHERE source = ? AND stream_id = ? AND version = ?
"""
SELECT = "SELECT source, stream_id, version, event_id, payload, error, attempts, parked_at FROM twofold_dead_letters"
ORDER = " ORDER BY source, stream_id, version"
PARKED_STREAMS = "SELECT DISTINCT stream_id FROM twofold_dead_letters WHERE source = ?"
COUNT_BY_SOURCE = "SELECT source, COUNT(*) AS parked FROM twofold_dead_letters GROUP BY source"
# A page after the key (source, stream_id, version) of the last row shown: the primary key's order, no OFFSET.
# The key is compared column by column, which SQLite and PostgreSQL both read off the primary key index.
PAGE = (
    SELECT
    + " WHERE source > ? OR (source = ? AND (stream_id > ? OR (stream_id = ? AND version > ?)))"
    + ORDER
    + " LIMIT ?"
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One parked message.

    Attributes:
        source: the service it came from.
        stream_id: its stream in the source service (``""`` when it could not be read).
        version: its version in that stream (for an unreadable message, its place in the transport).
        payload: the message as received (a JSON text), so that a retry reads it again with the current code.
        error: why it was parked.
        attempts: how often it was tried, retries included.
    """

    source: str
    stream_id: str
    version: int
    payload: str
    error: str
    attempts: int = 1
    event_id: str = ""
    parked_at: datetime = field(default_factory=utc_now)


class DeadLetters:
    """The parked messages of one service's subscriptions, in its read store."""

    def __init__(self, read_store: ReadStore[Database]) -> None:
        self._read_store = read_store
        self._ready = False

    async def setup(self) -> None:
        """Create the table if it does not exist yet (idempotent)."""
        if not self._ready:
            await self._read_store.transact(TRANSACTION_NAME, lambda db: db.execute(CREATE_TABLE))
            self._ready = True

    async def park(self, letter: DeadLetter) -> None:
        """Keep ``letter``; a message already parked stays as it is."""
        await self.setup()
        row = (
            letter.source,
            letter.stream_id,
            letter.version,
            letter.event_id,
            letter.payload,
            letter.error,
            letter.attempts,
            letter.parked_at.isoformat(),
        )
        await self._read_store.transact(TRANSACTION_NAME, lambda db: db.execute(INSERT, row))

    async def remove(self, source: str, stream_id: str, version: int) -> None:
        """Forget a parked message (after it was imported, or found imported already)."""
        await self.setup()
        await self._read_store.transact(TRANSACTION_NAME, lambda db: db.execute(DELETE, (source, stream_id, version)))

    async def failed_again(self, letter: DeadLetter, error: str) -> None:
        """Record that a retry of ``letter`` failed too, and why."""
        key = (error, letter.source, letter.stream_id, letter.version)
        await self._read_store.transact(TRANSACTION_NAME, lambda db: db.execute(FAILED_AGAIN, key))

    async def parked(self, source: str | None = None, stream_id: str | None = None) -> list[DeadLetter]:
        """Parked messages, by source, stream and version; only ``source``'s (and ``stream_id``'s) if given."""
        await self.setup()
        sql, params = SELECT, []
        conditions = [
            (name, value) for name, value in (("source", source), ("stream_id", stream_id)) if value is not None
        ]
        if conditions:
            sql += " WHERE " + " AND ".join(f"{name} = ?" for name, _ in conditions)  # names from the tuple above
            params = [value for _, value in conditions]
        rows = await self._read_store.read(lambda db: db.fetch_all(sql + ORDER, params))
        return [_letter(row) for row in rows]

    async def page(self, after: tuple[str, str, int] | None = None, limit: int = 100) -> list[DeadLetter]:
        """Up to ``limit`` parked messages in key order, those after the key ``after`` (the last one shown) only."""
        await self.setup()
        source, stream_id, version = after if after is not None else ("", "", -1)
        params = (source, source, stream_id, stream_id, version, limit)
        rows = await self._read_store.read(lambda db: db.fetch_all(PAGE, params))
        return [_letter(row) for row in rows]

    async def parked_streams(self, source: str) -> set[str]:
        """The streams of ``source`` that have a message parked: their later messages wait behind it."""
        await self.setup()
        rows = await self._read_store.read(lambda db: db.fetch_all(PARKED_STREAMS, (source,)))
        return {str(row["stream_id"]) for row in rows}

    async def counts(self) -> dict[str, int]:
        """How many messages are parked, per source."""
        await self.setup()
        rows = await self._read_store.read(_counts)
        return {str(row["source"]): int(row["parked"]) for row in rows}


def _counts(db: Database) -> Sequence[Row]:
    return db.fetch_all(COUNT_BY_SOURCE)


def _letter(row: Row) -> DeadLetter:
    parked_at = row["parked_at"]
    return DeadLetter(
        source=str(row["source"]),
        stream_id=str(row["stream_id"]),
        version=int(row["version"]),
        payload=str(row["payload"]),
        error=str(row["error"]),
        attempts=int(row["attempts"]),
        event_id=str(row["event_id"]),
        parked_at=datetime.fromisoformat(parked_at) if isinstance(parked_at, str) else parked_at,
    )
