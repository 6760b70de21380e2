"""The bank as ``make run-cluster APP=bank`` runs it: PostgreSQL, NATS and a process per part.

Transfers cross the accounts and transfers services over JetStream (commands to a work queue,
events through the relay and back in through a consumer); the fraud service imports every
movement the same way. A burst of concurrent transfers must leave the sum of balances unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from examples.bank import bank as system
from twofold.cluster import Cluster
from twofold.http.gateway import create_gateway

pytestmark = pytest.mark.slow

SETTLE_WITHIN = 60.0  # seconds a transfer may take to settle across the cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster("examples.bank:bank", system, tmp_path_factory.mktemp("bank-cluster"), query_replicas=1) as running:
        yield running


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    app = create_gateway(system, cluster.upstreams())
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://bank") as http:
        yield http


async def ok(client: httpx.AsyncClient, command: str, **body: Any) -> dict[str, Any]:
    response = await client.post(f"/commands/{command}", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def eventually(client: httpx.AsyncClient, query: str, check: Any, **params: Any) -> dict[str, Any]:
    """The query's answer once ``check(answer)`` holds."""
    deadline = asyncio.get_running_loop().time() + SETTLE_WITHIN
    while True:
        response = await client.get(f"/queries/{query}", params=params)
        answer: dict[str, Any] = response.json() if response.status_code == 200 else {}
        if answer and check(answer):
            return answer
        assert asyncio.get_running_loop().time() < deadline, (query, params, response.text)
        await asyncio.sleep(0.1)


async def balance_is(client: httpx.AsyncClient, account_id: str, expected: str) -> None:
    await eventually(client, "Balance", lambda a: Decimal(a["balance"]) == Decimal(expected), account_id=account_id)


async def test_transfers_complete_or_are_refunded_across_the_cluster(client: httpx.AsyncClient) -> None:
    await ok(client, "OpenAccount", account_id="x-1", owner="ada")
    await ok(client, "Deposit", account_id="x-1", amount="100.00")
    await ok(client, "OpenAccount", account_id="x-2", owner="bob")
    await ok(client, "OpenAccount", account_id="x-usd", owner="cy", currency="USD")

    await ok(client, "RequestTransfer", transfer_id="xt-1", from_account="x-1", to_account="x-2", amount="30.00")
    await ok(client, "RequestTransfer", transfer_id="xt-2", from_account="x-1", to_account="x-usd", amount="20.00")

    done = await eventually(client, "TransferStatus", lambda a: a["status"] != "requested", transfer_id="xt-1")
    refunded = await eventually(client, "TransferStatus", lambda a: a["status"] != "requested", transfer_id="xt-2")
    assert done["status"] == "completed"
    assert (refunded["status"], refunded["reason"]) == ("failed", "refunded: account x-usd holds USD, not EUR")
    await balance_is(client, "x-1", "70.00")
    await balance_is(client, "x-2", "30.00")


async def test_concurrent_transfers_keep_the_sum_of_balances(client: httpx.AsyncClient) -> None:
    ring = [f"r-{n}" for n in range(4)]
    for account_id in ring:
        await ok(client, "OpenAccount", account_id=account_id, owner="ring")
        await ok(client, "Deposit", account_id=account_id, amount="50.00")

    await asyncio.gather(
        *(
            ok(
                client,
                "RequestTransfer",
                transfer_id=f"rt-{n}",
                from_account=ring[n % 4],
                to_account=ring[(n + 1) % 4],
                amount="7.50",
            )
            for n in range(24)
        )
    )

    for n in range(24):
        await eventually(client, "TransferStatus", lambda a: a["status"] != "requested", transfer_id=f"rt-{n}")
    balances = [Decimal((await eventually(client, "Balance", lambda a: True, account_id=a))["balance"]) for a in ring]
    assert sum(balances) == Decimal(200)
    assert all(b >= 0 for b in balances)


async def test_fraud_alerts_and_loans_work_through_the_cluster(client: httpx.AsyncClient) -> None:
    await ok(client, "OpenAccount", account_id="f-1", owner="eve")
    for amount in ("9500.00", "9600.00", "9700.00"):
        await ok(client, "Deposit", account_id="f-1", amount=amount)
    await ok(client, "ApplyForLoan", loan_id="fl-1", account_id="f-1", amount="1000.00", term_months=12)
    await ok(client, "ApproveLoan", loan_id="fl-1")
    await ok(client, "DisburseLoan", loan_id="fl-1")

    alerts = await eventually(client, "OpenAlerts", lambda a: a["alerts"], account_id="f-1")
    assert [a["rule"] for a in alerts["alerts"]] == ["structuring"]
    await eventually(
        client, "LoansByStatus", lambda a: any(loan["loan_id"] == "fl-1" for loan in a["loans"]), status="paid out"
    )
    await balance_is(client, "f-1", "29800.00")
