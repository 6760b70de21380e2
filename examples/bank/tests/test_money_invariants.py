"""Money is never made or lost, whatever runs at once (Hypothesis).

Random deposits, withdrawals and transfers — some to frozen accounts or in another currency, so
that they are refunded — run concurrently across four services. Once everything has settled:
the sum of all balances is exactly what was deposited minus what was withdrawn at the counter,
every transfer ended completed or failed (a failed one having moved nothing), no account is
below its overdraft limit, and each account's balance is the sum of its own movements.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from decimal import Decimal
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from examples.bank import bank
from examples.bank.accounts import Deposit, FreezeAccount, OpenAccount, Withdraw
from examples.bank.transfers import RequestTransfer
from twofold import DomainError, Runtime
from twofold.embedded import database_url_variable, embedded_runtimes, settle

ACCOUNTS = {  # id: (currency, overdraft limit)
    "a": ("EUR", Decimal(0)),
    "b": ("EUR", Decimal(50)),
    "c": ("EUR", Decimal(0)),
    "usd": ("USD", Decimal(0)),
}
amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal(80), places=2)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("deposit"), st.sampled_from(sorted(ACCOUNTS)), st.none(), amounts),
        st.tuples(st.just("withdraw"), st.sampled_from(sorted(ACCOUNTS)), st.none(), amounts),
        st.tuples(st.just("transfer"), st.sampled_from(sorted(ACCOUNTS)), st.sampled_from(sorted(ACCOUNTS)), amounts),
    ),
    min_size=1,
    max_size=16,
)
Operation = tuple[str, str, str | None, Decimal]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations=operations, freeze_c=st.booleans())
def test_the_sum_of_balances_is_what_came_in_minus_what_went_out(operations: list[Operation], freeze_c: bool) -> None:
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(run(operations, freeze_c, Path(folder)))


async def run(operations: list[Operation], freeze_c: bool, folder: Path) -> None:
    environ = {database_url_variable(n): f"sqlite:///{folder}/{n}.db" for n in bank.names}
    runtimes = embedded_runtimes(bank, environ)
    for runtime in runtimes.values():
        await runtime.start()
    try:
        await check(runtimes, operations, freeze_c)
    finally:
        for runtime in reversed(runtimes.values()):
            await runtime.stop()


async def check(runtimes: dict[str, Runtime], operations: list[Operation], freeze_c: bool) -> None:
    accounts, transfers = runtimes["accounts"], runtimes["transfers"]
    for account_id, (currency, limit) in ACCOUNTS.items():
        await accounts.execute(OpenAccount(account_id=account_id, owner="o", currency=currency, overdraft_limit=limit))
        await accounts.execute(Deposit(account_id=account_id, amount=Decimal(100)))
    if freeze_c:
        await accounts.execute(FreezeAccount(account_id="c", reason="test"))
    came_in = Decimal(100) * len(ACCOUNTS)
    went_out = Decimal(0)

    async def perform(number: int, operation: Operation) -> Decimal:
        """Run one operation; the money it brought in (+) or took out (-) at the counter."""
        kind, account_id, other, amount = operation
        with contextlib.suppress(DomainError):  # refused: no money moved
            if kind == "deposit":
                await accounts.execute(Deposit(account_id=account_id, amount=amount))
                return amount
            if kind == "withdraw":
                await accounts.execute(Withdraw(account_id=account_id, amount=amount))
                return -amount
            if other != account_id:
                currency = ACCOUNTS[account_id][0]
                await transfers.execute(
                    RequestTransfer(
                        transfer_id=f"t-{number}",
                        from_account=account_id,
                        to_account=str(other),
                        amount=amount,
                        currency=currency,
                    )
                )
        return Decimal(0)

    for moved in await asyncio.gather(*(perform(n, op) for n, op in enumerate(operations))):
        if moved > 0:
            came_in += moved
        else:
            went_out -= moved
    await settle(runtimes)

    balances = {a: await balance(accounts, a) for a in ACCOUNTS}
    assert sum(balances.values()) == came_in - went_out, balances
    for account_id, (_, limit) in ACCOUNTS.items():
        assert balances[account_id] >= -limit, (account_id, balances[account_id])
        assert balances[account_id] == await movements_sum(accounts, account_id)
    assert transfers.store is not None
    async for event in transfers.store.read_all():
        if event.type == "transfers.TransferRequested":
            ends = [e.type async for e in transfers.store.read_stream(event.stream_id)][1:]
            assert ends in (["transfers.TransferCompleted"], ["transfers.TransferFailed"]), ends


async def balance(accounts: Runtime, account_id: str) -> Decimal:
    """The balance the account's own stream says: its last movement's balance."""
    assert accounts.store is not None
    last = Decimal(0)
    async for event in accounts.store.read_stream(f"account-{account_id}"):
        if "balance" in event.data:
            last = Decimal(event.data["balance"])
    return last


async def movements_sum(accounts: Runtime, account_id: str) -> Decimal:
    assert accounts.store is not None
    total = Decimal(0)
    async for event in accounts.store.read_stream(f"account-{account_id}"):
        if event.type == "accounts.MoneyDeposited":
            total += Decimal(event.data["amount"])
        elif event.type == "accounts.MoneyWithdrawn":
            total -= Decimal(event.data["amount"])
    return total
