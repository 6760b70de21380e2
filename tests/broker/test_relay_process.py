"""`twofold serve --role relay` as a real process: configured from the environment, killed with SIGKILL, restarted."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import nats
import pytest

from tests.monolith import shop
from twofold.broker.cloudevents import decode
from twofold.broker.commands import CommandWorker
from twofold.broker.nats import JetStreamRelay
from twofold.config import Settings, runtime_for
from twofold.errors import ConfigurationError
from twofold.readmodels.sqlite import SQLiteReadStore
from twofold.store import NewEvent
from twofold.store.sqlite import SQLiteEventStore
from twofold.testing.servers import NatsServer, free_port

ROOT = Path(__file__).resolve().parents[2]
EVENTS = 4000
STREAM = "TWOFOLD_SHOP_EVENTS"


def launch_relay(data: Path, nats_url: str) -> subprocess.Popen[bytes]:
    port = free_port()
    env = {
        **os.environ,
        "TWOFOLD_DATABASE_URL": f"sqlite:///{data / 'shop.db'}",
        "TWOFOLD_NATS_URL": nats_url,
        "PORT": str(port),
    }
    env.pop("TWOFOLD_READ_DATABASE_URL", None)
    command = [sys.executable, "-m", "twofold.cli", "serve", "tests.monolith:shop", "--role", "relay"]
    with (data / f"relay-{port}.log").open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the relay exited with {process.returncode}:\n{(data / f'relay-{port}.log').read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    process.kill()
    pytest.fail("the relay did not answer /health within 15 s")


async def stream_messages(nats_url: str) -> int:
    client = await nats.connect(nats_url)
    try:
        return (await client.jetstream().stream_info(STREAM)).state.messages
    except nats.js.errors.NotFoundError:
        return 0
    finally:
        await client.close()


async def published_positions(nats_url: str) -> list[int]:
    client = await nats.connect(nats_url)
    js = client.jetstream()
    info = await js.stream_info(STREAM)
    positions = [
        decode((await js.get_msg(STREAM, sequence)).data or b"").event.position
        for sequence in range(1, info.state.last_seq + 1)
    ]
    await client.close()
    return positions


@pytest.mark.slow
async def test_a_relay_process_killed_with_sigkill_and_started_again_leaves_every_event_once_in_order(
    tmp_path: Path,
) -> None:
    store = SQLiteEventStore(tmp_path / "shop.db", durability="normal")
    for batch in range(EVENTS // 100):
        await store.append(f"order-{batch}", [NewEvent("shop.OrderPlaced", {"n": n}) for n in range(100)])
    await store.close()
    with NatsServer(tmp_path / "nats") as server:
        relay = launch_relay(tmp_path, server.url)
        try:
            while not await stream_messages(server.url) > 0:  # noqa: ASYNC110 - another process publishes
                await asyncio.sleep(0.005)
        finally:
            relay.send_signal(signal.SIGKILL)
            relay.wait()
        killed_at = await stream_messages(server.url)
        relay = launch_relay(tmp_path, server.url)
        try:
            deadline = time.monotonic() + 30.0
            while await stream_messages(server.url) < EVENTS and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        finally:
            relay.terminate()
            relay.wait(10)
        positions = await published_positions(server.url)
    assert killed_at < EVENTS  # it really died mid-stream
    assert positions == list(range(1, EVENTS + 1))
    read_store = SQLiteReadStore(tmp_path / "shop-read.db")
    assert await read_store.checkpoint("twofold.relay.shop") == EVENTS
    await read_store.close()


def test_twofold_nats_url_must_be_a_nats_url() -> None:
    with pytest.raises(ConfigurationError, match=r"TWOFOLD_NATS_URL must be nats://host:port .* \(got 'http://x'\)"):
        Settings.from_env(shop, {"TWOFOLD_NATS_URL": "http://x"})


def test_the_relay_role_without_nats_says_which_variable_to_set(tmp_path: Path) -> None:
    settings = Settings.from_env(shop, {"TWOFOLD_DATABASE_URL": f"sqlite:///{tmp_path / 'shop.db'}"})
    assert settings.nats_url is None
    with pytest.raises(ConfigurationError, match=r"--role relay publishes to NATS: set TWOFOLD_NATS_URL"):
        runtime_for(shop, settings, "relay")


@pytest.mark.parametrize(("role", "relays"), [("all", True), ("relay", True), ("commands", False), ("queries", False)])
async def test_with_nats_set_the_embedded_and_relay_roles_run_a_relay(tmp_path: Path, role: str, relays: bool) -> None:
    environ = {"TWOFOLD_DATABASE_URL": f"sqlite:///{tmp_path / 'shop.db'}", "TWOFOLD_NATS_URL": "nats://127.0.0.1:1"}
    runtime = runtime_for(shop, Settings.from_env(shop, environ), role)  # type: ignore[arg-type]
    assert [type(w) for w in runtime.workers if not isinstance(w, CommandWorker)] == (
        [JetStreamRelay] if relays else []
    )
    assert (runtime.store is not None, runtime.read_store is not None) == (
        role != "queries",
        role != "commands",
    )
    await runtime.stop()
