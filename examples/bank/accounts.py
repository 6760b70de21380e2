"""The accounts service: accounts and every movement of money in and out of them.

An account holds money in one currency and never goes below minus its overdraft limit, however
many withdrawals race for it: each movement is decided on the account's latest state and appended
only if no other movement got there first. Transfers and loan payouts reach it as commands from
the other services' sagas; what it answered for each is recorded in a stream of its own
(``leg-<transfer id>``, ``payout-<loan id>``), which those services import.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field

from examples.bank.common import Amount, Currency, Id, Limit, Reason
from twofold import (
    Aggregate,
    Command,
    Database,
    DomainError,
    Event,
    NotFound,
    Projection,
    Query,
    Service,
    StoredEvent,
    UnitOfWork,
)

STATEMENT_PAGE = 100

# -- messages ------------------------------------------------------------------------------------


class OpenAccount(Command):
    account_id: Id
    owner: Id
    currency: Currency = "EUR"
    overdraft_limit: Limit = Decimal("0.00")


class Deposit(Command):
    account_id: Id
    amount: Amount


class Withdraw(Command):
    account_id: Id
    amount: Amount


class FreezeAccount(Command):
    account_id: Id
    reason: Reason


class CloseAccount(Command):
    account_id: Id


class DebitForTransfer(Command, name="accounts.DebitForTransfer", internal=True):
    transfer_id: str
    account_id: str
    amount: Decimal
    currency: str


class CreditForTransfer(Command, name="accounts.CreditForTransfer", internal=True):
    transfer_id: str
    account_id: str
    amount: Decimal
    currency: str


class RefundTransfer(Command, name="accounts.RefundTransfer", internal=True):
    transfer_id: str


class PayOutLoan(Command, name="accounts.PayOutLoan", internal=True):
    loan_id: str
    account_id: str
    amount: Decimal


class AccountOpened(Event, name="accounts.AccountOpened"):
    account_id: str
    owner: str
    currency: str
    overdraft_limit: Decimal


class MoneyDeposited(Event, name="accounts.MoneyDeposited"):
    """Money in: at the counter, from a transfer, a refund or a loan (``reference`` says which)."""

    account_id: str
    amount: Decimal
    balance: Decimal
    reference: str | None = None


class MoneyWithdrawn(Event, name="accounts.MoneyWithdrawn"):
    """Money out: at the counter, or to a transfer (``reference``)."""

    account_id: str
    amount: Decimal
    balance: Decimal
    reference: str | None = None


class AccountFrozen(Event, name="accounts.AccountFrozen"):
    account_id: str
    reason: str


class AccountClosed(Event, name="accounts.AccountClosed"):
    account_id: str


class DebitMade(Event, name="accounts.DebitMade"):
    transfer_id: str
    account_id: str
    amount: Decimal


class DebitRefused(Event, name="accounts.DebitRefused"):
    transfer_id: str
    reason: str


class CreditMade(Event, name="accounts.CreditMade"):
    transfer_id: str
    account_id: str
    amount: Decimal


class CreditRefused(Event, name="accounts.CreditRefused"):
    transfer_id: str
    reason: str


class DebitRefunded(Event, name="accounts.DebitRefunded"):
    transfer_id: str
    account_id: str
    amount: Decimal


class PayoutMade(Event, name="accounts.PayoutMade"):
    loan_id: str
    account_id: str
    amount: Decimal


class PayoutRefused(Event, name="accounts.PayoutRefused"):
    loan_id: str
    reason: str


class Balance(Query):
    account_id: Id


class Statement(Query):
    """An account's movements, oldest first, optionally between two times; page on with ``after``."""

    account_id: Id
    since: datetime | None = None
    until: datetime | None = None
    after: int = Field(default=0, ge=0, description="The ``next`` of the previous page")
    limit: int = Field(default=50, ge=1, le=STATEMENT_PAGE)


class AccountView(BaseModel):
    account_id: str
    owner: str
    currency: str
    balance: Decimal
    overdraft_limit: Decimal
    status: str


class Movement(BaseModel):
    at: str
    kind: Literal["deposit", "withdrawal"]
    amount: Decimal
    balance: Decimal
    reference: str | None


class StatementPage(BaseModel):
    account_id: str
    movements: list[Movement]
    next: int | None = Field(description="Pass as ``after`` for the next page; none when this is the last")


# -- aggregates ----------------------------------------------------------------------------------

Status = Literal["new", "open", "frozen", "closed"]


class Account(Aggregate, category="account"):
    """One account. ``id`` is the account id."""

    owner: str = ""
    currency: str = ""
    overdraft_limit: Decimal = Decimal(0)
    balance: Decimal = Decimal(0)
    status: Status = "new"

    def open(self, command: OpenAccount) -> AccountOpened:
        if self.exists:
            raise DomainError(f"Account {self.id} already exists")
        return AccountOpened(
            account_id=self.id, owner=command.owner, currency=command.currency, overdraft_limit=command.overdraft_limit
        )

    def refusal_to_pay(self, amount: Decimal, currency: str | None = None) -> str | None:
        """Why this account cannot pay ``amount`` out, or ``None`` when it can."""
        if self.status != "open":
            return self._not_open()
        if currency is not None and currency != self.currency:
            return f"account {self.id} holds {self.currency}, not {currency}"
        if self.balance - amount < -self.overdraft_limit:
            return f"account {self.id} has {self.balance} {self.currency} and may go {self.overdraft_limit} below zero"
        return None

    def refusal_to_receive(self, currency: str | None = None) -> str | None:
        """Why this account cannot take money in, or ``None`` when it can."""
        if self.status != "open":
            return self._not_open()
        if currency is not None and currency != self.currency:
            return f"account {self.id} holds {self.currency}, not {currency}"
        return None

    def _not_open(self) -> str:
        return f"account {self.id} is {'unknown' if self.status == 'new' else self.status}"

    def close(self) -> AccountClosed:
        if self.status in ("new", "closed"):
            raise DomainError(self._not_open())
        if self.balance != 0:
            raise DomainError(f"account {self.id} still holds {self.balance} {self.currency}: empty it first")
        return AccountClosed(account_id=self.id)

    def deposit(self, amount: Decimal, reference: str | None = None) -> MoneyDeposited:
        if (refusal := self.refusal_to_receive()) is not None:
            raise DomainError(refusal)
        return MoneyDeposited(account_id=self.id, amount=amount, balance=self.balance + amount, reference=reference)

    def withdraw(self, amount: Decimal, reference: str | None = None) -> MoneyWithdrawn:
        if (refusal := self.refusal_to_pay(amount)) is not None:
            raise DomainError(refusal)
        return MoneyWithdrawn(account_id=self.id, amount=amount, balance=self.balance - amount, reference=reference)

    def evolve(self, event: AccountOpened | MoneyDeposited | MoneyWithdrawn | AccountFrozen | AccountClosed) -> Account:
        match event:
            case AccountOpened():
                return self.model_copy(
                    update={
                        "owner": event.owner,
                        "currency": event.currency,
                        "overdraft_limit": event.overdraft_limit,
                        "status": "open",
                    }
                )
            case MoneyDeposited(balance=balance) | MoneyWithdrawn(balance=balance):
                return self.model_copy(update={"balance": balance})
            case AccountFrozen():
                return self.model_copy(update={"status": "frozen"})
            case AccountClosed():
                return self.model_copy(update={"status": "closed"})


class TransferLeg(Aggregate, category="leg"):
    """What this service did for one transfer, so each step happens once. ``id`` is the transfer id."""

    debited_from: str | None = None
    amount: Decimal = Decimal(0)
    debit: Literal["none", "made", "refused", "refunded"] = "none"
    credit: Literal["none", "made", "refused"] = "none"

    def evolve(self, event: DebitMade | DebitRefused | CreditMade | CreditRefused | DebitRefunded) -> TransferLeg:
        match event:
            case DebitMade(account_id=account_id, amount=amount):
                return self.model_copy(update={"debit": "made", "debited_from": account_id, "amount": amount})
            case DebitRefused():
                return self.model_copy(update={"debit": "refused"})
            case CreditMade():
                return self.model_copy(update={"credit": "made"})
            case CreditRefused():
                return self.model_copy(update={"credit": "refused"})
            case DebitRefunded():
                return self.model_copy(update={"debit": "refunded"})


class Payout(Aggregate, category="payout"):
    """A loan's payout into its account, made once. ``id`` is the loan id."""

    answered: bool = False

    def evolve(self, event: PayoutMade | PayoutRefused) -> Payout:
        return self.model_copy(update={"answered": True})


# -- handlers ------------------------------------------------------------------------------------


async def open_account(command: OpenAccount, uow: UnitOfWork) -> None:
    account = await uow.load(Account, command.account_id)
    uow.emit(account, account.open(command))


async def deposit(command: Deposit, uow: UnitOfWork) -> None:
    account = await uow.load(Account, command.account_id)
    uow.emit(account, account.deposit(command.amount))


async def withdraw(command: Withdraw, uow: UnitOfWork) -> None:
    account = await uow.load(Account, command.account_id)
    uow.emit(account, account.withdraw(command.amount))


async def freeze_account(command: FreezeAccount, uow: UnitOfWork) -> None:
    account = await uow.load(Account, command.account_id)
    if not account.exists:
        raise DomainError(f"Unknown account {command.account_id}")
    if account.status != "frozen":
        uow.emit(account, AccountFrozen(account_id=account.id, reason=command.reason))


async def close_account(command: CloseAccount, uow: UnitOfWork) -> None:
    account = await uow.load(Account, command.account_id)
    uow.emit(account, account.close())


async def debit_for_transfer(command: DebitForTransfer, uow: UnitOfWork) -> None:
    leg = await uow.load(TransferLeg, command.transfer_id)
    if leg.debit != "none":
        return  # answered already: the first answer stands
    account = await uow.load(Account, command.account_id)
    refusal = account.refusal_to_pay(command.amount, command.currency)
    if refusal is not None:
        uow.emit(leg, DebitRefused(transfer_id=leg.id, reason=refusal))
        return
    uow.emit(account, account.withdraw(command.amount, reference=f"transfer {leg.id}"))
    uow.emit(leg, DebitMade(transfer_id=leg.id, account_id=account.id, amount=command.amount))


async def credit_for_transfer(command: CreditForTransfer, uow: UnitOfWork) -> None:
    leg = await uow.load(TransferLeg, command.transfer_id)
    if leg.credit != "none":
        return
    account = await uow.load(Account, command.account_id)
    refusal = account.refusal_to_receive(command.currency)
    if refusal is not None:
        uow.emit(leg, CreditRefused(transfer_id=leg.id, reason=refusal))
        return
    uow.emit(account, account.deposit(command.amount, reference=f"transfer {leg.id}"))
    uow.emit(leg, CreditMade(transfer_id=leg.id, account_id=account.id, amount=command.amount))


async def refund_transfer(command: RefundTransfer, uow: UnitOfWork) -> None:
    leg = await uow.load(TransferLeg, command.transfer_id)
    if leg.debit != "made" or leg.debited_from is None:
        return  # nothing was taken, or it was given back already
    account = await uow.load(Account, leg.debited_from)
    # Money going back where it came from is always taken in, even by an account frozen or
    # closed since the debit: it is the customer's, and a closed account with money is visible.
    refund = MoneyDeposited(
        account_id=account.id, amount=leg.amount, balance=account.balance + leg.amount, reference=f"refund {leg.id}"
    )
    uow.emit(account, refund)
    uow.emit(leg, DebitRefunded(transfer_id=leg.id, account_id=account.id, amount=leg.amount))


async def pay_out_loan(command: PayOutLoan, uow: UnitOfWork) -> None:
    payout = await uow.load(Payout, command.loan_id)
    if payout.answered:
        return
    account = await uow.load(Account, command.account_id)
    refusal = account.refusal_to_receive()
    if refusal is not None:
        uow.emit(payout, PayoutRefused(loan_id=payout.id, reason=refusal))
        return
    uow.emit(account, account.deposit(command.amount, reference=f"loan {payout.id}"))
    uow.emit(payout, PayoutMade(loan_id=payout.id, account_id=account.id, amount=command.amount))


# -- read models ---------------------------------------------------------------------------------


class Balances(Projection, name="accounts.balances"):
    """Each account's balance and status. Amounts are stored as text: exact, never a float."""

    tables = ("accounts",)

    def setup(self, db: Database) -> None:
        db.execute(
            "CREATE TABLE IF NOT EXISTS accounts (account_id TEXT PRIMARY KEY, owner TEXT NOT NULL,"
            " currency TEXT NOT NULL, balance TEXT NOT NULL, overdraft_limit TEXT NOT NULL, status TEXT NOT NULL)"
        )

    def apply(
        self,
        event: AccountOpened | MoneyDeposited | MoneyWithdrawn | AccountFrozen | AccountClosed,
        db: Database,
        record: StoredEvent,
    ) -> None:
        match event:
            case AccountOpened():
                db.execute(
                    "INSERT INTO accounts (account_id, owner, currency, balance, overdraft_limit, status)"
                    " VALUES (?, ?, ?, '0.00', ?, 'open')",
                    (event.account_id, event.owner, event.currency, str(event.overdraft_limit)),
                )
            case MoneyDeposited(balance=balance) | MoneyWithdrawn(balance=balance):
                db.execute("UPDATE accounts SET balance = ? WHERE account_id = ?", (str(balance), event.account_id))
            case AccountFrozen() | AccountClosed():
                status = "frozen" if isinstance(event, AccountFrozen) else "closed"
                db.execute("UPDATE accounts SET status = ? WHERE account_id = ?", (status, event.account_id))

    def balance(self, query: Balance, db: Database) -> AccountView:
        row = db.fetch_one("SELECT * FROM accounts WHERE account_id = ?", (query.account_id,))
        if row is None:
            raise NotFound(f"No account {query.account_id}")
        return AccountView(**row)


class Ledger(Projection, name="accounts.ledger"):
    """Every movement of every account, for statements: keyed by position, so pages never skip or repeat."""

    tables = ("movements",)

    def setup(self, db: Database) -> None:
        db.execute(
            "CREATE TABLE IF NOT EXISTS movements (position BIGINT PRIMARY KEY, account_id TEXT NOT NULL,"
            " at TEXT NOT NULL, kind TEXT NOT NULL, amount TEXT NOT NULL, balance TEXT NOT NULL, reference TEXT)"
        )
        db.execute("CREATE INDEX IF NOT EXISTS movements_by_account ON movements (account_id, position)")

    def apply(self, event: MoneyDeposited | MoneyWithdrawn, db: Database, record: StoredEvent) -> None:
        kind = "deposit" if isinstance(event, MoneyDeposited) else "withdrawal"
        db.execute(
            "INSERT INTO movements (position, account_id, at, kind, amount, balance, reference)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                record.position,
                event.account_id,
                timestamp(record.recorded_at),
                kind,
                str(event.amount),
                str(event.balance),
                event.reference,
            ),
        )

    def statement(self, query: Statement, db: Database) -> StatementPage:
        since = timestamp(query.since) if query.since else ""
        until = timestamp(query.until) if query.until else "9999"
        rows = db.fetch_all(
            "SELECT position, at, kind, amount, balance, reference FROM movements"
            " WHERE account_id = ? AND position > ? AND at >= ? AND at < ? ORDER BY position LIMIT ?",
            (query.account_id, query.after, since, until, query.limit + 1),
        )
        page, more = rows[: query.limit], len(rows) > query.limit
        movements = [Movement(**{k: v for k, v in row.items() if k != "position"}) for row in page]
        return StatementPage(
            account_id=query.account_id, movements=movements, next=page[-1]["position"] if more else None
        )


def timestamp(moment: datetime) -> str:
    """UTC, to the microsecond, one fixed width: such times sort as text, the same on both backends.

    A time without a zone is taken as UTC.
    """
    utc = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


balances = Balances()
ledger = Ledger()

accounts = Service(
    "accounts",
    description="Accounts and every movement of money; never below an account's overdraft limit.",
    commands={
        OpenAccount: open_account,
        Deposit: deposit,
        Withdraw: withdraw,
        FreezeAccount: freeze_account,
        CloseAccount: close_account,
        DebitForTransfer: debit_for_transfer,
        CreditForTransfer: credit_for_transfer,
        RefundTransfer: refund_transfer,
        PayOutLoan: pay_out_loan,
    },
    queries={Balance: balances.balance, Statement: ledger.statement},
    projections=[balances, ledger],
)
