"""Each of the shop's read models, given/then: past events in, what its query answers or its table holds."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from examples.shop.catalog import (
    GetProduct,
    OrderPriced,
    ProductAdded,
    ProductList,
    ProductSummary,
    SearchProducts,
    product_search,
    products,
)
from examples.shop.common import Line, PricedLine
from examples.shop.inventory import (
    Stock,
    StockAllocated,
    StockDeallocated,
    StockLevel,
    StockReceived,
    levels,
)
from examples.shop.orders import (
    OrderCancelled,
    OrderConfirmed,
    OrderHistory,
    OrderPlaced,
    Orders,
    OrderView,
    book,
    orders,
)
from twofold import NotFound
from twofold.testing import SCENARIO_START, projection_scenario

MUG = ProductAdded(sku="A-1", name="Blue mug", price=Decimal("9.50"))
TEA = ProductAdded(sku="B-2", name="Green tea", price=Decimal("4.25"))
CUP = ProductAdded(sku="C-3", name="Blue cup", price=Decimal("3.00"))
RACK = ProductAdded(sku="D-4", name="Mug rack", price=Decimal("12.00"))


# -- catalog search ------------------------------------------------------------------------------


def summary(product: ProductAdded) -> ProductSummary:
    return ProductSummary(sku=product.sku, name=product.name, price=product.price)


def test_a_product_is_looked_up_by_its_sku_in_the_read_database() -> None:
    catalog = projection_scenario(products).given(MUG, TEA)

    catalog.then_query(GetProduct(sku="B-2"), summary(TEA))
    with pytest.raises(NotFound, match="No product has sku Z-9"):
        catalog.ask(GetProduct(sku="Z-9"))


def test_search_matches_every_word_and_the_last_as_a_prefix_best_match_first() -> None:
    search = projection_scenario(product_search).given(MUG, TEA, CUP, RACK)

    search.then_query(SearchProducts(text="blue mu"), ProductList(products=[summary(MUG)]))
    search.then_query(SearchProducts(text="blu"), ProductList(products=[summary(MUG), summary(CUP)]))
    search.then_query(SearchProducts(text="tea"), ProductList(products=[summary(TEA)]))
    search.then_query(SearchProducts(text="mug"), ProductList(products=[summary(MUG), summary(RACK)]))


def test_search_forgives_a_typo_in_words_of_four_letters_or_more() -> None:
    search = projection_scenario(product_search).given(MUG, TEA, CUP)

    search.then_query(SearchProducts(text="bleu mug"), ProductList(products=[summary(MUG)]))
    search.then_query(SearchProducts(text="gren tea"), ProductList(products=[summary(TEA)]))
    search.then_query(SearchProducts(text="cpu"), ProductList(products=[]))  # three letters: as typed only


def test_search_keeps_the_products_within_the_price_bounds() -> None:
    search = projection_scenario(product_search).given(MUG, TEA, CUP)

    search.then_query(SearchProducts(text="blue", max_price=Decimal(5)), ProductList(products=[summary(CUP)]))
    search.then_query(
        SearchProducts(min_price=Decimal("4.25"), max_price=Decimal("9.50")),
        ProductList(products=[summary(MUG), summary(TEA)]),
    )


def test_an_empty_search_lists_every_product_by_sku() -> None:
    search = projection_scenario(product_search).given(TEA, CUP, MUG)

    search.then_query(SearchProducts(), ProductList(products=[summary(MUG), summary(TEA), summary(CUP)]))
    search.then_query(SearchProducts(limit=2), ProductList(products=[summary(MUG), summary(TEA)]))


def test_search_reads_no_query_syntax_from_what_a_client_types() -> None:
    search = projection_scenario(product_search).given(MUG)

    search.then_query(SearchProducts(text='mug" OR *'), ProductList(products=[]))
    search.then_query(SearchProducts(text='"blue" (mug'), ProductList(products=[summary(MUG)]))


def test_a_search_with_bounds_the_wrong_way_round_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError, match=r"max_price\n.*max_price must be at least min_price \(10\)"):
        SearchProducts(min_price=Decimal(10), max_price=Decimal(5))
    with pytest.raises(ValidationError, match="limit"):
        SearchProducts(limit=0)


def test_the_product_table_works_alike_on_postgresql(postgres_url: str) -> None:
    catalog = projection_scenario(products, database_url=postgres_url).given(MUG, TEA, CUP)

    catalog.then_rows("products", [{"sku": "A-1"}, {"sku": "B-2"}, {"sku": "C-3"}])


# -- stock levels --------------------------------------------------------------------------------


def test_stock_levels_count_what_is_received_less_what_orders_hold() -> None:
    stock = projection_scenario(levels).given(
        StockReceived(sku="A-1", quantity=5),
        StockAllocated(sku="A-1", order_id="o-1", quantity=2),
        StockAllocated(sku="A-1", order_id="o-2", quantity=1),
        StockDeallocated(sku="A-1", order_id="o-1", quantity=2),
        StockReceived(sku="B-2", quantity=3),
    )

    stock.then_query(StockLevel(sku="A-1"), Stock(sku="A-1", available=4))
    stock.then_rows("stock_levels", [{"sku": "A-1", "available": 4}, {"sku": "B-2", "available": 3}])


def test_a_sku_never_received_has_no_stock_level() -> None:
    with pytest.raises(NotFound, match="No stock was ever received for sku Z-9"):
        projection_scenario(levels).given(StockReceived(sku="A-1", quantity=5)).ask(StockLevel(sku="Z-9"))


# -- the order book ------------------------------------------------------------------------------

TWO_MUGS = [Line(sku="A-1", quantity=2)]
PLACED = OrderPlaced(order_id="o-1", customer_id="c-1", lines=TWO_MUGS)
PRICED = OrderPriced(
    order_id="o-1", lines=[PricedLine(sku="A-1", quantity=2, price=Decimal("9.50"))], total=Decimal("19.00")
)


def view(order_id: str, **fields: object) -> OrderView:
    defaults: dict[str, object] = {
        "status": "placed",
        "reason": None,
        "lines": TWO_MUGS,
        "total": None,
        "placed_at": SCENARIO_START.isoformat(),
        "placed_by": None,
    }
    return OrderView(order_id=order_id, **{**defaults, **fields})


def test_the_order_book_shows_an_order_at_its_prices_once_priced_and_its_final_status() -> None:
    confirmed = projection_scenario(book).given(
        PLACED, PRICED, OrderConfirmed(order_id="o-1", total=Decimal("19.00")), principal="alice"
    )

    confirmed.then_query(
        OrderHistory(customer_id="c-1"),
        Orders(orders=[view("o-1", status="confirmed", lines=PRICED.lines, total="19.00", placed_by="alice")]),
    )


def test_the_order_book_lists_a_customers_orders_newest_first_with_who_placed_each() -> None:
    history = (
        projection_scenario(orders)
        .given(PLACED, principal="alice")
        .given(OrderPlaced(order_id="o-2", customer_id="c-1", lines=TWO_MUGS), principal="bob")
        .given(OrderCancelled(order_id="o-1", reason="changed my mind"))
        .given(OrderPlaced(order_id="o-3", customer_id="c-2", lines=TWO_MUGS))
    )

    history.then_query(
        OrderHistory(customer_id="c-1"),
        Orders(
            orders=[
                view("o-2", placed_by="bob"),
                view("o-1", status="cancelled", reason="changed my mind", placed_by="alice"),
            ]
        ),
    )
    history.then_rows(
        "orders",
        [
            {"order_id": "o-1", "customer_id": "c-1", "status": "cancelled"},
            {"order_id": "o-2", "customer_id": "c-1", "status": "placed"},
            {"order_id": "o-3", "customer_id": "c-2", "status": "placed"},
        ],
    )


def test_a_tenants_order_book_holds_that_tenants_orders_only() -> None:
    two_tenants = (
        projection_scenario(book)
        .given(PLACED, principal="alice", tenant="acme")
        .given(OrderPlaced(order_id="o-2", customer_id="c-1", lines=TWO_MUGS), principal="bea", tenant="globex")
    )

    two_tenants.then_query(
        OrderHistory(customer_id="c-1"), Orders(orders=[view("o-1", placed_by="alice")]), tenant="acme"
    )
    two_tenants.then_query(OrderHistory(customer_id="c-1"), Orders(orders=[]))
