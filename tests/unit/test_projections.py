"""Projections kept by a runner, with their checkpoint, and the queries that wait for them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path

import pytest

import twofold.projections
from tests.monolith.messages import ProductAdded, StockReceived
from twofold import Database, NotCaughtUp, NotFound, Projection, Query, StoredEvent
from twofold.projections import ProjectionRunner, projection_failures
from twofold.queries import QueryDispatcher
from twofold.readmodels import CheckpointConflict
from twofold.readmodels.sqlite import SQLiteReadStore
from twofold.store import NewEvent
from twofold.store.memory import MemoryEventStore

WAIT = 5.0  # seconds: the most any wait below may take before the test fails


class Applied(Query):
    pass


class Everything(Query):
    pass


class Tally(Projection, name="test.tally"):
    """Counts how often each event was applied: any count above one is an event applied twice."""

    tables = ("applied",)

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at = fail_at  # raise once, at this position
        self.raised = 0

    def setup(self, db: Database) -> None:
        db.execute(
            "CREATE TABLE IF NOT EXISTS applied"
            " (position INTEGER PRIMARY KEY, sku TEXT NOT NULL, times INTEGER NOT NULL)"
        )

    def apply(self, event: StockReceived, db: Database, record: StoredEvent) -> None:
        db.execute(
            "INSERT INTO applied VALUES (?, ?, 1) ON CONFLICT (position) DO UPDATE SET times = times + 1",
            (record.position, event.sku),
        )
        if record.position == self.fail_at:
            self.fail_at = None
            self.raised += 1
            raise RuntimeError(f"cannot apply position {record.position}")

    def applied(self, query: Applied, db: Database) -> dict[int, int]:
        return {row["position"]: row["times"] for row in db.fetch_all("SELECT position, times FROM applied")}


class Gated(Tally, name="test.tally"):
    """A Tally whose first batch blocks, on the writer thread, until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.gate = threading.Event(), threading.Event()

    def apply(self, event: StockReceived, db: Database, record: StoredEvent) -> None:
        self.entered.set()
        if not self.gate.wait(WAIT):
            raise TimeoutError("the test never opened the gate")
        super().apply(event, db, record)


class Names(Projection, name="test.names"):
    tables = ("names",)

    def setup(self, db: Database) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS names (sku TEXT PRIMARY KEY, name TEXT NOT NULL)")

    def apply(self, event: ProductAdded, db: Database, record: StoredEvent) -> None:
        db.execute("INSERT INTO names VALUES (?, ?)", (event.sku, event.name))


def everything(query: Everything, db: Database) -> int:
    return len(db.fetch_all("SELECT * FROM applied")) + len(db.fetch_all("SELECT * FROM names"))


def received(sku: str = "A-1", quantity: int = 1) -> NewEvent:
    return NewEvent(StockReceived.type_name, StockReceived(sku=sku, quantity=quantity).model_dump(mode="json"))


def added(sku: str) -> NewEvent:
    return NewEvent(ProductAdded.type_name, ProductAdded(sku=sku, name=f"Thing {sku}", price=Decimal(1)).model_dump())


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


@pytest.fixture
async def runners() -> AsyncIterator[list[ProjectionRunner]]:
    """Runners a test starts; every one is stopped at the end."""
    started: list[ProjectionRunner] = []
    yield started
    for runner in started:
        await runner.stop()


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(twofold.projections, "RETRY_DELAYS", (0.01,))


async def rows(read_store: SQLiteReadStore, table: str = "applied") -> list[dict[str, object]]:
    return await read_store.read(lambda db: db.fetch_all(f"SELECT * FROM {table} ORDER BY 1"))


async def times_applied(read_store: SQLiteReadStore) -> dict[int, int]:
    return await read_store.read(lambda db: Tally().applied(Applied(), db))


async def until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` until it holds: what it reads changes without announcing itself."""
    async with asyncio.timeout(WAIT):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


# -- applying events with their checkpoint -------------------------------------------------------


async def test_catch_up_applies_every_event_and_commits_the_checkpoint_with_it(
    store: MemoryEventStore, read_store: SQLiteReadStore
) -> None:
    await store.append("product-A-1", [received() for _ in range(7)])
    runner = ProjectionRunner(Tally(), store, read_store, batch_size=3)
    await read_store.transact("test.tally", Tally().setup)

    async with asyncio.timeout(WAIT):
        await runner.catch_up()

    assert runner.position == 7
    assert await read_store.checkpoint("test.tally") == 7
    assert await times_applied(read_store) == dict.fromkeys(range(1, 8), 1)


async def test_events_the_projection_does_not_handle_still_move_its_checkpoint(
    store: MemoryEventStore, read_store: SQLiteReadStore
) -> None:
    await store.append("product-A-1", [added("A-1")])
    await store.append("product-B-2", [added("B-2"), received("B-2")])
    await store.append("product-C-3", [added("C-3")])
    runner = ProjectionRunner(Tally(), store, read_store, batch_size=2)
    await read_store.transact("test.tally", Tally().setup)

    async with asyncio.timeout(WAIT):
        await runner.catch_up()

    assert await read_store.checkpoint("test.tally") == 4
    assert await times_applied(read_store) == {3: 1}


async def test_a_batch_that_raises_leaves_the_read_model_and_checkpoint_as_they_were(
    store: MemoryEventStore, read_store: SQLiteReadStore
) -> None:
    await store.append("product-A-1", [received() for _ in range(6)])
    runner = ProjectionRunner(Tally(fail_at=5), store, read_store, batch_size=3)
    await read_store.transact("test.tally", Tally().setup)

    with pytest.raises(RuntimeError, match="cannot apply position 5"):
        async with asyncio.timeout(WAIT):
            await runner.catch_up()

    assert runner.position == 3
    assert await read_store.checkpoint("test.tally") == 3
    assert await times_applied(read_store) == {1: 1, 2: 1, 3: 1}  # position 4 was applied, then rolled back


async def test_a_running_projection_retries_a_failed_batch_until_it_succeeds(
    store: MemoryEventStore, read_store: SQLiteReadStore, runners: list[ProjectionRunner]
) -> None:
    await store.append("product-A-1", [received() for _ in range(6)])
    tally = Tally(fail_at=5)
    runner = ProjectionRunner(tally, store, read_store, batch_size=3)
    runners.append(runner)
    await runner.start()

    assert await runner.wait_for(6, WAIT)
    assert tally.raised == 1
    assert (runner.failures, runner.last_error) == (0, None)
    assert await times_applied(read_store) == dict.fromkeys(range(1, 7), 1)
    assert await projection_failures(read_store) == {}  # its record stays, before the checkpoint: history
    assert [r["position"] for r in await rows(read_store, "twofold_projection_failures")] == [4]
    await runner.rebuild()  # replayed from 0: a failure at 4 must not look current on the way there
    assert await rows(read_store, "twofold_projection_failures") == []


async def test_a_failing_runner_reports_its_failures_and_last_error(
    store: MemoryEventStore,
    read_store: SQLiteReadStore,
    runners: list[ProjectionRunner],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(twofold.projections, "RETRY_DELAYS", (60.0,))
    await store.append("product-A-1", [received() for _ in range(2)])
    runner = ProjectionRunner(Tally(fail_at=2), store, read_store)
    runners.append(runner)
    await runner.start()

    await until(lambda: runner.failures == 1)
    async with asyncio.timeout(WAIT):
        while not (failing := await projection_failures(read_store)):  # noqa: ASYNC110
            await asyncio.sleep(0.005)

    assert runner.last_error == "RuntimeError: cannot apply position 2"
    assert await read_store.checkpoint("test.tally") == 0
    assert not await runner.wait_for(2, 0.05)
    # Recorded for other processes, in a transaction of its own: the failed batch left no row.
    assert failing["test.tally"].error == "RuntimeError: cannot apply position 2"
    assert (failing["test.tally"].position, failing["test.tally"].failures) == (1, 1)
    assert await times_applied(read_store) == {}


async def test_a_live_projection_follows_new_appends(
    store: MemoryEventStore, read_store: SQLiteReadStore, runners: list[ProjectionRunner]
) -> None:
    runner = ProjectionRunner(Tally(), store, read_store, batch_size=4)
    runners.append(runner)
    await runner.start()

    for _ in range(5):
        await store.append("product-A-1", [received(), received()])
        await asyncio.sleep(0)

    assert await runner.wait_for(10, WAIT)
    assert await times_applied(read_store) == dict.fromkeys(range(1, 11), 1)


async def test_rebuild_replays_every_event_into_a_read_model_equal_to_the_live_one(
    store: MemoryEventStore, read_store: SQLiteReadStore, runners: list[ProjectionRunner], tmp_path: Path
) -> None:
    runner = ProjectionRunner(Names(), store, read_store, batch_size=3)
    runners.append(runner)
    await runner.start()
    for number in range(10):
        await store.append(f"product-{number}", [added(str(number)), received(str(number))])
    assert await runner.wait_for(20, WAIT)
    live = await rows(read_store, "names")

    await runner.rebuild()
    assert await runner.wait_for(20, WAIT)
    elsewhere = SQLiteReadStore(tmp_path / "elsewhere.db")
    try:
        fresh = ProjectionRunner(Names(), store, elsewhere, batch_size=7)
        await elsewhere.transact("test.names", Names().setup)
        async with asyncio.timeout(WAIT):
            await fresh.catch_up()
        rebuilt_elsewhere = await rows(elsewhere, "names")
    finally:
        await elsewhere.close()

    assert len(live) == 10
    assert await rows(read_store, "names") == live
    assert rebuilt_elsewhere == live


async def test_wait_for_gives_up_after_its_timeout(
    store: MemoryEventStore, read_store: SQLiteReadStore, runners: list[ProjectionRunner]
) -> None:
    runner = ProjectionRunner(Tally(), store, read_store)
    runners.append(runner)
    await runner.start()

    assert not await runner.wait_for(1, 0.05)
    assert await runner.wait_for(0, 0)


# -- two workers on one projection ---------------------------------------------------------------


async def test_a_page_applied_by_another_runner_is_refused_by_the_checkpoint_fence(
    store: MemoryEventStore, read_store: SQLiteReadStore
) -> None:
    await store.append("product-A-1", [received() for _ in range(3)])
    page = [e async for e in store.read_all()]
    first, second = (ProjectionRunner(Tally(), store, read_store) for _ in range(2))
    await read_store.transact("test.tally", Tally().setup)

    await first.apply_page(page)
    with pytest.raises(CheckpointConflict, match=r"Checkpoint of projection test\.tally moved: expected 0, actual 3"):
        await second.apply_page(page)

    assert await times_applied(read_store) == {1: 1, 2: 1, 3: 1}


async def test_two_runners_of_one_projection_on_one_read_store_never_apply_an_event_twice(
    store: MemoryEventStore, read_store: SQLiteReadStore, runners: list[ProjectionRunner], tmp_path: Path
) -> None:
    other_process = SQLiteReadStore(tmp_path / "read.db")  # the same file, through its own connections
    try:
        runners.extend(
            [
                ProjectionRunner(Tally(), store, read_store, batch_size=5),
                ProjectionRunner(Tally(), store, other_process, batch_size=3),
            ]
        )
        for runner in runners:
            await runner.start()
        for _ in range(40):
            await store.append("product-A-1", [received() for _ in range(5)])
            await asyncio.sleep(0)

        for runner in runners:
            assert await runner.wait_for(200, WAIT)
        for runner in runners:
            await runner.stop()
    finally:
        await other_process.close()

    assert await times_applied(read_store) == dict.fromkeys(range(1, 201), 1)
    assert await read_store.checkpoint("test.tally") == 200


async def test_catch_up_beside_the_running_runner_neither_fails_nor_applies_an_event_twice(
    store: MemoryEventStore, read_store: SQLiteReadStore, runners: list[ProjectionRunner]
) -> None:
    await store.append("product-A-1", [received() for _ in range(10)])
    gated = Gated()
    runner = ProjectionRunner(gated, store, read_store, batch_size=5)
    runners.append(runner)
    await runner.start()
    try:
        # The runner's task is inside its first batch (1-5); catch_up reads that same page meanwhile.
        assert await asyncio.to_thread(gated.entered.wait, WAIT)
        catching_up = asyncio.create_task(runner.catch_up())
        for _ in range(5):
            await asyncio.sleep(0)
    finally:
        gated.gate.set()

    async with asyncio.timeout(WAIT):
        await catching_up

    assert runner.position == 10
    assert await times_applied(read_store) == dict.fromkeys(range(1, 11), 1)


class HeldWakeups(MemoryEventStore):
    """A store whose live wake-ups come only when the test says, like a poll still to come round."""

    def __init__(self) -> None:
        super().__init__()
        self.wake = asyncio.Event()
        self.waits = 0

    async def wait_for_events(self, after_position: int, timeout: float) -> bool:
        self.waits += 1
        await self.wake.wait()
        self.wake.clear()
        return True


async def test_a_runner_never_reapplies_a_page_that_catch_up_applied_while_it_waited(
    read_store: SQLiteReadStore, runners: list[ProjectionRunner]
) -> None:
    store = HeldWakeups()
    await store.append("product-A-1", [received() for _ in range(5)])
    runner = ProjectionRunner(Tally(), store, read_store, batch_size=10)
    runners.append(runner)
    await runner.start()
    await until(lambda: store.waits == 1)  # applied 1-5, now waiting for more

    await store.append("product-A-1", [received() for _ in range(5)])
    async with asyncio.timeout(WAIT):
        await runner.catch_up()
    store.wake.set()  # the follower wakes and reads 6-10, which catch_up has applied already
    await until(lambda: store.waits == 2)

    assert runner.position == 10
    assert await times_applied(read_store) == dict.fromkeys(range(1, 11), 1)


# -- queries that wait for their read models -----------------------------------------------------


@pytest.fixture
async def queries(
    store: MemoryEventStore, read_store: SQLiteReadStore, runners: list[ProjectionRunner]
) -> tuple[QueryDispatcher, ProjectionRunner, ProjectionRunner]:
    """Two projections in this process: ``test.tally`` running, ``test.names`` stalled (never started)."""
    tally, names = Tally(), Names()
    running = ProjectionRunner(tally, store, read_store)
    stalled = ProjectionRunner(names, store, read_store)
    runners.append(running)
    await running.start()
    await read_store.transact("test.names", names.setup)
    dispatcher = QueryDispatcher(
        read_store,
        {Applied: tally.applied, Everything: everything},
        ["test.tally", "test.names"],
        {"test.tally": running, "test.names": stalled},
    )
    return dispatcher, running, stalled


async def test_a_query_with_min_position_answers_once_its_read_model_caught_up(
    store: MemoryEventStore, queries: tuple[QueryDispatcher, ProjectionRunner, ProjectionRunner]
) -> None:
    dispatcher, _, _ = queries
    result = await store.append("product-A-1", [received(), received()])

    assert await dispatcher.ask(Applied(), min_position=result.position, timeout=WAIT) == {1: 1, 2: 1}


async def test_a_query_whose_read_model_is_not_caught_up_in_time_raises_not_caught_up(
    store: MemoryEventStore, queries: tuple[QueryDispatcher, ProjectionRunner, ProjectionRunner]
) -> None:
    dispatcher, _, _ = queries
    await store.append("product-A-1", [added("A-1")])

    with pytest.raises(NotCaughtUp, match=r"required position 1, current 0 after 0\.05s") as raised:
        await dispatcher.ask(Everything(), min_position=1, timeout=0.05)

    assert (raised.value.required, raised.value.current, raised.value.timeout) == (1, 0, 0.05)


async def test_a_query_handled_by_a_projection_method_waits_only_on_its_own_projection(
    store: MemoryEventStore, queries: tuple[QueryDispatcher, ProjectionRunner, ProjectionRunner]
) -> None:
    dispatcher, running, stalled = queries
    result = await store.append("product-A-1", [added("A-1"), received()])

    assert await dispatcher.ask(Applied(), min_position=2, timeout=WAIT) == {2: 1}
    assert (running.position, stalled.position, result.position) == (2, 0, 2)


async def test_a_query_without_min_position_answers_at_once(
    store: MemoryEventStore, queries: tuple[QueryDispatcher, ProjectionRunner, ProjectionRunner]
) -> None:
    dispatcher, _, _ = queries
    await store.append("product-A-1", [added("A-1")])

    assert await dispatcher.ask(Everything()) == 0


async def test_an_undeclared_query_is_not_found(
    queries: tuple[QueryDispatcher, ProjectionRunner, ProjectionRunner],
) -> None:
    dispatcher, _, _ = queries

    class Unknown(Query):
        pass

    with pytest.raises(NotFound, match="No handler for query Unknown"):
        await dispatcher.ask(Unknown())


async def test_a_query_waits_on_a_projection_run_by_another_process_through_its_checkpoint(
    store: MemoryEventStore, read_store: SQLiteReadStore, runners: list[ProjectionRunner], tmp_path: Path
) -> None:
    tally = Tally()
    dispatcher = QueryDispatcher(read_store, {Applied: tally.applied}, ["test.tally"], {})
    worker_store = SQLiteReadStore(tmp_path / "read.db")
    try:
        worker = ProjectionRunner(tally, store, worker_store)
        runners.append(worker)
        await worker.start()
        await store.append("product-A-1", [received() for _ in range(3)])

        assert await dispatcher.ask(Applied(), min_position=3, timeout=WAIT) == {1: 1, 2: 1, 3: 1}
        with pytest.raises(NotCaughtUp, match="required position 4, current 3"):
            await dispatcher.ask(Applied(), min_position=4, timeout=0.05)
        await worker.stop()
    finally:
        await worker_store.close()
