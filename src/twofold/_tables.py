"""A read-model table's columns and primary key, and its rows read in key order, on every dialect.

Two copies of a table are compared by walking both in the same order, so the order the database
sorts in must be the order Python compares in: text is sorted by code point (``COLLATE "C"`` on
PostgreSQL, ``BINARY`` on SQLite, whatever the column declares; DuckDB's default order already is),
NULLs first, and :func:`sort_key` ranks values as SQLite does (NULL, numbers, text, bytes).

A handle that is no SQL database (a search index) answers for itself: it has methods
``layout_of(table) -> TableLayout``, ``rows_in_order(layout, size) -> Iterator[list[Row]]`` and
``checkpoint(name) -> int``, each read from the snapshot the handle sees.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from twofold.readmodels import GET_CHECKPOINT, SQL_DIALECTS, Row, quoted_table

# key_order: the column's place in the primary key from 1, or 0 (int2vector's subscripts start at 0).
SQLITE_COLUMNS = "SELECT name, pk AS key_order, 1 AS collatable FROM pragma_table_info(?) ORDER BY cid"
POSTGRES_COLUMNS = """
SELECT a.attname AS name, a.attcollation <> 0 AS collatable,
       coalesce(array_position(i.indkey::int2[], a.attnum) - array_lower(i.indkey::int2[], 1) + 1, 0) AS key_order
FROM pg_attribute a
LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
WHERE a.attrelid = to_regclass(?) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""
DUCKDB_COLUMNS = """
SELECT c.column_name AS name, c.data_type = 'VARCHAR' AS collatable,
       coalesce(list_position(k.constraint_column_names, c.column_name), 0) AS key_order
FROM duckdb_columns() c
LEFT JOIN duckdb_constraints() k ON k.database_name = c.database_name AND k.schema_name = c.schema_name
     AND k.table_name = c.table_name AND k.constraint_type = 'PRIMARY KEY'
WHERE c.table_name = ? AND c.schema_name = current_schema() AND c.database_name = current_database()
ORDER BY c.column_index
"""
COLLATION = {"postgresql": ' COLLATE "C"', "sqlite": " COLLATE BINARY"}


@dataclass(frozen=True, slots=True)
class TableLayout:
    """A table as one store has it: no columns when the table does not exist there."""

    table: str
    columns: tuple[str, ...]
    key: tuple[str, ...]  # the primary key's columns in key order; () when it has none
    collatable: frozenset[str] = frozenset()

    @property
    def present(self) -> bool:
        return bool(self.columns)

    @property
    def order(self) -> tuple[str, ...]:
        """The columns rows are sorted by: the key, else every column (rows compared as a multiset)."""
        return self.key or self.columns


def layout_of(db: Any, table: str) -> TableLayout:
    """The columns and primary key of ``table`` as ``db`` sees it (a handle that is no SQL database tells itself)."""
    if db.dialect not in SQL_DIALECTS:
        layout: TableLayout = db.layout_of(table)
        return layout
    if db.dialect == "postgresql":
        rows = db.fetch_all(POSTGRES_COLUMNS, (quoted_table(table),))
    elif db.dialect == "duckdb":
        rows = db.fetch_all(DUCKDB_COLUMNS, (table,))
    else:
        rows = db.fetch_all(SQLITE_COLUMNS, (table,))
    key = sorted((int(row["key_order"]), str(row["name"])) for row in rows if row["key_order"])
    return TableLayout(
        table,
        tuple(str(row["name"]) for row in rows),
        tuple(name for _, name in key),
        frozenset(str(row["name"]) for row in rows if row["collatable"]),
    )


def rows_in_order(db: Any, layout: TableLayout, size: int) -> Iterator[list[Row]]:
    """The table's rows in pages, sorted by :attr:`TableLayout.order` as :func:`sort_key` sorts."""
    if not layout.present:
        return iter(())
    if db.dialect not in SQL_DIALECTS:
        pages: Iterator[list[Row]] = db.rows_in_order(layout, size)
        return pages
    columns = ", ".join(_quoted(c) for c in layout.columns)
    collation = COLLATION.get(db.dialect, "")
    order = ", ".join(_quoted(c) + (collation if c in layout.collatable else "") + " NULLS FIRST" for c in layout.order)
    table = quoted_table(layout.table)
    sql_pages: Iterator[list[Row]] = db.fetch_pages(f"SELECT {columns} FROM {table} ORDER BY {order}", size=size)
    return sql_pages


def checkpoint_in(db: Any, name: str) -> int:
    """``name``'s checkpoint as the handle's snapshot has it."""
    if db.dialect not in SQL_DIALECTS:
        return int(db.checkpoint(name))
    row = db.fetch_one(GET_CHECKPOINT, (name,))
    return int(row["position"]) if row else 0


def sort_key(row: Row, columns: tuple[str, ...]) -> tuple[tuple[int, Any], ...]:
    """``row``'s place in :func:`rows_in_order`'s order, comparable however its values are typed."""
    return tuple(_rank(row.get(column)) for column in columns)


def _rank(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, 0)
    if isinstance(value, str):
        return (2, value)
    if isinstance(value, bytes | bytearray | memoryview):
        return (3, bytes(value))
    return (1, value)


def _quoted(column: str) -> str:
    """A column name as the database reported it, quoted (an embedded ``"`` doubled)."""
    return '"' + column.replace('"', '""') + '"'


class Abandoned(Exception):
    """The consumer of a :class:`Handover` stopped listening; the producer should stop too."""


class Handover:
    """Items passed from a producer on a read store's thread to the event loop, a few at a time.

    The producer blocks while ``depth`` items wait unread, so a table streams through in bounded
    memory; once the consumer calls :meth:`abandon`, the producer's next :meth:`put` raises
    :class:`Abandoned`, which ends its read.
    """

    def __init__(self, depth: int = 4) -> None:
        self._loop = asyncio.get_running_loop()
        self._items: asyncio.Queue[Any] = asyncio.Queue()
        self._room = threading.Semaphore(depth)
        self._abandoned = threading.Event()

    def put(self, item: Any) -> None:
        """Hand ``item`` over (on the producer's thread), waiting for room."""
        while not self._room.acquire(timeout=0.1):
            if self._abandoned.is_set():
                raise Abandoned
        if self._abandoned.is_set():
            raise Abandoned
        self._loop.call_soon_threadsafe(self._items.put_nowait, item)

    async def get(self, producer: asyncio.Future[Any]) -> Any:
        """The next item; the producer's error if it failed first (``producer`` is its future)."""
        getting = asyncio.ensure_future(self._items.get())
        await asyncio.wait({getting, producer}, return_when=asyncio.FIRST_COMPLETED)
        if getting.done():
            self._room.release()
            return getting.result()
        getting.cancel()
        producer.result()
        raise RuntimeError("The rows ended before the comparison did")

    def abandon(self) -> None:
        self._abandoned.set()
