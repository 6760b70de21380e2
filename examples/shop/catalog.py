"""The catalog service: products, their prices, search, and pricing an order.

It knows nothing of stock or payment. The checkout saga asks it to price an order; the answer,
``OrderPriced`` or ``PricingFailed``, is recorded in the order's ``pricing`` stream, which the
orders service imports.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, Field

from examples.shop.common import Line, Price, PricedLine, Sku
from twofold import (
    Aggregate,
    Command,
    Database,
    DomainError,
    Event,
    Projection,
    Query,
    Service,
    StoredEvent,
    UnitOfWork,
)

SEARCH_LIMIT = 50


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
    text: Annotated[str, Field(max_length=200)] = ""


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
    """Products and a full-text index over their names.

    Search is each database's own: an FTS5 table beside ``products`` on SQLite, a GIN index over
    the names' ``tsvector`` on PostgreSQL. Both match every word typed as a prefix, best match first.
    """

    tables = ("products", "product_search")  # product_search exists on SQLite only; dropping it elsewhere is a no-op

    def setup(self, db: Database) -> None:
        db.execute(
            "CREATE TABLE IF NOT EXISTS products (sku TEXT PRIMARY KEY, name TEXT NOT NULL, price TEXT NOT NULL)"
        )
        if db.dialect == "postgresql":
            # 'simple': words lower-cased, never stemmed, no stop words; close to FTS5's default tokenizer.
            db.execute("CREATE INDEX IF NOT EXISTS products_search ON products USING gin (to_tsvector('simple', name))")
        else:
            db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS product_search USING fts5(sku UNINDEXED, name)")

    def apply(self, event: ProductAdded, db: Database, record: StoredEvent) -> None:
        db.execute(
            "INSERT INTO products (sku, name, price) VALUES (?, ?, ?)", (event.sku, event.name, str(event.price))
        )
        if db.dialect != "postgresql":  # PostgreSQL's index follows the products table
            db.execute("INSERT INTO product_search (sku, name) VALUES (?, ?)", (event.sku, event.name))

    def search(self, query: SearchProducts, db: Database) -> ProductList:
        """Products whose name has every word of ``text`` (as a prefix), best match first."""
        words = re.findall(r"\w+", query.text)
        if not words:
            rows = db.fetch_all("SELECT sku, name, price FROM products ORDER BY name LIMIT ?", (SEARCH_LIMIT,))
        elif db.dialect == "postgresql":
            # 'blue':* & 'mu':* — each word quoted, so nothing a client types is read as tsquery syntax.
            match = " & ".join(f"'{word}':*" for word in words)
            rows = db.fetch_all(
                "SELECT sku, name, price FROM products, to_tsquery('simple', ?) AS query"
                " WHERE to_tsvector('simple', name) @@ query"
                " ORDER BY ts_rank(to_tsvector('simple', name), query) DESC, name LIMIT ?",
                (match, SEARCH_LIMIT),
            )
        else:
            # Each word is quoted, so nothing a client types is read as FTS5 query syntax.
            match = " ".join('"' + word.replace('"', '""') + '"*' for word in words)
            rows = db.fetch_all(
                "SELECT p.sku, p.name, p.price FROM product_search s JOIN products p ON p.sku = s.sku"
                " WHERE product_search MATCH ? ORDER BY s.rank LIMIT ?",
                (match, SEARCH_LIMIT),
            )
        return ProductList(products=[ProductSummary(**row) for row in rows])


products = Catalog()

catalog = Service(
    "catalog",
    description="Products, their prices and search; prices orders for the checkout.",
    commands={AddProduct: add_product, PriceOrder: price_order},
    queries={SearchProducts: products.search},
    projections=[products],
    aggregates=[Product, Pricing],
)
