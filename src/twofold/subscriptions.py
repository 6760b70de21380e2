"""Events a service takes in from other services.

    orders = Service("orders", ..., subscriptions=[Subscription("inventory", categories=["reservation"])])

A subscription imports whole streams of another service into this service's own event store:
``reservation-o-1`` of ``inventory`` becomes ``inventory.reservation-o-1`` here, each event at the
same version, with the same id, type, data and metadata. Projections and sagas then see those
events in this service's global order like any other, and can be rebuilt from this store alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Subscription", "imported_stream_id"]


@dataclass(frozen=True, slots=True)
class Subscription:
    """The categories of streams this service imports from the service named ``source``.

    A subscription takes whole categories, never single event types, so that each imported
    stream arrives complete and its order can be checked by version.
    """

    source: str
    categories: Sequence[str]

    def __post_init__(self) -> None:
        object.__setattr__(self, "categories", tuple(self.categories))


def imported_stream_id(source: str, stream_id: str) -> str:
    """``("inventory", "reservation-o-1")`` → ``inventory.reservation-o-1``: where an import lands."""
    return f"{source}.{stream_id}"
