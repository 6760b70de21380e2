"""The catalog service: products, their prices, search, and pricing an order.

It knows nothing of stock or payment. The checkout saga asks it to price an order; the answer,
``OrderPriced`` or ``PricingFailed``, is recorded in the order's ``pricing`` stream, which the
orders service imports.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Annotated

from pydantic import BaseModel, Field, ValidationInfo, field_validator

from examples.shop.common import Line, Price, PricedLine, Sku
from twofold import (
    Aggregate,
    Command,
    Database,
    DomainError,
    Event,
    NotFound,
    Projection,
    Query,
    Service,
    StoredEvent,
    UnitOfWork,
)
from twofold.readmodels.tantivy import SearchIndex

CENT = Decimal("0.01")


# -- messages ------------------------------------------------------------------------------------


class AddProduct(Command):
    sku: Sku
    name: Annotated[str, Field(min_length=1, max_length=200)]
    price: Price


class PriceOrder(Command, name="catalog.PriceOrder", internal=True):
    """Sent by the checkout saga: price each line at the product's current price."""

    order_id: str
    lines: list[Line]


class ProductAdded(Event, name="catalog.ProductAdded"):
    sku: str
    name: str
    price: Decimal


class OrderPriced(Event, name="catalog.OrderPriced"):
    order_id: str
    lines: list[PricedLine]
    total: Decimal


class PricingFailed(Event, name="catalog.PricingFailed"):
    order_id: str
    unknown_skus: list[str]


class SearchProducts(Query):
    """Products matching what a person typed, best match first; ``min_price``/``max_price`` bound the price."""

    text: Annotated[str, Field(max_length=200)] = ""
    min_price: Price | None = None
    max_price: Price | None = None
    limit: Annotated[int, Field(ge=1, le=100)] = 50

    @field_validator("max_price")
    @classmethod
    def _not_below_min_price(cls, value: Decimal | None, info: ValidationInfo) -> Decimal | None:
        least = info.data.get("min_price")
        if value is not None and least is not None and value < least:
            raise ValueError(f"max_price must be at least min_price ({least})")
        return value


class GetProduct(Query):
    """One product by its sku: a lookup, from the read database (a replica's in cluster mode)."""

    sku: Sku


class ProductSummary(BaseModel):
    sku: str
    name: str
    price: Decimal


class ProductList(BaseModel):
    products: list[ProductSummary]


# -- aggregates ----------------------------------------------------------------------------------


class Product(Aggregate, category="product"):
    """A product in the catalogue. ``id`` is the sku."""

    name: str = ""
    price: Decimal = Decimal(0)

    def add(self, name: str, price: Decimal) -> ProductAdded:
        if self.exists:
            raise DomainError(f"Product {self.id} already exists")
        return ProductAdded(sku=self.id, name=name, price=price)

    def evolve(self, event: ProductAdded) -> Product:
        return self.model_copy(update={"name": event.name, "price": event.price})


class Pricing(Aggregate, category="pricing"):
    """The catalogue's answer for one order, given once. ``id`` is the order id."""

    def evolve(self, event: OrderPriced | PricingFailed) -> Pricing:
        return self


# -- handlers ------------------------------------------------------------------------------------


async def add_product(command: AddProduct, uow: UnitOfWork) -> None:
    product = await uow.load(Product, command.sku)
    uow.emit(product, product.add(command.name, command.price))


async def price_order(command: PriceOrder, uow: UnitOfWork) -> None:
    pricing = await uow.load(Pricing, command.order_id)
    if pricing.exists:
        return  # priced already: the first answer stands
    products = [await uow.load(Product, line.sku) for line in command.lines]
    unknown = [p.id for p in products if not p.exists]
    if unknown:
        uow.emit(pricing, PricingFailed(order_id=command.order_id, unknown_skus=unknown))
        return
    lines = [
        PricedLine(sku=p.id, quantity=line.quantity, price=p.price)
        for p, line in zip(products, command.lines, strict=True)
    ]
    total = sum((line.price * line.quantity for line in lines), Decimal(0))
    uow.emit(pricing, OrderPriced(order_id=command.order_id, lines=lines, total=total))


# -- read model ----------------------------------------------------------------------------------


class Catalog(Projection, name="catalog.products"):
    """Products by sku, with their names and prices."""

    tables = ("products",)

    def setup(self, db: Database) -> None:
        db.execute(
            "CREATE TABLE IF NOT EXISTS products (sku TEXT PRIMARY KEY, name TEXT NOT NULL, price TEXT NOT NULL)"
        )

    def apply(self, event: ProductAdded, db: Database, record: StoredEvent) -> None:
        db.execute(
            "INSERT INTO products (sku, name, price) VALUES (?, ?, ?)", (event.sku, event.name, str(event.price))
        )

    def get(self, query: GetProduct, db: Database) -> ProductSummary:
        row = db.fetch_one("SELECT sku, name, price FROM products WHERE sku = ?", (query.sku,))
        if row is None:
            raise NotFound(f"No product has sku {query.sku}")
        return ProductSummary(sku=row["sku"], name=row["name"], price=Decimal(row["price"]))


class ProductSearch(Projection, name="catalog.product-search"):
    """The search box: products found by the words of their names, as typed, as a prefix, or despite a typo.

    It lives in the service's search index (``target = "search"``): ranked by relevance (BM25),
    the last word matched as a prefix while it is being typed, one typo forgiven in words of 4
    letters or more and two from 8, and filtered by price. Prices are kept in cents, so that a
    filter compares them exactly.
    """

    target = "search"
    tables = ("products",)

    def setup(self, index: SearchIndex) -> None:
        index.define("products", fields={"sku": "keyword", "name": "text", "cents": "int"})

    def reset(self, index: SearchIndex) -> None:
        index.clear("products")

    def apply(self, event: ProductAdded, index: SearchIndex, record: StoredEvent) -> None:
        index.put("products", event.sku, {"sku": event.sku, "name": event.name, "cents": int(event.price / CENT)})

    def search(self, query: SearchProducts, index: SearchIndex) -> ProductList:
        """Products best matching ``text`` within the price bounds; every product by sku when ``text`` is blank."""
        cents = (_cents(query.min_price, ROUND_CEILING), _cents(query.max_price, ROUND_FLOOR))
        rows = index.search("products", query.text, limit=query.limit, filters={"cents": cents})
        found = [ProductSummary(sku=r["sku"], name=r["name"], price=Decimal(r["cents"]) * CENT) for r in rows]
        return ProductList(products=found)


def _cents(price: Decimal | None, rounding: str) -> int | None:
    return None if price is None else int((price / CENT).to_integral_value(rounding))


products = Catalog()
product_search = ProductSearch()

catalog = Service(
    "catalog",
    description="Products, their prices and search; prices orders for the checkout.",
    commands={AddProduct: add_product, PriceOrder: price_order},
    queries={GetProduct: products.get, SearchProducts: product_search.search},
    projections=[products, product_search],
    aggregates=[Product, Pricing],
)
