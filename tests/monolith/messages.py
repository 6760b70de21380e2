"""What the shop's clients may ask of it, and the facts it records."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from twofold import Command, Event, Query

Sku = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
Quantity = Annotated[int, Field(ge=1, le=1_000_000)]
Price = Annotated[Decimal, Field(ge=0, le=Decimal("1000000"), max_digits=12, decimal_places=2)]


# -- commands ------------------------------------------------------------------------------------


class AddProduct(Command):
    sku: Sku
    name: Annotated[str, Field(min_length=1, max_length=200)]
    price: Price


class ReceiveStock(Command):
    sku: Sku
    quantity: Quantity


class OrderLine(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    sku: Sku
    quantity: Quantity


class PlaceOrder(Command):
    order_id: Id
    customer_id: Id
    lines: Annotated[list[OrderLine], Field(min_length=1, max_length=100)]

    @model_validator(mode="after")
    def _each_sku_once(self) -> PlaceOrder:
        skus = [line.sku for line in self.lines]
        repeated = sorted({s for s in skus if skus.count(s) > 1})
        if repeated:
            raise ValueError(f"each sku may appear in one line only; repeated: {', '.join(repeated)}")
        return self


class CancelOrder(Command):
    order_id: Id


# -- events --------------------------------------------------------------------------------------


class ProductAdded(Event, name="shop.ProductAdded"):
    sku: str
    name: str
    price: Decimal


class StockReceived(Event, name="shop.StockReceived"):
    sku: str
    quantity: int


class StockReserved(Event, name="shop.StockReserved"):
    sku: str
    order_id: str
    quantity: int


class StockReleased(Event, name="shop.StockReleased"):
    sku: str
    order_id: str
    quantity: int


class PricedLine(BaseModel):
    """A line of a placed order, at the price the product had when the order was placed."""

    model_config = ConfigDict(frozen=True)

    sku: str
    quantity: int
    price: Decimal


class OrderPlaced(Event, name="shop.OrderPlaced"):
    order_id: str
    customer_id: str
    lines: list[PricedLine]
    total: Decimal


class OrderCancelled(Event, name="shop.OrderCancelled"):
    order_id: str
    customer_id: str
    lines: list[PricedLine]


# -- queries and their answers -------------------------------------------------------------------


class SearchProducts(Query):
    text: Annotated[str, Field(max_length=200)] = ""


class StockLevel(Query):
    sku: Sku


class OrderHistory(Query):
    customer_id: Id
