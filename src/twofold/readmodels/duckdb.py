"""Read models in a DuckDB file: the warehouse target, for reports over many rows.

    warehouse = DuckDBReadStore("data/shop-warehouse.duckdb")

DuckDB stores tables by column and scans them in parallel, so ``GROUP BY`` over millions of fact
rows answers in milliseconds where a row store would take seconds. It is an embedded database:
one process writes a file, so the process that serves a warehouse's queries also projects into it
(docs/architecture.md, "Read-model targets").

A DuckDB connection is not for use by two threads at once. Projections write through one writer
connection on one thread; queries read on a small pool of threads, each with a cursor of its own
(a cursor is a connection to the same database) taken from a fixed set made when the store opens.
MVCC lets them read a snapshot while a batch commits. The checkpoint lives in ``twofold_checkpoints``
and commits in the batch's own transaction, so a crash loses a batch whole and it is applied again,
never twice.

A tenant's models live in a file of their own (``warehouse.tenants/tenant_…duckdb``); a scratch
store is a schema ``twofold_scratch_<name>`` in the same file, swapped in by one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import duckdb

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

__all__ = ["DuckDBDatabase", "DuckDBReadStore", "to_duckdb"]

T = TypeVar("T")
TENANT_READERS = 2  # reader cursors per tenant's file: a file per tenant should not cost a pool each
MAIN_SCHEMA = "main"

CREATE_CHECKPOINTS = """
CREATE TABLE IF NOT EXISTS twofold_checkpoints (
    projection VARCHAR PRIMARY KEY,
    position   BIGINT NOT NULL
)
"""
SET_CHECKPOINT = """
INSERT INTO twofold_checkpoints (projection, position) VALUES (?, ?)
ON CONFLICT (projection) DO UPDATE SET position = excluded.position
"""
SHADOW_CHECKPOINTS = "twofold_checkpoints WHERE projection = ?"  # read in the scratch schema
CURRENT_DATABASE = "SELECT current_database()"
# A scratch schema's table definitions, to make the live table again as the shadow's.
SHADOW_TABLE = "SELECT sql FROM duckdb_tables() WHERE database_name = ? AND schema_name = ? AND table_name = ?"
SHADOW_INDEXES = """
SELECT sql FROM duckdb_indexes() WHERE database_name = ? AND schema_name = ? AND table_name = ? AND sql IS NOT NULL
"""

# DuckDB lets one process write a file, and takes no locks: of two transactions writing one row,
# the later to commit fails, after doing all its work. Every writer of a file in this process (two
# store objects on it, a runner and a rebuild) holds the file's lock for its transaction instead,
# as SQLite's write lock would make it wait: the second then finds the checkpoint moved on.
_FILE_LOCKS: dict[Path, threading.Lock] = {}
_FILE_LOCKS_GUARD = threading.Lock()


def _lock_for(path: Path) -> threading.Lock:
    with _FILE_LOCKS_GUARD:
        return _FILE_LOCKS.setdefault(path.resolve(), threading.Lock())


_SQL = re.compile(
    r"""
      (?P<verbatim>
          '(?:[^']|'')*'                # '…' string; '' is a quote
        | "(?:[^"]|"")*"                # "…" identifier
        | --[^\n]*                      # -- comment
        | /\*.*?\*/                     # /* comment */
      )
    | (?P<cast>::)
    | :(?P<name>[A-Za-z_]\w*)
    """,
    re.VERBOSE | re.DOTALL,
)


@functools.lru_cache(maxsize=1024)
def to_duckdb(sql: str) -> str:
    """Rewrite ``:name`` placeholders as DuckDB's ``$name``, leaving strings, comments and ``::`` casts alone.

    ``WHERE id = :id AND n = :n::int AND c <> ':x'`` → ``WHERE id = $id AND n = $n::int AND c <> ':x'``.
    ``?`` placeholders need no rewriting: DuckDB takes them as they are.
    """
    return _SQL.sub(lambda m: f"${m['name']}" if m["name"] is not None else m[0], sql)


def _sql(sql: str, params: Params | Sequence[Params]) -> str:
    named = isinstance(params, Mapping) or (
        isinstance(params, Sequence) and bool(params) and isinstance(params[0], Mapping)
    )
    return to_duckdb(sql) if named else sql


def _bound(params: Params) -> Any:
    return dict(params) if isinstance(params, Mapping) else list(params)


# A plain INSERT of one row of ? placeholders, nothing after its VALUES: rows of consecutive such
# statements go to DuckDB as one multi-row INSERT. DuckDB pays about a millisecond to plan and run
# a statement however small, so a fact table filled row by row would cost that per event.
_PLAIN_INSERT = re.compile(r"^\s*(INSERT\s+INTO\s+.+?\s+VALUES\s*)(\(\s*\?(?:\s*,\s*\?)*\s*\))\s*;?\s*$", re.I | re.S)
INSERT_ROWS = 1000  # rows in one multi-row INSERT at most


@functools.lru_cache(maxsize=256)
def _plain_insert(sql: str) -> tuple[str, str] | None:
    found = _PLAIN_INSERT.match(sql)
    return None if found is None else (found[1], found[2])


class DuckDBDatabase:
    """:class:`~twofold.readmodels.Database` over one DuckDB connection (or cursor).

    Consecutive plain ``INSERT … VALUES (?, …)`` statements with the same text are held and sent as
    one multi-row ``INSERT`` before any other statement, read or the commit: the same rows, in the
    same order, in the same transaction. A failing row (a duplicate key) fails the batch as before,
    only at that later statement.
    """

    dialect = "duckdb"

    def __init__(self, conn: duckdb.DuckDBPyConnection) -> None:
        self._conn = conn
        self._held: tuple[str, list[Any]] | None = None  # the held INSERT's text, and its rows' values
        self._held_rows = 0

    def execute(self, sql: str, params: Params = ()) -> None:
        if not isinstance(params, Mapping) and _plain_insert(sql) is not None:
            if self._held is not None and self._held[0] != sql:
                self.flush()
            if self._held is None:
                self._held = (sql, [])
            self._held[1].extend(params)
            self._held_rows += 1
            if self._held_rows >= INSERT_ROWS:
                self.flush()
            return
        self.flush()
        self._conn.execute(_sql(sql, params), _bound(params))

    def flush(self) -> None:
        """Send the held rows, if any (before the commit, and before any other statement)."""
        if self._held is None:
            return
        sql, values = self._held
        self._held, rows = None, self._held_rows
        self._held_rows = 0
        insert = _plain_insert(sql)
        assert insert is not None
        self._conn.execute(insert[0] + ", ".join([insert[1]] * rows), values)

    def execute_count(self, sql: str, params: Params = ()) -> int:
        self.flush()
        row = self._conn.execute(_sql(sql, params), _bound(params)).fetchone()  # DML answers with its row count
        return int(row[0]) if row else 0

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        if not rows:
            return
        if _plain_insert(sql) is not None and not isinstance(rows[0], Mapping):
            for row in rows:
                self.execute(sql, row)
            return
        self.flush()
        self._conn.executemany(_sql(sql, rows), [_bound(row) for row in rows])

    def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        self.flush()
        cursor = self._conn.execute(_sql(sql, params), _bound(params))
        row = cursor.fetchone()
        return None if row is None else dict(zip(_names(cursor), row, strict=True))

    def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        self.flush()
        cursor = self._conn.execute(_sql(sql, params), _bound(params))
        names = _names(cursor)
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def fetch_pages(self, sql: str, params: Params = (), size: int = 500) -> Iterator[list[Row]]:
        self.flush()
        cursor = self._conn.execute(_sql(sql, params), _bound(params))
        names = _names(cursor)
        while rows := cursor.fetchmany(size):
            yield [dict(zip(names, row, strict=True)) for row in rows]


def _names(cursor: duckdb.DuckDBPyConnection) -> list[str]:
    return [column[0] for column in cursor.description or ()]


class _Threads:
    """One file's writer connection on its own thread, and reader cursors on a small pool of threads."""

    def __init__(self, path: Path, readers: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = duckdb.connect(str(path))
            self.conn.execute(CREATE_CHECKPOINTS)
            self.catalog = str(_one(self.conn, CURRENT_DATABASE))
        except duckdb.Error as exc:
            raise _translate(exc) from exc
        self.writer = ThreadPoolExecutor(1, thread_name_prefix=f"duckdb-writer {path.name}")
        self.readers = ThreadPoolExecutor(readers, thread_name_prefix=f"duckdb-reader {path.name}")
        # Made here, on one thread, before any other thread touches the connection.
        self.cursors: queue.SimpleQueue[duckdb.DuckDBPyConnection] = queue.SimpleQueue()
        self._made = [self.conn.cursor() for _ in range(readers)]
        for cursor in self._made:
            self.cursors.put(cursor)
        self.lock = _lock_for(path)
        self.closed = False

    async def write(self, work: Callable[..., T], *args: Any) -> T:
        if self.closed:
            raise StoreError("DuckDB read store failed: the store is closed")
        return await asyncio.get_running_loop().run_in_executor(
            self.writer, functools.partial(self._locked, work, *args)
        )

    def _locked(self, work: Callable[..., T], *args: Any) -> T:
        with self.lock:  # see _FILE_LOCKS: one writer of this file in the process at a time
            return work(self.conn, *args)

    async def read(self, work: Callable[..., T], *args: Any) -> T:
        if self.closed:
            raise StoreError("DuckDB read store failed: the store is closed")

        def on_a_cursor() -> T:
            cursor = self.cursors.get()
            try:
                return work(cursor, *args)
            finally:
                self.cursors.put(cursor)

        return await asyncio.get_running_loop().run_in_executor(self.readers, on_a_cursor)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.readers.shutdown(wait=True)
        self.writer.shutdown(wait=True)
        for cursor in self._made:
            cursor.close()
        self.conn.close()


class DuckDBReadStore:
    """A :class:`~twofold.readmodels.ReadStore` in a DuckDB file.

    Args:
        path: the database file; its folder is created when missing.
        readers: threads (each with its own cursor) serving queries.
    """

    dialect = "duckdb"

    def __init__(self, path: str | Path, *, readers: int = 4) -> None:
        self.path = Path(path)
        self._threads = _Threads(self.path, readers)
        self._schema = MAIN_SCHEMA
        self._tenants: dict[str, DuckDBReadStore] = {}
        self._scratch_of: DuckDBReadStore | None = None  # the store this one is a scratch store of
        self._fresh = False  # a scratch schema not yet (re)made

    @classmethod
    def _scratch(cls, parent: DuckDBReadStore, schema: str) -> DuckDBReadStore:
        store = cls.__new__(cls)
        store.path = parent.path
        store._threads = parent._threads
        store._schema = schema
        store._tenants = {}
        store._scratch_of = parent
        store._fresh = True
        return store

    async def transact(
        self, name: str, work: Callable[[Database], None], *, expected: int | None = None, position: int | None = None
    ) -> None:
        await self._made()
        await self._threads.write(_transact, self._where(), name, work, expected, position)

    async def read(self, work: Callable[[Database], T]) -> T:
        await self._made()
        return await self._threads.read(_read, self._where(), work)

    async def checkpoint(self, name: str) -> int:
        row = await self.read(lambda db: db.fetch_one(GET_CHECKPOINT, (name,)))
        return int(row["position"]) if row else 0

    def for_tenant(self, tenant: str) -> DuckDBReadStore:
        """The tenant's models in a file of their own: ``w.duckdb`` → ``w.tenants/tenant_acme_….duckdb``."""
        if self._scratch_of is not None:
            raise ValueError("A scratch store has no tenants of its own")
        store = self._tenants.get(tenant)
        if store is None:
            folder = self.path.with_name(f"{self.path.stem}.tenants")
            suffix = self.path.suffix or ".duckdb"
            store = DuckDBReadStore(folder / f"{tenant_location(tenant)}{suffix}", readers=TENANT_READERS)
            self._tenants[tenant] = store
        return store

    def scratch(self, name: str) -> DuckDBReadStore:
        """A schema ``twofold_scratch_<name>`` in this file, that no query reads, emptied at its first use."""
        if self._scratch_of is not None:
            raise ValueError("A scratch store has no scratch stores of its own")
        return DuckDBReadStore._scratch(self, f"twofold_scratch_{check_scratch_name(name)}")

    async def discard(self) -> None:
        if self._scratch_of is None:
            raise ValueError(f"{self.path} is no scratch store: only a scratch store can be discarded")
        if not self._threads.closed:
            await self._threads.write(_drop_schema, _qualified(self._threads.catalog, MAIN_SCHEMA), self._where())

    async def swap_in(self, shadow: ReadStore[Any], name: str, tables: Sequence[str]) -> None:
        """Make each table again as the shadow's, with its rows, and move the checkpoint, in one transaction.

        The writer holds the only write transaction meanwhile; queries go on reading the old rows
        from their snapshots and see the new ones once it commits.
        """
        if not isinstance(shadow, DuckDBReadStore) or shadow._scratch_of is not self:
            raise ValueError("Only a scratch store of this store can be swapped in")
        await shadow._made()
        quoted = [(table, quoted_table(table)) for table in tables]
        await self._threads.write(_swap_in, self._where(), shadow._schema, name, quoted)

    async def close(self) -> None:
        if self._scratch_of is not None:
            return  # it shares its store's connection, which the store closes
        for store in self._tenants.values():
            await store.close()
        self._tenants.clear()
        await asyncio.to_thread(self._threads.close)

    def _where(self) -> str:
        return _qualified(self._threads.catalog, self._schema)

    async def _made(self) -> None:
        """A scratch schema is dropped and made afresh at its first use: an earlier one may have been left."""
        if self._fresh:
            self._fresh = False
            await self._threads.write(_fresh_schema, self._where())


def _one(conn: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> Any:
    row = conn.execute(sql, list(params)).fetchone()
    return None if row is None else row[0]


def _transact(
    conn: duckdb.DuckDBPyConnection,
    where: str,
    name: str,
    work: Callable[[Database], None],
    expected: int | None,
    position: int | None,
) -> None:
    try:
        conn.execute(f"USE {where}")  # the store's own schema: main, or a scratch one
        conn.execute("BEGIN TRANSACTION")
        try:
            if expected is not None:
                actual = int(_one(conn, GET_CHECKPOINT, (name,)) or 0)
                if actual != expected:
                    raise CheckpointConflict(name, expected, actual)
            db = DuckDBDatabase(conn)
            work(db)
            db.flush()
            if position is not None:
                conn.execute(SET_CHECKPOINT, (name, position))
            conn.execute("COMMIT")
        except BaseException:
            _roll_back(conn)
            raise
    except duckdb.Error as exc:
        raise _translate(exc) from exc


def _roll_back(conn: duckdb.DuckDBPyConnection) -> None:
    # A commit that failed has ended its transaction already: nothing is left to roll back.
    with contextlib.suppress(duckdb.Error):
        conn.execute("ROLLBACK")


def _read(cursor: duckdb.DuckDBPyConnection, where: str, work: Callable[[Database], T]) -> T:
    # One transaction, so that every statement of the read sees one snapshot (MVCC): a query over
    # several tables, or a swap committing between two statements, never shows a mixed state.
    try:
        cursor.execute(f"USE {where}")
        cursor.execute("BEGIN TRANSACTION")
        try:
            return work(DuckDBDatabase(cursor))
        finally:
            cursor.execute("ROLLBACK")  # it only read: ending it either way is the same
    except duckdb.Error as exc:
        raise _translate(exc) from exc


def _qualified(catalog: str, schema: str) -> str:
    """``"warehouse"."twofold_scratch_x"``: a schema of one database, each name quoted (a ``"`` doubled)."""
    return ".".join('"' + name.replace('"', '""') + '"' for name in (catalog, schema))


def _fresh_schema(conn: duckdb.DuckDBPyConnection, where: str) -> None:
    try:
        conn.execute(f"DROP SCHEMA IF EXISTS {where} CASCADE")
        conn.execute(f"CREATE SCHEMA {where}")
        conn.execute(f"USE {where}")
        conn.execute(CREATE_CHECKPOINTS)
    except duckdb.Error as exc:
        raise _translate(exc) from exc


def _drop_schema(conn: duckdb.DuckDBPyConnection, main: str, where: str) -> None:
    try:
        conn.execute(f"USE {main}")
        conn.execute(f"DROP SCHEMA IF EXISTS {where} CASCADE")
    except duckdb.Error as exc:
        raise _translate(exc) from exc


def _swap_in(conn: duckdb.DuckDBPyConnection, main: str, schema: str, name: str, tables: list[tuple[str, str]]) -> None:
    catalog = str(_one(conn, CURRENT_DATABASE))
    shadow = _qualified(catalog, schema)
    try:
        conn.execute(f"USE {main}")
        conn.execute("BEGIN TRANSACTION")
        try:
            rebuilt = int(_one(conn, f"SELECT position FROM {shadow}.{SHADOW_CHECKPOINTS}", (name,)) or 0)
            live = int(_one(conn, GET_CHECKPOINT, (name,)) or 0)
            if live > rebuilt:
                raise CheckpointConflict(name, rebuilt, live)
            for table, quoted in tables:
                _replace_table(conn, (catalog, schema), shadow, table, quoted)
            conn.execute(SET_CHECKPOINT, (name, rebuilt))
            conn.execute("COMMIT")
        except BaseException:
            _roll_back(conn)
            raise
    except duckdb.Error as exc:
        raise _translate(exc) from exc


def _replace_table(
    conn: duckdb.DuckDBPyConnection, names: tuple[str, str], shadow: str, table: str, quoted: str
) -> None:
    """Drop the live table and make it again as the shadow's: its definition, its rows, then its indexes."""
    catalog, schema = names
    conn.execute(f"DROP TABLE IF EXISTS main.{quoted}")
    definition = _one(conn, SHADOW_TABLE, (catalog, schema, table))
    if definition is None:
        return  # the shadow has no such table: the live one goes too
    conn.execute(_into_main(str(definition), schema))
    conn.execute(f"INSERT INTO main.{quoted} SELECT * FROM {shadow}.{quoted}")
    for (index,) in conn.execute(SHADOW_INDEXES, [catalog, schema, table]).fetchall():
        conn.execute(_into_main(str(index), schema))


def _into_main(definition: str, schema: str) -> str:
    """DuckDB writes a definition outside ``main`` qualified by its schema: point it at ``main`` instead."""
    return definition.replace(f" {schema}.", " main.").replace(f' "{schema}".', " main.")


def _translate(exc: duckdb.Error) -> Exception:
    return StoreError(f"DuckDB read store failed: {exc}")
