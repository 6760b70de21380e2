"""A projection over events of several tenants: each event applied once, in its own tenant's read store."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import twofold.projections
from tests.monolith.messages import StockReceived
from tests.unit.test_projections import Applied, Tally
from twofold.projections import ProjectionRunner
from twofold.readmodels import ReadStore
from twofold.readmodels.sqlite import SQLiteReadStore
from twofold.store import NewEvent
from twofold.store.memory import MemoryEventStore
from twofold.testing import projection_scenario

WAIT = 5.0
TENANTS = (None, "acme", "globex")


def received(sku: str, tenant: str | None) -> NewEvent:
    metadata = {"tenant": tenant} if tenant else {}
    return NewEvent(StockReceived.type_name, StockReceived(sku=sku, quantity=1).model_dump(), metadata)


async def applied(read_store: ReadStore, tenant: str | None) -> dict[int, int]:
    store = read_store if tenant is None else read_store.for_tenant(tenant)
    return await store.read(lambda db: Tally().applied(Applied(), db))


@pytest.fixture
async def store() -> AsyncIterator[MemoryEventStore]:
    store = MemoryEventStore()
    yield store
    await store.close()


@pytest.fixture
async def read_store(tmp_path: Path) -> AsyncIterator[SQLiteReadStore]:
    read_store = SQLiteReadStore(tmp_path / "read.db")
    yield read_store
    await read_store.close()


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(twofold.projections, "RETRY_DELAYS", (0.01,))


async def append_round(store: MemoryEventStore, rounds: int = 1) -> dict[str | None, list[int]]:
    """``rounds`` events per tenant (and untenanted), interleaved; returns each tenant's positions."""
    positions: dict[str | None, list[int]] = {t: [] for t in TENANTS}
    for number in range(rounds):
        for tenant in TENANTS:
            result = await store.append(f"product-{tenant}-{number}", [received(f"{tenant}-{number}", tenant)])
            positions[tenant].append(result.position)
    return positions


async def test_each_event_is_applied_once_in_its_own_tenant_s_read_store(
    store: MemoryEventStore, read_store: SQLiteReadStore
) -> None:
    positions = await append_round(store, rounds=3)
    runner = ProjectionRunner(Tally(), store, read_store, batch_size=4)
    await read_store.transact("test.tally", Tally().setup)

    async with asyncio.timeout(WAIT):
        await runner.catch_up()

    for tenant in TENANTS:
        assert await applied(read_store, tenant) == dict.fromkeys(positions[tenant], 1)
    assert runner.position == 9
    assert await read_store.for_tenant("acme").checkpoint("test.tally") == positions["acme"][-1]


async def test_a_crash_after_the_tenants_part_of_a_page_applies_nothing_twice(
    store: MemoryEventStore, read_store: SQLiteReadStore
) -> None:
    positions = await append_round(store)  # untenanted at 1, acme at 2, globex at 3
    runner = ProjectionRunner(Tally(fail_at=positions[None][0]), store, read_store)
    await read_store.transact("test.tally", Tally().setup)

    with pytest.raises(RuntimeError, match="cannot apply position 1"):
        await runner.catch_up()
    assert runner.position == 0
    assert await applied(read_store, "acme") == {2: 1}  # committed before the main store's part failed

    await runner.catch_up()  # the page again: the tenants' parts are found done

    assert [await applied(read_store, t) for t in TENANTS] == [{1: 1}, {2: 1}, {3: 1}]


async def test_a_page_applied_twice_at_once_by_one_runner_applies_its_untenanted_events_once(
    store: MemoryEventStore, read_store: SQLiteReadStore
) -> None:
    # As when catch_up applies a page while the runner's own task applies it too: whichever
    # commits second must be fenced by the checkpoint it read first, not by the one the other
    # moved on while it was applying the page's tenants' part.
    await append_round(store)  # untenanted at 1, acme at 2, globex at 3
    page = [e async for e in store.read_all(1, 10)]
    runner = ProjectionRunner(Tally(), store, read_store)
    await read_store.transact("test.tally", Tally().setup)

    outcomes = await asyncio.gather(runner.apply_page(page), runner.apply_page(page), return_exceptions=True)

    assert [await applied(read_store, t) for t in TENANTS] == [{1: 1}, {2: 1}, {3: 1}]
    assert [type(o).__name__ for o in outcomes].count("CheckpointConflict") <= 1


async def test_two_runners_on_one_read_store_never_apply_a_tenant_s_event_twice(
    store: MemoryEventStore, read_store: SQLiteReadStore, tmp_path: Path
) -> None:
    other_process = SQLiteReadStore(tmp_path / "read.db")
    runners = [
        ProjectionRunner(Tally(), store, read_store, batch_size=5),
        ProjectionRunner(Tally(), store, other_process, batch_size=3),
    ]
    try:
        for runner in runners:
            await runner.start()
        positions = await append_round(store, rounds=30)
        for runner in runners:
            assert await runner.wait_for(90, WAIT)
    finally:
        for runner in runners:
            await runner.stop()
        await other_process.close()

    for tenant in TENANTS:
        assert await applied(read_store, tenant) == dict.fromkeys(positions[tenant], 1)


async def test_rebuild_resets_every_tenant_s_read_model_too(
    store: MemoryEventStore, read_store: SQLiteReadStore
) -> None:
    positions = await append_round(store, rounds=2)
    runner = ProjectionRunner(Tally(), store, read_store)
    try:
        await runner.start()
        assert await runner.wait_for(6, WAIT)

        await runner.rebuild()
        assert await runner.wait_for(6, WAIT)
    finally:
        await runner.stop()

    for tenant in TENANTS:
        assert await applied(read_store, tenant) == dict.fromkeys(positions[tenant], 1)


def test_a_query_for_a_tenant_reads_that_tenant_s_rows_only() -> None:
    tally = (
        projection_scenario(Tally())
        .given(StockReceived(sku="A-1", quantity=1))
        .given(StockReceived(sku="B-2", quantity=1), tenant="acme")
        .given(StockReceived(sku="C-3", quantity=1), tenant="globex")
    )

    tally.then_query(Applied(), {1: 1})
    tally.then_query(Applied(), {2: 1}, tenant="acme")
    tally.then_query(Applied(), {3: 1}, tenant="globex")
    tally.then_query(Applied(), {}, tenant="newcomer")  # tables set up, nothing in them


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    tenants=st.lists(st.sampled_from(TENANTS), min_size=1, max_size=25),
    batch_size=st.integers(1, 6),
    fail_at=st.none() | st.integers(1, 25),
)
async def test_whatever_the_interleaving_and_the_crash_every_event_is_applied_once_in_its_tenant(
    tenants: list[str | None], batch_size: int, fail_at: int | None
) -> None:
    store = MemoryEventStore()
    with tempfile.TemporaryDirectory() as folder:
        read_store = SQLiteReadStore(Path(folder) / "read.db")
        try:
            expected: dict[str | None, dict[int, int]] = {t: {} for t in TENANTS}
            for number, tenant in enumerate(tenants):
                result = await store.append(f"product-{number}", [received(str(number), tenant)])
                expected[tenant][result.position] = 1
            runner = ProjectionRunner(Tally(fail_at=fail_at), store, read_store, batch_size=batch_size)
            await read_store.transact("test.tally", Tally().setup)
            for _ in range(2):  # a crash at fail_at stops the first catch-up; the second resumes
                try:
                    await runner.catch_up()
                except RuntimeError:
                    continue
            for tenant in TENANTS:
                if expected[tenant] or tenant is None:
                    assert await applied(read_store, tenant) == expected[tenant]
        finally:
            await read_store.close()
            await store.close()


async def test_the_same_page_applied_twice_at_once_is_applied_once(
    store: MemoryEventStore, read_store: SQLiteReadStore
) -> None:
    await append_round(store, rounds=2)
    runner = ProjectionRunner(Tally(), store, read_store)
    await read_store.transact("test.tally", Tally().setup)
    page = [e async for e in store.read_all()]

    # Both start at position 0; one commits first while the other is still applying the page's
    # tenants' part: the other must then be refused at its own starting position, not the new one.
    outcomes = await asyncio.gather(runner.apply_page(page), runner.apply_page(page), return_exceptions=True)

    assert [type(o).__name__ for o in outcomes].count("NoneType") >= 1
    assert set((await applied(read_store, None)).values()) == {1}
    assert runner.position == 6
