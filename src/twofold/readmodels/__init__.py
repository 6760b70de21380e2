"""Where projections keep read models: the ``Database`` handlers write through, and ``ReadStore``.

A read store is generic in the handle its work functions receive: the SQL stores (SQLite,
PostgreSQL, the DuckDB warehouse) are ``ReadStore[Database]``; a store that is no SQL database,
such as a search index, hands out a handle of its own kind (``ReadStore[SearchIndex]``), with the
same transactions, checkpoints, tenants and scratch stores.

Projection and query handlers are plain functions over a :class:`Database`. A projection's batch
runs as one transaction on one thread together with its checkpoint, so a batch costs one hop off
the event loop however many events it holds.

SQL uses ``?`` placeholders (or ``:name`` with a mapping) on every backend; ``db.dialect`` tells
a handler which backend it is on for the few statements that differ, such as full-text search.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from twofold.errors import StoreError

__all__ = [
    "GET_CHECKPOINT",
    "SCRATCH_NAME",
    "SQL_DIALECTS",
    "TARGETS",
    "CheckpointConflict",
    "Database",
    "Params",
    "ReadStore",
    "Row",
    "check_scratch_name",
    "quoted_table",
]

T = TypeVar("T")
H_co = TypeVar("H_co", covariant=True)  # the handle a store's work functions receive
Row = dict[str, Any]
Params = Sequence[Any] | Mapping[str, Any]
SCRATCH_NAME = re.compile(r"^[a-z0-9_]{1,30}$")  # short enough to fit a PostgreSQL schema name with a prefix
# Every read store keeps its checkpoints in this table; a read can take one in its own snapshot.
GET_CHECKPOINT = "SELECT position FROM twofold_checkpoints WHERE projection = ?"
# The stores a projection can name as its ``target``: the service's read database, the DuckDB
# warehouse for reports, the search index. Each is opened only when a projection names it.
TARGETS = ("sql", "warehouse", "search")
SQL_DIALECTS = frozenset({"sqlite", "postgresql", "duckdb"})  # stores whose handle is a Database
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def quoted_table(name: str) -> str:
    """``products`` → ``"products"``, for a name checked to be a plain identifier; ``ValueError`` otherwise."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"{name!r} is not a plain SQL identifier")
    return f'"{name}"'


def check_scratch_name(name: str) -> str:
    """``name`` itself when it may name a scratch store; ``ValueError`` saying what is allowed otherwise."""
    if not SCRATCH_NAME.match(name):
        raise ValueError(f"A scratch store's name is 1 to 30 lower-case letters, digits or '_' (got {name!r})")
    return name


class CheckpointConflict(StoreError):
    """A projection's checkpoint was not where its runner left it: another worker moved it on."""

    def __init__(self, name: str, expected: int, actual: int) -> None:
        self.name, self.expected, self.actual = name, expected, actual
        super().__init__(f"Checkpoint of projection {name} moved: expected {expected}, actual {actual}")


class Database(Protocol):
    """A read-model connection inside a transaction (projections) or a read (queries)."""

    dialect: str

    def execute(self, sql: str, params: Params = ()) -> None:
        """Run one statement. Projection batches may send it without waiting for its answer."""
        ...

    def execute_count(self, sql: str, params: Params = ()) -> int:
        """Run one statement and return the number of rows it changed (this waits for the answer)."""
        ...

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        """Run one statement for each row of parameters."""
        ...

    def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        """The first row, as a dict of column name to value, or ``None``."""
        ...

    def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        """Every row, as dicts of column name to value."""
        ...

    def fetch_pages(self, sql: str, params: Params = (), size: int = 500) -> Iterator[list[Row]]:
        """The rows in pages of at most ``size``, read as they are consumed: a large table never sits in memory."""
        ...


class ReadStore(Protocol[H_co]):
    """The read side's database: projection transactions with checkpoints, and reads for queries.

    ``H_co`` is the handle work functions get: :class:`Database` for the SQL stores.

    Error outcomes: ``StoreError`` (the backend failed; the transaction, checkpoint included, rolled back).
    """

    dialect: str

    async def transact(
        self, name: str, work: Callable[[H_co], None], *, expected: int | None = None, position: int | None = None
    ) -> None:
        """Run ``work`` in one transaction, moving ``name``'s checkpoint to ``position`` in it.

        With ``expected``, raise :class:`CheckpointConflict` (and change nothing) unless the
        checkpoint is at ``expected`` when the transaction starts: two workers never apply one event twice.
        """
        ...

    async def read(self, work: Callable[[H_co], T]) -> T:
        """Run ``work`` against a read-only view."""
        ...

    async def checkpoint(self, name: str) -> int:
        """The last position ``name`` committed (0 if none)."""
        ...

    def for_tenant(self, tenant: str) -> ReadStore[H_co]:
        """The same kind of store for one tenant's read models, apart from every other tenant's.

        Its tables and checkpoints are the tenant's own (a schema on PostgreSQL, a file on
        SQLite and DuckDB): nothing read through it can come from another tenant or from this store. The
        same tenant always gets the same store; closing this store closes the tenants' too.
        """
        ...

    def scratch(self, name: str) -> ReadStore[H_co]:
        """An empty store on the same database that no query of the service reads, for building a model aside.

        Its tables and checkpoints are its own (a schema ``twofold_scratch_<name>`` on PostgreSQL, a
        file beside this store's on SQLite); whatever an earlier scratch store of that name left
        behind is dropped at its first use. ``name`` is 1 to 30 of ``a-z0-9_``. A tenant's store
        has scratch stores of its own; a scratch store has neither tenants nor scratch stores.
        """
        ...

    async def discard(self) -> None:
        """Drop a scratch store and everything in it, and release it; ``ValueError`` on any other store."""
        ...

    async def swap_in(self, shadow: ReadStore[Any], name: str, tables: Sequence[str]) -> None:
        """Replace ``tables`` and ``name``'s checkpoint by ``shadow``'s, in one transaction.

        ``shadow`` is a scratch store of this store. Queries answer from the old tables until the
        transaction commits and from the new ones after. Raises :class:`CheckpointConflict`
        (changing nothing) when this store's checkpoint is past the shadow's: the live model has
        moved on, and the shadow must catch up first. Afterwards ``shadow`` is only fit to be discarded.
        """
        ...

    async def close(self) -> None:
        """Release connections and threads."""
        ...
