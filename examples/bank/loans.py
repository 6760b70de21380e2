"""The loans service: applications, the decision on them, and paying the money out.

    ApplyForLoan ─▶ applied ─ApproveLoan─▶ approved ─DisburseLoan─▶ disbursing ─▶ paid out
                           └─RejectLoan─▶ rejected                             └▶ payout failed

Disbursing sends the money to the borrower's account through the accounts service; its answer
(``payout-<loan id>``) comes back as an imported stream, and the payout saga records it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from examples.bank.accounts import PayOutLoan, PayoutMade, PayoutRefused
from examples.bank.common import Amount, Id, Reason
from twofold import (
    Actions,
    Aggregate,
    Command,
    Database,
    DomainError,
    Event,
    Projection,
    Query,
    Saga,
    Service,
    StoredEvent,
    Subscription,
    UnitOfWork,
)

LoanStatus = Literal["applied", "approved", "rejected", "disbursing", "paid out", "payout failed"]

# -- messages ------------------------------------------------------------------------------------


class ApplyForLoan(Command):
    loan_id: Id
    account_id: Id
    amount: Amount
    term_months: Annotated[int, Field(ge=1, le=480)]


class ApproveLoan(Command):
    loan_id: Id


class RejectLoan(Command):
    loan_id: Id
    reason: Reason


class DisburseLoan(Command):
    loan_id: Id


class RecordPayout(Command, name="loans.RecordPayout", internal=True):
    loan_id: str
    paid: bool
    reason: str | None = None


class LoanApplied(Event, name="loans.LoanApplied"):
    loan_id: str
    account_id: str
    amount: Decimal
    term_months: int


class LoanApproved(Event, name="loans.LoanApproved"):
    loan_id: str


class LoanRejected(Event, name="loans.LoanRejected"):
    loan_id: str
    reason: str


class LoanDisbursed(Event, name="loans.LoanDisbursed"):
    loan_id: str
    account_id: str
    amount: Decimal


class LoanPaidOut(Event, name="loans.LoanPaidOut"):
    loan_id: str


class LoanPayoutFailed(Event, name="loans.LoanPayoutFailed"):
    loan_id: str
    reason: str


class LoansByStatus(Query):
    status: LoanStatus
    limit: int = Field(default=50, ge=1, le=200)


class LoanView(BaseModel):
    loan_id: str
    account_id: str
    amount: Decimal
    term_months: int
    status: str
    reason: str | None


class LoanList(BaseModel):
    loans: list[LoanView]


# -- the aggregate -------------------------------------------------------------------------------


class Loan(Aggregate, category="loan"):
    """One loan. ``id`` is the loan id."""

    account_id: str = ""
    amount: Decimal = Decimal(0)
    status: LoanStatus | Literal["new"] = "new"

    def _require(self, *statuses: str) -> None:
        if not self.exists:
            raise DomainError(f"Unknown loan {self.id}")
        if self.status not in statuses:
            raise DomainError(f"Loan {self.id} is {self.status}, not {' or '.join(statuses)}")

    def apply(self, command: ApplyForLoan) -> LoanApplied:
        if self.exists:
            raise DomainError(f"Loan {self.id} already exists")
        return LoanApplied(
            loan_id=self.id, account_id=command.account_id, amount=command.amount, term_months=command.term_months
        )

    def approve(self) -> LoanApproved:
        self._require("applied")
        return LoanApproved(loan_id=self.id)

    def reject(self, reason: str) -> LoanRejected:
        self._require("applied")
        return LoanRejected(loan_id=self.id, reason=reason)

    def disburse(self) -> LoanDisbursed:
        self._require("approved")
        return LoanDisbursed(loan_id=self.id, account_id=self.account_id, amount=self.amount)

    def record_payout(self, command: RecordPayout) -> list[Event]:
        if self.status != "disbursing":
            return []  # recorded already
        if command.paid:
            return [LoanPaidOut(loan_id=self.id)]
        return [LoanPayoutFailed(loan_id=self.id, reason=command.reason or "refused")]

    def evolve(
        self, event: LoanApplied | LoanApproved | LoanRejected | LoanDisbursed | LoanPaidOut | LoanPayoutFailed
    ) -> Loan:
        match event:
            case LoanApplied():
                return self.model_copy(
                    update={"account_id": event.account_id, "amount": event.amount, "status": "applied"}
                )
            case LoanApproved():
                return self.model_copy(update={"status": "approved"})
            case LoanRejected():
                return self.model_copy(update={"status": "rejected"})
            case LoanDisbursed():
                return self.model_copy(update={"status": "disbursing"})
            case LoanPaidOut():
                return self.model_copy(update={"status": "paid out"})
            case LoanPayoutFailed():
                return self.model_copy(update={"status": "payout failed"})


async def apply_for_loan(command: ApplyForLoan, uow: UnitOfWork) -> None:
    loan = await uow.load(Loan, command.loan_id)
    uow.emit(loan, loan.apply(command))


async def approve_loan(command: ApproveLoan, uow: UnitOfWork) -> None:
    loan = await uow.load(Loan, command.loan_id)
    uow.emit(loan, loan.approve())


async def reject_loan(command: RejectLoan, uow: UnitOfWork) -> None:
    loan = await uow.load(Loan, command.loan_id)
    uow.emit(loan, loan.reject(command.reason))


async def disburse_loan(command: DisburseLoan, uow: UnitOfWork) -> None:
    loan = await uow.load(Loan, command.loan_id)
    uow.emit(loan, loan.disburse())


async def record_payout(command: RecordPayout, uow: UnitOfWork) -> None:
    loan = await uow.load(Loan, command.loan_id)
    uow.emit(loan, loan.record_payout(command))


# -- the payout saga -----------------------------------------------------------------------------


class LoanPayout(Saga, name="payout", key="loan_id"):
    """Pays a disbursed loan into its account, and records what the accounts service answered."""

    def react(self, event: LoanDisbursed | PayoutMade | PayoutRefused, do: Actions) -> LoanPayout:
        match event:
            case LoanDisbursed():
                do.send(PayOutLoan(loan_id=self.id, account_id=event.account_id, amount=event.amount), to="accounts")
            case PayoutMade():
                do.send(RecordPayout(loan_id=self.id, paid=True))
                do.complete()
            case PayoutRefused(reason=reason):
                do.send(RecordPayout(loan_id=self.id, paid=False, reason=reason))
                do.complete()
        return self


# -- read model ----------------------------------------------------------------------------------


class LoanBook(Projection, name="loans.book"):
    """Every loan and its status."""

    tables = ("loans",)

    def setup(self, db: Database) -> None:
        db.execute(
            "CREATE TABLE IF NOT EXISTS loans (loan_id TEXT PRIMARY KEY, account_id TEXT NOT NULL,"
            " amount TEXT NOT NULL, term_months INTEGER NOT NULL, status TEXT NOT NULL, reason TEXT,"
            " position BIGINT NOT NULL)"
        )
        db.execute("CREATE INDEX IF NOT EXISTS loans_by_status ON loans (status, position)")

    def apply(
        self,
        event: LoanApplied | LoanApproved | LoanRejected | LoanDisbursed | LoanPaidOut | LoanPayoutFailed,
        db: Database,
        record: StoredEvent,
    ) -> None:
        match event:
            case LoanApplied():
                db.execute(
                    "INSERT INTO loans (loan_id, account_id, amount, term_months, status, position)"
                    " VALUES (?, ?, ?, ?, 'applied', ?)",
                    (event.loan_id, event.account_id, str(event.amount), event.term_months, record.position),
                )
            case LoanApproved() | LoanDisbursed() | LoanPaidOut():
                status = {LoanApproved: "approved", LoanDisbursed: "disbursing", LoanPaidOut: "paid out"}[type(event)]
                db.execute("UPDATE loans SET status = ? WHERE loan_id = ?", (status, event.loan_id))
            case LoanRejected(reason=reason) | LoanPayoutFailed(reason=reason):
                status = "rejected" if isinstance(event, LoanRejected) else "payout failed"
                db.execute("UPDATE loans SET status = ?, reason = ? WHERE loan_id = ?", (status, reason, event.loan_id))

    def by_status(self, query: LoansByStatus, db: Database) -> LoanList:
        rows = db.fetch_all(
            "SELECT loan_id, account_id, amount, term_months, status, reason FROM loans"
            " WHERE status = ? ORDER BY position LIMIT ?",
            (query.status, query.limit),
        )
        return LoanList(loans=[LoanView(**row) for row in rows])


book = LoanBook()

loans = Service(
    "loans",
    description="Loan applications, decisions and payouts into the borrower's account.",
    commands={
        ApplyForLoan: apply_for_loan,
        ApproveLoan: approve_loan,
        RejectLoan: reject_loan,
        DisburseLoan: disburse_loan,
        RecordPayout: record_payout,
    },
    queries={LoansByStatus: book.by_status},
    projections=[book],
    sagas=[LoanPayout],
    subscriptions=[Subscription("accounts", categories=["payout"])],
)
