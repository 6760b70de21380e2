"""Given/then for read models: past events in, what a query answers or a table holds out.

    projection_scenario(book) \\
        .given(OrderPlaced(order_id="o-1", customer_id="c-1", lines=[...]), principal="alice") \\
        .then_query(OrderHistory(customer_id="c-1"), Orders(orders=[OrderView(..., placed_by="alice")]))

    projection_scenario(levels).given(StockReceived(sku="A-1", quantity=5)) \\
        .then_rows("stock_levels", [{"sku": "A-1", "available": 5}])

The events are appended to a fresh :class:`~twofold.store.memory.MemoryEventStore`, all recorded
at :data:`SCENARIO_START`, and the real :class:`~twofold.projections.ProjectionRunner` applies
them to a SQLite read store in a fresh temporary folder (or to the PostgreSQL database at
``database_url``); a projection whose ``target`` is ``"warehouse"`` or ``"search"`` writes to a
store of that kind in the same folder. Queries go through the real :class:`~twofold.queries.QueryDispatcher`. A wrong
expectation fails with a diff, one line per JSON field or per row:

    OrderHistory answered otherwise than expected (- expected, + answered):
      {
        "orders": [
          {
            "order_id": "o-1",
    -       "placed_by": "bob"
    +       "placed_by": "alice"
    ...

Each check runs the whole scenario afresh, so checks never see each other's rows.
"""

from __future__ import annotations

import inspect
import re
import tempfile
import typing
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from twofold.messages import Event, Query, Upcaster
from twofold.projections import Projection, ProjectionRunner
from twofold.queries import QueryDispatcher, QueryHandler
from twofold.readmodels import SQL_DIALECTS, Database, ReadStore, Row
from twofold.readmodels.sqlite import SQLiteReadStore
from twofold.service import Service
from twofold.store.memory import MemoryEventStore
from twofold.tenancy import Tenancy
from twofold.testing._checks import SCENARIO_START, describe, diff, json_lines, listing, new_event, run_to_completion

__all__ = ["ProjectionScenario", "projection_scenario"]

T = TypeVar("T")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def projection_scenario(subject: Projection | Service, *, database_url: str | None = None) -> ProjectionScenario:
    """Start a given/then scenario for one projection, or for every projection of a service.

    A projection answers the queries its own methods take (``def history(self, query: OrderHistory, db)``);
    a service answers those its ``queries`` declare. ``database_url`` puts the read models in that
    PostgreSQL database instead of a temporary SQLite file.
    """
    if isinstance(subject, Service):
        return ProjectionScenario(subject.projections, subject.queries, subject.upcasters, database_url)
    return ProjectionScenario((subject,), _queries_answered_by(subject), (), database_url)


@dataclass(frozen=True, slots=True)
class _Given:
    stream_id: str
    events: tuple[Event, ...]
    principal: str | None
    tenant: str | None


@dataclass(frozen=True, eq=False)
class ProjectionScenario:
    """Read models built from a history of events. ``given`` returns a new scenario.

    Args:
        projections: what applies the events.
        queries: query class → handler, for :meth:`then_query` and :meth:`ask`.
        upcasters: bring older stored events up to the classes ``apply`` names.
        database_url: a PostgreSQL read store's URL; ``None``, a SQLite file in a temporary folder.
        history: the events given so far, each batch with its stream and metadata.
    """

    projections: Sequence[Projection]
    queries: Mapping[type[Query], QueryHandler]
    upcasters: Sequence[Upcaster] = ()
    database_url: str | None = None
    history: tuple[_Given, ...] = ()

    def given(
        self, *events: Event, stream_id: str | None = None, principal: str | None = None, tenant: str | None = None
    ) -> ProjectionScenario:
        """Record ``events`` in order, on ``stream_id`` (``given-1``, ``given-2``… when left out),
        with the ``principal`` and ``tenant`` a projection may read from their metadata."""
        stream = stream_id or f"given-{len(self.history) + 1}"
        return replace(self, history=(*self.history, _Given(stream, events, principal, tenant)))

    # -- expectations ----------------------------------------------------------------------------

    def then_query(self, query: Query, expected: Any, *, tenant: str | None = None) -> Any:
        """Assert ``query`` (asked for ``tenant``) answers a value equal to ``expected``; returns the answer."""
        __tracebackhide__ = True
        try:
            answer = self.ask(query, tenant=tenant)
        except Exception as error:
            raise AssertionError(
                f"{query.type_name} raised {describe(error)}\nexpected it to answer:\n"
                + listing(json_lines(expected), "nothing")
            ) from error
        if answer != expected and json_lines(answer) != json_lines(expected):
            raise AssertionError(
                f"{query.type_name} answered otherwise than expected (- expected, + answered):\n"
                + diff(json_lines(expected), json_lines(answer))
            )
        return answer

    def then_rows(self, table: str, expected: Sequence[Mapping[str, Any]], *, tenant: str | None = None) -> list[Row]:
        """Assert ``table`` holds exactly ``expected``, in any order; returns its rows.

        Only the columns the expected rows name are compared, so a test states what it is about
        (leaving out, say, a position). Values compare with ``==``, as the database returns them.
        """
        __tracebackhide__ = True
        rows = self.rows(table, tenant=tenant)
        columns = list(dict.fromkeys(name for row in expected for name in row))
        unknown = [c for c in columns if rows and c not in rows[0]]
        if unknown:
            raise AssertionError(f"Table {table} has no column {', '.join(unknown)}; its columns: {', '.join(rows[0])}")
        found = sorted(({c: row[c] for c in columns} for row in rows), key=_row_line)
        wanted = sorted((dict(row) for row in expected), key=_row_line)
        if found != wanted:
            raise AssertionError(
                f"Table {table} holds other rows than expected (- expected, + found), "
                f"compared on {', '.join(columns) or 'no column'}:\n"
                + diff([_row_line(r) for r in wanted], [_row_line(r) for r in found])
            )
        return rows

    # -- what the read models hold ---------------------------------------------------------------

    def ask(self, query: Query, *, tenant: str | None = None) -> Any:
        """The answer to ``query`` once every given event is applied (it raises what the handler raises)."""

        async def answer(opened: _Opened) -> Any:
            names = [p.name for p in self.projections]
            dispatcher = QueryDispatcher(
                opened.stores["sql"],
                self.queries,
                names,
                {r.name: r for r in opened.runners},
                opened.tenancies["sql"],
                targets=opened.stores,
                tenancies=opened.tenancies,
                target_of={p.name: p.target for p in self.projections},
            )
            return await dispatcher.ask(query, tenant=tenant)

        return run_to_completion(lambda: self._project(answer))

    def rows(self, table: str, *, tenant: str | None = None) -> list[Row]:
        """Every row of ``table`` once every given event is applied (from the store of the projection owning it)."""
        if not _IDENTIFIER.match(table):
            raise ValueError(f"Table name {table!r} must be a plain SQL identifier")
        target = next((p.target for p in self.projections if table in p.tables), "sql")

        async def select(opened: _Opened) -> list[Row]:
            main = opened.stores[target]
            store = main if tenant is None else await opened.tenancies[target].store_for(tenant)
            rows: list[Row] = await store.read(lambda db: db.fetch_all(f'SELECT * FROM "{table}"'))  # checked
            return rows

        return run_to_completion(lambda: self._project(select))

    # -- running ---------------------------------------------------------------------------------

    async def _project(self, read: Callable[[_Opened], Awaitable[T]]) -> T:
        store = MemoryEventStore(clock=lambda: SCENARIO_START)
        with tempfile.TemporaryDirectory(prefix="twofold-projection-") as folder:
            read_store = self._open_read_store(Path(folder))
            stores: dict[str, ReadStore[Any]] = {"sql": read_store}
            try:
                for target in sorted({p.target for p in self.projections} - {"sql"}):
                    stores[target] = _open_target(target, Path(folder))
                for given in self.history:
                    batch = [new_event(e, principal=given.principal, tenant=given.tenant) for e in given.events]
                    await store.append(given.stream_id, batch)
                tenancies = {
                    target: Tenancy(
                        each,
                        [p for p in self.projections if p.target == target],
                        registry=None if each.dialect in SQL_DIALECTS else read_store,
                    )
                    for target, each in stores.items()
                }
                runners = [
                    ProjectionRunner(p, store, stores[p.target], upcasters=self.upcasters, tenancy=tenancies[p.target])
                    for p in self.projections
                ]
                for runner in runners:
                    # A rebuild rather than a start, so that a database kept from an earlier check
                    # (PostgreSQL) starts from no rows, as a fresh SQLite file does.
                    await runner.rebuild()
                    await runner.catch_up()
                    await runner.stop()
                return await read(_Opened(stores, tenancies, runners))
            finally:
                for each in stores.values():
                    await each.close()
                await store.close()

    def _open_read_store(self, folder: Path) -> ReadStore[Database]:
        if self.database_url is None:
            return SQLiteReadStore(folder / "read.db", readers=1)
        from twofold.readmodels.postgres import PostgresReadStore  # needs twofold[postgres]

        return PostgresReadStore(self.database_url, readers=1)


@dataclass(frozen=True, slots=True)
class _Opened:
    """A scenario's stores by target, their tenancies, and the runners that filled them."""

    stores: dict[str, ReadStore[Any]]
    tenancies: dict[str, Tenancy]
    runners: list[ProjectionRunner]


def _open_target(target: str, folder: Path) -> ReadStore[Any]:
    """A warehouse or search store in the scenario's temporary folder."""
    from twofold.config import open_target_store

    where = {"warehouse": f"duckdb:///{folder / 'warehouse.duckdb'}", "search": f"tantivy:///{folder / 'search'}"}
    return open_target_store(target, where[target])


def _queries_answered_by(projection: Projection) -> dict[type[Query], QueryHandler]:
    """The projection's methods whose first parameter is annotated with a query class."""
    answered: dict[type[Query], QueryHandler] = {}
    for cls in type(projection).__mro__:
        if cls is Projection:
            break
        for name, function in vars(cls).items():
            if name.startswith("_") or not inspect.isfunction(function):
                continue
            parameters = list(inspect.signature(function).parameters)
            hint = typing.get_type_hints(function).get(parameters[1]) if len(parameters) > 1 else None
            if isinstance(hint, type) and issubclass(hint, Query):
                answered.setdefault(hint, getattr(projection, name))
    return answered


def _row_line(row: Mapping[str, Any]) -> str:
    return repr(dict(row))
