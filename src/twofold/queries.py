"""The query side: handlers read read models, optionally after waiting for a position.

    def stock_level(self, query: StockLevel, db: Database) -> Stock:
        row = db.fetch_one("SELECT available FROM stock WHERE sku = ?", (query.sku,))
        ...

A query handler is a plain function ``(query, db) -> result``; it runs on a reader thread and
never writes. Read-your-writes: ask with ``min_position`` (HTTP ``X-Min-Position``) and the query
waits, bounded, until every read model the handler reads has applied that position.
"""

from __future__ import annotations

import asyncio
import typing
from collections.abc import Callable, Collection, Mapping
from typing import Any

from twofold.errors import NotCaughtUp, NotFound
from twofold.messages import Query
from twofold.projections import Projection, ProjectionRunner
from twofold.readmodels import Database, ReadStore
from twofold.tenancy import Tenancy

__all__ = ["QueryDispatcher", "QueryHandler", "result_type_of"]

QueryHandler = Callable[[Any, Database], Any]
POLL_INTERVAL = 0.01  # seconds between checkpoint reads when the projection runs in another process


def projections_read_by(handler: QueryHandler, every: Collection[str]) -> tuple[str, ...]:
    """A projection's own method reads that projection; any other function may read them all."""
    owner = getattr(handler, "__self__", None)
    return (owner.name,) if isinstance(owner, Projection) else tuple(every)


def result_type_of(handler: QueryHandler) -> Any:
    """The handler's declared return type, used to describe its response in OpenAPI."""
    return typing.get_type_hints(handler).get("return", Any)


class QueryDispatcher:
    """Routes each query type to its handler, after the read-your-writes wait when asked.

    Args:
        read_store: where read models live.
        handlers: query class → ``handler(query, db)``.
        projections: the names of every projection in the service.
        runners: the runners in this process, which announce progress without polling.
        tenancy: opens tenants' read stores, for queries asked for a tenant.
    """

    def __init__(
        self,
        read_store: ReadStore,
        handlers: Mapping[type[Query], QueryHandler],
        projections: Collection[str],
        runners: Mapping[str, ProjectionRunner],
        tenancy: Tenancy | None = None,
    ) -> None:
        self._read_store = read_store
        self._tenancy = tenancy or Tenancy(read_store, [r.projection for r in runners.values()])
        self._handlers = dict(handlers)
        self._reads = {q: projections_read_by(h, projections) for q, h in handlers.items()}
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
        if min_position is not None:
            await self.wait_for(self._reads[type(query)], min_position, timeout)
        store = self._read_store if tenant is None else await self._tenancy.store_for(tenant)
        return await store.read(lambda db: handler(query, db))

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
        # The projection runs in another process: its progress is only visible in the read store.
        while (reached := await self._read_store.checkpoint(name)) < position and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(POLL_INTERVAL)
        return reached
