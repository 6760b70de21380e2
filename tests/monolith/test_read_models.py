"""The shop's read models through a running service: search, stock levels, order history.

Every test runs twice, with its read models in SQLite and in a real PostgreSQL; the events stay in SQLite.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path

import pytest

from tests.monolith import shop
from tests.monolith.messages import (
    AddProduct,
    CancelOrder,
    OrderHistory,
    OrderLine,
    PlaceOrder,
    ReceiveStock,
    SearchProducts,
    StockLevel,
)
from tests.monolith.projections import Orders, ProductList, Stock
from twofold import NotFound, Runtime
from twofold.readmodels import ReadStore
from twofold.readmodels.postgres import PostgresReadStore
from twofold.readmodels.sqlite import SQLiteReadStore
from twofold.store.sqlite import SQLiteEventStore
from twofold.testing.servers import PostgresServer

WAIT = 5.0  # seconds a read-your-writes query may wait before the test fails

CATALOGUE = {
    "A-1": ("Blue mug", "9.50"),
    "B-2": ("Blue teapot", "24.00"),
    "C-3": ("Green tea", "4.25"),
    "D-4": ("Mug rack", "15.00"),
    "E-5": ('Tea "special" *edition* (NEAR-mint)', "0.10"),
}


_databases = itertools.count(1)


@pytest.fixture(params=["sqlite", "postgresql"])
def open_read_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], ReadStore]:
    """Opens a read store on one fresh database; called twice, two stores on it, as two processes."""
    if request.param == "sqlite":
        return lambda: SQLiteReadStore(tmp_path / "read.db")
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create_database(f"shop_read_{next(_databases)}")
    return lambda: PostgresReadStore(url)


@pytest.fixture
async def runtime(tmp_path: Path, open_read_store: Callable[[], ReadStore]) -> AsyncIterator[Runtime]:
    store = SQLiteEventStore(tmp_path / "events.db", durability="normal")
    async with Runtime(shop, store=store, read_store=open_read_store()) as runtime:
        yield runtime


@pytest.fixture
async def stocked(runtime: Runtime) -> int:
    """The catalogue, ten of each in stock; returns the last position written."""
    for sku, (name, price) in CATALOGUE.items():
        await runtime.execute(AddProduct(sku=sku, name=name, price=Decimal(price)))
        result = await runtime.execute(ReceiveStock(sku=sku, quantity=10))
    assert result.position is not None
    return result.position


async def search(runtime: Runtime, text: str, position: int) -> list[str]:
    found = await runtime.query(SearchProducts(text=text), min_position=position, timeout=WAIT)
    assert isinstance(found, ProductList)
    return [p.sku for p in found.products]


async def place(
    runtime: Runtime, order_id: str, customer_id: str, *lines: tuple[str, int], by: str | None = None
) -> int:
    order = PlaceOrder(
        order_id=order_id, customer_id=customer_id, lines=[OrderLine(sku=s, quantity=q) for s, q in lines]
    )
    result = await runtime.execute(order, principal=by)
    assert result.position is not None
    return result.position


# -- search --------------------------------------------------------------------------------------


async def test_search_finds_products_by_the_start_of_any_word_of_their_name(runtime: Runtime, stocked: int) -> None:
    assert set(await search(runtime, "mu", stocked)) == {"A-1", "D-4"}
    assert await search(runtime, "teap", stocked) == ["B-2"]


async def test_search_with_several_words_finds_names_having_every_one(runtime: Runtime, stocked: int) -> None:
    assert await search(runtime, "blue mu", stocked) == ["A-1"]
    assert await search(runtime, "mu blue", stocked) == ["A-1"]
    assert await search(runtime, "blue green", stocked) == []


async def test_search_ignores_case(runtime: Runtime, stocked: int) -> None:
    assert await search(runtime, "BLUE MUG", stocked) == ["A-1"]


async def test_an_empty_search_lists_every_product_by_name(runtime: Runtime, stocked: int) -> None:
    assert await search(runtime, "", stocked) == ["A-1", "B-2", "C-3", "D-4", "E-5"]


async def test_search_answers_with_the_name_and_exact_price(runtime: Runtime, stocked: int) -> None:
    found = await runtime.query(SearchProducts(text="green"), min_position=stocked, timeout=WAIT)

    assert [(p.sku, p.name, p.price) for p in found.products] == [("C-3", "Green tea", Decimal("4.25"))]


async def test_search_finds_words_among_punctuation_and_fts_syntax_in_a_name(runtime: Runtime, stocked: int) -> None:
    assert await search(runtime, "special", stocked) == ["E-5"]
    assert await search(runtime, '"special" *edition*', stocked) == ["E-5"]
    assert await search(runtime, "NEAR(mint", stocked) == ["E-5"]


@pytest.mark.parametrize(
    "text",
    [
        '"',
        '""',
        "*",
        "NEAR(",
        "NEAR(blue mug, 2)",
        "-",
        "-blue",
        "blue -mug",
        "blue OR",
        "AND",
        "NOT mug",
        "mug)",
        "(",
        "^blue",
        "name:mug",
        "sku:A",
        "{name}: mug",
        "'; DROP TABLE products; --",
        "blue\x00mug",
        "müg ☕ 茶",
        "_",
        "a_b",
        "+",
        "mug*",
        '"blue mug',
    ],
)
async def test_search_never_raises_whatever_the_text(runtime: Runtime, stocked: int, text: str) -> None:
    found = await search(runtime, text, stocked)

    assert set(found) <= set(CATALOGUE)


# -- stock levels --------------------------------------------------------------------------------


async def test_stock_level_counts_received_less_reserved_plus_released(runtime: Runtime, stocked: int) -> None:
    await place(runtime, "o-1", "c-1", ("A-1", 3))
    position = await place(runtime, "o-2", "c-1", ("A-1", 2), ("C-3", 4))
    assert await runtime.query(StockLevel(sku="A-1"), min_position=position, timeout=WAIT) == Stock(
        sku="A-1", available=5
    )

    cancelled = await runtime.execute(CancelOrder(order_id="o-2"))

    levels = [
        await runtime.query(StockLevel(sku=s), min_position=cancelled.position, timeout=WAIT) for s in ("A-1", "C-3")
    ]
    assert levels == [Stock(sku="A-1", available=7), Stock(sku="C-3", available=10)]


async def test_stock_level_of_an_unknown_sku_is_not_found(runtime: Runtime, stocked: int) -> None:
    with pytest.raises(NotFound, match="Unknown sku Z-9"):
        await runtime.query(StockLevel(sku="Z-9"), min_position=stocked, timeout=WAIT)


# -- order history -------------------------------------------------------------------------------


async def test_order_history_lists_a_customers_orders_newest_first(runtime: Runtime, stocked: int) -> None:
    await place(runtime, "o-1", "c-1", ("A-1", 1))
    await place(runtime, "o-2", "c-2", ("B-2", 1))
    await place(runtime, "o-3", "c-1", ("C-3", 1))
    last = await place(runtime, "o-4", "c-1", ("D-4", 1))

    history = await runtime.query(OrderHistory(customer_id="c-1"), min_position=last, timeout=WAIT)

    assert isinstance(history, Orders)
    assert [o.order_id for o in history.orders] == ["o-4", "o-3", "o-1"]
    assert all(o.status == "placed" for o in history.orders)


async def test_order_history_shows_a_cancelled_order_as_cancelled(runtime: Runtime, stocked: int) -> None:
    await place(runtime, "o-1", "c-1", ("A-1", 1))
    await place(runtime, "o-2", "c-1", ("A-1", 1))
    cancelled = await runtime.execute(CancelOrder(order_id="o-1"))

    history = await runtime.query(OrderHistory(customer_id="c-1"), min_position=cancelled.position, timeout=WAIT)

    assert [(o.order_id, o.status) for o in history.orders] == [("o-2", "placed"), ("o-1", "cancelled")]


async def test_order_totals_and_line_prices_are_exact_decimals(runtime: Runtime, stocked: int) -> None:
    last = await place(runtime, "o-1", "c-1", ("E-5", 3), ("C-3", 7), ("A-1", 1))

    [order] = (await runtime.query(OrderHistory(customer_id="c-1"), min_position=last, timeout=WAIT)).orders

    assert order.total == Decimal("39.55")  # 3 × 0.10 + 7 × 4.25 + 9.50, with no float rounding
    assert str(order.total) == "39.55"
    assert [(line.sku, line.quantity, line.price) for line in order.lines] == [
        ("E-5", 3, Decimal("0.10")),
        ("C-3", 7, Decimal("4.25")),
        ("A-1", 1, Decimal("9.50")),
    ]


async def test_order_history_records_who_placed_each_order(runtime: Runtime, stocked: int) -> None:
    await place(runtime, "o-1", "c-1", ("A-1", 1), by="ann")
    last = await place(runtime, "o-2", "c-1", ("A-1", 1))

    history = await runtime.query(OrderHistory(customer_id="c-1"), min_position=last, timeout=WAIT)

    assert [o.placed_by for o in history.orders] == [None, "ann"]


async def test_a_customer_without_orders_has_an_empty_history(runtime: Runtime, stocked: int) -> None:
    assert await runtime.query(OrderHistory(customer_id="c-0"), min_position=stocked, timeout=WAIT) == Orders(orders=[])


# -- read your writes ----------------------------------------------------------------------------


async def test_a_query_at_a_commands_position_always_sees_that_command(runtime: Runtime, stocked: int) -> None:
    for count in range(1, 21):
        result = await runtime.execute(ReceiveStock(sku="C-3", quantity=1))
        level = await runtime.query(StockLevel(sku="C-3"), min_position=result.position, timeout=WAIT)
        assert level.available == 10 + count


async def test_a_query_process_without_projections_waits_for_the_worker_to_get_there(
    runtime: Runtime, stocked: int, open_read_store: Callable[[], ReadStore]
) -> None:
    async with Runtime(shop, read_store=open_read_store()) as replica:
        position = await place(runtime, "o-1", "c-1", ("A-1", 4))

        level = await replica.query(StockLevel(sku="A-1"), min_position=position, timeout=WAIT)

    assert level == Stock(sku="A-1", available=6)
