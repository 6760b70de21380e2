"""Each of the shop's services on its own, given/when/then: past events, one command, what it records."""

from __future__ import annotations

from decimal import Decimal

import pytest

from examples.shop.catalog import AddProduct, OrderPriced, PriceOrder, PricingFailed, ProductAdded, catalog
from examples.shop.common import Line, PricedLine
from examples.shop.inventory import (
    ReceiveStock,
    ReleaseStock,
    ReserveStock,
    StockAllocated,
    StockDeallocated,
    StockReceived,
    StockReleased,
    StockReserved,
    StockShortage,
    inventory,
)
from examples.shop.orders import (
    CancelOrder,
    ConfirmOrder,
    OrderCancelled,
    OrderConfirmed,
    OrderPlaced,
    PlaceOrder,
    RejectOrder,
    orders,
)
from examples.shop.payments import (
    AuthorizePayment,
    PaymentAuthorized,
    PaymentDeclined,
    PaymentRequested,
    PaymentVoided,
    VoidPayment,
    payments,
)
from twofold import DomainError, InvalidMessage
from twofold.messages import parse
from twofold.testing import scenario

MUG = ProductAdded(sku="A-1", name="Mug", price=Decimal("9.50"))
TEA = ProductAdded(sku="B-2", name="Green tea", price=Decimal("4.25"))
TWO_MUGS_ONE_TEA = [Line(sku="A-1", quantity=2), Line(sku="B-2", quantity=1)]


# -- catalog -------------------------------------------------------------------------------------


def test_a_product_is_added_once() -> None:
    scenario(catalog).when(AddProduct(sku="A-1", name="Mug", price=Decimal("9.50"))).then(MUG)
    scenario(catalog).given("product-A-1", MUG).when(AddProduct(sku="A-1", name="Cup", price=Decimal(1))).then_rejected(
        DomainError, match="already exists"
    )


def test_an_order_is_priced_at_the_current_prices_once() -> None:
    priced = OrderPriced(
        order_id="o-1",
        lines=[
            PricedLine(sku="A-1", quantity=2, price=Decimal("9.50")),
            PricedLine(sku="B-2", quantity=1, price=Decimal("4.25")),
        ],
        total=Decimal("23.25"),
    )
    shop = scenario(catalog).given("product-A-1", MUG).given("product-B-2", TEA)
    shop.when(PriceOrder(order_id="o-1", lines=TWO_MUGS_ONE_TEA)).then(priced)
    shop.given("pricing-o-1", priced).when(PriceOrder(order_id="o-1", lines=TWO_MUGS_ONE_TEA)).then_nothing()


def test_pricing_names_the_products_that_do_not_exist() -> None:
    scenario(catalog).given("product-A-1", MUG).when(PriceOrder(order_id="o-1", lines=TWO_MUGS_ONE_TEA)).then(
        PricingFailed(order_id="o-1", unknown_skus=["B-2"])
    )


# -- inventory -----------------------------------------------------------------------------------


def test_a_reservation_takes_every_line_or_none() -> None:
    scenario(inventory).given("stock-A-1", StockReceived(sku="A-1", quantity=5)).given(
        "stock-B-2", StockReceived(sku="B-2", quantity=5)
    ).when(ReserveStock(order_id="o-1", lines=TWO_MUGS_ONE_TEA)).then(
        StockAllocated(sku="A-1", order_id="o-1", quantity=2),
        StockAllocated(sku="B-2", order_id="o-1", quantity=1),
        StockReserved(order_id="o-1", lines=TWO_MUGS_ONE_TEA),
    )
    scenario(inventory).given("stock-A-1", StockReceived(sku="A-1", quantity=5)).given(
        "stock-B-2", StockReceived(sku="B-2", quantity=0)
    ).when(ReserveStock(order_id="o-1", lines=TWO_MUGS_ONE_TEA)).then(StockShortage(order_id="o-1", short_skus=["B-2"]))


def test_a_release_gives_back_what_the_order_held_and_refuses_a_late_reservation() -> None:
    reserved = (
        scenario(inventory)
        .given("stock-A-1", StockReceived(sku="A-1", quantity=5), StockAllocated(sku="A-1", order_id="o-1", quantity=2))
        .given("reservation-o-1", StockReserved(order_id="o-1", lines=[Line(sku="A-1", quantity=2)]))
    )
    reserved.when(ReleaseStock(order_id="o-1")).then(
        StockDeallocated(sku="A-1", order_id="o-1", quantity=2), StockReleased(order_id="o-1")
    )
    released_first = scenario(inventory).given("stock-A-1", StockReceived(sku="A-1", quantity=5))
    released_first.when(ReleaseStock(order_id="o-1")).then(StockReleased(order_id="o-1"))
    released_first.given("reservation-o-1", StockReleased(order_id="o-1")).when(
        ReserveStock(order_id="o-1", lines=[Line(sku="A-1", quantity=1)])
    ).then_nothing()


def test_stock_is_received_in_positive_quantities() -> None:
    scenario(inventory).when(ReceiveStock(sku="A-1", quantity=3)).then(StockReceived(sku="A-1", quantity=3))
    with pytest.raises(InvalidMessage, match="quantity"):
        parse(ReceiveStock, {"sku": "A-1", "quantity": 0})


# -- payments ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("card", "outcome"),
    [
        (None, PaymentAuthorized(order_id="o-1", amount=Decimal("10.00"))),
        ("tok_visa", PaymentAuthorized(order_id="o-1", amount=Decimal("10.00"))),
        ("tok_declined", PaymentDeclined(order_id="o-1", reason="card declined")),
        ("tok_no_funds", PaymentDeclined(order_id="o-1", reason="insufficient funds")),
        ("tok_what", PaymentDeclined(order_id="o-1", reason="unknown test card tok_what")),
    ],
)
def test_the_gateway_answers_by_test_card(card: str | None, outcome: object) -> None:
    requested = PaymentRequested(order_id="o-1", amount=Decimal("10.00"))
    scenario(payments).when(AuthorizePayment(order_id="o-1", amount=Decimal("10.00"), card=card)).then(
        requested,
        outcome,  # type: ignore[arg-type]
    )


def test_an_unresponsive_gateway_leaves_the_payment_requested_until_it_is_voided() -> None:
    requested = PaymentRequested(order_id="o-1", amount=Decimal("10.00"))
    scenario(payments).when(AuthorizePayment(order_id="o-1", amount=Decimal("10.00"), card="tok_unresponsive")).then(
        requested
    )
    scenario(payments).given("payment-o-1", requested).when(VoidPayment(order_id="o-1")).then(
        PaymentVoided(order_id="o-1")
    )


def test_a_payment_voided_first_is_never_authorized() -> None:
    voided = scenario(payments).given("payment-o-1", PaymentVoided(order_id="o-1"))
    voided.when(AuthorizePayment(order_id="o-1", amount=Decimal("10.00"))).then_nothing()
    voided.when(VoidPayment(order_id="o-1")).then_nothing()


# -- orders --------------------------------------------------------------------------------------

PLACED = OrderPlaced(order_id="o-1", customer_id="c-1", lines=TWO_MUGS_ONE_TEA)


def test_an_order_is_placed_once_and_settled_once() -> None:
    scenario(orders).when(PlaceOrder(order_id="o-1", customer_id="c-1", lines=TWO_MUGS_ONE_TEA)).then(PLACED)
    placed = scenario(orders).given("order-o-1", PLACED)
    placed.when(ConfirmOrder(order_id="o-1", total=Decimal("23.25"))).then(
        OrderConfirmed(order_id="o-1", total=Decimal("23.25"))
    )
    placed.when(CancelOrder(order_id="o-1")).then(OrderCancelled(order_id="o-1", reason="cancelled by the customer"))
    settled = placed.given("order-o-1", OrderConfirmed(order_id="o-1", total=Decimal("23.25")))
    settled.when(RejectOrder(order_id="o-1", reason="late")).then_rejected(DomainError, match="already confirmed")
    settled.when(CancelOrder(order_id="o-1")).then_rejected(DomainError, match="already confirmed")


def test_an_order_names_each_sku_once_and_a_card_in_the_test_card_shape() -> None:
    line = {"sku": "A-1", "quantity": 1}
    with pytest.raises(InvalidMessage, match="repeated: A-1"):
        parse(PlaceOrder, {"order_id": "o-1", "customer_id": "c-1", "lines": [line, line]})
    with pytest.raises(InvalidMessage, match="payment"):
        parse(PlaceOrder, {"order_id": "o-1", "customer_id": "c-1", "lines": [line], "payment": "4242 4242"})
