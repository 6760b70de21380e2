"""`twofold serve --role consumers` as a real process: killed with SIGKILL mid-batch, started again."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.broker.consumer_app import orders
from tests.broker.test_consumer import streams
from twofold.broker.consumer import JetStreamConsumer
from twofold.broker.nats import JetStreamRelay
from twofold.config import Settings, runtime_for
from twofold.errors import ConfigurationError
from twofold.readmodels.sqlite import SQLiteReadStore
from twofold.store import NewEvent
from twofold.store.sqlite import SQLiteEventStore
from twofold.testing.servers import NatsServer, free_port

ROOT = Path(__file__).resolve().parents[2]
SOURCE = orders.subscriptions[0].source
EVENTS = 3000


def launch_consumers(data: Path, nats_url: str) -> subprocess.Popen[bytes]:
    port = free_port()
    env = {
        **os.environ,
        "TWOFOLD_DATABASE_URL": f"sqlite:///{data / 'orders.db'}",
        "TWOFOLD_NATS_URL": nats_url,
        "PORT": str(port),
    }
    env.pop("TWOFOLD_READ_DATABASE_URL", None)
    command = [sys.executable, "-m", "twofold.cli", "serve", "tests.broker.consumer_app:orders", "--role", "consumers"]
    log = data / f"consumers-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the consumers exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    process.kill()
    pytest.fail("the consumers did not answer /health within 15 s")


async def head_of(path: Path) -> int:
    if not await asyncio.to_thread(path.exists):
        return 0
    store = SQLiteEventStore(path)
    try:
        return await store.head_position()
    finally:
        await store.close()


async def relay_everything(data: Path, nats_url: str) -> SQLiteEventStore:
    source = SQLiteEventStore(data / "source.db", durability="normal")
    for batch in range(EVENTS // 100):
        for number in range(100):
            stream = f"reservation-o-{(batch * 100 + number) % 37}"
            await source.append(stream, [NewEvent("inventory.StockReserved", {"sku": "A-1", "quantity": number})])
    read = SQLiteReadStore(data / "source-read.db")
    relay = JetStreamRelay(SOURCE, source, read, nats_url)
    await relay.start()
    while (await relay.progress()).lag:  # noqa: ASYNC110 - the relay works in its own task
        await asyncio.sleep(0.02)
    await relay.stop()
    await read.close()
    return source


@pytest.mark.slow
async def test_a_consumer_process_killed_mid_batch_and_started_again_imports_every_event_once(tmp_path: Path) -> None:
    with NatsServer(tmp_path / "nats") as server:
        source = await relay_everything(tmp_path, server.url)
        target = tmp_path / "orders.db"
        process = launch_consumers(tmp_path, server.url)
        try:
            while await head_of(target) < 200:  # noqa: ASYNC110 - another process imports
                await asyncio.sleep(0.005)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        killed_at = await head_of(target)
        process = launch_consumers(tmp_path, server.url)
        try:
            deadline = time.monotonic() + 60.0
            while await head_of(target) < EVENTS and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # anything applied twice would show now
        finally:
            process.terminate()
            process.wait(10)
    assert killed_at < EVENTS  # it really died mid-way
    imported = SQLiteEventStore(target)
    assert await imported.head_position() == EVENTS  # nothing twice
    assert await streams(imported, f"{SOURCE}.") == await streams(source)  # nothing lost, in order
    await imported.close()
    await source.close()


def test_the_consumers_role_without_nats_says_which_variable_to_set(tmp_path: Path) -> None:
    settings = Settings.from_env(orders, {"TWOFOLD_DATABASE_URL": f"sqlite:///{tmp_path / 'orders.db'}"})
    with pytest.raises(ConfigurationError, match=r"--role consumers imports from NATS: set TWOFOLD_NATS_URL"):
        runtime_for(orders, settings, "consumers")


@pytest.mark.parametrize(
    ("role", "consumes"), [("all", True), ("consumers", True), ("relay", False), ("queries", False)]
)
async def test_with_nats_set_the_embedded_and_consumers_roles_run_a_consumer_per_source(
    tmp_path: Path, role: str, consumes: bool
) -> None:
    environ = {"TWOFOLD_DATABASE_URL": f"sqlite:///{tmp_path / 'o.db'}", "TWOFOLD_NATS_URL": "nats://127.0.0.1:1"}
    runtime = runtime_for(orders, Settings.from_env(orders, environ), role)  # type: ignore[arg-type]
    consumers = [w for w in runtime.workers if isinstance(w, JetStreamConsumer)]
    assert [c.name for c in consumers] == (["twofold_killorders_from_killinventory"] if consumes else [])
    assert set(runtime.runners) == ({"orders.reservations"} if role == "all" else set())
    await runtime.stop()
