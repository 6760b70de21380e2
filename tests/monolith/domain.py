"""The shop's aggregates: products with their stock, and orders. Pure decisions, no I/O."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from tests.monolith.messages import (
    OrderCancelled,
    OrderPlaced,
    PricedLine,
    ProductAdded,
    StockReceived,
    StockReleased,
    StockReserved,
)
from twofold import Aggregate, DomainError


class Product(Aggregate, category="product"):
    """A product and the stock not yet promised to an order. ``id`` is the sku."""

    name: str = ""
    price: Decimal = Decimal(0)
    available: int = 0

    def add(self, name: str, price: Decimal) -> ProductAdded:
        if self.exists:
            raise DomainError(f"Product {self.id} already exists")
        return ProductAdded(sku=self.id, name=name, price=price)

    def receive(self, quantity: int) -> StockReceived:
        self._must_exist()
        return StockReceived(sku=self.id, quantity=quantity)

    def reserve(self, order_id: str, quantity: int) -> StockReserved:
        self._must_exist()
        if quantity > self.available:
            raise DomainError(f"Not enough stock for {self.id}: ordered {quantity}, available {self.available}")
        return StockReserved(sku=self.id, order_id=order_id, quantity=quantity)

    def release(self, order_id: str, quantity: int) -> StockReleased:
        return StockReleased(sku=self.id, order_id=order_id, quantity=quantity)

    def _must_exist(self) -> None:
        if not self.exists:
            raise DomainError(f"Unknown sku {self.id}")

    def evolve(self, event: ProductAdded | StockReceived | StockReserved | StockReleased) -> Product:
        match event:
            case ProductAdded(name=name, price=price):
                return self.model_copy(update={"name": name, "price": price})
            case StockReceived(quantity=quantity) | StockReleased(quantity=quantity):
                return self.model_copy(update={"available": self.available + quantity})
            case StockReserved(quantity=quantity):
                return self.model_copy(update={"available": self.available - quantity})


class Order(Aggregate, category="order"):
    """An order, from placed to cancelled. ``id`` is the order id."""

    customer_id: str = ""
    lines: tuple[PricedLine, ...] = ()
    status: Literal["new", "placed", "cancelled"] = "new"

    def place(self, customer_id: str, lines: list[PricedLine]) -> OrderPlaced:
        if self.exists:
            raise DomainError(f"Order {self.id} already exists")
        total = sum((line.price * line.quantity for line in lines), Decimal(0))
        return OrderPlaced(order_id=self.id, customer_id=customer_id, lines=lines, total=total)

    def cancel(self) -> OrderCancelled:
        if not self.exists:
            raise DomainError(f"Unknown order {self.id}")
        if self.status == "cancelled":
            raise DomainError(f"Order {self.id} is already cancelled")
        return OrderCancelled(order_id=self.id, customer_id=self.customer_id, lines=list(self.lines))

    def evolve(self, event: OrderPlaced | OrderCancelled) -> Order:
        match event:
            case OrderPlaced(customer_id=customer_id, lines=lines):
                return self.model_copy(update={"customer_id": customer_id, "lines": tuple(lines), "status": "placed"})
            case OrderCancelled():
                return self.model_copy(update={"status": "cancelled"})
