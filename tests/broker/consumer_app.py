"""A service that imports another's reservations, for consumer tests (also served as a real process)."""

from __future__ import annotations

from twofold import Database, Event, Projection, Service, StoredEvent
from twofold.subscriptions import Subscription


class StockReserved(Event, name="inventory.StockReserved"):
    sku: str
    quantity: int


class StockReservedFixed(Event, name="inventory.StockReserved"):
    """The deployed fix: a quantity sent as text is read too."""

    sku: str
    quantity: int | str


class Reservations(Projection, name="orders.reservations"):
    def apply(self, event: StockReserved, db: Database, record: StoredEvent) -> None:
        pass


class ReservationsFixed(Projection, name="orders.reservations"):
    def apply(self, event: StockReservedFixed, db: Database, record: StoredEvent) -> None:
        pass


def orders_service(name: str, source: str, *, fixed: bool = False) -> Service:
    """``name`` importing the ``reservation`` streams of ``source``."""
    projection = ReservationsFixed() if fixed else Reservations()
    return Service(name, projections=[projection], subscriptions=[Subscription(source, ["reservation"])])


orders = orders_service("killorders", "killinventory")
