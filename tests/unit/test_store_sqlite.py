"""What only the SQLite event store promises: a file that outlives the process, several processes
on one file, durability levels, and no raw sqlite3 error ever reaching the caller.

The shared rules are in the contract suite (tests/contract/test_store_sqlite.py). Two store objects
on one file stand in for two processes: each has its own connections and its own notifier.
"""

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import twofold.store.sqlite as sqlite_module
from twofold.errors import ConcurrencyError, StoreError, TwofoldError
from twofold.store import NO_STREAM, NewEvent, StoredEvent
from twofold.store.sqlite import Durability, SQLiteEventStore

WAIT = 5.0


def _events(count: int) -> list[NewEvent]:
    return [NewEvent("test.Happened", {"n": n}) for n in range(count)]


async def _read_all(store: SQLiteEventStore) -> list[StoredEvent]:
    return [event async for event in store.read_all()]


async def _take(subscription: AsyncIterator[StoredEvent], count: int) -> list[StoredEvent]:
    return [await anext(subscription) for _ in range(count)]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteEventStore]:
    store = SQLiteEventStore(tmp_path / "events.db")
    yield store
    await store.close()


@pytest.fixture
async def other(store: SQLiteEventStore) -> AsyncIterator[SQLiteEventStore]:
    """A second store on the same file, as another process would open it."""
    other = SQLiteEventStore(store.path)
    yield other
    await other.close()


# -- the file outlives the store ---------------------------------------------------------------


async def test_events_and_command_results_survive_closing_and_reopening_the_file(tmp_path: Path) -> None:
    first = SQLiteEventStore(tmp_path / "events.db")
    result = await first.append("order-1", _events(3), NO_STREAM, command_id="cmd-1")
    await first.append("cart-1", _events(1))
    before = await _read_all(first)
    await first.close()

    reopened = SQLiteEventStore(tmp_path / "events.db")
    try:
        assert await _read_all(reopened) == before
        assert await reopened.command_result("cmd-1") == result
        assert await reopened.append("order-1", _events(9), NO_STREAM, command_id="cmd-1") == result
        continued = await reopened.append("order-1", _events(1), 3)
        assert [(e.position, e.version) for e in continued.events] == [(5, 4)]
    finally:
        await reopened.close()


async def test_the_folder_of_the_database_file_is_created_when_missing(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "data" / "shop" / "events.db")
    try:
        await store.append("order-1", _events(1))
    finally:
        await store.close()
    assert (tmp_path / "data" / "shop" / "events.db").is_file()


# -- several processes on one file -------------------------------------------------------------


async def test_two_stores_on_one_file_never_hand_out_the_same_position(
    store: SQLiteEventStore, other: SQLiteEventStore
) -> None:
    async def write(target: SQLiteEventStore, stream_id: str) -> list[int]:
        positions = []
        for _ in range(40):
            result = await target.append(stream_id, _events(3))
            positions += [e.position for e in result.events]
        return positions

    mine, theirs, shared_a, shared_b = await asyncio.gather(
        write(store, "mine-1"), write(other, "theirs-1"), write(store, "shared-1"), write(other, "shared-1")
    )
    handed_out = mine + theirs + shared_a + shared_b
    assert sorted(handed_out) == list(range(1, 481))
    assert [e.version async for e in other.read_stream("shared-1")] == list(range(1, 241))
    assert await _read_all(store) == await _read_all(other)


async def test_expected_versions_and_command_ids_are_checked_against_the_other_stores_writes(
    store: SQLiteEventStore, other: SQLiteEventStore
) -> None:
    await other.append("order-1", _events(2), NO_STREAM)
    with pytest.raises(ConcurrencyError, match=r"^Wrong expected version for stream order-1: expected 0, actual 2$"):
        await store.append("order-1", _events(1), 0)
    recorded = await other.append("order-1", _events(1), 2, command_id="cmd-1")
    assert await store.append("order-1", _events(1), 0, command_id="cmd-1") == recorded
    assert await store.stream_version("order-1") == 3


async def test_a_subscriber_on_one_store_sees_appends_made_through_another(
    store: SQLiteEventStore, other: SQLiteEventStore
) -> None:
    # Nothing in this process announces the other store's commits: the subscriber finds them by polling.
    subscription = store.subscribe(categories={"order"})
    try:
        async with asyncio.timeout(WAIT), asyncio.TaskGroup() as group:
            seen = group.create_task(_take(subscription, 4))
            await asyncio.sleep(0.05)
            await other.append("order-1", _events(2))
            await other.append("cart-1", _events(1))
            await other.append("order-2", _events(2))
    finally:
        await subscription.aclose()
    assert [(e.position, e.stream_id) for e in seen.result()] == [
        (1, "order-1"),
        (2, "order-1"),
        (4, "order-2"),
        (5, "order-2"),
    ]


async def test_wait_for_events_notices_an_append_made_through_another_store(
    store: SQLiteEventStore, other: SQLiteEventStore
) -> None:
    async with asyncio.timeout(WAIT), asyncio.TaskGroup() as group:
        waiting = group.create_task(store.wait_for_events(0, timeout=60))
        await asyncio.sleep(0.05)
        await other.append("order-1", _events(1))
    assert waiting.result() is True


# -- durability --------------------------------------------------------------------------------


def _synchronous(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA synchronous").fetchone()[0])


@pytest.mark.parametrize(("durability", "level"), [("full", 2), ("normal", 1)])
async def test_durability_sets_how_often_every_connection_syncs_the_log(
    tmp_path: Path, durability: Durability, level: int
) -> None:
    store = SQLiteEventStore(tmp_path / "events.db", durability=durability)
    try:
        await store.append("order-1", _events(1))
        # SQLite's own codes: 2 is FULL (sync on every commit), 1 is NORMAL (sync at checkpoints).
        assert await store._threads.write(_synchronous) == level
        assert await store._threads.read(_synchronous) == level
    finally:
        await store.close()


async def test_durability_is_full_unless_asked_otherwise(store: SQLiteEventStore) -> None:
    assert await store._threads.write(_synchronous) == 2


async def test_an_unknown_durability_is_a_value_error_naming_the_choices(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"^Unknown durability 'ful': use 'full' \(survives a power cut\) or 'normal'$"
    ):
        SQLiteEventStore(tmp_path / "events.db", durability="ful")  # type: ignore[arg-type]
    assert not (tmp_path / "events.db").exists()


# -- driver errors become twofold's -----------------------------------------------------------

SQLITE_ERRORS = sorted(
    (value for value in vars(sqlite3).values() if isinstance(value, type) and issubclass(value, sqlite3.Error)),
    key=lambda cls: cls.__name__,
)


def test_the_walk_finds_the_whole_dbapi_error_hierarchy() -> None:
    # sqlite3.Warning is left out: the module never raises it, and DB-API does not count it an error.
    assert {cls.__name__ for cls in SQLITE_ERRORS} >= {
        "Error",
        "InterfaceError",
        "DatabaseError",
        "DataError",
        "OperationalError",
        "IntegrityError",
        "InternalError",
        "ProgrammingError",
        "NotSupportedError",
    }


@pytest.mark.parametrize("error_class", SQLITE_ERRORS, ids=lambda cls: cls.__name__)
async def test_every_sqlite3_error_is_raised_as_a_twofold_error_or_value_error_and_writes_nothing(
    store: SQLiteEventStore, monkeypatch: pytest.MonkeyPatch, error_class: type[sqlite3.Error]
) -> None:
    await store.append("order-1", _events(1))
    raised = error_class("simulated driver failure")

    def fail(*args: Any) -> StoredEvent:
        raise raised

    # Building the stored events runs inside the append transaction, after the rows are inserted;
    # decoding runs inside every read.
    monkeypatch.setattr(sqlite_module, "_built", fail)
    monkeypatch.setattr(sqlite_module, "_decode", fail)
    with pytest.raises((TwofoldError, ValueError), match="simulated driver failure") as appending:
        await store.append("order-1", _events(2))
    with pytest.raises((TwofoldError, ValueError), match="simulated driver failure") as reading:
        await _read_all(store)
    assert appending.value.__cause__ is raised
    assert reading.value.__cause__ is raised
    monkeypatch.undo()
    assert [e.version async for e in store.read_stream("order-1")] == [1]


def test_an_integrity_error_is_a_value_error_for_a_duplicate_event_id_and_a_store_error_otherwise() -> None:
    duplicate = sqlite3.IntegrityError("UNIQUE constraint failed: events.event_id")
    clash = sqlite3.IntegrityError("UNIQUE constraint failed: events.stream_id, events.version")
    assert isinstance(sqlite_module._translate(duplicate), ValueError)
    assert isinstance(sqlite_module._translate(clash), StoreError)
    assert str(sqlite_module._translate(clash)) == f"SQLite refused the write: {clash}"


def test_opening_a_file_that_is_not_a_database_raises_store_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are notes, not a database\n" * 200)
    with pytest.raises(StoreError, match="file is not a database") as raised:
        SQLiteEventStore(path)
    assert isinstance(raised.value.__cause__, sqlite3.DatabaseError)


async def test_a_connection_that_fails_to_open_on_a_worker_thread_raises_store_error(
    store: SQLiteEventStore,
) -> None:
    # The file is replaced after the store opened it and before any worker thread connected.
    for leftover in store.path.parent.glob(store.path.name + "*"):
        leftover.unlink()
    store.path.write_bytes(b"these are notes, not a database\n" * 200)
    with pytest.raises(StoreError, match="file is not a database"):
        await store.head_position()
    with pytest.raises(StoreError, match="file is not a database"):
        await store.append("order-1", _events(1))


async def test_appends_that_arrive_together_share_a_commit_and_a_refused_one_leaves_the_rest_gap_free(
    store: SQLiteEventStore,
) -> None:
    await store.append("order-0", _events(1))
    # Started together, these queue up behind one another on the writer thread and are committed
    # in groups; every third expects a version its stream does not have and must be refused alone.
    outcomes = await asyncio.gather(
        *(
            store.append(f"order-{n}", _events(2), expected_version=5 if n % 3 == 0 else NO_STREAM)
            for n in range(1, 61)
        ),
        return_exceptions=True,
    )
    refused = [n for n, outcome in enumerate(outcomes, start=1) if isinstance(outcome, BaseException)]
    assert refused == [n for n in range(1, 61) if n % 3 == 0]
    assert all(isinstance(outcomes[n - 1], ConcurrencyError) for n in refused)
    events = await _read_all(store)
    assert [e.position for e in events] == list(range(1, len(events) + 1))
    assert len(events) == 1 + 2 * 40
    assert {e.stream_id for e in events} == {"order-0"} | {f"order-{n}" for n in range(1, 61) if n % 3}
    reported = [e.position for outcome in outcomes if not isinstance(outcome, BaseException) for e in outcome.events]
    assert sorted(reported) == list(range(2, len(events) + 1))


async def test_a_write_that_fails_inside_a_shared_commit_undoes_only_its_own_rows(
    store: SQLiteEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_built = sqlite_module._built

    def fail_for_order_2(written: list[Any], first: int, recorded_at: Any) -> list[StoredEvent]:
        if written[0][0] == "order-2":
            raise sqlite3.OperationalError("simulated failure after the insert")
        return real_built(written, first, recorded_at)

    monkeypatch.setattr(sqlite_module, "_built", fail_for_order_2)
    outcomes = await asyncio.gather(
        *(store.append(f"order-{n}", _events(3)) for n in range(1, 4)), return_exceptions=True
    )
    assert isinstance(outcomes[1], StoreError)
    assert [e.stream_id for e in await _read_all(store)] == ["order-1"] * 3 + ["order-3"] * 3
    assert [e.position for e in await _read_all(store)] == list(range(1, 7))


async def test_a_closed_store_refuses_reads_and_writes(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    await store.append("order-1", _events(1))
    await store.close()
    with pytest.raises(RuntimeError, match="closed"):
        await store.append("order-1", _events(1))
    with pytest.raises(RuntimeError, match="closed"):
        await store.head_position()


async def test_an_error_that_ends_the_shared_transaction_fails_every_write_in_it_with_that_error(
    store: SQLiteEventStore,
) -> None:
    def insert(conn: sqlite3.Connection, n: int) -> int:
        conn.execute("CREATE TABLE IF NOT EXISTS scratch (n INTEGER)")
        conn.execute("INSERT INTO scratch VALUES (?)", (n,))
        return n

    def lose_the_transaction(conn: sqlite3.Connection) -> None:
        conn.execute("ROLLBACK")  # as SQLite does itself on a full disk or an I/O error
        raise sqlite3.OperationalError("database or disk is full")

    # Hold the writer busy until all three are queued, so that they surely share one transaction.
    gate = threading.Event()
    busy = asyncio.ensure_future(store._threads.write(lambda conn: gate.wait(WAIT)))
    writes = [
        asyncio.ensure_future(store._threads.write_grouped(insert, 1)),
        asyncio.ensure_future(store._threads.write_grouped(lose_the_transaction)),
        asyncio.ensure_future(store._threads.write_grouped(insert, 2)),
    ]
    await asyncio.sleep(0)
    gate.set()
    assert await busy
    outcomes = await asyncio.gather(*writes, return_exceptions=True)
    assert all(isinstance(outcome, StoreError) and "disk is full" in str(outcome) for outcome in outcomes)
    # Nothing of the group was committed, and the writer goes on with the next one.
    assert await store._threads.write_grouped(insert, 3) == 3
    assert await store._threads.read(lambda conn: conn.execute("SELECT n FROM scratch").fetchall()) == [(3,)]
