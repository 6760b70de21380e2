"""The checkout saga step by step, given/when/then: what it has seen, one event or time passing, what it sends."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from examples.shop.catalog import OrderPriced, PriceOrder, PricingFailed
from examples.shop.common import Line, PricedLine
from examples.shop.inventory import ReleaseStock, ReserveStock, StockReserved, StockShortage
from examples.shop.orders import (
    PAYMENT_DEADLINE,
    CancelOrder,
    Checkout,
    ConfirmOrder,
    OrderCancelled,
    OrderPlaced,
    RejectOrder,
)
from examples.shop.payments import AuthorizePayment, PaymentAuthorized, PaymentDeclined, VoidPayment
from twofold.testing import saga_scenario

TWO_MUGS = [Line(sku="A-1", quantity=2)]
PLACED = OrderPlaced(order_id="o-1", customer_id="c-1", lines=TWO_MUGS, payment="tok_visa")
PRICED = OrderPriced(
    order_id="o-1", lines=[PricedLine(sku="A-1", quantity=2, price=Decimal("9.50"))], total=Decimal("19.00")
)
RESERVED = StockReserved(order_id="o-1", lines=TWO_MUGS)
AUTHORIZED = PaymentAuthorized(order_id="o-1", amount=Decimal("19.00"))

checkout = saga_scenario(Checkout)
paying = checkout.given(PLACED, PRICED, RESERVED)


# -- the happy path: price, reserve, authorize, confirm ------------------------------------------


def test_a_placed_order_is_priced_and_given_its_payment_deadline() -> None:
    placed = checkout.when(PLACED)

    placed.then_sends(PriceOrder(order_id="o-1", lines=TWO_MUGS), to="catalog")
    placed.then_schedules("payment", after=PAYMENT_DEADLINE)


def test_a_priced_order_has_its_stock_reserved() -> None:
    checkout.given(PLACED).when(PRICED).then_sends(ReserveStock(order_id="o-1", lines=TWO_MUGS), to="inventory")


def test_reserved_stock_is_paid_for_with_the_orders_card_at_its_priced_total() -> None:
    checkout.given(PLACED, PRICED).when(RESERVED).then_sends(
        AuthorizePayment(order_id="o-1", amount=Decimal("19.00"), card="tok_visa"), to="payments"
    )


def test_an_authorized_payment_confirms_the_order_and_ends_the_checkout() -> None:
    authorized = paying.when(AUTHORIZED)

    authorized.then_sends(ConfirmOrder(order_id="o-1", total=Decimal("19.00")), to=None)
    assert authorized.then_completes().deadlines == {}


def test_what_the_checkout_sends_acts_for_whoever_placed_the_order() -> None:
    sent = checkout.when(PLACED, principal="alice", tenant="acme").sent

    assert [(s.envelope.principal, s.envelope.tenant) for s in sent] == [("alice", "acme")]


# -- failures: each undoes what was done, latest first -------------------------------------------


def test_a_declined_payment_voids_it_releases_the_stock_and_rejects_the_order() -> None:
    declined = paying.when(PaymentDeclined(order_id="o-1", reason="card declined"))

    sent = declined.then_sends(
        VoidPayment(order_id="o-1"),
        ReleaseStock(order_id="o-1"),
        RejectOrder(order_id="o-1", reason="payment declined: card declined"),
    )
    assert [s.to for s in sent] == ["payments", "inventory", None]
    declined.then_completes()


def test_a_shortage_releases_the_reservation_attempt_and_rejects_the_order() -> None:
    checkout.given(PLACED, PRICED).when(StockShortage(order_id="o-1", short_skus=["A-1"])).then_sends(
        ReleaseStock(order_id="o-1"), RejectOrder(order_id="o-1", reason="out of stock: A-1")
    )


def test_an_unknown_product_rejects_the_order_before_anything_is_reserved() -> None:
    checkout.given(PLACED).when(PricingFailed(order_id="o-1", unknown_skus=["Z-9"])).then_sends(
        RejectOrder(order_id="o-1", reason="unknown products: Z-9")
    )


def test_an_order_cancelled_by_the_customer_undoes_the_checkout_without_rejecting_it() -> None:
    cancelled = paying.when(OrderCancelled(order_id="o-1", reason="changed my mind"))

    cancelled.then_sends(VoidPayment(order_id="o-1"), ReleaseStock(order_id="o-1"))
    cancelled.then_completes()


# -- the payment deadline, with time moved on rather than slept ----------------------------------


def test_an_order_not_paid_by_its_deadline_is_cancelled_and_its_stock_released() -> None:
    late = paying.after(PAYMENT_DEADLINE)

    late.then_sends(
        VoidPayment(order_id="o-1"),
        ReleaseStock(order_id="o-1"),
        CancelOrder(order_id="o-1", reason="not paid in time"),
    )
    late.then_completes()


def test_nothing_happens_before_the_deadline_nor_after_the_order_is_confirmed() -> None:
    paying.after(PAYMENT_DEADLINE - timedelta(seconds=1)).then_sends()
    paying.given(AUTHORIZED).after(PAYMENT_DEADLINE).then_sends()
