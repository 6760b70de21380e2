"""The given/when/then kit: it runs the service's real handlers and fails with readable messages."""

from __future__ import annotations

import re
import threading
from decimal import Decimal

import pytest

from tests.monolith import shop
from tests.monolith.messages import (
    AddProduct,
    OrderLine,
    OrderPlaced,
    PlaceOrder,
    PricedLine,
    ProductAdded,
    ReceiveStock,
    StockReceived,
    StockReserved,
)
from twofold import Command, DomainError, Event, NotFound, Service, UnitOfWork
from twofold.testing import Scenario, scenario
from twofold.testing import __all__ as exported

MUG = ProductAdded(sku="A-1", name="Mug", price=Decimal("9.50"))
ORDER = PlaceOrder(order_id="o-1", customer_id="c-1", lines=[OrderLine(sku="A-1", quantity=2)])
PLACED = OrderPlaced(
    order_id="o-1", customer_id="c-1", lines=[PricedLine(sku="A-1", quantity=2, price=Decimal("9.50"))], total=19
)
RESERVED = StockReserved(sku="A-1", order_id="o-1", quantity=2)


def stocked(quantity: int = 5) -> Scenario:
    return scenario(shop).given("product-A-1", MUG, StockReceived(sku="A-1", quantity=quantity))


def test_the_testing_package_exports_its_scenarios_and_the_consistency_check() -> None:
    assert {"Scenario", "scenario", "projection_scenario", "saga_scenario", "assert_consistent"} <= set(exported)


def test_then_passes_when_the_emitted_events_equal_the_expected_ones_and_returns_the_result() -> None:
    result = stocked().when(ORDER).then(PLACED, RESERVED)

    assert result.stream_id == "order-o-1"
    assert [e.type for e in result.events] == ["shop.OrderPlaced", "shop.StockReserved"]


def test_then_compares_values_so_a_decimal_spelled_differently_still_matches() -> None:
    placed = PLACED.model_copy(update={"total": Decimal("19.0000")})

    stocked().when(ORDER).then(placed, RESERVED)


def test_given_may_be_chained_for_several_streams() -> None:
    scene = stocked().given("product-B-2", ProductAdded(sku="B-2", name="Cup", price=Decimal(3)))

    scene.when(ReceiveStock(sku="B-2", quantity=4)).then(StockReceived(sku="B-2", quantity=4))


def test_a_scenario_can_be_reused_because_given_and_when_return_new_scenarios() -> None:
    base = stocked(quantity=1)

    base.when(ORDER).then_rejected(DomainError, match="ordered 2, available 1")
    base.when(ReceiveStock(sku="A-1", quantity=1)).then(StockReceived(sku="A-1", quantity=1))


def test_a_wrong_expectation_fails_with_a_diff_of_one_line_per_event() -> None:
    wrong = RESERVED.model_copy(update={"quantity": 3})

    with pytest.raises(AssertionError) as failure:
        stocked().when(ORDER).then(PLACED, wrong)

    message = str(failure.value)
    assert message.startswith("PlaceOrder emitted other events than expected (- expected, + emitted):\n")
    lines = message.splitlines()
    assert lines[1].startswith("  shop.OrderPlaced {")
    assert '- shop.StockReserved {"sku": "A-1", "order_id": "o-1", "quantity": 3}' in lines
    assert '+ shop.StockReserved {"sku": "A-1", "order_id": "o-1", "quantity": 2}' in lines


def test_a_missing_event_shows_as_an_added_line() -> None:
    with pytest.raises(AssertionError, match=r'\n\+ shop\.StockReserved \{"sku": "A-1"'):
        stocked().when(ORDER).then(PLACED)


def test_an_event_of_another_type_with_the_same_fields_does_not_match() -> None:
    class Reserved(Event, name="test.Reserved"):
        sku: str
        order_id: str
        quantity: int

    with pytest.raises(AssertionError, match=r'\n- test\.Reserved \{"sku": "A-1"'):
        stocked().when(ORDER).then(PLACED, Reserved(sku="A-1", order_id="o-1", quantity=2))


def test_an_unexpected_rejection_fails_saying_so_with_the_error_message() -> None:
    with pytest.raises(AssertionError) as failure:
        stocked(quantity=1).when(ORDER).then(PLACED, RESERVED)

    message = str(failure.value)
    assert message.startswith(
        "PlaceOrder was rejected with DomainError: Not enough stock for A-1: ordered 2, available 1\n"
    )
    assert "expected it to emit:\n  shop.OrderPlaced" in message
    assert isinstance(failure.value.__cause__, DomainError)


def test_then_rejected_returns_the_error_when_type_and_message_match() -> None:
    error = stocked(quantity=1).when(ORDER).then_rejected(DomainError, match=r"Not enough stock for A-1")

    assert str(error) == "Not enough stock for A-1: ordered 2, available 1"


def test_then_rejected_fails_when_the_command_was_accepted_and_lists_what_it_emitted() -> None:
    expected = "Expected PlaceOrder to be rejected with DomainError, but it was accepted:\n  shop.OrderPlaced"
    with pytest.raises(AssertionError, match=re.escape(expected)):
        stocked().when(ORDER).then_rejected(DomainError)


def test_then_rejected_fails_when_the_error_is_of_another_type() -> None:
    with pytest.raises(AssertionError, match="but it raised DomainError: Unknown sku A-1"):
        scenario(shop).when(ORDER).then_rejected(NotFound)


def test_then_rejected_fails_when_the_message_does_not_match() -> None:
    expected = "rejected with DomainError as expected, but its message does not match 'sold out':\n  'Unknown sku A-1'"
    with pytest.raises(AssertionError, match=re.escape(expected)):
        scenario(shop).when(ORDER).then_rejected(DomainError, match="sold out")


def test_then_nothing_passes_for_a_command_that_emits_no_event() -> None:
    async def look(command: Command, uow: UnitOfWork) -> None:
        return None

    class Look(Command):
        pass

    result = scenario(Service("look", commands={Look: look})).when(Look()).then_nothing()

    assert result.position is None


def test_then_nothing_fails_listing_the_events_that_were_emitted() -> None:
    with pytest.raises(AssertionError, match=r"Expected AddProduct to emit nothing, but it emitted:\n  shop\."):
        scenario(shop).when(AddProduct(sku="A-1", name="Mug", price=Decimal(1))).then_nothing()


def test_result_error_and_emitted_expose_what_happened() -> None:
    accepted = stocked().when(ORDER, principal="alice", tenant="t-1")
    refused = stocked(quantity=1).when(ORDER)

    assert accepted.error is None
    assert [e.type for e in accepted.emitted] == ["shop.OrderPlaced", "shop.StockReserved"]
    assert accepted.result.events[0].metadata["principal"] == "alice"
    assert accepted.result.events[0].metadata["tenant"] == "t-1"
    assert isinstance(refused.error, DomainError)
    assert refused.emitted == ()
    with pytest.raises(DomainError, match="Not enough stock"):
        _ = refused.result


def test_the_command_runs_once_however_many_checks_read_it() -> None:
    calls = []

    async def count(command: Command, uow: UnitOfWork) -> None:
        calls.append(command)

    class Count(Command):
        pass

    scene = scenario(Service("count", commands={Count: count})).when(Count())
    scene.then_nothing()
    scene.then_nothing()
    _ = scene.result

    assert len(calls) == 1


def test_checking_before_when_explains_what_is_missing() -> None:
    with pytest.raises(ValueError, match=r"call \.when\(command\) before"):
        stocked().then(PLACED)


def test_when_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="already runs PlaceOrder"):
        stocked().when(ORDER).when(ORDER)


def test_a_command_the_service_does_not_handle_is_rejected_with_not_found() -> None:
    scenario(Service("empty")).when(ORDER).then_rejected(NotFound, match="No handler for command PlaceOrder")


async def test_the_kit_works_inside_a_running_event_loop_on_a_worker_thread() -> None:
    threads = []

    async def where(command: Command, uow: UnitOfWork) -> None:
        threads.append(threading.current_thread())

    class Where(Command):
        pass

    scenario(Service("where", commands={Where: where})).when(Where()).then_nothing()
    stocked().when(ORDER).then(PLACED, RESERVED)

    assert threads
    assert threads[0] is not threading.current_thread()
