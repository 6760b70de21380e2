"""The read-model kit: it runs the real projection runner and query dispatcher, and fails readably."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from tests.monolith import shop
from tests.monolith.messages import (
    OrderHistory,
    OrderPlaced,
    PricedLine,
    ProductAdded,
    SearchProducts,
    StockLevel,
    StockReceived,
)
from tests.monolith.projections import Catalog, OrderBook, Orders, OrderView, ProductList, ProductSummary, Stock
from twofold import Database, NotFound, Projection, StoredEvent
from twofold.testing import SCENARIO_START, ProjectionScenario, projection_scenario

MUG = ProductAdded(sku="A-1", name="Blue mug", price=Decimal("9.50"))
PLACED = OrderPlaced(
    order_id="o-1",
    customer_id="c-1",
    lines=[PricedLine(sku="A-1", quantity=2, price=Decimal("9.50"))],
    total=Decimal("19.00"),
)


def stocked(quantity: int = 5) -> ProjectionScenario:
    return projection_scenario(Catalog()).given(MUG, StockReceived(sku="A-1", quantity=quantity))


def placed_view(**fields: object) -> OrderView:
    values: dict[str, object] = {
        "order_id": "o-1",
        "status": "placed",
        "lines": [line.model_dump() for line in PLACED.lines],
        "total": Decimal("19.00"),
        "placed_at": SCENARIO_START.isoformat(),
        "placed_by": "alice",
    }
    return OrderView.model_validate({**values, **fields})


def test_then_query_passes_when_the_answer_equals_the_expected_one_and_returns_it() -> None:
    answer = stocked().then_query(StockLevel(sku="A-1"), Stock(sku="A-1", available=5))

    assert answer == Stock(sku="A-1", available=5)


def test_a_projection_answers_the_queries_its_own_methods_take_and_a_service_those_it_declares() -> None:
    expected = ProductList(products=[ProductSummary(sku="A-1", name="Blue mug", price=Decimal("9.50"))])

    stocked().then_query(SearchProducts(text="mug"), expected)
    projection_scenario(shop).given(MUG).then_query(SearchProducts(text="mug"), expected)


def test_a_wrong_answer_fails_with_a_diff_of_one_line_per_json_field() -> None:
    with pytest.raises(AssertionError) as failure:
        stocked().then_query(StockLevel(sku="A-1"), Stock(sku="A-1", available=4))

    assert str(failure.value) == (
        "StockLevel answered otherwise than expected (- expected, + answered):\n"
        "  {\n"
        '    "sku": "A-1",\n'
        '-   "available": 4\n'
        "?                ^\n"
        '+   "available": 5\n'
        "?                ^\n"
        "  }"
    )


def test_events_are_recorded_at_the_scenario_start_with_the_principal_given() -> None:
    history = projection_scenario(OrderBook()).given(PLACED, principal="alice")

    history.then_query(OrderHistory(customer_id="c-1"), Orders(orders=[placed_view()]))
    with pytest.raises(AssertionError, match=r'-       "placed_by": "bob"\n.*\n\+       "placed_by": "alice"'):
        history.then_query(OrderHistory(customer_id="c-1"), Orders(orders=[placed_view(placed_by="bob")]))


def test_a_query_that_raises_fails_saying_so_with_what_was_expected() -> None:
    with pytest.raises(AssertionError) as failure:
        stocked().then_query(StockLevel(sku="Z-9"), Stock(sku="Z-9", available=1))

    assert str(failure.value).startswith(
        'StockLevel raised NotFound: Unknown sku Z-9\nexpected it to answer:\n  {\n    "sku": "Z-9",'
    )
    assert isinstance(failure.value.__cause__, NotFound)


def test_ask_returns_the_answer_or_raises_the_handlers_error() -> None:
    assert stocked(3).ask(StockLevel(sku="A-1")) == Stock(sku="A-1", available=3)
    with pytest.raises(NotFound, match="Unknown sku Z-9"):
        stocked().ask(StockLevel(sku="Z-9"))


def test_then_rows_compares_the_named_columns_in_any_order() -> None:
    two = stocked().given(ProductAdded(sku="B-2", name="Cup", price=Decimal(3)))

    rows = two.then_rows("products", [{"sku": "B-2", "available": 0}, {"sku": "A-1", "available": 5}])
    assert {row["name"] for row in rows} == {"Blue mug", "Cup"}


def test_wrong_rows_fail_with_a_diff_of_one_line_per_row() -> None:
    expected = (
        "Table products holds other rows than expected (- expected, + found), compared on sku, available:\n"
        "- {'sku': 'A-1', 'available': 4}\n"
        "?                             ^\n"
        "+ {'sku': 'A-1', 'available': 5}\n"
        "?                             ^\n"
        "+ {'sku': 'B-2', 'available': 0}"
    )
    two = stocked().given(ProductAdded(sku="B-2", name="Cup", price=Decimal(3)))

    with pytest.raises(AssertionError, match=re.escape(expected)):
        two.then_rows("products", [{"sku": "A-1", "available": 4}])


def test_a_column_the_table_lacks_fails_naming_the_columns_it_has() -> None:
    with pytest.raises(AssertionError, match=r"Table products has no column stock; its columns: sku, name, price"):
        stocked().then_rows("products", [{"sku": "A-1", "stock": 5}])


def test_then_rows_refuses_a_table_name_that_is_not_an_identifier() -> None:
    with pytest.raises(ValueError, match="must be a plain SQL identifier"):
        stocked().then_rows("products; DROP TABLE products", [])


class StreamsAndTenants(Projection, name="test.streams"):
    """Records where each event came from: the stream, and the tenant's own read store."""

    tables = ("seen",)

    def setup(self, db: Database) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS seen (stream_id TEXT, sku TEXT)")

    def apply(self, event: StockReceived, db: Database, record: StoredEvent) -> None:
        db.execute("INSERT INTO seen VALUES (?, ?)", (record.stream_id, event.sku))


def test_given_names_the_stream_or_numbers_one_and_puts_a_tenants_events_in_its_own_read_store() -> None:
    scene = (
        projection_scenario(StreamsAndTenants())
        .given(StockReceived(sku="A-1", quantity=1))
        .given(StockReceived(sku="B-2", quantity=1), stream_id="stock-B-2")
        .given(StockReceived(sku="C-3", quantity=1), tenant="acme")
    )

    scene.then_rows("seen", [{"stream_id": "given-1", "sku": "A-1"}, {"stream_id": "stock-B-2", "sku": "B-2"}])
    scene.then_rows("seen", [{"stream_id": "given-3", "sku": "C-3"}], tenant="acme")


def test_each_check_starts_from_no_rows_on_a_kept_postgresql_database(postgres_url: str) -> None:
    scene = projection_scenario(Catalog(), database_url=postgres_url).given(MUG, StockReceived(sku="A-1", quantity=5))

    scene.then_rows("products", [{"sku": "A-1", "available": 5}])
    scene.then_rows("products", [{"sku": "A-1", "available": 5}])
    scene.then_query(StockLevel(sku="A-1"), Stock(sku="A-1", available=5))


async def test_checks_work_inside_a_running_event_loop() -> None:
    stocked().then_query(StockLevel(sku="A-1"), Stock(sku="A-1", available=5))
