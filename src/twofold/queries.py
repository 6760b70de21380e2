"""The query side: handlers read read models, optionally after waiting for a position.

    def stock_level(self, query: StockLevel, db: Database) -> Stock:
        row = db.fetch_one("SELECT available FROM stock WHERE sku = ?", (query.sku,))
        ...

A query handler is a plain function ``(query, db) -> result``; it runs on a reader thread and
never writes. A handler that is a projection's own method reads that projection's target store
(the warehouse, the search index, or the read database); any other function reads the read
database. Read-your-writes: ask with ``min_position`` (HTTP ``X-Min-Position``) and the query
waits, bounded, until every read model the handler reads has applied that position.
"""

from __future__ import annotations

import asyncio
import typing
from collections.abc import Callable, Collection, Mapping
from typing import Any

from twofold.errors import ConfigurationError, NotCaughtUp, NotFound
from twofold.messages import Query
from twofold.projections import Projection, ProjectionRunner
from twofold.readmodels import Database, ReadStore
from twofold.tenancy import Tenancy

__all__ = ["QueryDispatcher", "QueryHandler", "result_type_of"]

QueryHandler = Callable[[Any, Database], Any]
POLL_INTERVAL = 0.01  # seconds between checkpoint reads when the projection runs in another process


def projections_read_by(
    handler: QueryHandler, every: Collection[str], target_of: Mapping[str, str] | None = None
) -> tuple[str, ...]:
    """A projection's own method reads that projection; any other function may read every model of the read database."""
    owner = getattr(handler, "__self__", None)
    if isinstance(owner, Projection):
        return (owner.name,)
    return tuple(name for name in every if (target_of or {}).get(name, "sql") == "sql")


def target_read_by(handler: QueryHandler) -> str:
    """The target store a handler reads: its projection's, or the read database (``"sql"``)."""
    owner = getattr(handler, "__self__", None)
    return owner.target if isinstance(owner, Projection) else "sql"


def result_type_of(handler: QueryHandler) -> Any:
    """The handler's declared return type, used to describe its response in OpenAPI."""
    return typing.get_type_hints(handler).get("return", Any)


class QueryDispatcher:
    """Routes each query type to its handler, after the read-your-writes wait when asked.

    Args:
        read_store: where the read database's models live (the ``"sql"`` target).
        handlers: query class → ``handler(query, db)``.
        projections: the names of every projection in the service.
        runners: the runners in this process, which announce progress without polling.
        tenancy: opens tenants' read stores, for queries asked for a tenant.
        targets: the other target stores open in this process (``"warehouse"``, ``"search"``).
        tenancies: each other target's tenancy.
        target_of: each projection's target, by name (``"sql"`` when left out).
    """

    def __init__(
        self,
        read_store: ReadStore[Any],
        handlers: Mapping[type[Query], QueryHandler],
        projections: Collection[str],
        runners: Mapping[str, ProjectionRunner],
        tenancy: Tenancy | None = None,
        *,
        targets: Mapping[str, ReadStore[Any]] | None = None,
        tenancies: Mapping[str, Tenancy] | None = None,
        target_of: Mapping[str, str] | None = None,
    ) -> None:
        self._stores: dict[str, ReadStore[Any]] = {**(targets or {}), "sql": read_store}
        sql = tenancy or Tenancy(read_store, [r.projection for r in runners.values() if r.projection.target == "sql"])
        self._tenancies: dict[str, Tenancy] = {**(tenancies or {}), "sql": sql}
        self._handlers = dict(handlers)
        self._reads = {q: projections_read_by(h, projections, target_of) for q, h in handlers.items()}
        self._targets = {q: target_read_by(h) for q, h in handlers.items()}
        self._target_of = dict(target_of or {})
        self._runners = runners

    async def ask(
        self, query: Query, *, min_position: int | None = None, timeout: float = 5.0, tenant: str | None = None
    ) -> Any:
        """Answer ``query`` from ``tenant``'s read models (or the untenanted ones); with
        ``min_position``, first wait up to ``timeout`` seconds for it.

        Raises :class:`NotFound` for an undeclared query and :class:`NotCaughtUp` when the wait runs out.
        """
        handler = self._handlers.get(type(query))
        if handler is None:
            raise NotFound(f"No handler for query {query.type_name}")
        target = self._targets[type(query)]
        main = self._store(target)
        if min_position is not None:
            await self.wait_for(self._reads[type(query)], min_position, timeout)
        store = main if tenant is None else await self._tenancies[target].store_for(tenant)
        return await store.read(lambda db: handler(query, db))

    def _store(self, target: str) -> ReadStore[Any]:
        store = self._stores.get(target)
        if store is None:
            raise ConfigurationError(
                f"This process has no {target!r} store: its queries are answered where that target is open"
                " (Runtime(targets=...), the queries role)"
            )
        return store

    async def wait_for(self, names: Collection[str], position: int, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for name in names:
            reached = await self._wait_one(name, position, deadline - loop.time())
            if reached < position:
                raise NotCaughtUp(position, reached, timeout)

    async def _wait_one(self, name: str, position: int, left: float) -> int:
        runner = self._runners.get(name)
        if runner is not None:
            await runner.wait_for(position, max(left, 0))
            return runner.position
        loop = asyncio.get_running_loop()
        deadline = loop.time() + left
        # The projection runs in another process: its progress is only visible in its target store.
        store = self._store(self._target_of.get(name, "sql"))
        while (reached := await store.checkpoint(name)) < position and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(POLL_INTERVAL)
        return reached
