"""Read models in a SQLite file (WAL mode), with FTS5 for full-text search.

Projections write through one writer thread; queries read on a small pool of reader threads, and
WAL lets them read while a batch commits. Read models belong in their own file, apart from the
event store, so that projecting never waits on the append lock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from twofold._sqlite import SQLiteThreads, transaction
from twofold.errors import StoreError
from twofold.readmodels import (
    GET_CHECKPOINT,
    CheckpointConflict,
    Database,
    Params,
    ReadStore,
    Row,
    check_scratch_name,
    quoted_table,
)
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
SET_CHECKPOINT = """
INSERT INTO twofold_checkpoints (projection, position) VALUES (?, ?)
ON CONFLICT (projection) DO UPDATE SET position = excluded.position
"""
# The shadow file is attached under this name while its tables are swapped in.
ATTACH_SHADOW = "ATTACH DATABASE ? AS twofold_shadow"
DETACH_SHADOW = "DETACH DATABASE twofold_shadow"
GET_SHADOW_CHECKPOINT = "SELECT position FROM twofold_shadow.twofold_checkpoints WHERE projection = ?"
# A table's own definition first, then its indexes and triggers, which are made once its rows are in.
SHADOW_DEFINITIONS = """
SELECT type, sql FROM twofold_shadow.sqlite_master
WHERE tbl_name = ? AND sql IS NOT NULL ORDER BY type <> 'table'
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

    def fetch_pages(self, sql: str, params: Params = (), size: int = 500) -> Iterator[list[Row]]:
        cursor = self._conn.execute(sql, params)
        names = _names(cursor)
        while rows := cursor.fetchmany(size):
            yield [dict(zip(names, row, strict=True)) for row in rows]


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
        self._scratch_of: SQLiteReadStore | None = None  # the store this one is a scratch store of

    async def transact(
        self, name: str, work: Callable[[Database], None], *, expected: int | None = None, position: int | None = None
    ) -> None:
        await self._threads.write(_transact, name, work, expected, position)

    async def read(self, work: Callable[[Database], T]) -> T:
        return await self._threads.read(_read, work)

    async def checkpoint(self, name: str) -> int:
        row = await self.read(lambda db: db.fetch_one(GET_CHECKPOINT, (name,)))
        return int(row["position"]) if row else 0

    def for_tenant(self, tenant: str) -> SQLiteReadStore:
        """The tenant's read models in a file of their own: ``read.db`` → ``read.tenants/tenant_acme_….db``."""
        if self._scratch_of is not None:
            raise ValueError("A scratch store has no tenants of its own")
        store = self._tenants.get(tenant)
        if store is None:
            folder = self.path.with_name(f"{self.path.stem}.tenants")
            store = SQLiteReadStore(
                folder / f"{tenant_location(tenant)}{self.path.suffix or '.db'}", readers=TENANT_READERS
            )
            self._tenants[tenant] = store
        return store

    def scratch(self, name: str) -> SQLiteReadStore:
        """A fresh file beside this store's, that no query reads: ``read.db`` → ``read.scratch-<name>.db``."""
        if self._scratch_of is not None:
            raise ValueError("A scratch store has no scratch stores of its own")
        path = self.path.with_name(f"{self.path.stem}.scratch-{check_scratch_name(name)}{self.path.suffix or '.db'}")
        _remove_database(path)
        store = SQLiteReadStore(path, readers=TENANT_READERS)
        store._scratch_of = self
        return store

    async def discard(self) -> None:
        if self._scratch_of is None:
            raise ValueError(f"{self.path} is no scratch store: only a scratch store can be discarded")
        await self.close()
        _remove_database(self.path)

    async def swap_in(self, shadow: ReadStore[Any], name: str, tables: Sequence[str]) -> None:
        """Copy the shadow's tables over these in one writer transaction, with the shadow's file attached.

        SQLite cannot move a table between files, so the rows are copied (FTS5 tables included,
        whose indexes are rebuilt as the rows go in); the write lock is held for as long as that
        takes. Readers go on reading the old rows meanwhile (WAL) and see the new ones once it commits.
        """
        if not isinstance(shadow, SQLiteReadStore) or shadow._scratch_of is not self:
            raise ValueError("Only a scratch store of this store can be swapped in")
        quoted = [quoted_table(table) for table in tables]
        await self._threads.write(_swap_in, shadow.path, name, list(zip(tables, quoted, strict=True)))

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


def _read(conn: sqlite3.Connection, work: Callable[[Database], T]) -> T:
    # One transaction, so that every statement of the read sees one snapshot (WAL): a query over
    # several tables, or a swap committing between two statements, never shows a mixed state.
    conn.execute("BEGIN")
    try:
        return work(SQLiteDatabase(conn))
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")  # it only read: ending it either way is the same


def _swap_in(conn: sqlite3.Connection, shadow: Path, name: str, tables: list[tuple[str, str]]) -> None:
    conn.execute(ATTACH_SHADOW, (str(shadow),))  # ATTACH cannot run inside a transaction
    try:
        with transaction(conn):
            row = conn.execute(GET_SHADOW_CHECKPOINT, (name,)).fetchone()
            rebuilt = row[0] if row else 0
            row = conn.execute(GET_CHECKPOINT, (name,)).fetchone()
            live = row[0] if row else 0
            if live > rebuilt:
                raise CheckpointConflict(name, rebuilt, live)
            for table, quoted in tables:
                _replace_table(conn, table, quoted)
            conn.execute(SET_CHECKPOINT, (name, rebuilt))
    finally:
        conn.execute(DETACH_SHADOW)


def _replace_table(conn: sqlite3.Connection, table: str, quoted: str) -> None:
    """Drop the live table and make it again as the shadow's, with the shadow's rows, indexes and triggers."""
    conn.execute(f"DROP TABLE IF EXISTS main.{quoted}")
    definitions = conn.execute(SHADOW_DEFINITIONS, (table,)).fetchall()
    for kind, definition in definitions:
        conn.execute(definition)  # SQLite keeps definitions unqualified: they create the object in main
        if kind == "table":
            conn.execute(f"INSERT INTO main.{quoted} SELECT * FROM twofold_shadow.{quoted}")


def _remove_database(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)


def _translate(exc: sqlite3.Error) -> Exception:
    return StoreError(f"SQLite read store failed: {exc}")
