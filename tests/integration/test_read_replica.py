"""Queries on a streaming replica of PostgreSQL: what the replica has, what it refuses, and
read-your-writes against what it has replayed — not what the primary has committed.

One replica of the session's PostgreSQL serves the module. Pausing its replay
(``pg_wal_replay_pause()``) stands for a replica lagging behind: WAL still arrives, nothing of
it is applied, and reads see the data as it was.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest

from examples.shop.catalog import catalog
from examples.shop.inventory import ReceiveStock, StockLevel, inventory
from twofold.config import Settings, runtime_for
from twofold.embedded import database_url_variable, service_environ
from twofold.errors import NotCaughtUp, NotFound, StoreError
from twofold.http import create_app
from twofold.readmodels.postgres import PostgresReadStore
from twofold.runtime import Runtime
from twofold.testing.servers import PostgresReplica, PostgresServer

WAIT = 0.5  # seconds a read-your-writes query waits on the paused replica before it gives up
CATCH_UP = 10.0  # seconds the replica may take to apply what the primary wrote, once resumed


@pytest.fixture(scope="module")
def replica(twofold_postgres_server: PostgresServer) -> Iterator[PostgresReplica]:
    started = time.monotonic()
    with PostgresReplica(twofold_postgres_server) as running:
        assert time.monotonic() - started < 10
        yield running


@pytest.fixture
def database(twofold_postgres: str, replica: PostgresReplica) -> tuple[str, str]:
    """A new database on the primary, and its URL on the replica once the replica has it."""
    replica.wait_until_caught_up()
    return twofold_postgres, replica.url(twofold_postgres.rsplit("/", 1)[1])


def test_each_service_of_a_system_reads_its_queries_where_its_own_variable_says() -> None:
    environ = {
        database_url_variable("orders", query=True): "postgresql://replica:5433/orders",
        "TWOFOLD_QUERY_DATABASE_URL": "postgresql://replica:5433/shared",  # a system's services never share one
    }

    orders = Settings.from_env(catalog, service_environ(environ, "orders"))
    payments = Settings.from_env(catalog, service_environ(environ, "payments"))

    assert database_url_variable("orders", query=True) == "TWOFOLD_ORDERS_QUERY_DATABASE_URL"
    assert orders.query_database_url == "postgresql://replica:5433/orders"
    assert payments.query_database_url is None  # its queries read its read database, as before


def test_a_replica_has_what_the_primary_wrote_and_refuses_writes(
    twofold_postgres_server: PostgresServer, replica: PostgresReplica, database: tuple[str, str]
) -> None:
    name = database[0].rsplit("/", 1)[1]
    twofold_postgres_server.sql("CREATE TABLE notes (body text); INSERT INTO notes VALUES ('hello')", name)

    replica.wait_until_caught_up()

    assert replica.sql("SELECT body FROM notes", name) == "hello"
    assert replica.replay_lag_bytes() >= 0
    with pytest.raises(RuntimeError, match="read-only transaction"):
        replica.sql("INSERT INTO notes VALUES ('refused')", name)
    with pytest.raises(RuntimeError, match="read-only"):
        replica.create_database("elsewhere")


async def test_a_read_store_on_a_replica_creates_nothing_and_refuses_transactions(database: tuple[str, str]) -> None:
    store = PostgresReadStore(database[1], readers=1)  # nothing ever made twofold_checkpoints in this database
    try:
        assert store.read_only
        assert await store.checkpoint("catalog.products") == 0
        with pytest.raises(StoreError, match="hot standby"):
            await store.transact("catalog.products", lambda db: None, position=1)
    finally:
        await store.close()


@dataclass
class Replicated:
    primary: Runtime  # commands and projections, on the primary
    queries: Runtime  # the queries role, reading from the replica
    http: httpx.AsyncClient  # the queries role's API


@pytest.fixture
async def replicated(database: tuple[str, str], replica: PostgresReplica) -> AsyncIterator[Replicated]:
    primary_url, replica_url = database
    settings = Settings(primary_url, primary_url, query_database_url=replica_url)
    primary = runtime_for(inventory, settings, "all")
    await primary.start()
    replica.wait_until_caught_up()  # the projection's tables, made as it started
    queries = runtime_for(inventory, settings, "queries")
    app = create_app(queries, commands=False, query_timeout=WAIT)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://inventory") as http,
        ):
            yield Replicated(primary, queries, http)
    finally:
        replica.resume_replay()
        await primary.stop()


async def test_read_your_writes_waits_for_what_the_replica_has_replayed(
    replicated: Replicated, replica: PostgresReplica
) -> None:
    assert isinstance(replicated.queries.read_store, PostgresReadStore)
    assert replicated.queries.read_store.read_only
    await replicated.primary.execute(ReceiveStock(sku="M-1", quantity=2))
    await replicated.primary.catch_up()
    replica.wait_until_caught_up()
    replica.pause_replay()
    added = await replicated.primary.execute(ReceiveStock(sku="M-1", quantity=3))
    assert added.position is not None
    await replicated.primary.catch_up()  # committed on the primary, checkpoint included

    # Without a position the replica answers at once, from what it has: its documented staleness.
    assert (await replicated.queries.query(StockLevel(sku="M-1"))).available == 2
    # With one it waits for the replica, not the primary, and gives up rather than answer stale.
    with pytest.raises(NotCaughtUp) as refused:
        await replicated.queries.query(StockLevel(sku="M-1"), min_position=added.position, timeout=WAIT)
    assert refused.value.current < added.position
    wait = {"X-Min-Position": str(added.position)}
    answer = await replicated.http.get("/queries/StockLevel", params={"sku": "M-1"}, headers=wait)
    assert answer.status_code == 504, answer.text
    assert answer.json()["required_position"] == added.position

    replica.resume_replay()

    found = await replicated.queries.query(StockLevel(sku="M-1"), min_position=added.position, timeout=CATCH_UP)
    assert found.available == 5
    answer = await replicated.http.get("/queries/StockLevel", params={"sku": "M-1"}, headers=wait)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"sku": "M-1", "available": 5}


async def test_a_tenant_is_read_on_the_replica_once_the_primary_has_projected_for_it(replicated: Replicated) -> None:
    added = await replicated.primary.execute(ReceiveStock(sku="T-1", quantity=4), tenant="acme")
    assert added.position is not None
    await replicated.primary.catch_up()

    found = await replicated.queries.query(
        StockLevel(sku="T-1"), min_position=added.position, timeout=CATCH_UP, tenant="acme"
    )

    assert found.available == 4
    with pytest.raises(NotFound, match="No stock was ever received"):  # not in the untenanted models
        await replicated.queries.query(StockLevel(sku="T-1"))
    with pytest.raises(NotFound, match="'globex' has no read models on this replica"):
        await replicated.queries.query(StockLevel(sku="T-1"), tenant="globex")
