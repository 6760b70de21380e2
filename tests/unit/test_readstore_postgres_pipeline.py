"""A projection batch on PostgreSQL travels as one psycopg pipeline: statements are sent without
waiting for their results. These tests hold it to every promise the one-round-trip-per-statement
store kept: a failing statement anywhere rolls back the whole batch and its checkpoint, a conflict
applies nothing, fetches see the batch's earlier writes, and ``execute``'s row count is exact
whenever the caller can read it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable

import psycopg
import pytest

from twofold.errors import StoreError
from twofold.readmodels import CheckpointConflict, Database
from twofold.readmodels.postgres import PostgresReadStore

NAME = "test.pipeline"
PAGE = 6  # statements in a test page
INSERT = "INSERT INTO items (sku, quantity) VALUES (?, ?)"


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[PostgresReadStore]:
    store = PostgresReadStore(postgres_url)
    await store.transact(NAME, create_items, position=5)
    await store.transact(NAME, insert("A-0", 1), expected=5, position=10)
    yield store
    await store.close()


def create_items(db: Database) -> None:
    db.execute("CREATE TABLE IF NOT EXISTS items (sku TEXT PRIMARY KEY, quantity INTEGER NOT NULL)")


def insert(sku: str, quantity: int) -> Callable[[Database], None]:
    def work(db: Database) -> None:
        db.execute(INSERT, (sku, quantity))

    return work


async def items(store: PostgresReadStore) -> dict[str, int]:
    rows = await store.read(lambda db: db.fetch_all("SELECT sku, quantity FROM items ORDER BY sku"))
    return {row["sku"]: row["quantity"] for row in rows}


def page_failing_at(failing: int, *, then: Callable[[Database], object] | None = None) -> Callable[[Database], None]:
    """``PAGE`` inserts, the ``failing``-th (1-based) a duplicate key, then ``then``, if given."""

    def work(db: Database) -> None:
        for n in range(1, PAGE + 1):
            db.execute(INSERT, ("A-0" if n == failing else f"B-{n}", n))
        if then is not None:
            then(db)

    return work


# -- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failing", "then"),
    [
        pytest.param(3, None, id="3rd of 6, raised when the pipeline syncs"),
        pytest.param(PAGE, None, id="the last statement"),
        pytest.param(3, lambda db: db.fetch_one("SELECT count(*) AS n FROM items"), id="raised by a later fetch"),
        pytest.param(3, lambda db: db.execute_count("DELETE FROM items WHERE sku = ?", ("B-1",)), id="by a count"),
        pytest.param(3, lambda db: db.executemany(INSERT, [("C-1", 1), ("C-2", 2)]), id="followed by executemany"),
    ],
)
async def test_a_failing_statement_rolls_back_the_whole_page_and_leaves_the_checkpoint(
    store: PostgresReadStore,
    failing: int,
    then: Callable[[Database], object] | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING), pytest.raises(StoreError) as raised:
        await store.transact(NAME, page_failing_at(failing, then=then), expected=10, position=20)

    # The statement's own error, as without a pipeline: not PipelineAborted from the ones skipped after it.
    assert "UniqueViolation [SQLSTATE 23505]" in str(raised.value)
    assert isinstance(raised.value.__cause__, psycopg.errors.UniqueViolation)
    assert await items(store) == {"A-0": 1}
    assert await store.checkpoint(NAME) == 10
    assert not [r for r in caplog.records if r.name.startswith("psycopg")], "the aborted results were not drained"

    # The connection is clean again: the next page, on the same writer connection, commits.
    await store.transact(NAME, insert("B-1", 1), expected=10, position=20)
    assert await items(store) == {"A-0": 1, "B-1": 1}
    assert await store.checkpoint(NAME) == 20


async def test_an_exception_raised_by_the_handler_mid_page_rolls_back_the_statements_queued_before_it(
    store: PostgresReadStore,
) -> None:
    def work(db: Database) -> None:
        db.execute(INSERT, ("B-1", 1))
        db.execute(INSERT, ("B-2", 2))
        raise KeyError("the handler's own bug")

    with pytest.raises(KeyError):
        await store.transact(NAME, work, expected=10, position=20)

    assert await items(store) == {"A-0": 1}
    assert await store.checkpoint(NAME) == 10


async def test_a_conflicting_checkpoint_applies_nothing(store: PostgresReadStore) -> None:
    ran: list[str] = []

    def work(db: Database) -> None:
        ran.append("work")
        db.execute(INSERT, ("B-1", 1))

    with pytest.raises(CheckpointConflict) as raised:
        await store.transact(NAME, work, expected=5, position=20)

    assert (raised.value.expected, raised.value.actual) == (5, 10)
    assert ran == []
    assert await items(store) == {"A-0": 1}
    assert await store.checkpoint(NAME) == 10


# -- results inside a page ---------------------------------------------------------------------------


async def test_fetches_inside_a_page_see_its_earlier_writes(store: PostgresReadStore) -> None:
    seen: list[object] = []

    def work(db: Database) -> None:
        db.execute(INSERT, ("B-1", 1))
        db.execute("UPDATE items SET quantity = quantity + 10 WHERE sku = ?", ("A-0",))
        seen.append(db.fetch_one("SELECT quantity FROM items WHERE sku = ?", ("A-0",)))
        db.executemany(INSERT, [("C-1", 3), ("C-2", 4)])
        db.execute("DELETE FROM items WHERE sku = ?", ("C-1",))
        seen.append(db.fetch_all("SELECT sku, quantity FROM items ORDER BY sku"))
        db.execute(INSERT, ("D-1", 5))
        seen.append(db.fetch_one("SELECT count(*) AS n FROM items"))

    await store.transact(NAME, work, expected=10, position=20)

    assert seen == [
        {"quantity": 11},
        [{"sku": "A-0", "quantity": 11}, {"sku": "B-1", "quantity": 1}, {"sku": "C-2", "quantity": 4}],
        {"n": 4},
    ]
    assert await items(store) == {"A-0": 11, "B-1": 1, "C-2": 4, "D-1": 5}
    assert await store.checkpoint(NAME) == 20


async def test_execute_count_returns_the_exact_row_count_after_queued_statements(store: PostgresReadStore) -> None:
    counts: dict[str, int] = {}

    def work(db: Database) -> None:
        db.executemany(INSERT, [(f"B-{n}", n) for n in range(1, 6)])  # B-1 … B-5
        db.execute("UPDATE items SET quantity = 0 WHERE sku = ?", ("B-1",))  # queued, not waited on
        counts["updated"] = db.execute_count("UPDATE items SET quantity = quantity + 1 WHERE sku LIKE ?", ("B-%",))
        counts["none"] = db.execute_count("DELETE FROM items WHERE sku = ?", ("Z-9",))
        counts["two"] = db.execute_count("UPDATE items SET quantity = 7 WHERE sku IN (?, ?)", ("B-1", "B-2"))
        db.execute("DELETE FROM items WHERE sku = ?", ("B-5",))

    await store.transact(NAME, work, expected=10, position=20)

    assert counts == {"updated": 5, "none": 0, "two": 2}
    assert await items(store) == {"A-0": 1, "B-1": 7, "B-2": 7, "B-3": 4, "B-4": 5}


async def test_execute_sends_without_waiting_and_execute_count_waits(store: PostgresReadStore) -> None:
    """What makes a page cheap: ``db.execute(...)`` does not wait for the server."""
    took: dict[str, float] = {}

    def work(db: Database) -> None:
        started = time.perf_counter()
        db.execute("SELECT pg_sleep(0.5)")
        took["dropped"] = time.perf_counter() - started
        started = time.perf_counter()
        counted = db.execute_count("SELECT pg_sleep(0.5)")
        took["counted"] = time.perf_counter() - started
        assert counted == 1

    await store.transact(NAME, work, expected=10, position=20)

    assert took["dropped"] < 0.25
    assert took["counted"] >= 0.5
    assert await store.checkpoint(NAME) == 20
