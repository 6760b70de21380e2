"""The read-store contract, bound to DuckDB: two store objects on one file stand in for two processes."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from tests.readstore_contract import OpenStore, ReadStoreContract
from twofold.errors import StoreError
from twofold.readmodels import Database
from twofold.readmodels.duckdb import DuckDBReadStore, to_duckdb


class TestDuckDBReadStore(ReadStoreContract):
    @pytest.fixture
    def open_store(self, tmp_path: Path) -> OpenStore:
        return lambda: DuckDBReadStore(tmp_path / "warehouse.duckdb")


def test_named_placeholders_become_duckdbs_and_strings_casts_and_comments_stay() -> None:
    assert to_duckdb("WHERE id = :id AND n = :n::int AND c <> ':x' -- :y\n") == (
        "WHERE id = $id AND n = $n::int AND c <> ':x' -- :y\n"
    )


async def test_a_scratch_store_is_a_schema_of_the_file_and_discarding_it_drops_it(tmp_path: Path) -> None:
    store = DuckDBReadStore(tmp_path / "warehouse.duckdb")
    try:
        shadow = store.scratch("check_1")
        await shadow.transact("test.items", lambda db: db.execute("CREATE TABLE items (sku TEXT)"), position=1)
        schemas = "SELECT schema_name FROM duckdb_schemas() WHERE schema_name LIKE 'twofold_scratch%'"
        assert await store.read(lambda db: db.fetch_all(schemas)) == [{"schema_name": "twofold_scratch_check_1"}]

        await shadow.discard()

        assert await store.read(lambda db: db.fetch_all(schemas)) == []
        assert scratch_files(tmp_path) == []
    finally:
        await store.close()


async def test_a_swap_keeps_the_shadows_primary_key_and_decimal_columns(tmp_path: Path) -> None:
    store = DuckDBReadStore(tmp_path / "warehouse.duckdb")
    try:

        def build(db: Database) -> None:
            db.execute("CREATE TABLE sales (sku TEXT PRIMARY KEY, revenue DECIMAL(18, 2) NOT NULL)")
            db.execute("INSERT INTO sales VALUES (?, ?)", ("A-1", Decimal("12.50")))

        shadow = store.scratch("test")
        await shadow.transact("test.sales", build, position=3)
        await store.swap_in(shadow, "test.sales", ["sales"])
        await shadow.discard()

        rows = await store.read(lambda db: db.fetch_all("SELECT sku, revenue FROM sales"))
        key = await store.read(
            lambda db: db.fetch_all(
                "SELECT constraint_column_names AS key FROM duckdb_constraints()"
                " WHERE table_name = 'sales' AND constraint_type = 'PRIMARY KEY'"
            )
        )
        assert rows == [{"sku": "A-1", "revenue": Decimal("12.50")}]
        assert key == [{"key": ["sku"]}]
        assert await store.checkpoint("test.sales") == 3
    finally:
        await store.close()


def scratch_files(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if "scratch" in p.name]


async def test_rows_inserted_one_by_one_land_in_order_and_every_read_between_sees_those_before_it(
    tmp_path: Path,
) -> None:
    store = DuckDBReadStore(tmp_path / "warehouse.duckdb")
    seen: list[int] = []
    try:

        def fill(db: Database) -> None:
            db.execute("CREATE TABLE facts (n INTEGER PRIMARY KEY, label TEXT)")
            for n in range(2_500):  # more than one multi-row INSERT holds
                db.execute("INSERT INTO facts VALUES (?, ?)", (n, f"n{n}"))
                if n % 1_000 == 999:
                    found = db.fetch_one("SELECT count(*) AS c FROM facts")
                    assert found is not None
                    seen.append(found["c"])
            db.execute("UPDATE facts SET label = 'last' WHERE n = ?", (2_499,))  # after the held rows
            db.executemany("INSERT INTO facts (n, label) VALUES (?, ?)", [(5_000, "a"), (5_001, "b")])

        await store.transact("test.facts", fill, position=7)

        rows = await store.read(lambda db: db.fetch_all("SELECT n, label FROM facts ORDER BY n"))
        assert seen == [1_000, 2_000]
        assert [r["n"] for r in rows] == [*range(2_500), 5_000, 5_001]
        assert rows[2_499]["label"] == "last"
        assert await store.checkpoint("test.facts") == 7
    finally:
        await store.close()


async def test_a_duplicate_among_held_rows_fails_the_batch_and_writes_nothing(tmp_path: Path) -> None:
    store = DuckDBReadStore(tmp_path / "warehouse.duckdb")
    try:
        await store.transact("test.facts", lambda db: db.execute("CREATE TABLE facts (n INTEGER PRIMARY KEY)"))

        def duplicate(db: Database) -> None:
            for n in (1, 2, 1):
                db.execute("INSERT INTO facts VALUES (?)", (n,))

        with pytest.raises(StoreError):
            await store.transact("test.facts", duplicate, expected=0, position=3)

        assert await store.read(lambda db: db.fetch_all("SELECT n FROM facts")) == []
        assert await store.checkpoint("test.facts") == 0
    finally:
        await store.close()
