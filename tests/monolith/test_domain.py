"""The shop's rules, given/when/then: past events, one command, the events it records or its refusal."""

from __future__ import annotations

from decimal import Decimal

from tests.monolith import shop
from tests.monolith.messages import (
    AddProduct,
    CancelOrder,
    OrderCancelled,
    OrderLine,
    OrderPlaced,
    PlaceOrder,
    PricedLine,
    ProductAdded,
    ReceiveStock,
    StockReceived,
    StockReleased,
    StockReserved,
)
from twofold import DomainError
from twofold.testing import Scenario, scenario

MUG = ProductAdded(sku="A-1", name="Mug", price=Decimal("9.50"))
TEA = ProductAdded(sku="B-2", name="Green tea", price=Decimal("4.25"))


def shop_with(mugs: int = 5, teas: int = 10) -> Scenario:
    """A shop selling mugs and tea, with some of each in stock."""
    return (
        scenario(shop)
        .given("product-A-1", MUG, StockReceived(sku="A-1", quantity=mugs))
        .given("product-B-2", TEA, StockReceived(sku="B-2", quantity=teas))
    )


def place(order_id: str, *lines: tuple[str, int]) -> PlaceOrder:
    """``place("o-1", ("A-1", 2))``: customer c-1 orders two of A-1."""
    return PlaceOrder(order_id=order_id, customer_id="c-1", lines=[OrderLine(sku=s, quantity=q) for s, q in lines])


MUGS_AND_TEA = [
    PricedLine(sku="A-1", quantity=2, price=Decimal("9.50")),
    PricedLine(sku="B-2", quantity=3, price=Decimal("4.25")),
]
PLACED = OrderPlaced(order_id="o-1", customer_id="c-1", lines=MUGS_AND_TEA, total=Decimal("31.75"))


def placed_order() -> Scenario:
    """The shop after order o-1 took two mugs and three teas."""
    return (
        shop_with()
        .given("order-o-1", PLACED)
        .given("product-A-1", StockReserved(sku="A-1", order_id="o-1", quantity=2))
        .given("product-B-2", StockReserved(sku="B-2", order_id="o-1", quantity=3))
    )


# -- adding products -----------------------------------------------------------------------------


def test_adding_a_product_records_it_with_its_name_and_price() -> None:
    scenario(shop).when(AddProduct(sku="A-1", name="Mug", price=Decimal("9.50"))).then(MUG)


def test_adding_a_product_twice_is_refused() -> None:
    scenario(shop).given("product-A-1", MUG).when(AddProduct(sku="A-1", name="Cup", price=Decimal(1))).then_rejected(
        DomainError, match="^Product A-1 already exists$"
    )


# -- receiving stock -----------------------------------------------------------------------------


def test_receiving_stock_records_the_quantity() -> None:
    scenario(shop).given("product-A-1", MUG).when(ReceiveStock(sku="A-1", quantity=7)).then(
        StockReceived(sku="A-1", quantity=7)
    )


def test_receiving_stock_for_an_unknown_sku_is_refused() -> None:
    scenario(shop).when(ReceiveStock(sku="Z-9", quantity=1)).then_rejected(DomainError, match="^Unknown sku Z-9$")


# -- placing orders ------------------------------------------------------------------------------


def test_placing_an_order_records_it_priced_and_reserves_every_line_in_the_same_append() -> None:
    result = (
        shop_with()
        .when(place("o-1", ("A-1", 2), ("B-2", 3)))
        .then(
            PLACED,
            StockReserved(sku="A-1", order_id="o-1", quantity=2),
            StockReserved(sku="B-2", order_id="o-1", quantity=3),
        )
    )

    assert (result.stream_id, result.version) == ("order-o-1", 1)
    assert [e.position for e in result.events] == [5, 6, 7]  # one append: consecutive positions
    assert {e.metadata["command_id"] for e in result.events} == {result.command_id}


def test_an_order_may_take_the_last_unit_in_stock() -> None:
    shop_with(mugs=2).when(place("o-1", ("A-1", 2))).then(
        OrderPlaced(
            order_id="o-1",
            customer_id="c-1",
            lines=[PricedLine(sku="A-1", quantity=2, price=Decimal("9.50"))],
            total=Decimal("19.00"),
        ),
        StockReserved(sku="A-1", order_id="o-1", quantity=2),
    )


def test_an_order_for_more_than_is_available_is_refused_naming_the_sku_and_both_quantities() -> None:
    shop_with(mugs=1).when(place("o-1", ("A-1", 2))).then_rejected(
        DomainError, match="^Not enough stock for A-1: ordered 2, available 1$"
    )


def test_an_order_short_on_one_line_reserves_nothing_for_the_others() -> None:
    scene = shop_with(teas=2).when(place("o-1", ("A-1", 1), ("B-2", 3)))

    scene.then_rejected(DomainError, match="^Not enough stock for B-2: ordered 3, available 2$")
    assert scene.emitted == ()


def test_stock_reserved_by_an_earlier_order_is_not_available_to_the_next() -> None:
    placed_order().when(place("o-2", ("A-1", 4))).then_rejected(
        DomainError, match="^Not enough stock for A-1: ordered 4, available 3$"
    )


def test_stock_released_by_a_cancelled_order_is_available_again() -> None:
    released = placed_order().given("product-A-1", StockReleased(sku="A-1", order_id="o-1", quantity=2))

    released.when(place("o-2", ("A-1", 5))).then(
        OrderPlaced(
            order_id="o-2",
            customer_id="c-1",
            lines=[PricedLine(sku="A-1", quantity=5, price=Decimal("9.50"))],
            total=Decimal("47.50"),
        ),
        StockReserved(sku="A-1", order_id="o-2", quantity=5),
    )


def test_an_order_for_an_unknown_sku_is_refused() -> None:
    shop_with().when(place("o-1", ("A-1", 1), ("Z-9", 1))).then_rejected(DomainError, match="^Unknown sku Z-9$")


def test_an_order_id_used_before_is_refused() -> None:
    placed_order().when(place("o-1", ("A-1", 1))).then_rejected(DomainError, match="^Order o-1 already exists$")


def test_an_order_is_priced_at_the_price_the_product_has_when_it_is_placed() -> None:
    scene = shop_with().when(place("o-1", ("B-2", 3)))

    placed = scene.result.events[0]
    assert placed.data["lines"] == [{"sku": "B-2", "quantity": 3, "price": "4.25"}]
    assert Decimal(placed.data["total"]) == Decimal("12.75")


# -- cancelling orders ---------------------------------------------------------------------------


def test_cancelling_an_order_records_it_and_returns_every_line_to_stock() -> None:
    placed_order().when(CancelOrder(order_id="o-1")).then(
        OrderCancelled(order_id="o-1", customer_id="c-1", lines=MUGS_AND_TEA),
        StockReleased(sku="A-1", order_id="o-1", quantity=2),
        StockReleased(sku="B-2", order_id="o-1", quantity=3),
    )


def test_cancelling_an_order_twice_is_refused() -> None:
    cancelled = placed_order().given("order-o-1", OrderCancelled(order_id="o-1", customer_id="c-1", lines=MUGS_AND_TEA))

    cancelled.when(CancelOrder(order_id="o-1")).then_rejected(DomainError, match="^Order o-1 is already cancelled$")


def test_cancelling_an_unknown_order_is_refused() -> None:
    shop_with().when(CancelOrder(order_id="o-404")).then_rejected(DomainError, match="^Unknown order o-404$")
