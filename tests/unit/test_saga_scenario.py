"""The saga kit: it runs the real saga runner with a recording sender, moves time on, and fails readably."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from twofold import Actions, Command, Event, Saga, Timeout
from twofold.testing import SCENARIO_START, saga_scenario


class PayOrder(Command, name="test.PayOrder"):
    order_id: str
    amount: int


class ShipOrder(Command, name="test.ShipOrder"):
    order_id: str


class ChaseOrder(Command, name="test.ChaseOrder"):
    order_id: str
    reason: str


class OrderPlaced(Event, name="test.OrderPlaced"):
    order_id: str
    amount: int


class OrderPaid(Event, name="test.OrderPaid"):
    order_id: str


class Delivery(Saga, name="delivery", key="order_id"):
    """Pays for an order, ships it once paid, and chases it if payment takes more than a day."""

    paid: bool = False

    def react(self, event: OrderPlaced | OrderPaid | Timeout, do: Actions) -> Delivery:
        match event:
            case OrderPlaced(order_id=order_id, amount=amount):
                do.send(PayOrder(order_id=order_id, amount=amount), to="payments")
                do.schedule("payment", after=timedelta(days=1))
            case OrderPaid():
                do.send(ShipOrder(order_id=self.id))
                do.complete()
                return self.model_copy(update={"paid": True})
            case Timeout(name="payment"):
                do.send(ChaseOrder(order_id=self.id, reason="not paid within a day"), to="support")
        return self


PLACED = OrderPlaced(order_id="o-1", amount=19)
delivery = saga_scenario(Delivery)


def test_then_sends_passes_when_the_step_sent_the_expected_commands_and_returns_them() -> None:
    sent = delivery.when(PLACED).then_sends(PayOrder(order_id="o-1", amount=19), to="payments")

    assert [(s.to, s.command.type_name, s.command.model_dump()) for s in sent] == [
        ("payments", "test.PayOrder", {"order_id": "o-1", "amount": 19})
    ]
    assert sent[0].envelope.message_id  # an id of its own, derived from the reaction


def test_only_what_the_step_sends_is_compared_not_what_the_given_events_sent() -> None:
    delivery.given(PLACED).when(OrderPaid(order_id="o-1")).then_sends(ShipOrder(order_id="o-1"), to=None)


def test_a_wrong_command_fails_with_a_diff_of_one_line_per_command() -> None:
    with pytest.raises(AssertionError) as failure:
        delivery.when(PLACED).then_sends(PayOrder(order_id="o-1", amount=20))

    assert str(failure.value) == (
        "delivery, reacting to test.OrderPlaced, sent other commands than expected (- expected, + sent):\n"
        '- test.PayOrder {"order_id": "o-1", "amount": 20}\n'
        "?                                             ^^\n"
        '+ test.PayOrder {"order_id": "o-1", "amount": 19}\n'
        "?                                             ^^"
    )


def test_a_command_sent_to_another_service_than_expected_fails_naming_both() -> None:
    with pytest.raises(AssertionError) as failure:
        delivery.when(PLACED).then_sends(PayOrder(order_id="o-1", amount=19), to=None)

    assert '- test.PayOrder {"order_id": "o-1", "amount": 19} to this service' in str(failure.value)
    assert '+ test.PayOrder {"order_id": "o-1", "amount": 19} to payments' in str(failure.value)


def test_then_sends_with_no_command_fails_listing_what_was_sent() -> None:
    with pytest.raises(AssertionError, match=r'\n\+ test\.PayOrder \{"order_id": "o-1", "amount": 19\}$'):
        delivery.when(PLACED).then_sends()


def test_then_schedules_checks_a_deadline_at_a_time_or_after_a_delay_from_the_step() -> None:
    placed = delivery.when(PLACED)

    assert placed.then_schedules("payment", after=timedelta(days=1)) == SCENARIO_START + timedelta(days=1)
    placed.then_schedules("payment", at=SCENARIO_START + timedelta(days=1))
    with pytest.raises(ValueError, match="exactly one of at= or after="):
        placed.then_schedules("payment")


def test_a_wrong_deadline_fails_listing_the_deadlines_set() -> None:
    expected = (
        "Expected delivery, reacting to test.OrderPlaced, to leave deadline 'payment' at 2030-01-01T02:00:00+00:00;"
        " its deadlines:\n  payment at 2030-01-02T00:00:00+00:00"
    )
    with pytest.raises(AssertionError, match=re.escape(expected)):
        delivery.when(PLACED).then_schedules("payment", after=timedelta(hours=2))


def test_then_completes_fails_showing_the_state_of_an_instance_still_active() -> None:
    delivery.given(PLACED).when(OrderPaid(order_id="o-1")).then_completes()
    expected = (
        "Expected delivery, reacting to test.OrderPlaced, to complete the instance, but it is still active:\n"
        '  delivery {"id": "o-1", "version": 1, "paid": false}'
    )
    with pytest.raises(AssertionError, match=re.escape(expected)):
        delivery.when(PLACED).then_completes()


def test_after_fires_the_deadlines_due_by_then_and_only_those() -> None:
    placed = delivery.given(PLACED)

    placed.after(timedelta(hours=23)).then_sends()
    placed.after(timedelta(days=1)).then_sends(ChaseOrder(order_id="o-1", reason="not paid within a day"), to="support")
    placed.given(OrderPaid(order_id="o-1")).after(timedelta(days=2)).then_sends()


def test_a_deadline_acts_for_the_principal_and_tenant_of_the_instances_latest_reaction() -> None:
    chased = delivery.given(PLACED, principal="alice", tenant="acme").after(timedelta(days=1))

    assert [(s.envelope.principal, s.envelope.tenant) for s in chased.sent] == [("alice", "acme")]


def test_a_scenario_has_one_step_and_needs_it_before_a_check() -> None:
    with pytest.raises(ValueError, match=r"already has its step \(delivery, reacting to test\.OrderPlaced\)"):
        delivery.when(PLACED).after(timedelta(days=1))
    with pytest.raises(ValueError, match=r"no step yet: call \.when\(event\) or \.after\(delay\)"):
        delivery.given(PLACED).then_sends()


async def test_checks_work_inside_a_running_event_loop() -> None:
    delivery.when(PLACED).then_sends(PayOrder(order_id="o-1", amount=19))
