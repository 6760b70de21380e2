"""The shop's read models: a searchable catalogue with stock levels, and each customer's orders."""

from __future__ import annotations

import json
import re
from decimal import Decimal

from pydantic import BaseModel

from tests.monolith.messages import (
    OrderCancelled,
    OrderHistory,
    OrderPlaced,
    ProductAdded,
    SearchProducts,
    StockLevel,
    StockReceived,
    StockReleased,
    StockReserved,
)
from twofold import Database, NotFound, Projection, StoredEvent

SEARCH_LIMIT = 50


class ProductSummary(BaseModel):
    sku: str
    name: str
    price: Decimal


class ProductList(BaseModel):
    products: list[ProductSummary]


class Stock(BaseModel):
    sku: str
    available: int


class Catalog(Projection, name="shop.catalog"):
    """Products with their available stock, and a full-text index over their names.

    Search is each database's own: an FTS5 table beside ``products`` on SQLite, a GIN index over
    the names' ``tsvector`` on PostgreSQL. Both match every word typed as a prefix, best match first.
    """

    tables = ("products", "product_search")  # product_search exists on SQLite only; dropping it elsewhere is a no-op

    def setup(self, db: Database) -> None:
        db.execute(
            "CREATE TABLE IF NOT EXISTS products ("
            " sku TEXT PRIMARY KEY, name TEXT NOT NULL, price TEXT NOT NULL, available INTEGER NOT NULL)"
        )
        if db.dialect == "postgresql":
            # 'simple': words lower-cased, never stemmed, no stop words; close to FTS5's default tokenizer.
            db.execute("CREATE INDEX IF NOT EXISTS products_search ON products USING gin (to_tsvector('simple', name))")
        else:
            db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS product_search USING fts5(sku UNINDEXED, name)")

    def apply(
        self,
        event: ProductAdded | StockReceived | StockReserved | StockReleased,
        db: Database,
        record: StoredEvent,
    ) -> None:
        match event:
            case ProductAdded(sku=sku, name=name, price=price):
                db.execute(
                    "INSERT INTO products (sku, name, price, available) VALUES (?, ?, ?, 0)", (sku, name, str(price))
                )
                if db.dialect != "postgresql":  # PostgreSQL's index follows the products table
                    db.execute("INSERT INTO product_search (sku, name) VALUES (?, ?)", (sku, name))
            case StockReceived(sku=sku, quantity=quantity) | StockReleased(sku=sku, quantity=quantity):
                db.execute("UPDATE products SET available = available + ? WHERE sku = ?", (quantity, sku))
            case StockReserved(sku=sku, quantity=quantity):
                db.execute("UPDATE products SET available = available - ? WHERE sku = ?", (quantity, sku))

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

    def stock_level(self, query: StockLevel, db: Database) -> Stock:
        row = db.fetch_one("SELECT sku, available FROM products WHERE sku = ?", (query.sku,))
        if row is None:
            raise NotFound(f"Unknown sku {query.sku}")
        return Stock(**row)


class OrderLineView(BaseModel):
    sku: str
    quantity: int
    price: Decimal


class OrderView(BaseModel):
    order_id: str
    status: str
    lines: list[OrderLineView]
    total: Decimal
    placed_at: str
    placed_by: str | None


class Orders(BaseModel):
    orders: list[OrderView]


class OrderBook(Projection, name="shop.orders"):
    """Every order by customer, newest first, with who placed it; the same SQL on SQLite and PostgreSQL."""

    tables = ("orders",)

    def setup(self, db: Database) -> None:
        db.execute(
            "CREATE TABLE IF NOT EXISTS orders ("
            " order_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, status TEXT NOT NULL, lines TEXT NOT NULL,"
            " total TEXT NOT NULL, placed_at TEXT NOT NULL, placed_by TEXT, position BIGINT NOT NULL)"
        )
        db.execute("CREATE INDEX IF NOT EXISTS orders_by_customer ON orders (customer_id, position)")

    def apply(self, event: OrderPlaced | OrderCancelled, db: Database, record: StoredEvent) -> None:
        match event:
            case OrderPlaced():
                lines = json.dumps([line.model_dump(mode="json") for line in event.lines])
                db.execute(
                    "INSERT INTO orders (order_id, customer_id, status, lines, total, placed_at, placed_by, position)"
                    " VALUES (?, ?, 'placed', ?, ?, ?, ?, ?)",
                    (
                        event.order_id,
                        event.customer_id,
                        lines,
                        str(event.total),
                        record.recorded_at.isoformat(),
                        record.metadata.get("principal"),
                        record.position,
                    ),
                )
            case OrderCancelled():
                db.execute("UPDATE orders SET status = 'cancelled' WHERE order_id = ?", (event.order_id,))

    def history(self, query: OrderHistory, db: Database) -> Orders:
        rows = db.fetch_all(
            "SELECT order_id, status, lines, total, placed_at, placed_by FROM orders"
            " WHERE customer_id = ? ORDER BY position DESC",
            (query.customer_id,),
        )
        return Orders(orders=[OrderView(**{**row, "lines": json.loads(row["lines"])}) for row in rows])
