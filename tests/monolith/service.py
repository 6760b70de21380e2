"""The shop, declared: what it accepts, what it keeps and what it answers."""

from __future__ import annotations

from tests.monolith.handlers import add_product, cancel_order, place_order, receive_stock
from tests.monolith.messages import (
    AddProduct,
    CancelOrder,
    OrderHistory,
    PlaceOrder,
    ReceiveStock,
    SearchProducts,
    StockLevel,
)
from tests.monolith.projections import Catalog, OrderBook
from twofold import Service

catalog = Catalog()
order_book = OrderBook()

shop = Service(
    "shop",
    description="A shop that never oversells: products, stock and orders.",
    commands={
        AddProduct: add_product,
        ReceiveStock: receive_stock,
        PlaceOrder: place_order,
        CancelOrder: cancel_order,
    },
    queries={
        SearchProducts: catalog.search,
        StockLevel: catalog.stock_level,
        OrderHistory: order_book.history,
    },
    projections=[catalog, order_book],
)
