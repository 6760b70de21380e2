"""What every read store promises, written once and bound to each backend.

    class TestSQLiteReadStore(ReadStoreContract):
        @pytest.fixture
        def open_store(self, tmp_path):
            return lambda: SQLiteReadStore(tmp_path / "read.db")

``open_store`` opens a store on one fresh database; calling it twice gives two store objects on
that database, standing in for two processes. The SQL below is the text every SQL backend accepts.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable

import pytest

from twofold.errors import InvalidMessage, StoreError
from twofold.readmodels import CheckpointConflict, Database, ReadStore

WAIT = 5.0  # seconds any one wait below may take before the test fails rather than hangs
NAME = "test.items"

OpenStore = Callable[[], ReadStore]


def create_items(db: Database) -> None:
    db.execute("CREATE TABLE IF NOT EXISTS items (sku TEXT PRIMARY KEY, name TEXT NOT NULL, quantity INTEGER NOT NULL)")


def add(*items: tuple[str, str, int]) -> Callable[[Database], None]:
    def work(db: Database) -> None:
        create_items(db)
        db.executemany("INSERT INTO items (sku, name, quantity) VALUES (?, ?, ?)", items)

    return work


async def skus(store: ReadStore) -> list[str]:
    rows = await store.read(lambda db: db.fetch_all("SELECT sku FROM items ORDER BY sku"))
    return [row["sku"] for row in rows]


class ReadStoreContract:
    """Tests every :class:`~twofold.readmodels.ReadStore` passes. Subclass it and override ``open_store``."""

    @pytest.fixture
    def open_store(self) -> OpenStore:
        pytest.fail("Bind the contract: override `open_store` to return a function opening a store on one database")

    @pytest.fixture
    async def store(self, open_store: OpenStore) -> AsyncIterator[ReadStore]:
        store = open_store()
        yield store
        await store.close()

    @pytest.fixture
    async def other(self, open_store: OpenStore) -> AsyncIterator[ReadStore]:
        """A second store on the same database, as another process would open it."""
        other = open_store()
        yield other
        await other.close()

    # -- transactions and checkpoints --------------------------------------------------------------

    async def test_transact_commits_the_work_and_the_checkpoint_together(self, store: ReadStore) -> None:
        await store.transact(NAME, add(("A-1", "Blue mug", 3)), position=7)

        assert await skus(store) == ["A-1"]
        assert await store.checkpoint(NAME) == 7

    async def test_a_checkpoint_never_committed_reads_as_zero(self, store: ReadStore) -> None:
        await store.transact(NAME, create_items)

        assert await store.checkpoint(NAME) == 0
        assert await store.checkpoint("test.never-ran") == 0

    async def test_work_that_raises_rolls_back_its_changes_and_the_checkpoint(self, store: ReadStore) -> None:
        await store.transact(NAME, add(("A-1", "Blue mug", 3)), position=7)

        def fails_half_way(db: Database) -> None:
            add(("B-2", "Blue teapot", 1))(db)
            raise RuntimeError("cannot apply position 8")

        with pytest.raises(RuntimeError, match="cannot apply position 8"):
            await store.transact(NAME, fails_half_way, position=8)

        assert await skus(store) == ["A-1"]
        assert await store.checkpoint(NAME) == 7

    async def test_a_failing_statement_raises_store_error_and_rolls_back_everything(self, store: ReadStore) -> None:
        await store.transact(NAME, add(("A-1", "Blue mug", 3)), position=7)

        with pytest.raises(StoreError, match="read store failed") as raised:
            await store.transact(NAME, add(("B-2", "Blue teapot", 1), ("A-1", "again", 1)), position=8)

        assert raised.value.__cause__ is not None  # the driver's error, kept for the log
        assert await skus(store) == ["A-1"]
        assert await store.checkpoint(NAME) == 7

    async def test_a_transaction_at_the_expected_checkpoint_commits(self, store: ReadStore) -> None:
        await store.transact(NAME, add(("A-1", "Blue mug", 3)), expected=0, position=5)
        await store.transact(NAME, add(("B-2", "Blue teapot", 1)), expected=5, position=9)

        assert await skus(store) == ["A-1", "B-2"]
        assert await store.checkpoint(NAME) == 9

    async def test_a_checkpoint_elsewhere_than_expected_refuses_the_transaction_untouched(
        self, store: ReadStore
    ) -> None:
        await store.transact(NAME, add(("A-1", "Blue mug", 3)), position=5)
        ran: list[bool] = []

        def work(db: Database) -> None:
            ran.append(True)

        with pytest.raises(CheckpointConflict, match=f"Checkpoint of projection {NAME} moved: expected 2, actual 5"):
            await store.transact(NAME, work, expected=2, position=9)

        assert ran == []
        assert await store.checkpoint(NAME) == 5

    async def test_a_checkpoint_conflict_carries_the_projection_and_both_positions(self, store: ReadStore) -> None:
        with pytest.raises(CheckpointConflict) as raised:
            await store.transact(NAME, create_items, expected=3, position=4)

        assert (raised.value.name, raised.value.expected, raised.value.actual) == (NAME, 3, 0)
        assert isinstance(raised.value, StoreError)

    async def test_another_store_on_the_database_is_fenced_by_the_checkpoint(
        self, store: ReadStore, other: ReadStore
    ) -> None:
        await store.transact(NAME, add(("A-1", "Blue mug", 3)), expected=0, position=5)

        with pytest.raises(CheckpointConflict, match="expected 0, actual 5"):
            await other.transact(NAME, add(("A-1", "Blue mug", 3)), expected=0, position=5)

        assert await other.checkpoint(NAME) == 5
        assert await skus(other) == ["A-1"]

    async def test_a_transaction_waiting_for_the_same_checkpoint_is_refused_once_the_first_commits(
        self, store: ReadStore, other: ReadStore
    ) -> None:
        await store.transact(NAME, create_items)
        entered, gate = threading.Event(), threading.Event()

        def slow(db: Database) -> None:
            add(("A-1", "Blue mug", 3))(db)
            entered.set()
            if not gate.wait(WAIT):
                raise TimeoutError("the test never opened the gate")

        first = asyncio.create_task(store.transact(NAME, slow, expected=0, position=5))
        assert await asyncio.to_thread(entered.wait, WAIT)
        second = asyncio.create_task(other.transact(NAME, add(("A-1", "Blue mug", 3)), expected=0, position=5))
        # Let the second reach the checkpoint while the first holds it; it must be refused either way.
        await asyncio.sleep(0.2)
        gate.set()

        await first
        with pytest.raises(CheckpointConflict, match="expected 0, actual 5"):
            await second
        assert await skus(store) == ["A-1"]

    async def test_two_stores_racing_over_the_same_batches_apply_each_batch_exactly_once(
        self, store: ReadStore, other: ReadStore
    ) -> None:
        def count(batch: int) -> Callable[[Database], None]:
            def work(db: Database) -> None:
                db.execute(
                    "INSERT INTO applied (batch, times) VALUES (?, 1)"
                    " ON CONFLICT (batch) DO UPDATE SET times = applied.times + 1",
                    (batch,),
                )

            return work

        await store.transact(
            NAME, lambda db: db.execute("CREATE TABLE applied (batch INTEGER PRIMARY KEY, times INTEGER NOT NULL)")
        )
        for batch in range(1, 21):
            outcomes = await asyncio.gather(
                store.transact(NAME, count(batch), expected=batch - 1, position=batch),
                other.transact(NAME, count(batch), expected=batch - 1, position=batch),
                return_exceptions=True,
            )
            assert sorted(type(outcome).__name__ for outcome in outcomes) == ["CheckpointConflict", "NoneType"]

        applied = await store.read(lambda db: db.fetch_all("SELECT batch, times FROM applied ORDER BY batch"))
        assert applied == [{"batch": batch, "times": 1} for batch in range(1, 21)]
        assert await other.checkpoint(NAME) == 20

    # -- reading and the Database ------------------------------------------------------------------

    async def test_read_returns_rows_as_dicts_of_column_name_to_value(self, store: ReadStore) -> None:
        await store.transact(NAME, add(("A-1", "Blue mug", 3), ("B-2", "Blue teapot", 1)))

        rows = await store.read(lambda db: db.fetch_all("SELECT sku, name, quantity FROM items ORDER BY sku"))
        one = await store.read(lambda db: db.fetch_one("SELECT sku, quantity FROM items WHERE sku = ?", ("B-2",)))
        none = await store.read(lambda db: db.fetch_one("SELECT sku FROM items WHERE sku = ?", ("Z-9",)))

        assert rows == [
            {"sku": "A-1", "name": "Blue mug", "quantity": 3},
            {"sku": "B-2", "name": "Blue teapot", "quantity": 1},
        ]
        assert all(type(row) is dict for row in rows)
        assert one == {"sku": "B-2", "quantity": 1}
        assert none is None

    async def test_execute_count_returns_the_number_of_rows_it_changed(self, store: ReadStore) -> None:
        changed: list[int] = []

        def work(db: Database) -> None:
            add(("A-1", "Blue mug", 3), ("B-2", "Blue teapot", 1), ("C-3", "Green tea", 4))(db)
            changed.append(db.execute_count("UPDATE items SET quantity = quantity + 1 WHERE name LIKE ?", ("Blue%",)))
            changed.append(db.execute_count("DELETE FROM items WHERE sku = ?", ("Z-9",)))

        await store.transact(NAME, work)

        assert changed == [2, 0]

    async def test_named_parameters_take_a_mapping(self, store: ReadStore) -> None:
        def work(db: Database) -> None:
            create_items(db)
            db.execute(
                "INSERT INTO items VALUES (:sku, :name, :quantity)", {"sku": "A-1", "name": "mug", "quantity": 2}
            )
            db.executemany(
                "INSERT INTO items VALUES (:sku, :name, :quantity)",
                [{"sku": "B-2", "name": "pot", "quantity": 1}, {"sku": "C-3", "name": "tea", "quantity": 5}],
            )

        await store.transact(NAME, work)
        row = await store.read(
            lambda db: db.fetch_one(
                "SELECT name FROM items WHERE quantity > :least AND sku <> :sku", {"least": 1, "sku": "A-1"}
            )
        )

        assert row == {"name": "tea"}

    async def test_percent_signs_and_question_marks_inside_sql_text_mean_what_they_say(self, store: ReadStore) -> None:
        await store.transact(NAME, add(("A-1", "100% cotton?", 7), ("B-2", "100 percent", 4), ("C-3", "cotton", 5)))

        rows = await store.read(
            lambda db: db.fetch_all(
                "SELECT sku, quantity % 3 AS rest, '?' AS mark FROM items"
                " WHERE name LIKE '%\\%%' ESCAPE '\\' AND name LIKE '%?' AND quantity > ?",
                (1,),
            )
        )

        unbound = await store.read(lambda db: db.fetch_all("SELECT sku FROM items WHERE name LIKE '100%' ORDER BY sku"))

        assert rows == [{"sku": "A-1", "rest": 1, "mark": "?"}]
        assert unbound == [{"sku": "A-1"}, {"sku": "B-2"}]

    async def test_handlers_are_told_the_dialect_of_their_database(self, store: ReadStore) -> None:
        seen: list[str] = []
        await store.transact(NAME, lambda db: seen.append(db.dialect))
        seen.append(await store.read(lambda db: db.dialect))

        assert seen == [store.dialect, store.dialect]
        assert store.dialect in ("sqlite", "postgresql", "duckdb")

    async def test_closing_a_store_twice_is_harmless(self, open_store: OpenStore) -> None:
        store = open_store()
        await store.transact(NAME, create_items, position=1)

        await store.close()
        await store.close()

    # -- tenants -----------------------------------------------------------------------------------

    async def test_a_tenants_rows_and_checkpoints_are_its_own(self, store: ReadStore) -> None:
        await store.transact(NAME, add(("M-1", "Main mug", 1)), position=3)
        acme, globex = store.for_tenant("acme"), store.for_tenant("globex")
        await acme.transact(NAME, add(("A-1", "Acme mug", 1)), position=5)
        await globex.transact(NAME, add(("G-1", "Globex mug", 1)), position=7)

        assert await skus(store) == ["M-1"]
        assert await skus(acme) == ["A-1"]
        assert await skus(globex) == ["G-1"]
        assert [await s.checkpoint(NAME) for s in (store, acme, globex)] == [3, 5, 7]
        assert store.for_tenant("acme") is acme

    async def test_a_table_the_tenant_lacks_is_an_error_never_another_stores_rows(self, store: ReadStore) -> None:
        await store.transact(NAME, add(("M-1", "Main mug", 1)))
        await store.for_tenant("acme").transact(NAME, add(("A-1", "Acme mug", 1)))
        empty = store.for_tenant("initech")

        with pytest.raises(StoreError):
            await skus(empty)

    async def test_tenants_differing_only_in_case_are_kept_apart(self, store: ReadStore) -> None:
        await store.for_tenant("Acme").transact(NAME, add(("U-1", "Upper", 1)))
        await store.for_tenant("acme").transact(NAME, add(("L-1", "Lower", 1)))

        assert await skus(store.for_tenant("Acme")) == ["U-1"]
        assert await skus(store.for_tenant("acme")) == ["L-1"]

    async def test_a_tenants_rows_outlive_the_store_and_are_found_by_the_next(self, open_store: OpenStore) -> None:
        first = open_store()
        await first.for_tenant("acme").transact(NAME, add(("A-1", "Acme mug", 1)), position=4)
        await first.close()

        second = open_store()
        try:
            assert await skus(second.for_tenant("acme")) == ["A-1"]
            assert await second.for_tenant("acme").checkpoint(NAME) == 4
        finally:
            await second.close()

    async def test_a_tenants_checkpoint_fences_two_stores_like_the_main_one(
        self, store: ReadStore, other: ReadStore
    ) -> None:
        await store.for_tenant("acme").transact(NAME, add(("A-1", "Acme mug", 1)), position=2)

        with pytest.raises(CheckpointConflict):
            await other.for_tenant("acme").transact(NAME, add(("A-2", "Again", 1)), expected=0, position=2)
        assert await skus(store.for_tenant("acme")) == ["A-1"]

    async def test_a_tenant_id_that_is_no_safe_name_is_refused(self, store: ReadStore) -> None:
        for bad in ("", "../etc", "a b", "x" * 64, "acme;DROP SCHEMA public", "é"):
            with pytest.raises(InvalidMessage):
                store.for_tenant(bad)

    # -- reading in pages and in one snapshot ----------------------------------------------------------

    async def test_fetch_pages_hands_over_the_rows_a_page_at_a_time(self, store: ReadStore) -> None:
        await store.transact(NAME, add(*[(f"S-{n:02}", "mug", n) for n in range(7)]))

        pages = await store.read(
            lambda db: [
                [row["sku"] for row in page] for page in db.fetch_pages("SELECT sku FROM items ORDER BY sku", size=3)
            ]
        )

        assert pages == [["S-00", "S-01", "S-02"], ["S-03", "S-04", "S-05"], ["S-06"]]

    async def test_every_statement_of_a_read_sees_the_same_snapshot(self, store: ReadStore) -> None:
        await store.transact(NAME, add(("A-1", "Blue mug", 3)), position=1)
        first_read, written = threading.Event(), threading.Event()

        def two_reads(db: Database) -> tuple[int, int]:
            before = len(db.fetch_all("SELECT sku FROM items"))
            first_read.set()
            if not written.wait(WAIT):
                raise TimeoutError("the write never committed")
            row = db.fetch_one("SELECT COUNT(*) AS n FROM items")
            assert row is not None
            return before, int(row["n"])

        async def write_between() -> None:
            assert await asyncio.to_thread(first_read.wait, WAIT)
            await store.transact(NAME, add(("B-2", "Blue teapot", 1)), position=2)
            written.set()

        counts, _ = await asyncio.gather(store.read(two_reads), write_between())

        assert counts == (1, 1)
        assert await skus(store) == ["A-1", "B-2"]

    # -- scratch stores and swaps --------------------------------------------------------------------

    async def test_a_scratch_store_is_apart_from_its_store(self, store: ReadStore) -> None:
        await store.transact(NAME, add(("M-1", "Main mug", 1)), position=3)
        shadow = store.scratch("test")
        try:
            await shadow.transact(NAME, add(("S-1", "Shadow mug", 1)), position=9)

            assert await skus(store) == ["M-1"]
            assert await skus(shadow) == ["S-1"]
            assert [await store.checkpoint(NAME), await shadow.checkpoint(NAME)] == [3, 9]
        finally:
            await shadow.discard()

    async def test_a_scratch_store_starts_empty_whatever_an_earlier_one_left(self, open_store: OpenStore) -> None:
        first = open_store()
        await first.scratch("test").transact(NAME, add(("S-1", "Left behind", 1)), position=4)
        await first.close()  # as a process that died before discarding it

        second = open_store()
        shadow = second.scratch("test")
        try:
            assert await shadow.checkpoint(NAME) == 0
            with pytest.raises(StoreError):
                await skus(shadow)
        finally:
            await shadow.discard()
            await second.close()

    async def test_a_scratch_name_must_be_short_and_plain(self, store: ReadStore) -> None:
        for bad in ("", "Check", "a-b", "x" * 31, "x;DROP SCHEMA public"):
            with pytest.raises(ValueError, match="A scratch store's name is 1 to 30"):
                store.scratch(bad)

    async def test_only_a_scratch_store_can_be_discarded(self, store: ReadStore) -> None:
        with pytest.raises(ValueError, match="discarded"):
            await store.discard()

    async def test_a_swap_puts_the_shadows_rows_and_checkpoint_in_place_of_the_live_ones(
        self, store: ReadStore
    ) -> None:
        await store.transact(NAME, add(("A-1", "Old mug", 1), ("B-2", "Old pot", 2)), position=5)
        shadow = store.scratch("test")
        try:
            await shadow.transact(NAME, add(("A-1", "New mug", 1), ("C-3", "New tea", 3)), position=8)

            await store.swap_in(shadow, NAME, ["items"])

            rows = await store.read(lambda db: db.fetch_all("SELECT sku, name FROM items ORDER BY sku"))
            assert rows == [{"sku": "A-1", "name": "New mug"}, {"sku": "C-3", "name": "New tea"}]
            assert await store.checkpoint(NAME) == 8
        finally:
            await shadow.discard()
        assert await skus(store) == ["A-1", "C-3"]  # discarding the shadow leaves the swapped-in tables

    async def test_a_swap_takes_the_shadows_table_definition_and_drops_tables_it_lacks(self, store: ReadStore) -> None:
        await store.transact(NAME, add(("A-1", "Old mug", 1)), position=5)
        await store.transact(NAME, lambda db: db.execute("CREATE TABLE old_extra (n INTEGER)"))
        shadow = store.scratch("test")
        try:
            await shadow.transact(
                NAME,
                lambda db: db.execute("CREATE TABLE items (sku TEXT PRIMARY KEY, colour TEXT)"),
                position=6,
            )
            await store.swap_in(shadow, NAME, ["items", "old_extra"])
        finally:
            await shadow.discard()

        rows = await store.read(lambda db: db.fetch_all("SELECT * FROM items"))
        assert rows == []
        await store.transact(NAME, lambda db: db.execute("INSERT INTO items (sku, colour) VALUES ('B-2', 'blue')"))
        with pytest.raises(StoreError):
            await store.read(lambda db: db.fetch_all("SELECT * FROM old_extra"))

    async def test_a_swap_is_refused_untouched_while_the_live_checkpoint_is_past_the_shadows(
        self, store: ReadStore
    ) -> None:
        await store.transact(NAME, add(("A-1", "Live mug", 1)), position=9)
        shadow = store.scratch("test")
        try:
            await shadow.transact(NAME, add(("S-1", "Shadow mug", 1)), position=8)

            with pytest.raises(CheckpointConflict, match="expected 8, actual 9"):
                await store.swap_in(shadow, NAME, ["items"])

            assert await skus(store) == ["A-1"]
            assert await store.checkpoint(NAME) == 9
        finally:
            await shadow.discard()

    async def test_a_tenants_scratch_store_swaps_into_that_tenants_store_only(self, store: ReadStore) -> None:
        await store.transact(NAME, add(("M-1", "Main mug", 1)), position=2)
        acme = store.for_tenant("acme")
        await acme.transact(NAME, add(("A-1", "Old acme mug", 1)), position=2)
        shadow = acme.scratch("test")
        try:
            await shadow.transact(NAME, add(("A-2", "New acme mug", 1)), position=4)
            await acme.swap_in(shadow, NAME, ["items"])
        finally:
            await shadow.discard()

        assert await skus(acme) == ["A-2"]
        assert await skus(store) == ["M-1"]
        assert [await acme.checkpoint(NAME), await store.checkpoint(NAME)] == [4, 2]

    async def test_only_a_scratch_store_of_this_store_can_be_swapped_in(self, store: ReadStore) -> None:
        shadow = store.for_tenant("acme").scratch("test")
        try:
            with pytest.raises(ValueError, match="Only a scratch store of this store"):
                await store.swap_in(shadow, NAME, ["items"])
        finally:
            await shadow.discard()
