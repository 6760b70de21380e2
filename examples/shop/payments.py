"""The payments service: authorizes an order's amount on a card through a (simulated) gateway.

The gateway knows a few test cards, as real gateways' sandboxes do:

    (none), tok_visa      approved
    tok_declined          declined: "card declined"
    tok_no_funds          declined: "insufficient funds"
    tok_slow              approved, after ``SHOP_GATEWAY_SLOW_SECONDS`` (1 s by default)
    tok_unresponsive      never answers: the order waits until its payment deadline cancels it

A payment voided before the gateway answered stays voided: a late approval is not recorded.
"""

from __future__ import annotations

import asyncio
import os
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field

from twofold import Aggregate, Command, DomainError, Event, Service, UnitOfWork

Card = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_]+$")]
DECLINES = {"tok_declined": "card declined", "tok_no_funds": "insufficient funds"}
KNOWN_CARDS = {"tok_visa", "tok_slow", "tok_unresponsive", *DECLINES}


class AuthorizePayment(Command, name="payments.AuthorizePayment", internal=True):
    """Sent by the checkout saga: authorize ``amount`` on ``card`` for an order."""

    order_id: str
    amount: Decimal
    card: Card | None = None


class VoidPayment(Command, name="payments.VoidPayment", internal=True):
    """Sent by the checkout saga to undo an authorization; harmless when there is none."""

    order_id: str


class PaymentRequested(Event, name="payments.PaymentRequested"):
    order_id: str
    amount: Decimal


class PaymentAuthorized(Event, name="payments.PaymentAuthorized"):
    order_id: str
    amount: Decimal


class PaymentDeclined(Event, name="payments.PaymentDeclined"):
    order_id: str
    reason: str


class PaymentVoided(Event, name="payments.PaymentVoided"):
    order_id: str


class Payment(Aggregate, category="payment"):
    """One order's payment. ``id`` is the order id."""

    status: Literal["none", "requested", "authorized", "declined", "voided"] = "none"

    def evolve(self, event: PaymentRequested | PaymentAuthorized | PaymentDeclined | PaymentVoided) -> Payment:
        match event:
            case PaymentRequested():
                return self.model_copy(update={"status": "requested"})
            case PaymentAuthorized():
                return self.model_copy(update={"status": "authorized"})
            case PaymentDeclined():
                return self.model_copy(update={"status": "declined"})
            case PaymentVoided():
                return self.model_copy(update={"status": "voided"})


async def gateway(card: str | None, amount: Decimal) -> str | None:
    """The simulated gateway: ``None`` when approved, the reason when declined."""
    if card not in (None, *KNOWN_CARDS):
        return f"unknown test card {card}"
    if card == "tok_slow":
        await asyncio.sleep(float(os.environ.get("SHOP_GATEWAY_SLOW_SECONDS", "1")))
    return DECLINES.get(card or "")


async def authorize_payment(command: AuthorizePayment, uow: UnitOfWork) -> None:
    payment = await uow.load(Payment, command.order_id)
    if payment.status != "none":
        return  # answered, or voided before it was asked: the first outcome stands
    if command.amount <= 0:
        raise DomainError(f"Cannot authorize {command.amount} for order {command.order_id}")
    payment = uow.emit(payment, PaymentRequested(order_id=command.order_id, amount=command.amount))
    if command.card == "tok_unresponsive":
        return
    declined = await gateway(command.card, command.amount)
    if declined is None:
        uow.emit(payment, PaymentAuthorized(order_id=command.order_id, amount=command.amount))
    else:
        uow.emit(payment, PaymentDeclined(order_id=command.order_id, reason=declined))


async def void_payment(command: VoidPayment, uow: UnitOfWork) -> None:
    payment = await uow.load(Payment, command.order_id)
    if payment.status in ("none", "requested", "authorized"):
        uow.emit(payment, PaymentVoided(order_id=command.order_id))


payments = Service(
    "payments",
    description="Authorizes payments through a simulated card gateway.",
    commands={AuthorizePayment: authorize_payment, VoidPayment: void_payment},
    aggregates=[Payment],
)
