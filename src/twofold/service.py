"""A service declared in one place: its commands, queries and projections.

    shop = Service(
        "shop",
        commands={AddProduct: add_product, PlaceOrder: place_order},
        queries={StockLevel: catalog.stock_level},
        projections=[catalog],
        upcasters=[Upcaster("shop.OrderPlaced", from_version=1, function=rename_customer)],
        aggregates=[Product, Order],
    )

A ``Service`` only declares; a :class:`~twofold.runtime.Runtime` binds it to stores and runs it,
whole in one process or split into command, query and projection processes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twofold.aggregate import Aggregate
from twofold.commands import CommandHandler
from twofold.errors import ConfigurationError
from twofold.messages import Command, EventTypes, Query, Upcaster
from twofold.projections import Projection
from twofold.queries import QueryHandler
from twofold.sagas import Saga
from twofold.subscriptions import Subscription

__all__ = ["Policy", "Service"]

Policy = Callable[[str | None, Any], bool]
"""``policy(principal, command) -> bool``: may this principal (a token's ``sub``; ``None`` when
authentication is off) send this command? Checked by the HTTP command API before the command runs."""


class Service:
    """The composition root of one service.

    Args:
        name: the service's name, used in data file names, metrics and message subjects.
        commands: each command class and the ``async def handler(command, uow)`` that handles it.
        queries: each query class and the ``handler(query, db)`` that answers it.
        projections: the read models this service keeps.
        upcasters: one per step that brings an event's stored data from one schema version to the
            next, used wherever events are read (aggregates and projections alike).
        subscriptions: the streams this service imports from other services' events.
        sagas: the process managers this service runs.
        description: shown at the top of the service's OpenAPI document.
        policies: for some commands, a :data:`Policy` that decides who may send it, beyond the
            scopes of their token (``{Withdraw: lambda principal, c: principal == c.owner}``).
        aggregates: the aggregate classes whose streams live in this service's store, so that tools
            (``twofold stream order-7 --at 3``) can fold a stream by its category. Declared here,
            beside the rest, rather than recorded by ``Aggregate`` itself: importing a class then
            changes nothing, and two services may reuse one category without colliding.
    """

    def __init__(
        self,
        name: str,
        *,
        commands: Mapping[type[Command], CommandHandler] | None = None,
        queries: Mapping[type[Query], QueryHandler] | None = None,
        projections: Sequence[Projection] = (),
        upcasters: Sequence[Upcaster] = (),
        subscriptions: Sequence[Subscription] = (),
        sagas: Sequence[type[Saga]] = (),
        description: str = "",
        policies: Mapping[type[Command], Policy] | None = None,
        aggregates: Sequence[type[Aggregate]] = (),
    ) -> None:
        self.name = name
        self.commands = dict(commands or {})
        self.queries = dict(queries or {})
        self.projections = tuple(projections)
        self.upcasters = tuple(upcasters)
        self.subscriptions = tuple(subscriptions)
        self.sagas = tuple(sagas)
        self.description = description
        self.policies = dict(policies or {})
        self.aggregates = tuple(aggregates)
        self._check()

    def _check(self) -> None:
        _unique("command", [c.type_name for c in self.commands])
        _unique("query", [q.type_name for q in self.queries])
        _unique("projection", [p.name for p in self.projections])
        _unique("saga", [s.name for s in self.sagas])
        _unique("subscription source", [s.source for s in self.subscriptions])
        categories = [a.category for a in self.aggregates]
        repeated = sorted({c for c in categories if categories.count(c) > 1})
        if repeated:
            raise ConfigurationError(f"Service {self.name}: two aggregates share the category {repeated[0]!r}")
        for cls in self.commands:
            if not (isinstance(cls, type) and issubclass(cls, Command)):
                raise ConfigurationError(f"Service {self.name}: commands keys must be Command classes, got {cls!r}")
        for cls in self.policies:
            if cls not in self.commands:
                raise ConfigurationError(f"Service {self.name}: a policy for {cls!r}, which is not one of its commands")
        try:
            EventTypes(upcasters=self.upcasters)
        except ValueError as exc:
            raise ConfigurationError(f"Service {self.name}: {exc}") from None
        for query_type in self.queries:
            if not (isinstance(query_type, type) and issubclass(query_type, Query)):
                raise ConfigurationError(f"Service {self.name}: queries keys must be Query classes, got {query_type!r}")

    def aggregate_type(self, category: str) -> type[Aggregate] | None:
        """The aggregate class whose streams are ``category-…`` (``order`` → ``Order``), if declared."""
        return next((a for a in self.aggregates if a.category == category), None)

    def command_type(self, type_name: str) -> type[Command] | None:
        return next((c for c in self.commands if c.type_name == type_name), None)

    def query_type(self, type_name: str) -> type[Query] | None:
        return next((q for q in self.queries if q.type_name == type_name), None)


def _unique(kind: str, names: Sequence[str]) -> None:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigurationError(f"Two {kind}s share the name {repeated[0]!r}; give each its own name")
