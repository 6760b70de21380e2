"""The inventory service: stock per sku, and reservations for orders. It never oversells.

A reservation takes every line of an order or none: the ``Stock`` of each sku decides, and the
command appends to all of them and to the order's ``reservation`` stream in one transaction, so
concurrent orders for the same stock are retried on fresh state. The outcome, ``StockReserved``
or ``StockShortage``, is recorded in the reservation stream, which the orders service imports.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from examples.shop.common import Line, Quantity, Sku
from twofold import Aggregate, Command, Database, Event, NotFound, Projection, Query, Service, StoredEvent, UnitOfWork

# -- messages ------------------------------------------------------------------------------------


class ReceiveStock(Command):
    sku: Sku
    quantity: Quantity


class ReserveStock(Command, name="inventory.ReserveStock", internal=True):
    """Sent by the checkout saga: reserve every line of an order, or none."""

    order_id: str
    lines: list[Line]


class ReleaseStock(Command, name="inventory.ReleaseStock", internal=True):
    """Sent by the checkout saga to undo a reservation; harmless when there is none."""

    order_id: str


class StockReceived(Event, name="inventory.StockReceived"):
    sku: str
    quantity: int


class StockAllocated(Event, name="inventory.StockAllocated"):
    sku: str
    order_id: str
    quantity: int


class StockDeallocated(Event, name="inventory.StockDeallocated"):
    sku: str
    order_id: str
    quantity: int


class StockReserved(Event, name="inventory.StockReserved"):
    order_id: str
    lines: list[Line]


class StockShortage(Event, name="inventory.StockShortage"):
    order_id: str
    short_skus: list[str]


class StockReleased(Event, name="inventory.StockReleased"):
    order_id: str


class StockLevel(Query):
    sku: Sku


class Stock(BaseModel):
    sku: str
    available: int


# -- aggregates ----------------------------------------------------------------------------------


class SkuStock(Aggregate, category="stock"):
    """The stock of one sku not yet promised to an order, and what each order holds. ``id`` is the sku."""

    available: int = 0
    held: dict[str, int] = Field(default_factory=dict)

    def evolve(self, event: StockReceived | StockAllocated | StockDeallocated) -> SkuStock:
        match event:
            case StockReceived(quantity=quantity):
                return self.model_copy(update={"available": self.available + quantity})
            case StockAllocated(order_id=order_id, quantity=quantity):
                held = {**self.held, order_id: quantity}
                return self.model_copy(update={"available": self.available - quantity, "held": held})
            case StockDeallocated(order_id=order_id, quantity=quantity):
                held = {o: q for o, q in self.held.items() if o != order_id}
                return self.model_copy(update={"available": self.available + quantity, "held": held})


class Reservation(Aggregate, category="reservation"):
    """What inventory answered for one order. ``id`` is the order id."""

    status: Literal["none", "reserved", "short", "released"] = "none"
    skus: tuple[str, ...] = ()

    def evolve(self, event: StockReserved | StockShortage | StockReleased) -> Reservation:
        match event:
            case StockReserved(lines=lines):
                return self.model_copy(update={"status": "reserved", "skus": tuple(line.sku for line in lines)})
            case StockShortage():
                return self.model_copy(update={"status": "short"})
            case StockReleased():
                return self.model_copy(update={"status": "released"})


# -- handlers ------------------------------------------------------------------------------------


async def receive_stock(command: ReceiveStock, uow: UnitOfWork) -> None:
    stock = await uow.load(SkuStock, command.sku)
    uow.emit(stock, StockReceived(sku=command.sku, quantity=command.quantity))


async def reserve_stock(command: ReserveStock, uow: UnitOfWork) -> None:
    reservation = await uow.load(Reservation, command.order_id)
    if reservation.status != "none":
        return  # answered already, or released before it arrived: the first outcome stands
    stocks = [await uow.load(SkuStock, line.sku) for line in command.lines]
    short = [s.id for s, line in zip(stocks, command.lines, strict=True) if s.available < line.quantity]
    if short:
        uow.emit(reservation, StockShortage(order_id=command.order_id, short_skus=short))
        return
    for stock, line in zip(stocks, command.lines, strict=True):
        uow.emit(stock, StockAllocated(sku=stock.id, order_id=command.order_id, quantity=line.quantity))
    uow.emit(reservation, StockReserved(order_id=command.order_id, lines=command.lines))


async def release_stock(command: ReleaseStock, uow: UnitOfWork) -> None:
    reservation = await uow.load(Reservation, command.order_id)
    if reservation.status == "released":
        return
    for sku in reservation.skus if reservation.status == "reserved" else ():
        stock = await uow.load(SkuStock, sku)
        quantity = stock.held.get(command.order_id)
        if quantity is not None:
            uow.emit(stock, StockDeallocated(sku=sku, order_id=command.order_id, quantity=quantity))
    # Released even when nothing was reserved, so that a reservation arriving late is refused.
    uow.emit(reservation, StockReleased(order_id=command.order_id))


# -- read model ----------------------------------------------------------------------------------


class StockLevels(Projection, name="inventory.stock"):
    """Each sku's stock not promised to an order."""

    tables = ("stock_levels",)

    def setup(self, db: Database) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS stock_levels (sku TEXT PRIMARY KEY, available INTEGER NOT NULL)")

    def apply(
        self, event: StockReceived | StockAllocated | StockDeallocated, db: Database, record: StoredEvent
    ) -> None:
        change = -event.quantity if isinstance(event, StockAllocated) else event.quantity
        db.execute(
            "INSERT INTO stock_levels (sku, available) VALUES (?, ?)"
            " ON CONFLICT (sku) DO UPDATE SET available = stock_levels.available + excluded.available",
            (event.sku, change),
        )

    def stock_level(self, query: StockLevel, db: Database) -> Stock:
        row = db.fetch_one("SELECT sku, available FROM stock_levels WHERE sku = ?", (query.sku,))
        if row is None:
            raise NotFound(f"No stock was ever received for sku {query.sku}")
        return Stock(**row)


levels = StockLevels()

inventory = Service(
    "inventory",
    description="Stock per sku and reservations for orders; never oversells.",
    commands={ReceiveStock: receive_stock, ReserveStock: reserve_stock, ReleaseStock: release_stock},
    queries={StockLevel: levels.stock_level},
    projections=[levels],
    aggregates=[SkuStock, Reservation],
)
