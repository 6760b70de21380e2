"""Read-model targets: each projection writes to the store its ``target`` names, and is read from there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from twofold import ConfigurationError, Database, Event, Projection, Query, Service, StoredEvent
from twofold._tables import TableLayout, checkpoint_in, layout_of, rows_in_order
from twofold.checking import check_consistency
from twofold.config import Settings, open_target_store, runtime_for
from twofold.readmodels import Row
from twofold.readmodels.duckdb import DuckDBReadStore
from twofold.readmodels.sqlite import SQLiteReadStore
from twofold.runtime import Runtime
from twofold.store import NewEvent
from twofold.store.memory import MemoryEventStore


class Sold(Event, name="targets.Sold"):
    sku: str
    quantity: int


class Totals(Projection, name="targets.totals"):
    tables = ("totals",)
    target = "warehouse"

    def setup(self, db: Database) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS totals (sku VARCHAR PRIMARY KEY, units BIGINT NOT NULL)")

    def apply(self, event: Sold, db: Database, record: StoredEvent) -> None:
        db.execute(
            "INSERT INTO totals VALUES (?, ?) ON CONFLICT (sku) DO UPDATE SET units = totals.units + excluded.units",
            (event.sku, event.quantity),
        )

    def total(self, query: Total, db: Database) -> dict[str, object]:
        row = db.fetch_one("SELECT units FROM totals WHERE sku = ?", (query.sku,))
        return {"units": row["units"] if row else 0, "dialect": db.dialect}


class Seen(Projection, name="targets.seen"):
    tables = ("seen",)

    def setup(self, db: Database) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS seen (position INTEGER PRIMARY KEY)")

    def apply(self, event: Sold, db: Database, record: StoredEvent) -> None:
        db.execute("INSERT INTO seen VALUES (?)", (record.position,))


class Total(Query):
    sku: str


class HowMany(Query):
    pass


def how_many(query: HowMany, db: Database) -> dict[str, object]:
    row = db.fetch_one("SELECT COUNT(*) AS n FROM seen")
    return {"seen": row["n"] if row else 0, "dialect": db.dialect}


totals = Totals()
service = Service("targets", projections=[totals, Seen()], queries={Total: totals.total, HowMany: how_many})


def sold(sku: str, quantity: int) -> NewEvent:
    event = Sold(sku=sku, quantity=quantity)
    return NewEvent(event.type_name, event.model_dump(mode="json"), {})


def runtime_in(folder: Path, store: MemoryEventStore) -> Runtime:
    return Runtime(
        service,
        store=store,
        read_store=SQLiteReadStore(folder / "read.db"),
        targets={"warehouse": DuckDBReadStore(folder / "warehouse.duckdb")},
    )


async def test_each_projection_writes_to_its_target_and_each_query_reads_where_its_handler_belongs(
    tmp_path: Path,
) -> None:
    store = MemoryEventStore()
    async with runtime_in(tmp_path, store) as runtime:
        written = await store.append("sale-1", [sold("A-1", 2), sold("A-1", 3)])

        total = await runtime.query(Total(sku="A-1"), min_position=written.position)
        seen = await runtime.query(HowMany(), min_position=written.position)

        assert total == {"units": 5, "dialect": "duckdb"}
        assert seen == {"seen": 2, "dialect": "sqlite"}
        assert await runtime.positions() == {"targets.totals": 2, "targets.seen": 2}
        assert runtime.runners["targets.totals"].read_store is runtime.targets["warehouse"]


async def test_a_warehouse_model_is_rebuilt_swapped_and_checked_like_any_other(tmp_path: Path) -> None:
    store = MemoryEventStore()
    async with runtime_in(tmp_path, store) as runtime:
        await store.append("sale-1", [sold("A-1", 2), sold("B-2", 1)])
        await runtime.catch_up()
        warehouse = runtime.targets["warehouse"]
        await warehouse.transact("damage", lambda db: db.execute("UPDATE totals SET units = 99 WHERE sku = 'A-1'"))

        broken = await check_consistency(service, store, runtime.read_store, targets=runtime.targets)  # type: ignore[arg-type]
        await runtime.rebuild("targets.totals")
        fixed = await check_consistency(service, store, runtime.read_store, targets=runtime.targets)  # type: ignore[arg-type]

        assert [d.describe() for c in broken.checks for d in c.differences] == [
            "totals changed sku='A-1': units live 99, rebuilt 2"
        ]
        assert fixed.consistent
        assert {c.projection for c in fixed.checks} == {"targets.totals", "targets.seen"}
        assert await runtime.query(Total(sku="A-1")) == {"units": 2, "dialect": "duckdb"}


async def test_a_projection_whose_target_store_is_missing_is_refused_naming_the_target(tmp_path: Path) -> None:
    read_store = SQLiteReadStore(tmp_path / "read.db")
    try:
        with pytest.raises(ConfigurationError, match=r"targets\.totals writes to the 'warehouse' target"):
            Runtime(service, store=MemoryEventStore(), read_store=read_store)
        only_sql = Runtime(service, store=MemoryEventStore(), read_store=read_store, project={"sql"})
        assert set(only_sql.runners) == {"targets.seen"}
        with pytest.raises(ConfigurationError, match="no 'warehouse' store"):
            await only_sql.query(Total(sku="A-1"))
    finally:
        await read_store.close()


def test_a_target_that_is_no_known_store_is_refused_at_class_creation() -> None:
    with pytest.raises(ValueError, match="target must be one of sql, warehouse, search"):

        class Elsewhere(Projection, name="targets.elsewhere"):
            target = "cube"


def test_the_target_stores_default_beside_the_event_store_and_follow_their_variables() -> None:
    defaults = Settings.from_env(service, {"TWOFOLD_DATABASE_URL": "sqlite:///var/shop/targets.db"})
    chosen = Settings.from_env(
        service, {"TWOFOLD_WAREHOUSE_URL": "duckdb:////srv/w.duckdb", "TWOFOLD_SEARCH_URL": "tantivy:////srv/s"}
    )

    assert defaults.target_url("warehouse", "targets") == "duckdb:///var/shop/targets-warehouse.duckdb"
    assert defaults.target_url("search", "targets") == "tantivy:///var/shop/targets-search"
    chosen_urls = (chosen.target_url("warehouse", "targets"), chosen.target_url("search", "targets"))
    assert chosen_urls == ("duckdb:////srv/w.duckdb", "tantivy:////srv/s")


def test_a_target_url_no_store_can_open_is_refused_naming_its_variable() -> None:
    with pytest.raises(ConfigurationError, match="TWOFOLD_WAREHOUSE_URL='mysql://db/w' is not a store"):
        open_target_store("warehouse", "mysql://db/w")


async def test_embedded_targets_are_projected_where_their_queries_are_answered(tmp_path: Path) -> None:
    settings = Settings.from_env(service, {"TWOFOLD_DATABASE_URL": f"sqlite:///{tmp_path / 'targets.db'}"})
    roles = {role: runtime_for(service, settings, role) for role in ("all", "queries", "projections", "commands")}
    try:
        assert {role: sorted(r.runners) for role, r in roles.items()} == {
            "all": ["targets.seen", "targets.totals"],
            "queries": ["targets.totals"],
            "projections": ["targets.seen"],
            "commands": [],
        }
        assert {role: sorted(r.targets) for role, r in roles.items()} == {
            "all": ["sql", "warehouse"],
            "queries": ["sql", "warehouse"],
            "projections": ["sql"],
            "commands": [],
        }
        assert (tmp_path / "targets-warehouse.duckdb").exists()
    finally:
        for runtime in roles.values():
            await runtime.stop()


class Index:
    """A handle that is no SQL database, as a search index is: it describes its own tables."""

    dialect = "tantivy"

    def layout_of(self, table: str) -> TableLayout:
        return TableLayout(table, ("id", "name"), ("id",))

    def rows_in_order(self, layout: TableLayout, size: int) -> Iterator[list[Row]]:
        rows = [{"id": f"p-{n}", "name": f"Product {n}"} for n in range(5)]
        return iter([rows[i : i + size] for i in range(0, len(rows), size)])

    def checkpoint(self, name: str) -> int:
        return 7


def test_the_checker_asks_a_handle_that_is_no_sql_database_for_its_layout_rows_and_checkpoint() -> None:
    index = Index()

    layout = layout_of(index, "products")

    assert layout == TableLayout("products", ("id", "name"), ("id",))
    assert [len(page) for page in rows_in_order(index, layout, 2)] == [2, 2, 1]
    assert checkpoint_in(index, "shop.search") == 7
