"""`twofold serve --role command-worker` and `--role all` with NATS, as real processes; a worker killed with SIGKILL."""

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

from tests.http.test_operations import metric
from tests.monolith import shop
from tests.monolith.messages import AddProduct
from twofold.broker.commands import CommandWorker, JetStreamCommands, JetStreamCommandSender
from twofold.config import Settings, async_commands_for, runtime_for
from twofold.errors import ConfigurationError
from twofold.messages import Envelope
from twofold.runtime import Runtime
from twofold.store.sqlite import SQLiteEventStore
from twofold.testing.servers import NatsServer, free_port

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = 1500


def launch(data: Path, nats_url: str, role: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``twofold serve tests.monolith:shop --role <role>`` on ``data``; its process and base URL once it is up."""
    port = free_port()
    env = {
        **os.environ,
        "TWOFOLD_DATABASE_URL": f"sqlite:///{data / 'shop.db'}",
        "TWOFOLD_NATS_URL": nats_url,
        "PORT": str(port),
    }
    env.pop("TWOFOLD_READ_DATABASE_URL", None)
    command = [sys.executable, "-m", "twofold.cli", "serve", "tests.monolith:shop", "--role", role]
    log = data / f"{role}-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"twofold serve --role {role} exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).status_code == 200:
                return process, f"http://127.0.0.1:{port}"
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"twofold serve --role {role} did not answer /health within 15 s")


async def head(database: Path) -> int:
    if not await asyncio.to_thread(database.exists):
        return 0
    store = SQLiteEventStore(database)
    try:
        return await store.head_position()
    finally:
        await store.close()


@pytest.mark.slow
async def test_a_command_worker_killed_with_sigkill_and_started_again_runs_every_queued_command_once(
    tmp_path: Path,
) -> None:
    database = tmp_path / "shop.db"
    with NatsServer(tmp_path / "nats") as server:
        sender = JetStreamCommandSender(server.url, source="test")
        for n in range(COMMANDS):
            product = AddProduct(sku=f"P-{n}", name=f"Product {n}", price="1.50")
            await sender.send("shop", Envelope(product, message_id=f"add-{n}"))
        await sender.close()

        worker, _ = launch(tmp_path, server.url, "command-worker")
        try:
            while await head(database) == 0:  # noqa: ASYNC110 - another process works the queue
                await asyncio.sleep(0.005)
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
        killed_at = await head(database)

        worker, url = launch(tmp_path, server.url, "command-worker")
        try:
            deadline = time.monotonic() + 60.0  # commands in flight at the kill come back after ack_wait (10 s)
            while await head(database) < COMMANDS and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # a command run twice would append now
            async with httpx.AsyncClient(base_url=url) as client:
                ready = await client.get("/ready")
                metrics = (await client.get("/metrics")).text
        finally:
            worker.terminate()
            worker.wait(10)

    store = SQLiteEventStore(database)
    events = [e async for e in store.read_all(1)]
    await store.close()
    assert 0 < killed_at < COMMANDS  # it really died with commands still queued
    assert sorted(e.metadata["command_id"] for e in events) == sorted(f"add-{n}" for n in range(COMMANDS))
    assert ready.status_code == 200, ready.text
    assert metric(metrics, "twofold_worker_stuck", worker="twofold.commands.shop") == 0


async def test_the_embedded_role_with_nats_queues_202_commands_and_works_them_itself(
    tmp_path: Path, nats_url: str
) -> None:
    process, url = launch(tmp_path, nats_url, "all")
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            body = {"sku": "A-1", "name": "Apple", "price": "1.50"}
            accepted = await client.post("/commands/AddProduct", json=body, headers={"Prefer": "respond-async"})
            assert accepted.status_code == 202, accepted.text
            for _ in range(500):
                status = (await client.get(accepted.json()["status_url"])).json()
                if status["status"] != "pending":
                    break
                await asyncio.sleep(0.02)
    finally:
        process.terminate()
        process.wait(10)
    assert status["status"] == "succeeded", status
    assert status["result"]["stream_id"] == "product-A-1"


@pytest.mark.parametrize(
    ("role", "works"), [("all", True), ("command-worker", True), ("commands", False), ("queries", False)]
)
async def test_with_nats_set_the_embedded_and_command_worker_roles_run_a_command_worker(
    tmp_path: Path, role: str, works: bool
) -> None:
    environ = {"TWOFOLD_DATABASE_URL": f"sqlite:///{tmp_path / 'shop.db'}", "TWOFOLD_NATS_URL": "nats://127.0.0.1:1"}
    settings = Settings.from_env(shop, environ)
    runtime = runtime_for(shop, settings, role)  # type: ignore[arg-type]
    assert any(isinstance(w, CommandWorker) for w in runtime.workers) == works
    assert isinstance(async_commands_for(runtime, settings), JetStreamCommands) == (role != "queries")
    await runtime.stop()


async def test_without_nats_202_commands_run_in_the_api_process(tmp_path: Path) -> None:
    settings = Settings.from_env(shop, {"TWOFOLD_DATABASE_URL": f"sqlite:///{tmp_path / 'shop.db'}"})
    runtime = runtime_for(shop, settings, "all")
    assert async_commands_for(runtime, settings) is None
    assert not any(isinstance(w, CommandWorker) for w in runtime.workers)
    await runtime.stop()


def test_the_command_worker_role_without_nats_says_which_variable_to_set(tmp_path: Path) -> None:
    settings = Settings.from_env(shop, {"TWOFOLD_DATABASE_URL": f"sqlite:///{tmp_path / 'shop.db'}"})
    with pytest.raises(ConfigurationError, match=r"--role command-worker takes commands from NATS: set TWOFOLD_NATS_"):
        runtime_for(shop, settings, "command-worker")


def test_a_command_worker_needs_an_event_store() -> None:
    with pytest.raises(ConfigurationError, match=r"A command worker runs commands: give its Runtime\(store=\.\.\.\)"):
        CommandWorker(Runtime(shop), "nats://127.0.0.1:4222")
