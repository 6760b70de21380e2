"""The bank end to end in one process: four services, two sagas, one API in front.

Each test runs the embedded mode on SQLite files and then on real PostgreSQL databases, and
drives it over HTTP through the gateway as a client would.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from examples.bank import bank as system
from twofold import Runtime
from twofold.embedded import embedded_runtimes, settle
from twofold.http.gateway import gateway_in_process
from twofold.testing.servers import PostgresServer

SETTLE_WITHIN = 10.0  # seconds a saga may take to finish
_databases = itertools.count(1)


class Bank:
    def __init__(self, client: httpx.AsyncClient, runtimes: dict[str, Runtime]) -> None:
        self.client, self.runtimes = client, runtimes
        self.positions: dict[str, int] = {}  # each service's own store: positions are per service

    async def command(self, type_name: str, **body: Any) -> httpx.Response:
        response = await self.client.post(f"/commands/{type_name}", json=body)
        if response.status_code == 200 and response.json()["position"] is not None:
            owner = system.owner_of_command(type_name)
            assert owner is not None
            self.positions[owner.name] = max(self.positions.get(owner.name, 0), response.json()["position"])
        return response

    async def ok(self, type_name: str, **body: Any) -> dict[str, Any]:
        response = await self.command(type_name, **body)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def query(self, type_name: str, *, fresh: bool = False, **params: Any) -> httpx.Response:
        owner = system.owner_of_query(type_name)
        assert owner is not None
        headers = {"X-Min-Position": str(self.positions.get(owner.name, 0))} if fresh else {}
        return await self.client.get(f"/queries/{type_name}", params=params, headers=headers)

    async def open(self, account_id: str, deposit: str | None = None, **options: Any) -> None:
        await self.ok("OpenAccount", account_id=account_id, owner=f"owner-{account_id}", **options)
        if deposit is not None:
            await self.ok("Deposit", account_id=account_id, amount=deposit)

    async def balance(self, account_id: str) -> Decimal:
        """The balance, reading this client's own writes."""
        response = await self.query("Balance", fresh=True, account_id=account_id)
        assert response.status_code == 200, response.text
        return Decimal(response.json()["balance"])

    async def settled_transfer(self, transfer_id: str) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + SETTLE_WITHIN
        while True:
            response = await self.query("TransferStatus", transfer_id=transfer_id)
            if response.status_code == 200 and response.json()["status"] != "requested":
                result: dict[str, Any] = response.json()
                return result
            assert asyncio.get_running_loop().time() < deadline, f"{transfer_id}: {response.text}"
            await asyncio.sleep(0.02)

    async def settled(self) -> None:
        """Until the sagas and the fraud service have nothing left to do."""
        await settle(self.runtimes)


@pytest.fixture(params=["sqlite", "postgresql"])
def environ(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)  # SQLite: data/<service>.db under the working directory
    if request.param == "sqlite":
        return {}
    server: PostgresServer = request.getfixturevalue("postgres_server")
    run = next(_databases)
    return server.databases_for(system.names, prefix=f"bank_{run}_")


@pytest.fixture
async def bank(environ: dict[str, str]) -> AsyncIterator[Bank]:
    runtimes = embedded_runtimes(system, environ=environ)
    app = gateway_in_process(system, runtimes)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://bank") as c:
        yield Bank(c, runtimes)


# -- accounts ------------------------------------------------------------------------------------


async def test_deposits_and_withdrawals_move_the_balance_exactly_and_reads_see_the_writes(bank: Bank) -> None:
    await bank.open("a-1", deposit="0.10")
    await bank.ok("Deposit", account_id="a-1", amount="0.20")
    await bank.ok("Withdraw", account_id="a-1", amount="0.05")

    assert await bank.balance("a-1") == Decimal("0.25")  # exact: no float ever touched it


async def test_a_withdrawal_may_use_the_overdraft_but_never_go_past_it(bank: Bank) -> None:
    await bank.open("a-1", deposit="50.00", overdraft_limit="100.00")

    refused = await bank.command("Withdraw", account_id="a-1", amount="150.01")
    await bank.ok("Withdraw", account_id="a-1", amount="150.00")

    assert refused.status_code == 409
    assert "may go 100.00 below zero" in refused.json()["detail"]
    assert await bank.balance("a-1") == Decimal("-100.00")


async def test_concurrent_withdrawals_never_take_an_account_below_its_limit(bank: Bank) -> None:
    await bank.open("a-1", deposit="100.00")

    async def withdraw() -> httpx.Response:
        """As a client should: a concurrency conflict (the account moved on while deciding) is tried again."""
        while True:
            answer = await bank.command("Withdraw", account_id="a-1", amount="10.00")
            if answer.status_code != 409 or answer.json()["type"] != "urn:twofold:problem:concurrency":
                return answer

    answers = await asyncio.gather(*(withdraw() for _ in range(16)))

    assert sorted(a.status_code for a in answers) == [200] * 10 + [409] * 6
    assert {a.json()["type"] for a in answers if a.status_code == 409} == {"urn:twofold:problem:rejected"}
    assert await bank.balance("a-1") == Decimal("0.00")


@pytest.mark.parametrize(
    ("command", "field", "value"),
    [
        ("Deposit", "amount", "0.001"),
        ("Deposit", "amount", "-5"),
        ("Deposit", "amount", "1e400"),
        ("Deposit", "amount", "NaN"),
        ("OpenAccount", "currency", "euro"),
        ("OpenAccount", "overdraft_limit", "-1"),
    ],
)
async def test_money_that_is_not_exact_positive_cents_is_refused_naming_the_field(
    bank: Bank, command: str, field: str, value: str
) -> None:
    valid = {"Deposit": {"account_id": "a-1", "amount": "1.00"}, "OpenAccount": {"account_id": "a-1", "owner": "o"}}
    response = await bank.command(command, **{**valid[command], field: value})

    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == [field]


async def test_a_statement_pages_through_movements_between_two_times(bank: Bank) -> None:
    await bank.open("a-1")
    for cents in range(1, 8):
        await bank.ok("Deposit", account_id="a-1", amount=f"0.0{cents}")
    everything = (await bank.query("Statement", fresh=True, account_id="a-1", limit=100)).json()["movements"]
    since = everything[2]["at"]

    first = (await bank.query("Statement", account_id="a-1", since=since, limit=3)).json()
    second = (await bank.query("Statement", account_id="a-1", since=since, after=first["next"], limit=3)).json()

    amounts = [m["amount"] for m in first["movements"] + second["movements"]]
    assert amounts == ["0.03", "0.04", "0.05", "0.06", "0.07"]
    assert second["next"] is None
    assert [m["balance"] for m in everything][-1] == "0.28"
    until = (await bank.query("Statement", account_id="a-1", until=since)).json()["movements"]
    assert [m["amount"] for m in until] == ["0.01", "0.02"]


# -- transfers -----------------------------------------------------------------------------------


async def test_a_transfer_debits_one_account_and_credits_the_other(bank: Bank) -> None:
    await bank.open("a-1", deposit="100.00")
    await bank.open("a-2")

    await bank.ok("RequestTransfer", transfer_id="t-1", from_account="a-1", to_account="a-2", amount="30.00")

    assert (await bank.settled_transfer("t-1"))["status"] == "completed"
    await bank.settled()
    assert (await bank.balance("a-1"), await bank.balance("a-2")) == (Decimal("70.00"), Decimal("30.00"))


async def test_a_transfer_without_the_money_fails_and_moves_nothing(bank: Bank) -> None:
    await bank.open("a-1", deposit="10.00")
    await bank.open("a-2")

    await bank.ok("RequestTransfer", transfer_id="t-1", from_account="a-1", to_account="a-2", amount="10.01")

    failed = await bank.settled_transfer("t-1")
    assert (failed["status"], failed["reason"]) == ("failed", "account a-1 has 10.00 EUR and may go 0.00 below zero")
    assert (await bank.balance("a-1"), await bank.balance("a-2")) == (Decimal("10.00"), Decimal(0))


@pytest.mark.parametrize("destination", ["frozen", "closed", "dollars", "unknown"])
async def test_a_transfer_the_destination_refuses_is_refunded(bank: Bank, destination: str) -> None:
    await bank.open("a-1", deposit="100.00")
    if destination == "frozen":
        await bank.open("a-2")
        await bank.ok("FreezeAccount", account_id="a-2", reason="court order")
    elif destination == "closed":
        await bank.open("a-2")
        await bank.ok("CloseAccount", account_id="a-2")
    elif destination == "dollars":
        await bank.open("a-2", currency="USD")

    await bank.ok("RequestTransfer", transfer_id="t-1", from_account="a-1", to_account="a-2", amount="40.00")

    failed = await bank.settled_transfer("t-1")
    assert failed["status"] == "failed"
    assert failed["reason"].startswith("refunded: account a-2")
    await bank.settled()
    assert await bank.balance("a-1") == Decimal("100.00")
    statement = (await bank.query("Statement", fresh=True, account_id="a-1")).json()["movements"]
    assert [(m["kind"], m["amount"], m["reference"]) for m in statement][1:] == [
        ("withdrawal", "40.00", "transfer t-1"),
        ("deposit", "40.00", "refund t-1"),
    ]


async def test_an_account_closes_only_once_empty(bank: Bank) -> None:
    await bank.open("a-1", deposit="5.00")

    refused = await bank.command("CloseAccount", account_id="a-1")
    await bank.ok("Withdraw", account_id="a-1", amount="5.00")
    await bank.ok("CloseAccount", account_id="a-1")
    deposit = await bank.command("Deposit", account_id="a-1", amount="1.00")

    assert (refused.status_code, refused.json()["detail"]) == (409, "account a-1 still holds 5.00 EUR: empty it first")
    assert (deposit.status_code, deposit.json()["detail"]) == (409, "account a-1 is closed")
    assert (await bank.query("Balance", fresh=True, account_id="a-1")).json()["status"] == "closed"


async def test_a_transfer_to_the_same_account_is_refused_at_the_boundary(bank: Bank) -> None:
    body = {"transfer_id": "t-1", "from_account": "a-1", "to_account": "a-1", "amount": "1"}
    response = await bank.command("RequestTransfer", **body)

    assert response.status_code == 422
    assert "must differ" in response.text


# -- loans ---------------------------------------------------------------------------------------


async def test_an_approved_loan_is_paid_into_its_account(bank: Bank) -> None:
    await bank.open("a-1")
    await bank.ok("ApplyForLoan", loan_id="l-1", account_id="a-1", amount="5000.00", term_months=24)
    await bank.ok("ApplyForLoan", loan_id="l-2", account_id="a-1", amount="9.99", term_months=1)

    refused = await bank.command("DisburseLoan", loan_id="l-1")  # not approved yet
    await bank.ok("ApproveLoan", loan_id="l-1")
    await bank.ok("RejectLoan", loan_id="l-2", reason="income too low")
    await bank.ok("DisburseLoan", loan_id="l-1")
    await bank.settled()

    assert refused.status_code == 409
    assert await bank.balance("a-1") == Decimal("5000.00")
    paid = (await bank.query("LoansByStatus", fresh=True, status="paid out")).json()["loans"]
    rejected = (await bank.query("LoansByStatus", status="rejected")).json()["loans"]
    assert [loan["loan_id"] for loan in paid] == ["l-1"]
    assert [(loan["loan_id"], loan["reason"]) for loan in rejected] == [("l-2", "income too low")]


async def test_a_loan_paid_towards_a_frozen_account_is_recorded_as_failed(bank: Bank) -> None:
    await bank.open("a-1")
    await bank.ok("FreezeAccount", account_id="a-1", reason="fraud suspected")
    await bank.ok("ApplyForLoan", loan_id="l-1", account_id="a-1", amount="100.00", term_months=12)
    await bank.ok("ApproveLoan", loan_id="l-1")
    await bank.ok("DisburseLoan", loan_id="l-1")
    await bank.settled()

    failed = (await bank.query("LoansByStatus", fresh=True, status="payout failed")).json()["loans"]
    assert [(loan["loan_id"], loan["reason"]) for loan in failed] == [("l-1", "account a-1 is frozen")]
    assert await bank.balance("a-1") == Decimal(0)


# -- fraud ---------------------------------------------------------------------------------------


async def alerts(bank: Bank, account_id: str) -> list[dict[str, Any]]:
    await bank.settled()
    found: list[dict[str, Any]] = (await bank.query("OpenAlerts", account_id=account_id)).json()["alerts"]
    return found


async def test_five_withdrawals_within_a_minute_raise_one_alert_listing_them(bank: Bank) -> None:
    await bank.open("a-1", deposit="100.00")
    for _ in range(6):
        await bank.ok("Withdraw", account_id="a-1", amount="1.00")

    [alert] = await alerts(bank, "a-1")
    assert alert["rule"] == "rapid-withdrawals"
    assert [e["type"] for e in alert["events"]] == ["accounts.MoneyWithdrawn"] * 5


async def test_a_large_transfer_to_an_account_opened_minutes_ago_raises_an_alert(bank: Bank) -> None:
    await bank.open("a-1", deposit="50000.00")
    await bank.open("fresh")
    await bank.ok("RequestTransfer", transfer_id="t-1", from_account="a-1", to_account="fresh", amount="12000.00")
    await bank.settled_transfer("t-1")

    [alert] = await alerts(bank, "fresh")
    assert alert["rule"] == "new-account-large-credit"
    assert [(e["type"], e["amount"]) for e in alert["events"]] == [("accounts.MoneyDeposited", "12000.00")]
    assert await alerts(bank, "a-1") == []


async def test_movements_just_under_the_reporting_threshold_raise_a_structuring_alert(bank: Bank) -> None:
    await bank.open("a-1")
    for amount in ("9500.00", "120.00", "9900.00", "9999.99"):
        await bank.ok("Deposit", account_id="a-1", amount=amount)

    [alert] = await alerts(bank, "a-1")
    assert alert["rule"] == "structuring"
    assert [e["amount"] for e in alert["events"]] == ["9500.00", "9900.00", "9999.99"]
