"""Aggregates: category rules, folding events into state and version, and the events they declare."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.monolith.domain import Order, Product
from tests.monolith.messages import ProductAdded, StockReceived, StockReleased, StockReserved
from twofold import Aggregate, Event
from twofold.aggregate import event_types_of


class Opened(Event, name="test.Opened"):
    owner: str


class Deposited(Event, name="test.Deposited"):
    amount: int


class Account(Aggregate):
    balance: int = 0

    def evolve(self, event: Opened | Deposited) -> Account:
        if isinstance(event, Deposited):
            return self.model_copy(update={"balance": self.balance + event.amount})
        return self


class Ledger(Aggregate, category="ledger2"):
    def evolve(self, event: Deposited) -> Ledger:
        return self


class Shapeless(Aggregate):
    def evolve(self, event: Any) -> Shapeless:
        return self


class Undecided(Aggregate):
    pass


def test_the_category_defaults_to_the_lowercased_class_name() -> None:
    assert Account.category == "account"
    assert Account(id="7").stream_id == "account-7"


def test_an_explicit_category_names_the_stream() -> None:
    assert Product.category == "product"
    assert Product(id="A-1").stream_id == "product-A-1"
    assert Ledger(id="x").stream_id == "ledger2-x"


def test_a_category_with_a_dash_is_refused_because_the_category_ends_at_the_first_dash() -> None:
    with pytest.raises(ValueError, match="category 'my-thing' must be non-empty and contain no '-'"):

        class Broken(Aggregate, category="my-thing"):
            pass


def test_a_fresh_aggregate_does_not_exist_and_has_version_zero() -> None:
    account = Account(id="1")

    assert account.version == 0
    assert not account.exists


def test_fold_applies_events_in_order_and_counts_them_into_the_version() -> None:
    account = Account(id="1").fold([Opened(owner="ann"), Deposited(amount=5), Deposited(amount=7)])

    assert account.balance == 12
    assert account.version == 3
    assert account.exists


def test_fold_continues_from_the_version_it_starts_at() -> None:
    once = Account(id="1").fold([Opened(owner="ann")])

    assert once.fold([Deposited(amount=1), Deposited(amount=1)]).version == 3


def test_fold_of_no_events_returns_the_same_state() -> None:
    account = Account(id="1", version=4)

    assert account.fold([]) is account


def test_fold_leaves_the_original_value_unchanged_because_aggregates_are_frozen() -> None:
    account = Account(id="1")
    account.fold([Deposited(amount=5)])

    assert account.balance == 0
    assert account.version == 0


def test_a_product_evolves_its_available_stock_through_receive_reserve_and_release() -> None:
    product = Product(id="A-1").fold(
        [
            ProductAdded(sku="A-1", name="Mug", price=Decimal("9.50")),
            StockReceived(sku="A-1", quantity=5),
            StockReserved(sku="A-1", order_id="o-1", quantity=3),
            StockReleased(sku="A-1", order_id="o-1", quantity=1),
        ]
    )

    assert (product.name, product.price, product.available, product.version) == ("Mug", Decimal("9.50"), 3, 4)


def test_event_types_come_from_the_union_in_evolves_annotation() -> None:
    assert Account.event_types() == (Opened, Deposited)
    assert set(Product.event_types()) == {ProductAdded, StockReceived, StockReserved, StockReleased}


def test_event_types_of_a_single_annotated_class_is_that_class() -> None:
    assert Ledger.event_types() == (Deposited,)


def test_event_types_ignore_annotations_that_are_not_event_classes() -> None:
    assert Shapeless.event_types() == ()

    def untyped(event):  # type: ignore[no-untyped-def]
        return event

    assert event_types_of(untyped, "event") == ()


def test_event_types_of_orders_are_placed_and_cancelled() -> None:
    assert [cls.type_name for cls in Order.event_types()] == ["shop.OrderPlaced", "shop.OrderCancelled"]


def test_an_aggregate_without_evolve_fails_when_asked_to_fold_an_event() -> None:
    with pytest.raises(TypeError, match="Undecided must define evolve"):
        Undecided(id="1").fold([Deposited(amount=1)])
