"""Read models in a SQLite file (WAL mode), with FTS5 for full-text search.

Projections write through one writer thread; queries read on a small pool of reader threads, and
WAL lets them read while a batch commits. Read models belong in their own file, apart from the
event store, so that projecting never waits on the append lock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from twofold._sqlite import SQLiteThreads, transaction
from twofold.errors import StoreError
from twofold.readmodels import CheckpointConflict, Database, Params, Row
from twofold.tenancy import tenant_location

__all__ = ["SQLiteDatabase", "SQLiteReadStore"]

T = TypeVar("T")
TENANT_READERS = 2  # reader threads per tenant's file: a file per tenant should not cost a pool each

SCHEMA = """
CREATE TABLE IF NOT EXISTS twofold_checkpoints (
    projection TEXT PRIMARY KEY,
    position   INTEGER NOT NULL
) WITHOUT ROWID;
"""
GET_CHECKPOINT = "SELECT position FROM twofold_checkpoints WHERE projection = ?"
SET_CHECKPOINT = """
INSERT INTO twofold_checkpoints (projection, position) VALUES (?, ?)
ON CONFLICT (projection) DO UPDATE SET position = excluded.position
"""


class SQLiteDatabase:
    """:class:`~twofold.readmodels.Database` over one sqlite3 connection."""

    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Params = ()) -> None:
        self._conn.execute(sql, params)

    def execute_count(self, sql: str, params: Params = ()) -> int:
        return self._conn.execute(sql, params).rowcount

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        self._conn.executemany(sql, rows)

    def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        cursor = self._conn.execute(sql, params)
        row = cursor.fetchone()
        return None if row is None else dict(zip(_names(cursor), row, strict=True))

    def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        cursor = self._conn.execute(sql, params)
        names = _names(cursor)
        return [dict(zip(names, row, strict=True)) for row in cursor]


def _names(cursor: sqlite3.Cursor) -> list[str]:
    return [column[0] for column in cursor.description]


class SQLiteReadStore:
    """A :class:`~twofold.readmodels.ReadStore` in a SQLite file.

    Args:
        path: the database file; its folder is created when missing.
        readers: threads serving queries.
    """

    dialect = "sqlite"

    def __init__(self, path: str | Path, *, readers: int = 4) -> None:
        # A read model can always be rebuilt from the events, so it need not sync every commit.
        self._threads = SQLiteThreads(path, schema=SCHEMA, synchronous="NORMAL", readers=readers, translate=_translate)
        self.path = self._threads.path
        self._tenants: dict[str, SQLiteReadStore] = {}

    async def transact(
        self, name: str, work: Callable[[Database], None], *, expected: int | None = None, position: int | None = None
    ) -> None:
        await self._threads.write(_transact, name, work, expected, position)

    async def read(self, work: Callable[[Database], T]) -> T:
        return await self._threads.read(lambda conn: work(SQLiteDatabase(conn)))

    async def checkpoint(self, name: str) -> int:
        row = await self.read(lambda db: db.fetch_one(GET_CHECKPOINT, (name,)))
        return int(row["position"]) if row else 0

    def for_tenant(self, tenant: str) -> SQLiteReadStore:
        """The tenant's read models in a file of their own: ``read.db`` → ``read.tenants/tenant_acme_….db``."""
        store = self._tenants.get(tenant)
        if store is None:
            folder = self.path.with_name(f"{self.path.stem}.tenants")
            store = SQLiteReadStore(
                folder / f"{tenant_location(tenant)}{self.path.suffix or '.db'}", readers=TENANT_READERS
            )
            self._tenants[tenant] = store
        return store

    async def close(self) -> None:
        for store in self._tenants.values():
            await store.close()
        self._tenants.clear()
        self._threads.close()


def _transact(
    conn: sqlite3.Connection, name: str, work: Callable[[Database], None], expected: int | None, position: int | None
) -> None:
    with transaction(conn):
        if expected is not None:
            row = conn.execute(GET_CHECKPOINT, (name,)).fetchone()
            actual = row[0] if row else 0
            if actual != expected:
                raise CheckpointConflict(name, expected, actual)
        work(SQLiteDatabase(conn))
        if position is not None:
            conn.execute(SET_CHECKPOINT, (name, position))


def _translate(exc: sqlite3.Error) -> Exception:
    return StoreError(f"SQLite read store failed: {exc}")
