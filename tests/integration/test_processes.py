"""The shop as real OS processes on loopback ports, sharing SQLite files: the split topology and restarts.

    twofold serve tests.monolith:shop --role commands      # appends events
    twofold serve tests.monolith:shop --role projections   # keeps the read models
    twofold serve tests.monolith:shop --role queries       # ×2, answers from the read models

Every process is started with ``python -m twofold.cli``, waited on until ``/health`` answers (or the
test fails with its output), and stopped by pid.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
START_SECONDS = 15.0  # for a process to answer /health
STOP_SECONDS = 10.0  # for a process to exit after SIGTERM, before it is killed

pytestmark = pytest.mark.slow


@dataclass
class Server:
    role: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def launch(role: str, data: Path) -> Server:
    """Start ``twofold serve`` in ``role`` on a free port, with its event and read stores in ``data``."""
    port = free_port()
    log = data / f"{role}-{port}.log"
    env = {**os.environ, "TWOFOLD_DATABASE_URL": f"sqlite:///{data / 'shop.db'}", "PORT": str(port)}
    env.pop("TWOFOLD_READ_DATABASE_URL", None)  # the read models go beside the events: shop-read.db
    command = [sys.executable, "-m", "twofold.cli", "serve", "tests.monolith:shop", "--role", role]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    return Server(role, port, process, log)


def wait_until_healthy(server: Server) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"{server.role} exited with {server.process.returncode}:\n{server.output()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(f"{server.role} did not answer /health within {START_SECONDS}s:\n{server.output()}")


def stop(server: Server) -> int:
    """Stop the process by its pid: SIGTERM, then SIGKILL if it lingers. Its exit code."""
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(STOP_SECONDS)
    return server.process.returncode


@contextmanager
def running(data: Path, *roles: str) -> Iterator[list[Server]]:
    """Start one process per role, all at once, and stop every one of them however the test ends."""
    servers: list[Server] = []
    try:
        for role in roles:
            servers.append(launch(role, data))
        for server in servers:
            wait_until_healthy(server)
        yield servers
    finally:
        for server in servers:
            stop(server)


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json()


def command(server: Server, type_name: str, body: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = ok(httpx.post(f"{server.url}/commands/{type_name}", json=body, timeout=10.0))
    return result


def query(server: Server, type_name: str, position: int, **params: str) -> Any:
    headers = {"X-Min-Position": str(position)}
    return ok(httpx.get(f"{server.url}/queries/{type_name}", params=params, headers=headers, timeout=10.0))


def test_split_processes_serve_commands_on_one_api_and_read_your_writes_on_every_query_replica(
    tmp_path: Path,
) -> None:
    with running(tmp_path, "commands", "projections", "queries", "queries") as servers:
        commands, projections, *replicas = servers

        command(commands, "AddProduct", {"sku": "A-1", "name": "Apple", "price": "1.50"})
        command(commands, "ReceiveStock", {"sku": "A-1", "quantity": 5})
        placed = command(
            commands,
            "PlaceOrder",
            {"order_id": "o-1", "customer_id": "c-1", "lines": [{"sku": "A-1", "quantity": 2}]},
        )

        for replica in replicas:
            assert query(replica, "StockLevel", placed["position"], sku="A-1") == {"sku": "A-1", "available": 3}
            history = query(replica, "OrderHistory", placed["position"], customer_id="c-1")
            assert [(o["order_id"], o["total"]) for o in history["orders"]] == [("o-1", "3.00")]
        ready = ok(httpx.get(f"{projections.url}/ready", timeout=5.0))
        assert ready["head"] == placed["position"]
        assert ready["projections"] == {"shop.catalog": placed["position"], "shop.orders": placed["position"]}


def test_each_split_process_serves_only_its_own_side(tmp_path: Path) -> None:
    with running(tmp_path, "commands", "queries", "projections") as (commands, replica, projections):
        added = command(commands, "AddProduct", {"sku": "A-1", "name": "Apple", "price": "1.50"})

        for server in (replica, projections):
            refused = httpx.post(f"{server.url}/commands/ReceiveStock", json={"sku": "A-1", "quantity": 1})
            assert refused.status_code == 404, refused.text
            assert refused.headers["content-type"] == "application/problem+json"
            assert httpx.get(f"{server.url}/commands/{added['command_id']}").status_code == 404
        for server in (commands, projections):
            refused = httpx.get(f"{server.url}/queries/StockLevel", params={"sku": "A-1"})
            assert refused.status_code == 404, refused.text
            assert refused.headers["content-type"] == "application/problem+json"
        assert query(replica, "StockLevel", added["position"], sku="A-1") == {"sku": "A-1", "available": 0}


def test_the_embedded_process_keeps_its_events_and_read_models_across_a_restart(tmp_path: Path) -> None:
    with running(tmp_path, "all") as (first,):
        command(first, "AddProduct", {"sku": "A-1", "name": "Apple", "price": "1.50"})
        stocked = command(first, "ReceiveStock", {"sku": "A-1", "quantity": 3})
        assert query(first, "StockLevel", stocked["position"], sku="A-1")["available"] == 3
        # A clean shutdown: the lifespan's stop runs; uvicorn then re-raises SIGTERM to exit with it.
        assert stop(first) in (0, -signal.SIGTERM), first.output()
        assert "Application shutdown complete." in first.output()

    with running(tmp_path, "all") as (second,):
        assert query(second, "StockLevel", stocked["position"], sku="A-1") == {"sku": "A-1", "available": 3}
        more = command(second, "ReceiveStock", {"sku": "A-1", "quantity": 2})
        assert more["position"] == stocked["position"] + 1
        assert query(second, "StockLevel", more["position"], sku="A-1")["available"] == 5  # nothing re-applied
        assert ok(httpx.get(f"{second.url}/ready", timeout=5.0))["head"] == more["position"]
