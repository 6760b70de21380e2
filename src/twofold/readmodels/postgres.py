"""Read models in PostgreSQL, through psycopg 3's synchronous driver on threads.

    read_store = PostgresReadStore("postgresql://app@db.internal/shop_read")
    await read_store.transact("shop.catalog", work, expected=41, position=57)
    rows = await read_store.read(lambda db: db.fetch_all("SELECT sku FROM products WHERE name LIKE ?", ("%mug%",)))

Projection and query handlers are synchronous functions, so the store runs them off the event
loop: every projection transaction on one writer thread with its own connection, queries on
``readers`` threads drawing from a :class:`psycopg_pool.ConnectionPool`. A whole batch of events
is one thread hop and one transaction, checkpoint included.

A batch's statements travel in psycopg's pipeline mode: each ``db.execute`` is sent without
waiting for its result, so a page of 500 upserts costs a handful of round trips, not 500. What
needs an answer waits for it: ``fetch_one``/``fetch_all`` and ``execute_count``. A statement's
error surfaces at the next statement that waits, or when the batch ends, and rolls back the
whole batch.

Placeholders. Handlers write the same SQL text as on SQLite: ``?`` with a sequence of
parameters, or ``:name`` with a mapping. :func:`to_psycopg` turns them into psycopg's ``%s`` and
``%(name)s``, doubles every literal ``%`` (``LIKE 'mug%'`` stays a pattern), and leaves alone
whatever sits in a quoted string, a quoted identifier, a dollar-quoted body or a comment, and
``::type`` casts. With a sequence only ``?`` is a placeholder, with a mapping only ``:name``, so
PostgreSQL's ``?`` operators on ``jsonb`` are out of reach: use ``jsonb_exists()`` and friends.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import hashlib
import itertools
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool

from twofold.errors import StoreError
from twofold.readmodels import CheckpointConflict, Database, Params, ReadStore, Row, check_scratch_name, quoted_table
from twofold.tenancy import tenant_location

__all__ = ["PostgresDatabase", "PostgresReadStore", "to_psycopg"]

T = TypeVar("T")
Connection = psycopg.Connection[DictRow]

# The store's own statements, in psycopg's placeholder style.
SCHEMA_LOCK = 0x74776F666F6C64  # "twofold" in ASCII: an advisory lock key of our own
LOCK_SCHEMA = "SELECT pg_advisory_xact_lock(%s)"
SCHEMA = """
CREATE TABLE IF NOT EXISTS twofold_checkpoints (
    projection text PRIMARY KEY,
    position   bigint NOT NULL
)
"""
GET_CHECKPOINT = "SELECT position FROM twofold_checkpoints WHERE projection = %s"
LOCK_CHECKPOINT = "SELECT position FROM twofold_checkpoints WHERE projection = %s FOR UPDATE"
ADD_CHECKPOINT = "INSERT INTO twofold_checkpoints (projection, position) VALUES (%s, 0) ON CONFLICT DO NOTHING"
SET_CHECKPOINT = "UPDATE twofold_checkpoints SET position = %s WHERE projection = %s"
SET_SEARCH_PATH = "SELECT set_config('search_path', %s, true)"  # true: for this transaction only
# A swap waits this long for queries still reading the old tables, then gives up rather than
# leave every new query queued behind its lock.
SWAP_LOCK_TIMEOUT = "SELECT set_config('lock_timeout', '5s', true)"
CURRENT_SCHEMA = "SELECT current_schema() AS name"
TABLE_EXISTS = "SELECT to_regclass(%s) IS NOT NULL AS present"
_cursor_names = itertools.count(1)

_SQL = re.compile(
    r"""
      (?P<verbatim>
          (?<![\w$])[eE]'(?:[^'\\]|\\.|'')*'                  # E'…' string: backslash escapes
        | '(?:[^']|'')*'                                      # '…' string; '' is a quote
        | "(?:[^"]|"")*"                                      # "…" identifier
        | (?<![\w$])\$(?P<tag>(?:[A-Za-z_]\w*)?)\$.*?\$(?P=tag)\$  # $tag$…$tag$ body
        | --[^\n]*                                            # -- comment
        | /\*.*?\*/                                           # /* comment */
      )
    | (?P<cast>::)
    | :(?P<name>[A-Za-z_]\w*)
    | (?P<question>\?)
    | (?P<percent>%)
    """,
    re.VERBOSE | re.DOTALL,
)


@functools.lru_cache(maxsize=1024)
def to_psycopg(sql: str, *, named: bool = False) -> str:
    """Rewrite SQLite-style placeholders as psycopg's, escaping every literal ``%``.

    ``SELECT * FROM t WHERE a = ? AND b LIKE 'x%' AND c <> '?'`` →
    ``SELECT * FROM t WHERE a = %s AND b LIKE 'x%%' AND c <> '?'``;
    with ``named=True``, ``WHERE id = :id AND n = :n::int`` → ``WHERE id = %(id)s AND n = %(n)s::int``.
    """

    def rewrite(match: re.Match[str]) -> str:
        if match["verbatim"] is not None:
            return match["verbatim"].replace("%", "%%")
        if match["name"] is not None:
            return f"%({match['name']})s" if named else match[0]
        if match["question"] is not None:
            return match[0] if named else "%s"
        return "%%" if match["percent"] is not None else match[0]

    return _SQL.sub(rewrite, sql)


def _sql(sql: str, params: Params) -> str:
    return to_psycopg(sql, named=isinstance(params, Mapping))


class PostgresDatabase:
    """:class:`~twofold.readmodels.Database` over one psycopg connection; rows come back as dicts.

    With a ``pipeline`` (projection batches), ``execute`` queues statements rather than waiting
    on each; what returns an answer waits for it.
    """

    dialect = "postgresql"

    def __init__(self, conn: Connection, pipeline: psycopg.Pipeline | None = None) -> None:
        self._conn = conn
        self._pipeline = pipeline
        self._queued: psycopg.Cursor[DictRow] | None = None

    def execute(self, sql: str, params: Params = ()) -> None:
        """Run one statement; in a pipeline, send it without waiting for its answer."""
        if self._pipeline is None:
            with self._conn.cursor() as cursor:
                cursor.execute(_sql(sql, params), params)
            return
        # One cursor takes every queued statement; its result, when it comes, only tells psycopg
        # whether the statement failed.
        if self._queued is None:
            self._queued = self._conn.cursor()
        self._queued.execute(_sql(sql, params), params)

    def execute_count(self, sql: str, params: Params = ()) -> int:
        """Run one statement and return the number of rows it changed; in a pipeline, wait for it."""
        with self._conn.cursor() as cursor:
            cursor.execute(_sql(sql, params), params)
            if self._pipeline is not None:
                self._pipeline.sync()  # raises the first error of any statement queued so far
            return cursor.rowcount

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        if rows:  # psycopg pipelines these itself, and rides the batch's pipeline when there is one
            with self._conn.cursor() as cursor:
                cursor.executemany(_sql(sql, rows[0]), rows)

    def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        # In a pipeline, fetching waits for every statement queued before this one, then for its rows.
        with self._conn.cursor() as cursor:
            return cursor.execute(_sql(sql, params), params).fetchone()

    def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        with self._conn.cursor() as cursor:
            return cursor.execute(_sql(sql, params), params).fetchall()

    def fetch_pages(self, sql: str, params: Params = (), size: int = 500) -> Iterator[list[Row]]:
        # A server-side cursor: the server keeps the result and hands it over a page at a time.
        with self._conn.cursor(name=f"twofold_pages_{next(_cursor_names)}") as cursor:
            cursor.execute(_sql(sql, params), params)
            while rows := cursor.fetchmany(size):
                yield rows


class _WriterConnection:
    """The writer thread's connection, or ``None`` until it connects (again, after a loss)."""

    conn: Connection | None = None


class _Disconnected(Exception):
    """The connection was found dead at ``BEGIN``, before anything ran: safe to try again on a new one."""

    def __init__(self, error: psycopg.Error) -> None:
        super().__init__(str(error))
        self.error = error


class PostgresReadStore:
    """A :class:`~twofold.readmodels.ReadStore` in a PostgreSQL database.

    The ``twofold_checkpoints`` table is created at construction, so a store that cannot reach
    its server fails there with :class:`~twofold.errors.StoreError`. Later, a dead connection
    (a restarted server, a cut network) is dropped and replaced: calls fail with ``StoreError``
    while the server is away and work again once it is back.

    Args:
        url: a libpq connection URL or string, ``postgresql://user:password@host:port/database``.
        readers: threads, and pooled connections, answering queries; the writer has one more.
        timeout: seconds a call may wait for a connection before it fails with ``StoreError``.
    """

    dialect = "postgresql"

    def __init__(self, url: str, *, readers: int = 4, timeout: float = 5.0) -> None:
        self._url = url
        self._options: dict[str, Any] = {
            "autocommit": True,  # transactions are explicit: conn.transaction() sends BEGIN
            "row_factory": dict_row,
            "connect_timeout": max(2, math.ceil(timeout)),  # libpq reads 1 as 2
            "application_name": "twofold-read-store",
        }
        with _translated(), self._connect() as conn, conn.transaction():
            # CREATE TABLE IF NOT EXISTS is not safe against the same statement in a concurrent
            # transaction (the loser fails on pg_type's unique index), and two processes often start
            # together; the advisory lock makes them take turns.
            conn.execute(LOCK_SCHEMA, (SCHEMA_LOCK,))
            conn.execute(SCHEMA)
        self._pool = ConnectionPool(
            url,
            connection_class=Connection,
            kwargs=self._options,
            min_size=readers,
            max_size=readers,
            open=True,
            configure=_read_only,
            timeout=timeout,
            # The pool retries a lost connection with growing back-off; giving up early means the
            # next query after an outage connects at once instead of waiting out a long back-off.
            reconnect_timeout=timeout / 2,
            name="twofold-read-store",
        )
        self._writer_conn = _WriterConnection()  # shared with tenants' stores; used on the writer thread only
        self._writer = ThreadPoolExecutor(1, "twofold-pg-writer")
        self._readers = ThreadPoolExecutor(readers, "twofold-pg-reader")
        self._schema: str | None = None  # a tenant's schema; None: the connection's own search_path
        self._schema_ready = True
        self._tenants: dict[str, PostgresReadStore] = {}
        self._scratch_of: PostgresReadStore | None = None  # the store this one is a scratch store of

    def for_tenant(self, tenant: str) -> PostgresReadStore:
        """The tenant's read models in a schema of their own (``tenant_acme_…``), on this store's connections.

        Every transaction through it sets ``search_path`` to that schema alone, so a handler's
        unqualified ``products`` is the tenant's table, and a table the tenant lacks is an error,
        never another tenant's rows. Functions from extensions installed in ``public`` need their
        schema named.
        """
        if self._schema is not None:
            raise ValueError("Only the main store has tenants: a tenant's or a scratch store has none of its own")
        view = self._tenants.get(tenant)
        if view is None:
            view = self._view(tenant_location(tenant))
            self._tenants[tenant] = view
        return view

    def scratch(self, name: str) -> PostgresReadStore:
        """A fresh schema ``twofold_scratch_<name>`` that no query reads, on this store's connections.

        A tenant's scratch schema ends with a digest of the tenant's schema, so that each tenant's
        is apart: ``twofold_scratch_<name>_<digest>``.
        """
        if self._scratch_of is not None:
            raise ValueError("A scratch store has no scratch stores of its own")
        schema = f"twofold_scratch_{check_scratch_name(name)}"
        if self._schema is not None:
            schema += "_" + hashlib.sha256(self._schema.encode()).hexdigest()[:10]
        view = self._view(schema)
        view._scratch_of = self
        return view

    def _view(self, schema: str) -> PostgresReadStore:
        view = copy.copy(self)  # shares the pool, the writer and its connection
        view._schema, view._schema_ready, view._tenants = schema, False, {}
        return view

    async def discard(self) -> None:
        if self._scratch_of is None or self._schema is None:
            raise ValueError("Only a scratch store can be discarded")
        await asyncio.get_running_loop().run_in_executor(self._writer, self._drop_schema)

    async def swap_in(self, shadow: ReadStore[Any], name: str, tables: Sequence[str]) -> None:
        """Drop these tables and move the shadow's into their place (``ALTER TABLE … SET SCHEMA``).

        Nothing is copied: the swap costs a few catalog changes however large the tables, under
        locks held only until it commits. It waits up to 5 s for queries still reading the old tables.
        """
        if not isinstance(shadow, PostgresReadStore) or shadow._scratch_of is not self or shadow._schema is None:
            raise ValueError("Only a scratch store of this store can be swapped in")
        for table in tables:
            quoted_table(table)
        await self._run(self._writer, self._swap_in, shadow._schema, name, list(tables))

    async def transact(
        self, name: str, work: Callable[[Database], None], *, expected: int | None = None, position: int | None = None
    ) -> None:
        await self._run(self._writer, self._transact, name, work, expected, position)

    async def read(self, work: Callable[[Database], T]) -> T:
        return await self._run(self._readers, self._read, lambda conn: work(PostgresDatabase(conn)))

    async def checkpoint(self, name: str) -> int:
        def get(conn: Connection) -> int:
            with conn.cursor() as cursor:
                row = cursor.execute(GET_CHECKPOINT, (name,)).fetchone()
            return int(row["position"]) if row else 0

        return await self._run(self._readers, self._read, get)

    async def close(self) -> None:
        if self._schema is None:  # a tenant's store closes with the store it came from
            await asyncio.to_thread(self._close)

    async def _run(self, executor: ThreadPoolExecutor, function: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        if not self._schema_ready:
            await loop.run_in_executor(self._writer, self._create_schema)
        return await loop.run_in_executor(executor, function, *args)

    def _create_schema(self) -> None:
        """Create the tenant's schema and its checkpoints table, once (on the writer thread)."""
        if self._schema_ready or self._schema is None:
            return
        with _translated(), self._connect() as conn, conn.transaction():
            conn.execute(LOCK_SCHEMA, (SCHEMA_LOCK,))
            if self._scratch_of is not None:  # a scratch store starts empty, whatever an earlier one left
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self._schema)))
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self._schema)))
            conn.execute(SET_SEARCH_PATH, (self._schema,))
            conn.execute(SCHEMA)
        self._schema_ready = True

    def _drop_schema(self) -> None:
        """Drop a scratch store's schema and all in it (on the writer thread)."""
        assert self._schema is not None
        with _translated(), self._connect() as conn, conn.transaction():
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self._schema)))
        self._schema_ready = False

    def _enter_schema(self, conn: Connection) -> None:
        """Point this transaction's unqualified names at the tenant's schema, and nowhere else."""
        if self._schema is not None:
            conn.execute(SET_SEARCH_PATH, (self._schema,))

    # -- on the writer thread ----------------------------------------------------------------------

    def _transact(
        self, name: str, work: Callable[[Database], None], expected: int | None, position: int | None
    ) -> None:
        with _translated():
            try:
                self._transact_once(name, work, expected, position)
            except _Disconnected:  # the server went away since the last batch; nothing ran yet
                self._transact_once(name, work, expected, position)

    def _transact_once(
        self, name: str, work: Callable[[Database], None], expected: int | None, position: int | None
    ) -> None:
        conn = self._writer_connection()
        try:
            with _transaction(conn), conn.cursor() as cursor:
                self._enter_schema(conn)
                actual = _lock_checkpoint(cursor, name)
                if expected is not None and actual != expected:
                    raise CheckpointConflict(name, expected, actual)
                # The batch and the checkpoint go out as one pipeline; leaving it syncs, which
                # raises the first statement error before the transaction can commit.
                with conn.pipeline() as pipeline:
                    try:
                        work(PostgresDatabase(conn, pipeline))
                        if position is not None:
                            cursor.execute(SET_CHECKPOINT, (position, name))
                    except BaseException:
                        _drain(pipeline)
                        raise
        finally:
            if conn.closed:  # broken: the next call connects afresh
                conn.close()
                self._writer_conn.conn = None

    def _swap_in(self, shadow_schema: str, name: str, tables: list[str]) -> None:
        conn = self._writer_connection()
        try:
            with _translated(), _transaction(conn), conn.cursor() as cursor:
                cursor.execute(SWAP_LOCK_TIMEOUT)
                self._enter_schema(conn)
                # The live checkpoint's row lock keeps this store's projection runners, here or in
                # any process, from committing a batch between the check below and the commit.
                live = _lock_checkpoint(cursor, name)
                rebuilt = _shadow_checkpoint(cursor, shadow_schema, name)
                if live > rebuilt:
                    raise CheckpointConflict(name, rebuilt, live)
                row = cursor.execute(CURRENT_SCHEMA).fetchone()
                assert row is not None
                for table in tables:
                    _move_table(cursor, shadow_schema, str(row["name"]), table)
                cursor.execute(SET_CHECKPOINT, (rebuilt, name))
        finally:
            if conn.closed:
                conn.close()
                self._writer_conn.conn = None

    def _writer_connection(self) -> Connection:
        if self._writer_conn.conn is None:
            self._writer_conn.conn = self._connect()
        return self._writer_conn.conn

    # -- on reader threads -------------------------------------------------------------------------

    def _read(self, use: Callable[[Connection], T]) -> T:
        with _translated():
            try:
                return self._read_once(use)
            except _Disconnected:
                # A restart cuts every pooled connection at once: drop the other dead ones too,
                # rather than meet them one query at a time, and try once more.
                self._pool.check()
                return self._read_once(use)

    def _read_once(self, use: Callable[[Connection], T]) -> T:
        with self._pool.connection() as conn, _transaction(conn):
            self._enter_schema(conn)
            return use(conn)

    # -- connections ---------------------------------------------------------------------------------

    def _connect(self) -> Connection:
        return Connection.connect(self._url, **self._options)

    def _close(self) -> None:
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        if self._writer_conn.conn is not None:
            self._writer_conn.conn.close()
            self._writer_conn.conn = None
        self._pool.close()


def _lock_checkpoint(cursor: psycopg.Cursor[DictRow], name: str) -> int:
    """Lock ``name``'s checkpoint row until the transaction ends (creating it at 0) and return its position.

    The lock is what makes the ``expected`` check hold. Under READ COMMITTED, two workers running
    the same projection would otherwise both read position 41, both apply events 42…57 and both
    commit. With the row locked, the second waits for the first to commit, then reads 57 and
    raises CheckpointConflict without touching the read model. It also serializes a projection's
    ``setup`` DDL between processes that start together.
    """
    row = cursor.execute(LOCK_CHECKPOINT, (name,)).fetchone()
    if row is None:
        # ON CONFLICT DO NOTHING: if another transaction is inserting the row, wait for it and lock its row.
        cursor.execute(ADD_CHECKPOINT, (name,))
        row = cursor.execute(LOCK_CHECKPOINT, (name,)).fetchone()
    assert row is not None
    return int(row["position"])


def _shadow_checkpoint(cursor: psycopg.Cursor[DictRow], schema: str, name: str) -> int:
    query = sql.SQL("SELECT position FROM {}.twofold_checkpoints WHERE projection = %s").format(sql.Identifier(schema))
    row = cursor.execute(query, (name,)).fetchone()
    return int(row["position"]) if row else 0


def _move_table(cursor: psycopg.Cursor[DictRow], shadow_schema: str, live_schema: str, table: str) -> None:
    """Drop the live table and move the shadow's into its schema; its indexes and sequences move with it."""
    live, shadow, name = sql.Identifier(live_schema), sql.Identifier(shadow_schema), sql.Identifier(table)
    cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}.{}").format(live, name))
    row = cursor.execute(TABLE_EXISTS, (f"{quoted_table(shadow_schema)}.{quoted_table(table)}",)).fetchone()
    if row is not None and row["present"]:
        cursor.execute(sql.SQL("ALTER TABLE {}.{} SET SCHEMA {}").format(shadow, name, live))


def _drain(pipeline: psycopg.Pipeline) -> None:
    """Collect a failed batch's outstanding results, so the error already raised stays the only one.

    After a statement fails the server skips the rest of the pipeline; their results (each a
    ``PipelineAborted``) would otherwise be raised again, and logged, as the pipeline closes.
    """
    with contextlib.suppress(psycopg.Error):
        pipeline.sync()


def _read_only(conn: Connection) -> None:
    """Queries see one snapshot from their first statement to their last, and can never write."""
    conn.read_only = True
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ


@contextmanager
def _transaction(conn: Connection) -> Iterator[None]:
    """``conn.transaction()``, raising :class:`_Disconnected` if the connection turns out dead at ``BEGIN``."""
    with ExitStack() as stack:
        try:
            stack.enter_context(conn.transaction())
        except psycopg.OperationalError as exc:
            if conn.broken:
                raise _Disconnected(exc) from exc
            raise
        yield


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except _Disconnected as exc:
        raise _store_error(exc.error) from exc.error
    except psycopg.Error as exc:
        raise _store_error(exc) from exc


def _store_error(exc: psycopg.Error) -> StoreError:
    """Every psycopg error (pool timeouts and lost connections included) becomes a StoreError."""
    state = f" [SQLSTATE {exc.sqlstate}]" if exc.sqlstate else ""
    return StoreError(f"PostgreSQL read store failed: {type(exc).__name__}{state}: {exc}")
