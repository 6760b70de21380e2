"""The bank: accounts that never go below their limit, transfers as sagas, loans, and fraud detection.

    accounts   accounts and every movement of money; statements; never below the overdraft limit
    transfers  debit, credit, and a refund when the credit is refused (a saga)
    loans      applications, decisions, payouts into the borrower's account (a saga)
    fraud      alerts raised as patterns appear in the accounts' movements

twofold serve examples.bank:bank       # embedded: every service in one process (make run APP=bank)
twofold cluster examples.bank:bank     # a process per part, on PostgreSQL and NATS (make run-cluster APP=bank)
"""

from examples.bank.accounts import accounts
from examples.bank.fraud import fraud
from examples.bank.loans import loans
from examples.bank.transfers import transfers
from twofold import System

bank = System(
    "bank",
    [accounts, transfers, loans, fraud],
    description="A bank in four services: accounts with exact money and overdraft limits, transfers and loan"
    " payouts as sagas, and fraud alerts raised as movements happen.",
)

__all__ = ["accounts", "bank", "fraud", "loans", "transfers"]
