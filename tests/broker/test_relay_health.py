"""A relay that cannot deliver while events wait turns /ready and /metrics red; one that delivers does not."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.http import assert_problem, serve
from tests.http.test_operations import metric
from tests.monolith.handlers import add_product
from tests.monolith.messages import AddProduct
from twofold import Service
from twofold.broker.nats import JetStreamRelay
from twofold.readmodels.sqlite import SQLiteReadStore
from twofold.store.sqlite import SQLiteEventStore
from twofold.testing.servers import free_port

SERVICE = "relayhealth"
WORKER = f"twofold.relay.{SERVICE}"
POLLS = 500  # 10 ms apart


async def relayed(tmp_path: Path, nats_url: str) -> tuple[SQLiteEventStore, SQLiteReadStore, JetStreamRelay]:
    store, read_store = SQLiteEventStore(tmp_path / "events.db"), SQLiteReadStore(tmp_path / "read.db")
    return store, read_store, JetStreamRelay(SERVICE, store, read_store, nats_url, ack_timeout=0.5)


async def test_a_relay_with_events_waiting_and_no_broker_is_stuck(tmp_path: Path) -> None:
    store, read_store, relay = await relayed(tmp_path, f"nats://127.0.0.1:{free_port()}")  # nobody listens
    service = Service(SERVICE, commands={AddProduct: add_product})
    async with serve(service, tmp_path, stores=lambda: (store, read_store), workers=[relay], stall_after=0.3) as api:
        await api.add_product("A-1", "Apple")
        await asyncio.sleep(0.6)

        body = assert_problem(await api.client.get("/ready"), 503, "not-ready")
        assert list(body["stuck"]) == [WORKER]
        text = (await api.client.get("/metrics")).text
        assert metric(text, "twofold_worker_stuck", worker=WORKER) == 1


async def test_a_relay_that_delivers_is_ready_and_not_stuck(tmp_path: Path, nats_url: str) -> None:
    store, read_store, relay = await relayed(tmp_path, nats_url)
    service = Service(SERVICE, commands={AddProduct: add_product})
    async with serve(service, tmp_path, stores=lambda: (store, read_store), workers=[relay], stall_after=0.3) as api:
        await api.add_product("A-1", "Apple")
        for _ in range(POLLS):
            if (await relay.progress()).lag == 0:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.4)  # longer than stall_after: idle after delivering is not stuck

        assert (await api.client.get("/ready")).status_code == 200
        text = (await api.client.get("/metrics")).text
        assert metric(text, "twofold_worker_stuck", worker=WORKER) == 0
