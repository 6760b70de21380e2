"""The orders service: orders, the checkout saga that sees each one through, order history and sales reports.

    PlaceOrder ─▶ OrderPlaced ─▶ checkout: PriceOrder (catalog) ─▶ OrderPriced
                                          ReserveStock (inventory) ─▶ StockReserved
                                          AuthorizePayment (payments) ─▶ PaymentAuthorized
                                          ConfirmOrder ─▶ OrderConfirmed

An unknown product, a shortage or a declined card rejects the order; an order not paid within
``SHOP_PAYMENT_DEADLINE_SECONDS`` (60 by default) is cancelled; either way what was reserved is
released and what was authorized is voided. The other services' answers reach this service as
imported streams (its subscriptions), so the saga and the order history see them as its own events.

The sales reports (``SalesReport``, ``TopProducts``) come from a warehouse projection: a DuckDB
fact table with a row per line of each confirmed order, grouped and summed in the database.
"""

from __future__ import annotations

import functools
import json
import os
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from examples.shop.catalog import OrderPriced, PriceOrder, PricingFailed
from examples.shop.common import Id, Line, PricedLine
from examples.shop.inventory import ReleaseStock, ReserveStock, StockReserved, StockShortage
from examples.shop.payments import AuthorizePayment, Card, PaymentAuthorized, PaymentDeclined, VoidPayment
from twofold import (
    Actions,
    Aggregate,
    Command,
    Database,
    DomainError,
    Event,
    Projection,
    Query,
    Saga,
    Service,
    StoredEvent,
    Subscription,
    Timeout,
    UnitOfWork,
)

MAX_REPORT_DAYS = 3660  # a report spans at most about ten years: one query never scans the whole history twice
PAYMENT_DEADLINE = timedelta(seconds=float(os.environ.get("SHOP_PAYMENT_DEADLINE_SECONDS", "60")))

# -- messages ------------------------------------------------------------------------------------


class PlaceOrder(Command):
    order_id: Id
    customer_id: Id
    lines: Annotated[list[Line], Field(min_length=1, max_length=100)]
    payment: Card | None = Field(default=None, description="A test card (see the payments service); none approves")

    @model_validator(mode="after")
    def _each_sku_once(self) -> PlaceOrder:
        skus = [line.sku for line in self.lines]
        repeated = sorted({s for s in skus if skus.count(s) > 1})
        if repeated:
            raise ValueError(f"each sku may appear in one line only; repeated: {', '.join(repeated)}")
        return self


class CancelOrder(Command):
    order_id: Id
    reason: Annotated[str, Field(max_length=200)] = "cancelled by the customer"


class ConfirmOrder(Command, name="orders.ConfirmOrder", internal=True):
    order_id: str
    total: Decimal


class RejectOrder(Command, name="orders.RejectOrder", internal=True):
    order_id: str
    reason: str


class OrderPlaced(Event, name="orders.OrderPlaced"):
    order_id: str
    customer_id: str
    lines: list[Line]
    payment: str | None = None


class OrderConfirmed(Event, name="orders.OrderConfirmed"):
    order_id: str
    total: Decimal


class OrderRejected(Event, name="orders.OrderRejected"):
    order_id: str
    reason: str


class OrderCancelled(Event, name="orders.OrderCancelled"):
    order_id: str
    reason: str


class OrderHistory(Query):
    customer_id: Id


class OrderView(BaseModel):
    order_id: str
    status: str
    reason: str | None
    lines: list[PricedLine] | list[Line]
    total: Decimal | None
    placed_at: str
    placed_by: str | None


class Orders(BaseModel):
    orders: list[OrderView]


# -- the aggregate -------------------------------------------------------------------------------

Status = Literal["new", "placed", "confirmed", "rejected", "cancelled"]
Settled = OrderConfirmed | OrderRejected | OrderCancelled


class Order(Aggregate, category="order"):
    """An order, from placed to one final status. ``id`` is the order id."""

    status: Status = "new"

    def place(self, command: PlaceOrder) -> OrderPlaced:
        if self.exists:
            raise DomainError(f"Order {self.id} already exists")
        return OrderPlaced(
            order_id=self.id, customer_id=command.customer_id, lines=command.lines, payment=command.payment
        )

    def settle(
        self, event: OrderConfirmed | OrderRejected | OrderCancelled
    ) -> OrderConfirmed | OrderRejected | OrderCancelled:
        if not self.exists:
            raise DomainError(f"Unknown order {self.id}")
        if self.status != "placed":
            raise DomainError(f"Order {self.id} is already {self.status}")
        return event

    def evolve(self, event: OrderPlaced | OrderConfirmed | OrderRejected | OrderCancelled) -> Order:
        match event:
            case OrderPlaced():
                return self.model_copy(update={"status": "placed"})
            case OrderConfirmed():
                return self.model_copy(update={"status": "confirmed"})
            case OrderRejected():
                return self.model_copy(update={"status": "rejected"})
            case OrderCancelled():
                return self.model_copy(update={"status": "cancelled"})


async def place_order(command: PlaceOrder, uow: UnitOfWork) -> None:
    order = await uow.load(Order, command.order_id)
    uow.emit(order, order.place(command))


async def confirm_order(command: ConfirmOrder, uow: UnitOfWork) -> None:
    order = await uow.load(Order, command.order_id)
    uow.emit(order, order.settle(OrderConfirmed(order_id=command.order_id, total=command.total)))


async def reject_order(command: RejectOrder, uow: UnitOfWork) -> None:
    order = await uow.load(Order, command.order_id)
    uow.emit(order, order.settle(OrderRejected(order_id=command.order_id, reason=command.reason)))


async def cancel_order(command: CancelOrder, uow: UnitOfWork) -> None:
    order = await uow.load(Order, command.order_id)
    uow.emit(order, order.settle(OrderCancelled(order_id=command.order_id, reason=command.reason)))


# -- the checkout saga ---------------------------------------------------------------------------

Stage = Literal["new", "pricing", "reserving", "paying", "confirmed", "rejected", "cancelled"]


class Checkout(Saga, name="checkout", key="order_id"):
    """Sees one order through pricing, stock and payment, and undoes what was done if it fails."""

    stage: Stage = "new"
    lines: list[Line] = Field(default_factory=list)
    card: str | None = None
    total: Decimal | None = None

    def react(
        self,
        event: OrderPlaced
        | OrderPriced
        | PricingFailed
        | StockReserved
        | StockShortage
        | PaymentAuthorized
        | PaymentDeclined
        | OrderCancelled
        | Timeout,
        do: Actions,
    ) -> Checkout:
        match event:
            case OrderPlaced(order_id=order_id, lines=lines, payment=card):
                do.send(PriceOrder(order_id=order_id, lines=lines), to="catalog")
                do.schedule("payment", after=PAYMENT_DEADLINE)
                return self.model_copy(update={"stage": "pricing", "lines": lines, "card": card})
            case OrderPriced(total=total) if self.stage == "pricing":
                do.send(
                    ReserveStock(order_id=self.id, lines=self.lines),
                    to="inventory",
                    compensate=ReleaseStock(order_id=self.id),
                )
                return self.model_copy(update={"stage": "reserving", "total": total})
            case StockReserved() if self.stage == "reserving":
                assert self.total is not None
                do.send(
                    AuthorizePayment(order_id=self.id, amount=self.total, card=self.card),
                    to="payments",
                    compensate=VoidPayment(order_id=self.id),
                )
                return self.model_copy(update={"stage": "paying"})
            case PaymentAuthorized() if self.stage == "paying":
                assert self.total is not None
                do.send(ConfirmOrder(order_id=self.id, total=self.total))
                do.complete()
                return self.model_copy(update={"stage": "confirmed"})
            case PricingFailed(unknown_skus=skus):
                return self._reject(do, f"unknown products: {', '.join(skus)}")
            case StockShortage(short_skus=skus):
                return self._reject(do, f"out of stock: {', '.join(skus)}")
            case PaymentDeclined(reason=reason):
                return self._reject(do, f"payment declined: {reason}")
            case Timeout(name="payment"):
                do.compensate()
                do.send(CancelOrder(order_id=self.id, reason="not paid in time"))
                do.complete()
                return self.model_copy(update={"stage": "cancelled"})
            case OrderCancelled():  # by the customer: undo what was done so far
                do.compensate()
                do.complete()
                return self.model_copy(update={"stage": "cancelled"})
        return self

    def _reject(self, do: Actions, reason: str) -> Checkout:
        do.compensate()
        do.send(RejectOrder(order_id=self.id, reason=reason))
        do.complete()
        return self.model_copy(update={"stage": "rejected"})


# -- the order history ---------------------------------------------------------------------------


class OrderBook(Projection, name="orders.history"):
    """Every order by customer, newest first, with its prices once known, its final status and who placed it."""

    tables = ("orders",)

    def setup(self, db: Database) -> None:
        db.execute(
            "CREATE TABLE IF NOT EXISTS orders ("
            " order_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, status TEXT NOT NULL, reason TEXT,"
            " lines TEXT NOT NULL, total TEXT, placed_at TEXT NOT NULL, placed_by TEXT, position BIGINT NOT NULL)"
        )
        db.execute("CREATE INDEX IF NOT EXISTS orders_by_customer ON orders (customer_id, position)")

    def apply(
        self,
        event: OrderPlaced | OrderPriced | OrderConfirmed | OrderRejected | OrderCancelled,
        db: Database,
        record: StoredEvent,
    ) -> None:
        match event:
            case OrderPlaced():
                db.execute(
                    "INSERT INTO orders (order_id, customer_id, status, lines, placed_at, placed_by, position)"
                    " VALUES (?, ?, 'placed', ?, ?, ?, ?)",
                    (
                        event.order_id,
                        event.customer_id,
                        json.dumps([line.model_dump(mode="json") for line in event.lines]),
                        record.recorded_at.isoformat(),
                        record.metadata.get("principal"),
                        record.position,
                    ),
                )
            case OrderPriced():
                lines = json.dumps([line.model_dump(mode="json") for line in event.lines])
                db.execute(
                    "UPDATE orders SET lines = ?, total = ? WHERE order_id = ?",
                    (lines, str(event.total), event.order_id),
                )
            case OrderConfirmed():
                db.execute("UPDATE orders SET status = 'confirmed' WHERE order_id = ?", (event.order_id,))
            case OrderRejected(reason=reason) | OrderCancelled(reason=reason):
                status = "rejected" if isinstance(event, OrderRejected) else "cancelled"
                db.execute(
                    "UPDATE orders SET status = ?, reason = ? WHERE order_id = ?", (status, reason, event.order_id)
                )

    def history(self, query: OrderHistory, db: Database) -> Orders:
        rows = db.fetch_all(
            "SELECT order_id, status, reason, lines, total, placed_at, placed_by FROM orders"
            " WHERE customer_id = ? ORDER BY position DESC",
            (query.customer_id,),
        )
        return Orders(orders=[OrderView(**{**row, "lines": json.loads(row["lines"])}) for row in rows])


# -- sales reports (the warehouse) ---------------------------------------------------------------


class SalesReport(Query):
    """Sales from ``from`` to ``to`` (both days included, UTC), by day, week, month or sku.

    A sale is a line of a confirmed order, dated the day the order was confirmed; days without
    sales have no row. ``week`` and ``month`` rows are dated by the period's first day (weeks
    start on Monday).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    from_: date = Field(alias="from", description="The first day, e.g. 2026-11-01")
    to: date = Field(description="The last day, included")
    group_by: Literal["day", "week", "month", "sku"] = "day"

    @field_validator("to")
    @classmethod
    def _after_from(cls, to: date, info: ValidationInfo) -> date:
        start = info.data.get("from_")
        if start is not None and to < start:
            raise ValueError("must be on or after from")
        if start is not None and (to - start).days >= MAX_REPORT_DAYS:
            raise ValueError(f"a report spans at most {MAX_REPORT_DAYS} days")
        return to


class SalesRow(BaseModel):
    """One group: its day (``day``/``week``/``month``) or its sku, and what was sold in it."""

    day: date | None = None
    sku: str | None = None
    revenue: Decimal
    units: int
    orders: int


class Sales(BaseModel):
    group_by: str
    rows: list[SalesRow]


class TopProducts(Query):
    """The best-selling skus of one period: the day, ISO week, month or year holding ``as_of``, or all time."""

    period: Literal["day", "week", "month", "year", "all"] = "week"
    as_of: date | None = Field(default=None, description="A day in the period; today (UTC) when left out")
    by: Literal["revenue", "units"] = "revenue"
    limit: Annotated[int, Field(ge=1, le=100)] = 10


class ProductSales(BaseModel):
    rank: int
    sku: str
    revenue: Decimal
    units: int
    orders: int


class TopSellers(BaseModel):
    period: str
    first_day: date | None  # None for "all"
    last_day: date | None
    by: str
    products: list[ProductSales]


# A row per line of each priced order; ``day`` stays NULL until the order is confirmed (the day it
# was), and a rejected or cancelled order's rows are deleted. DuckDB keeps the table by column: the
# reports read three or four of its columns and sum them over every row in one scan. Each event is
# one statement: DuckDB pays about a millisecond per statement, however few rows it touches.
CREATE_SALE_LINES = """
CREATE TABLE IF NOT EXISTS sale_lines (
    order_id VARCHAR NOT NULL, sku VARCHAR NOT NULL, day DATE, quantity INTEGER NOT NULL,
    price DECIMAL(12, 2) NOT NULL, revenue DECIMAL(18, 2) NOT NULL, position BIGINT NOT NULL,
    PRIMARY KEY (order_id, sku))
"""
# A row per line, undated until the order is confirmed. The warehouse sends consecutive rows as one
# multi-row INSERT. An order is priced once: the checkout asks once, and the catalog applies each
# command id once.
ADD_PRICED_LINE = (
    "INSERT INTO sale_lines (order_id, sku, day, quantity, price, revenue, position) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
CONFIRM_SALE = "UPDATE sale_lines SET day = ?, position = ? WHERE order_id = ?"
DROP_SALE = "DELETE FROM sale_lines WHERE order_id = ?"
SALES_BY_DAY = """
SELECT date_trunc(?, day)::DATE AS day, sum(revenue) AS revenue, sum(quantity)::BIGINT AS units,
       count(DISTINCT order_id) AS orders
FROM sale_lines WHERE day BETWEEN ? AND ? GROUP BY 1 ORDER BY 1
"""
SALES_BY_SKU = """
SELECT sku, sum(revenue) AS revenue, sum(quantity)::BIGINT AS units, count(DISTINCT order_id) AS orders
FROM sale_lines WHERE day BETWEEN ? AND ? GROUP BY sku ORDER BY sku
"""
PERIOD_BOUNDS = "SELECT date_trunc(?, ?::DATE)::DATE AS first_day"
TOP_SELLERS = {  # ties broken by the other measure, then by sku, so that a ranking never shuffles
    "revenue": """
SELECT sku, sum(revenue) AS revenue, sum(quantity)::BIGINT AS units, count(DISTINCT order_id) AS orders
FROM sale_lines WHERE day BETWEEN ? AND ? GROUP BY sku ORDER BY revenue DESC, units DESC, sku LIMIT ?
""",
    "units": """
SELECT sku, sum(revenue) AS revenue, sum(quantity)::BIGINT AS units, count(DISTINCT order_id) AS orders
FROM sale_lines WHERE day BETWEEN ? AND ? GROUP BY sku ORDER BY units DESC, revenue DESC, sku LIMIT ?
""",
}
PERIOD_LENGTH = {"day": "1 day", "week": "7 days", "month": "1 month", "year": "1 year"}
PERIOD_END = "SELECT (?::DATE + CAST(? AS INTERVAL) - INTERVAL 1 DAY)::DATE AS last_day"


class SalesFacts(Projection, name="orders.sales"):
    """A line per sku of each priced order, dated once it is confirmed, in the warehouse: what the reports sum."""

    tables = ("sale_lines",)
    target = "warehouse"

    def setup(self, db: Database) -> None:
        db.execute(CREATE_SALE_LINES)

    def apply(
        self, event: OrderPriced | OrderConfirmed | OrderRejected | OrderCancelled, db: Database, record: StoredEvent
    ) -> None:
        match event:
            case OrderPriced():
                rows = [
                    (
                        event.order_id,
                        line.sku,
                        None,
                        line.quantity,
                        line.price,
                        line.price * line.quantity,
                        record.position,
                    )
                    for line in event.lines
                ]
                db.executemany(ADD_PRICED_LINE, rows)
            case OrderConfirmed():
                day = record.recorded_at.astimezone(UTC).date()
                db.execute(CONFIRM_SALE, (day, record.position, event.order_id))
            case OrderRejected() | OrderCancelled():
                db.execute(DROP_SALE, (event.order_id,))

    def report(self, query: SalesReport, db: Database) -> Sales:
        if query.group_by == "sku":
            rows = db.fetch_all(SALES_BY_SKU, (query.from_, query.to))
        else:
            rows = db.fetch_all(SALES_BY_DAY, (query.group_by, query.from_, query.to))
        return Sales(group_by=query.group_by, rows=[SalesRow(**row) for row in rows])

    def top(self, query: TopProducts, db: Database) -> TopSellers:
        first_day = last_day = None
        if query.period != "all":
            as_of = query.as_of or datetime.now(UTC).date()
            first_day = _one_day(db, PERIOD_BOUNDS, (query.period, as_of), "first_day")
            last_day = _one_day(db, PERIOD_END, (first_day, PERIOD_LENGTH[query.period]), "last_day")
        rows = db.fetch_all(TOP_SELLERS[query.by], (first_day or date.min, last_day or date.max, query.limit))
        products = [ProductSales(rank=rank, **row) for rank, row in enumerate(rows, start=1)]
        return TopSellers(period=query.period, first_day=first_day, last_day=last_day, by=query.by, products=products)


@functools.lru_cache(maxsize=128)
def _one_day(db: Database, sql: str, params: tuple[object, ...], column: str) -> date:
    row = db.fetch_one(sql, params)
    assert row is not None  # a SELECT without FROM answers one row
    day: date = row[column]
    return day


book = OrderBook()
sales = SalesFacts()

orders = Service(
    "orders",
    description="Orders, the checkout saga, each customer's order history, and sales reports.",
    commands={
        PlaceOrder: place_order,
        CancelOrder: cancel_order,
        ConfirmOrder: confirm_order,
        RejectOrder: reject_order,
    },
    queries={OrderHistory: book.history, SalesReport: sales.report, TopProducts: sales.top},
    projections=[book, sales],
    sagas=[Checkout],
    aggregates=[Order],
    subscriptions=[
        Subscription("catalog", categories=["pricing"]),
        Subscription("inventory", categories=["reservation"]),
        Subscription("payments", categories=["payment"]),
    ],
)
