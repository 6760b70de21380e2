"""The transfers service: moving money between two accounts, as a saga.

    RequestTransfer ─▶ TransferRequested ─▶ transfer: DebitForTransfer (accounts) ─▶ DebitMade
                                                      CreditForTransfer (accounts) ─▶ CreditMade
                                                      CompleteTransfer ─▶ TransferCompleted

A debit refused (not enough money, a frozen source, another currency) fails the transfer with
nothing moved. A credit refused (the destination is frozen, unknown or holds another currency)
refunds the debit, then fails the transfer. The accounts service's answers reach this service as
imported ``leg-<transfer id>`` streams.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, model_validator

from examples.bank.accounts import (
    CreditForTransfer,
    CreditMade,
    CreditRefused,
    DebitForTransfer,
    DebitMade,
    DebitRefused,
    RefundTransfer,
)
from examples.bank.common import Amount, Currency, Id
from twofold import (
    Actions,
    Aggregate,
    Command,
    Database,
    DomainError,
    Event,
    NotFound,
    Projection,
    Query,
    Saga,
    Service,
    StoredEvent,
    Subscription,
    UnitOfWork,
)

# -- messages ------------------------------------------------------------------------------------


class RequestTransfer(Command):
    transfer_id: Id
    from_account: Id
    to_account: Id
    amount: Amount
    currency: Currency = "EUR"

    @model_validator(mode="after")
    def _two_accounts(self) -> RequestTransfer:
        if self.from_account == self.to_account:
            raise ValueError("from_account and to_account must differ")
        return self


class CompleteTransfer(Command, name="transfers.CompleteTransfer", internal=True):
    transfer_id: str


class FailTransfer(Command, name="transfers.FailTransfer", internal=True):
    transfer_id: str
    reason: str


class TransferRequested(Event, name="transfers.TransferRequested"):
    transfer_id: str
    from_account: str
    to_account: str
    amount: Decimal
    currency: str


class TransferCompleted(Event, name="transfers.TransferCompleted"):
    transfer_id: str


class TransferFailed(Event, name="transfers.TransferFailed"):
    transfer_id: str
    reason: str


class TransferStatus(Query):
    transfer_id: Id


class TransferView(BaseModel):
    transfer_id: str
    from_account: str
    to_account: str
    amount: Decimal
    currency: str
    status: str
    reason: str | None


# -- the aggregate -------------------------------------------------------------------------------


class Transfer(Aggregate, category="transfer"):
    """One transfer, from requested to completed or failed. ``id`` is the transfer id."""

    status: Literal["new", "requested", "completed", "failed"] = "new"

    def request(self, command: RequestTransfer) -> TransferRequested:
        if self.exists:
            raise DomainError(f"Transfer {self.id} already exists")
        return TransferRequested(
            transfer_id=self.id,
            from_account=command.from_account,
            to_account=command.to_account,
            amount=command.amount,
            currency=command.currency,
        )

    def settle(self, event: TransferCompleted | TransferFailed) -> list[Event]:
        return [event] if self.status == "requested" else []  # settled once: a repeat changes nothing

    def evolve(self, event: TransferRequested | TransferCompleted | TransferFailed) -> Transfer:
        match event:
            case TransferRequested():
                return self.model_copy(update={"status": "requested"})
            case TransferCompleted():
                return self.model_copy(update={"status": "completed"})
            case TransferFailed():
                return self.model_copy(update={"status": "failed"})


async def request_transfer(command: RequestTransfer, uow: UnitOfWork) -> None:
    transfer = await uow.load(Transfer, command.transfer_id)
    uow.emit(transfer, transfer.request(command))


async def complete_transfer(command: CompleteTransfer, uow: UnitOfWork) -> None:
    transfer = await uow.load(Transfer, command.transfer_id)
    uow.emit(transfer, transfer.settle(TransferCompleted(transfer_id=transfer.id)))


async def fail_transfer(command: FailTransfer, uow: UnitOfWork) -> None:
    transfer = await uow.load(Transfer, command.transfer_id)
    uow.emit(transfer, transfer.settle(TransferFailed(transfer_id=transfer.id, reason=command.reason)))


# -- the saga ------------------------------------------------------------------------------------


class MoneyTransfer(Saga, name="transfer", key="transfer_id"):
    """Debits, then credits; gives the debit back if the credit is refused."""

    stage: Literal["new", "debiting", "crediting", "completed", "failed"] = "new"
    to_account: str = ""
    amount: Decimal = Decimal(0)
    currency: str = ""

    def react(
        self, event: TransferRequested | DebitMade | DebitRefused | CreditMade | CreditRefused, do: Actions
    ) -> MoneyTransfer:
        match event:
            case TransferRequested():
                do.send(
                    DebitForTransfer(
                        transfer_id=self.id, account_id=event.from_account, amount=event.amount, currency=event.currency
                    ),
                    to="accounts",
                    compensate=RefundTransfer(transfer_id=self.id),
                )
                update = {"to_account": event.to_account, "amount": event.amount, "currency": event.currency}
                return self.model_copy(update={"stage": "debiting", **update})
            case DebitMade() if self.stage == "debiting":
                credit = CreditForTransfer(
                    transfer_id=self.id, account_id=self.to_account, amount=self.amount, currency=self.currency
                )
                do.send(credit, to="accounts")
                return self.model_copy(update={"stage": "crediting"})
            case CreditMade() if self.stage == "crediting":
                do.send(CompleteTransfer(transfer_id=self.id))
                do.complete()
                return self.model_copy(update={"stage": "completed"})
            case DebitRefused(reason=reason):
                do.send(FailTransfer(transfer_id=self.id, reason=reason))  # nothing was taken: nothing to undo
                do.complete()
                return self.model_copy(update={"stage": "failed"})
            case CreditRefused(reason=reason):
                do.compensate()
                do.send(FailTransfer(transfer_id=self.id, reason=f"refunded: {reason}"))
                do.complete()
                return self.model_copy(update={"stage": "failed"})
        return self


# -- read model ----------------------------------------------------------------------------------


class TransferLog(Projection, name="transfers.log"):
    """Each transfer and where it stands."""

    tables = ("transfers",)

    def setup(self, db: Database) -> None:
        db.execute(
            "CREATE TABLE IF NOT EXISTS transfers (transfer_id TEXT PRIMARY KEY, from_account TEXT NOT NULL,"
            " to_account TEXT NOT NULL, amount TEXT NOT NULL, currency TEXT NOT NULL, status TEXT NOT NULL,"
            " reason TEXT)"
        )

    def apply(
        self, event: TransferRequested | TransferCompleted | TransferFailed, db: Database, record: StoredEvent
    ) -> None:
        match event:
            case TransferRequested():
                db.execute(
                    "INSERT INTO transfers (transfer_id, from_account, to_account, amount, currency, status)"
                    " VALUES (?, ?, ?, ?, ?, 'requested')",
                    (event.transfer_id, event.from_account, event.to_account, str(event.amount), event.currency),
                )
            case TransferCompleted():
                db.execute("UPDATE transfers SET status = 'completed' WHERE transfer_id = ?", (event.transfer_id,))
            case TransferFailed():
                db.execute(
                    "UPDATE transfers SET status = 'failed', reason = ? WHERE transfer_id = ?",
                    (event.reason, event.transfer_id),
                )

    def status(self, query: TransferStatus, db: Database) -> TransferView:
        row = db.fetch_one("SELECT * FROM transfers WHERE transfer_id = ?", (query.transfer_id,))
        if row is None:
            raise NotFound(f"No transfer {query.transfer_id}")
        return TransferView(**row)


log = TransferLog()

transfers = Service(
    "transfers",
    description="Transfers between accounts: debit, credit, and a refund when the credit is refused.",
    commands={RequestTransfer: request_transfer, CompleteTransfer: complete_transfer, FailTransfer: fail_transfer},
    queries={TransferStatus: log.status},
    projections=[log],
    sagas=[MoneyTransfer],
    subscriptions=[Subscription("accounts", categories=["leg"])],
)
