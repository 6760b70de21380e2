"""The read-store contract on a real PostgreSQL, then what only PostgreSQL has: the placeholder
translation, read-only snapshots for queries, driver errors as StoreError, and a server that
restarts or stops under a running store.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal

import psycopg
import pytest

from tests.readstore_contract import NAME, WAIT, OpenStore, ReadStoreContract, add, skus
from twofold.errors import StoreError
from twofold.readmodels import Database
from twofold.readmodels.postgres import PostgresReadStore, to_psycopg
from twofold.testing.servers import PostgresServer, free_port

OUTAGE_TIMEOUT = 1.0  # seconds a call waits for a connection while the server is down


class TestPostgresReadStore(ReadStoreContract):
    @pytest.fixture
    def open_store(self, postgres_url: str) -> OpenStore:
        return lambda: PostgresReadStore(postgres_url)


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[PostgresReadStore]:
    store = PostgresReadStore(postgres_url, timeout=OUTAGE_TIMEOUT)
    yield store
    await store.close()


# -- placeholders --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT * FROM t WHERE a = ? AND b = ?", "SELECT * FROM t WHERE a = %s AND b = %s"),
        ("SELECT * FROM t WHERE name LIKE 'mug%'", "SELECT * FROM t WHERE name LIKE 'mug%%'"),
        ("SELECT a % ? FROM t", "SELECT a %% %s FROM t"),
        ("SELECT '?', 'it''s ?', ? FROM t", "SELECT '?', 'it''s ?', %s FROM t"),
        ("SELECT E'\\'?', ?", "SELECT E'\\'?', %s"),
        ('SELECT "odd?name%" FROM t WHERE x = ?', 'SELECT "odd?name%%" FROM t WHERE x = %s'),
        ("SELECT ?::text, x::bigint FROM t", "SELECT %s::text, x::bigint FROM t"),
        ("SELECT $$ ? % $$, $f$ ?'$f$, ?", "SELECT $$ ? %% $$, $f$ ?'$f$, %s"),
        ("SELECT 1 -- why? 100%\n, ?", "SELECT 1 -- why? 100%%\n, %s"),
        ("SELECT /* ? */ ?", "SELECT /* ? */ %s"),
        ("SELECT :name FROM t WHERE a = ?", "SELECT :name FROM t WHERE a = %s"),
    ],
)
def test_question_marks_become_psycopg_placeholders_outside_quotes_and_percent_signs_are_escaped(
    sql: str, expected: str
) -> None:
    assert to_psycopg(sql) == expected


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT * FROM t WHERE a = :a AND b = :b_2", "SELECT * FROM t WHERE a = %(a)s AND b = %(b_2)s"),
        ("SELECT :n::int, x::text, ':n'", "SELECT %(n)s::int, x::text, ':n'"),
        ("SELECT f(a := :a) WHERE b LIKE '%:b%'", "SELECT f(a := %(a)s) WHERE b LIKE '%%:b%%'"),
        ("SELECT data ? 'key' FROM t WHERE id = :id", "SELECT data ? 'key' FROM t WHERE id = %(id)s"),
    ],
)
def test_named_parameters_become_psycopg_named_placeholders_outside_quotes_and_casts(sql: str, expected: str) -> None:
    assert to_psycopg(sql, named=True) == expected


async def test_casts_literals_and_parameters_reach_postgresql_as_written(store: PostgresReadStore) -> None:
    row = await store.read(
        lambda db: db.fetch_one(
            "SELECT ?::text AS given, '?:x' AS literal, 7 % 4 AS rest, 'a%' LIKE 'a\\%' AS escaped, $$ ? $$ AS dollar",
            (3,),
        )
    )
    named = await store.read(lambda db: db.fetch_one("SELECT :n::int + 1 AS next, ':n' AS literal", {"n": "41"}))

    assert row == {"given": "3", "literal": "?:x", "rest": 3, "escaped": True, "dollar": " ? "}
    assert named == {"next": 42, "literal": ":n"}


# -- queries -------------------------------------------------------------------------------------


async def test_a_query_cannot_write(store: PostgresReadStore) -> None:
    await store.transact(NAME, add(("A-1", "Blue mug", 3)))

    with pytest.raises(StoreError, match="read-only transaction"):
        await store.read(lambda db: db.execute("DELETE FROM items"))

    assert await skus(store) == ["A-1"]


async def test_a_query_sees_one_snapshot_from_its_first_statement_to_its_last(store: PostgresReadStore) -> None:
    await store.transact(NAME, add(("A-1", "Blue mug", 3)))
    read_once, gate = threading.Event(), threading.Event()

    def count_twice(db: Database) -> tuple[int, int]:
        first = db.fetch_one("SELECT count(*) AS n FROM items")
        read_once.set()
        if not gate.wait(WAIT):
            raise TimeoutError("the test never opened the gate")
        second = db.fetch_one("SELECT count(*) AS n FROM items")
        assert first is not None
        assert second is not None
        return first["n"], second["n"]

    query = asyncio.create_task(store.read(count_twice))
    assert await asyncio.to_thread(read_once.wait, WAIT)
    await store.transact(NAME, add(("B-2", "Blue teapot", 1)))
    gate.set()

    assert await query == (1, 1)
    assert await skus(store) == ["A-1", "B-2"]


async def test_values_come_back_as_postgresql_types(store: PostgresReadStore) -> None:
    row = await store.read(lambda db: db.fetch_one("SELECT 2.50::numeric AS price, 9000000000::bigint AS position"))

    assert row == {"price": Decimal("2.50"), "position": 9_000_000_000}


# -- errors --------------------------------------------------------------------------------------


async def test_a_driver_error_becomes_a_store_error_naming_it_and_its_sqlstate(store: PostgresReadStore) -> None:
    with pytest.raises(
        StoreError, match=r"UndefinedTable \[SQLSTATE 42P01\]: relation \"missing\" does not exist"
    ) as raised:
        await store.read(lambda db: db.fetch_all("SELECT * FROM missing"))

    assert isinstance(raised.value.__cause__, psycopg.errors.UndefinedTable)


async def test_a_unique_violation_in_a_projection_is_a_store_error(store: PostgresReadStore) -> None:
    await store.transact(NAME, add(("A-1", "Blue mug", 3)))

    with pytest.raises(StoreError, match=r"UniqueViolation \[SQLSTATE 23505\]"):
        await store.transact(NAME, add(("A-1", "Blue mug", 3)))


def test_a_store_that_cannot_reach_its_server_fails_at_construction_with_a_store_error() -> None:
    with pytest.raises(
        StoreError, match=r"PostgreSQL read store failed: OperationalError.*Connection refused"
    ) as raised:
        PostgresReadStore(f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere")

    assert isinstance(raised.value.__cause__, psycopg.OperationalError)


# -- a server that goes away ---------------------------------------------------------------------


@pytest.fixture
def server(postgres_server: PostgresServer) -> Iterator[PostgresServer]:
    """The session's server, started again however the test ends."""
    yield postgres_server
    postgres_server.start()


async def test_a_server_restart_between_calls_fails_no_call(store: PostgresReadStore, server: PostgresServer) -> None:
    await store.transact(NAME, add(("A-1", "Blue mug", 3)), expected=0, position=1)
    assert await skus(store) == ["A-1"]  # every reader connection used at least once
    assert await asyncio.gather(*(store.checkpoint(NAME) for _ in range(8))) == [1] * 8

    server.restart()

    assert await asyncio.gather(*(store.checkpoint(NAME) for _ in range(8))) == [1] * 8
    await store.transact(NAME, add(("B-2", "Blue teapot", 1)), expected=1, position=2)
    assert await skus(store) == ["A-1", "B-2"]


async def test_calls_fail_with_store_error_while_the_server_is_down_and_work_again_after(
    store: PostgresReadStore, server: PostgresServer
) -> None:
    await store.transact(NAME, add(("A-1", "Blue mug", 3)), expected=0, position=1)
    assert await skus(store) == ["A-1"]

    server.stop()
    with pytest.raises(StoreError, match="PostgreSQL read store failed"):
        await skus(store)
    with pytest.raises(StoreError, match="PostgreSQL read store failed"):
        await store.transact(NAME, add(("B-2", "Blue teapot", 1)), expected=1, position=2)
    with pytest.raises(StoreError, match="PostgreSQL read store failed"):
        await store.checkpoint(NAME)
    server.start()

    assert await skus(store) == ["A-1"]
    await store.transact(NAME, add(("B-2", "Blue teapot", 1)), expected=1, position=2)
    assert await store.checkpoint(NAME) == 2


async def test_a_transaction_cut_off_by_the_server_stopping_commits_nothing(
    store: PostgresReadStore, server: PostgresServer
) -> None:
    await store.transact(NAME, add(("A-1", "Blue mug", 3)), expected=0, position=1)

    def stops_the_server_half_way(db: Database) -> None:
        add(("B-2", "Blue teapot", 1))(db)
        server.stop(fast=False)  # like a crash: no chance to finish the transaction
        add(("C-3", "Green tea", 4))(db)

    with pytest.raises(StoreError, match="PostgreSQL read store failed"):
        await store.transact(NAME, stops_the_server_half_way, expected=1, position=2)
    server.start()

    assert await skus(store) == ["A-1"]
    assert await store.checkpoint(NAME) == 1


# -- scratch stores --------------------------------------------------------------------------------

SCHEMAS = "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'twofold_scratch%' ORDER BY nspname"


async def test_a_scratch_store_is_a_schema_and_discarding_it_drops_the_schema(store: PostgresReadStore) -> None:
    shadow, tenants_shadow = store.scratch("check_1"), store.for_tenant("acme").scratch("check_1")
    for scratch in (shadow, tenants_shadow):
        await scratch.transact("test.items", lambda db: db.execute("CREATE TABLE items (sku TEXT)"), position=1)
    schemas = await store.read(lambda db: db.fetch_all(SCHEMAS))
    assert [row["nspname"] for row in schemas] == ["twofold_scratch_check_1", "twofold_scratch_check_1_bad068e778"]

    await shadow.discard()
    await tenants_shadow.discard()

    assert await store.read(lambda db: db.fetch_all(SCHEMAS)) == []
