"""PostgreSQL failing under a running shop: restarts, connections cut mid-append, appenders dying.

This module runs a PostgreSQL server of its own (it restarts it; the session's server is left
alone). Every test gets a fresh database on it.

1. The server restarts (fast, and immediate like a crash) while the shop serves commands over
   HTTP: each command gets 200 or a 503 problem, never a 500; nothing is written twice or in
   part; and once the server is back the same app serves commands, read-your-writes queries and
   its projections again, without being restarted.
2. The appender's backend is terminated while its transaction is open: nothing of the append
   stays, and a retry under the same command id appends exactly once.
3. An appender dies between its commit and its sequencing step: the sweep numbers its events,
   a live subscriber receives them, after everything earlier, with each stream's versions in
   position order.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import pytest

from tests.monolith import shop
from twofold import Runtime
from twofold.errors import StoreError
from twofold.http import create_app
from twofold.readmodels.postgres import PostgresReadStore
from twofold.store import NO_STREAM, NewEvent, StoredEvent, StreamWrite
from twofold.store.postgres import PostgresEventStore
from twofold.testing.servers import PostgresServer

if TYPE_CHECKING:
    from twofold.store.postgres import Connection

pytestmark = pytest.mark.slow

WAIT = 20.0  # seconds any one phase may take before the test fails rather than hangs
DOWN = 1.0  # seconds the server stays down
_databases = itertools.count(1)


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    with PostgresServer(settings={"fsync": "off"}) as own:
        yield own


@pytest.fixture
def url(server: PostgresServer) -> str:
    server.start()  # a no-op unless an earlier test failed while the server was down
    return server.create_database(f"faults_{next(_databases)}")


# -- 1. a restart while serving ----------------------------------------------------------------------


@pytest.fixture
async def client(url: str) -> AsyncIterator[httpx.AsyncClient]:
    read_store = await asyncio.to_thread(PostgresReadStore, url, timeout=2.0)
    runtime = Runtime(shop, store=PostgresEventStore(url), read_store=read_store)
    app = create_app(runtime, query_timeout=2.0)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # a 500 is a response, not a raise
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://shop", timeout=WAIT) as http,
    ):
        yield http


def _checked(response: httpx.Response) -> httpx.Response:
    """A response that is a success or the 503 problem a missing store deserves, and nothing else."""
    assert response.status_code in (200, 503), f"{response.status_code}: {response.text}"
    assert "Traceback" not in response.text
    assert "asyncpg" not in response.text
    assert "psycopg" not in response.text
    if response.status_code == 503:
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert (problem["type"], problem["status"]) == ("urn:twofold:problem:store", 503), problem
    return response


SKUS = ("A-0", "A-1", "A-2")  # one sender per product: no contention between senders, only the fault


async def _receive(http: httpx.AsyncClient, key: str) -> httpx.Response:
    body = {"sku": key.partition(":")[0], "quantity": 1}
    return _checked(await http.post("/commands/ReceiveStock", json=body, headers={"Idempotency-Key": key}))


@pytest.mark.parametrize("fast", [True, False], ids=["fast-shutdown", "immediate-shutdown"])
async def test_a_database_restart_while_serving_gives_503s_writes_nothing_twice_and_recovers_by_itself(
    server: PostgresServer, client: httpx.AsyncClient, url: str, fast: bool
) -> None:
    http = client
    for sku in SKUS:
        added = await http.post("/commands/AddProduct", json={"sku": sku, "name": "Apple", "price": "1.50"})
        assert added.status_code == 200, added.text
    outcomes: list[tuple[str, int, float]] = []  # (key, status, time), from clients that never stop sending
    sending = True
    loop = asyncio.get_running_loop()

    async def load(sku: str) -> None:
        for n in itertools.count():
            if not sending:
                return
            key = f"{sku}:{n}"
            outcomes.append((key, (await _receive(http, key)).status_code, loop.time()))
            await asyncio.sleep(0.01)

    async with asyncio.timeout(3 * WAIT):
        senders = [asyncio.create_task(load(sku)) for sku in SKUS]
        try:
            await asyncio.sleep(0.3)
            assert outcomes
            assert all(status == 200 for _, status, _ in outcomes)
            await asyncio.to_thread(server.stop, fast=fast)
            # While it is down: commands and queries are refused as 503, cleanly.
            assert (await _receive(http, "A-0:while-down")).status_code == 503
            refused = _checked(await http.get("/queries/StockLevel", params={"sku": "A-0"}))
            assert refused.status_code == 503
            await asyncio.sleep(DOWN)
            await asyncio.to_thread(server.start)
            back = loop.time()
            # Back: the same app serves commands again by itself, within a few seconds.
            while len([s for _, s, t in outcomes if t > back and s == 200]) < 3 * len(SKUS):
                assert loop.time() < back + WAIT, f"commands do not succeed since the restart: {outcomes[-5:]}"
                await asyncio.sleep(0.05)
        finally:
            sending = False
            await asyncio.gather(*senders)
        recovered_in = min(t for _, s, t in outcomes if t > back and s == 200) - back

        assert [k for k, s, _ in outcomes if s != 200], "no command was refused while the server was down"
        last_failure = max(t for _, s, t in outcomes if s != 200)
        assert all(s == 200 for _, s, t in outcomes if t > last_failure)
        # Retried under the same keys, every refused command is applied; the others are not applied again.
        results: dict[str, dict[str, Any]] = {}
        for key in [k for k, _, _ in outcomes] + ["A-0:while-down"]:
            response = await _receive(http, key)
            assert response.status_code == 200, response.text
            results[key] = response.json()
        head = max(r["position"] for r in results.values())

        # The projections catch up by themselves, and read-your-writes queries work again.
        while (ready := (await http.get("/ready")).json()).get("projections") != {
            "shop.catalog": head,
            "shop.orders": head,
        }:
            assert loop.time() < back + 2 * WAIT, f"projections did not catch up to {head}: {ready}"
            await asyncio.sleep(0.1)
        assert ready["head"] == head
        for sku in SKUS:
            stock = _checked(
                await http.get("/queries/StockLevel", params={"sku": sku}, headers={"X-Min-Position": str(head)})
            )
            assert stock.status_code == 200, stock.text
            assert stock.json() == {"sku": sku, "available": len([k for k in results if k.startswith(f"{sku}:")])}

    assert recovered_in < 10.0
    # Each stream holds each of its commands exactly once, whole, with versions 1, 2, 3… in position order.
    store = PostgresEventStore(url, pool_size=1)
    try:
        every = [e async for e in store.read_all()]
        streams = {sku: [e async for e in store.read_stream(f"product-{sku}")] for sku in SKUS}
    finally:
        await store.close()
    assert [e.position for e in every] == list(range(1, head + 1))
    assert Counter(e.metadata["command_id"] for e in every if e.type == "shop.StockReceived") == Counter(results.keys())
    for sku, stream in streams.items():
        assert [e.version for e in stream] == list(range(1, len(stream) + 1))
        assert sorted(e.position for e in stream) == [e.position for e in stream]
        for event in stream[1:]:
            key = event.metadata["command_id"]
            assert key.startswith(f"{sku}:")
            assert [(e["stream_id"], e["version"]) for e in results[key]["events"]] == [
                (event.stream_id, event.version)
            ]


# -- 2. a connection lost mid-append ------------------------------------------------------------------


def _events(kind: str, count: int) -> list[NewEvent]:
    return [NewEvent(f"test.{kind}", {"n": n}) for n in range(count)]


@contextlib.asynccontextmanager
async def _connection(url: str) -> AsyncIterator[asyncpg.Connection[asyncpg.Record]]:
    conn = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()


async def _waiting_appender(url: str) -> int:
    """The backend running ``twofold_append``, once it waits for another transaction to end.

    Only the command row's unique check waits that way, and it comes after the event inserts.
    """
    async with _connection(url) as conn:
        while True:
            backend = await conn.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE query LIKE '%twofold_append(%' AND wait_event = 'transactionid'"
                " AND pid <> pg_backend_pid()"
            )
            if backend is not None:
                return int(backend)
            await asyncio.sleep(0.01)


async def test_a_connection_lost_mid_append_leaves_nothing_and_a_retry_appends_exactly_once(url: str) -> None:
    store = PostgresEventStore(url, pool_size=2)
    admin = await asyncpg.connect(url)
    try:
        async with asyncio.timeout(WAIT):
            await store.append("product-1", _events("Before", 2))
            writes = [
                StreamWrite("product-1", _events("Moved", 3), 2),
                StreamWrite("order-1", _events("Placed", 2), NO_STREAM),
            ]
            ids = [e.event_id for w in writes for e in w.events]
            # An uncommitted row with the same command id makes the append wait on its last insert,
            # after its events are inserted: then its connection is cut from outside.
            blocker = admin.transaction()
            await blocker.start()
            await admin.execute(
                "INSERT INTO commands (command_id, versions, event_ids) VALUES ('command-1', '{}', '{}')"
            )
            appending = asyncio.create_task(store.append_streams(writes, command_id="command-1"))
            backend = await _waiting_appender(url)
            async with _connection(url) as killer:
                assert await killer.fetchval("SELECT pg_terminate_backend($1)", backend)
            with pytest.raises(StoreError):
                await appending
            await blocker.rollback()

            assert await admin.fetchval("SELECT count(*) FROM events WHERE event_id = ANY($1)", ids) == 0
            assert await admin.fetchval("SELECT count(*) FROM commands WHERE command_id = 'command-1'") == 0
            assert await store.stream_version("product-1") == 2
            assert await store.stream_version("order-1") == 0

            # The same store (its pool lost a connection) retries the command: appended once, whole.
            first = await store.append_streams(writes, command_id="command-1")
            again = await store.append_streams(writes, command_id="command-1")
            stored = [e async for e in store.read_all()]
    finally:
        await admin.close()
        await store.close()
    assert first.versions == again.versions == {"product-1": 5, "order-1": 2}
    assert [e.event_id for e in first.events] == [e.event_id for e in again.events] == ids
    assert [e.position for e in first.events] == [e.position for e in again.events] == [3, 4, 5, 6, 7]
    assert [(e.stream_id, e.version) for e in stored] == [
        ("product-1", 1),
        ("product-1", 2),
        ("product-1", 3),
        ("product-1", 4),
        ("product-1", 5),
        ("order-1", 1),
        ("order-1", 2),
    ]


# -- 3. an appender dead between commit and sequencing --------------------------------------------------


class AppenderKilled(Exception):
    pass


class DyingStore(PostgresEventStore):
    """The real store, dying right after its append commits, before it numbers the events."""

    async def _numbered(self, conn: Connection, written: list[StoredEvent]) -> list[StoredEvent]:
        raise AppenderKilled


async def test_events_of_an_appender_dead_before_sequencing_reach_subscribers_through_the_sweep(url: str) -> None:
    store = PostgresEventStore(url, pool_size=2)
    dying = DyingStore(url, pool_size=1)
    subscriber = PostgresEventStore(url, pool_size=2)
    admin = await asyncpg.connect(url)
    received: list[StoredEvent] = []

    more = asyncio.Event()

    async def received_at_least(count: int) -> None:
        while len(received) < count:
            more.clear()
            await more.wait()

    async def subscribe() -> None:
        async for event in subscriber.subscribe(1):
            received.append(event)
            more.set()

    following = asyncio.create_task(subscribe())
    try:
        async with asyncio.timeout(WAIT):
            for n in range(5):
                await store.append("stream-1", _events("Early", 2))
                await store.append(f"other-{n}", _events("Early", 1))
            await received_at_least(15)  # the subscriber is live, at the head, waiting

            with pytest.raises(AppenderKilled):
                await dying.append("stream-1", _events("Orphan", 3), 10, command_id="dead-command")
            orphans = await admin.fetch(
                "SELECT version, position FROM events WHERE stream_id = 'stream-1' AND version > 10"
            )
            assert [r["version"] for r in orphans] == [11, 12, 13]  # committed…

            loop = asyncio.get_running_loop()
            started = loop.time()
            await asyncio.wait_for(received_at_least(18), 5.0)  # …and numbered by the sweep, with no other appender
            swept_in = loop.time() - started

            later = await store.append("stream-1", _events("Later", 1), 13)
            await asyncio.wait_for(received_at_least(19), 5.0)
            result = await store.command_result("dead-command")
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
        await admin.close()
        for s in (store, dying, subscriber):
            await s.close()

    assert swept_in < 5.0
    assert [e.position for e in received] == list(range(1, 20))
    assert [e.type for e in received[15:18]] == ["test.Orphan"] * 3  # numbered after everything earlier
    assert [e.version for e in received if e.stream_id == "stream-1"] == list(range(1, 15))
    assert later.position == 19
    assert result is not None
    assert [e.position for e in result.events] == [16, 17, 18]
