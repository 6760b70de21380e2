"""What the end-to-end workloads share: result rows, percentiles, seeding, and server processes.

Rows have the shape ``benchmarks/run.py`` prints for its core workloads (``workload``, ``backend``,
``system``, ``writers``, ``value``, ``unit``, ``min``, ``max``, ``runs``), plus ``statistic`` and
``better`` where the figure is a percentile, a peak or a lower-is-better figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from benchmarks.shape import EVENT_TYPE, PAYLOAD, stream_key
from twofold.store.postgres import PostgresEventStore
from twofold.store.sqlite import SQLiteEventStore

Progress = Callable[[str], None]
ROOT = Path(__file__).resolve().parents[2]  # the repository: `tests.monolith` and `benchmarks` import from here
CATEGORY = "counter"  # the category every seeded stream belongs to, as in benchmarks/systems
READY_TIMEOUT = 60.0  # seconds a started server gets to answer /ready
STOP_TIMEOUT = 10.0  # seconds a terminated server gets before it is killed

SQLITE_COLUMNS = "stream_id, version, event_id, type, schema_version, data, metadata, recorded_at, category"
PG_COLUMNS = ["position", *(c.strip() for c in SQLITE_COLUMNS.split(","))]


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile ``q`` (0-100): a value that was observed, never interpolated."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def row(
    workload: str,
    backend: str,
    system: str,
    values: Sequence[float],
    unit: str,
    *,
    writers: int = 1,
    statistic: str | None = None,
    lower_is_better: bool = False,
    digits: int = 1,
    **extra: Any,
) -> dict[str, Any]:
    """One result: the median of ``values`` (one per run) with the fastest and slowest run."""
    result: dict[str, Any] = {
        "workload": workload,
        "backend": backend,
        "system": system,
        "writers": writers,
        "value": round(statistics.median(values), digits),
        "unit": unit,
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "runs": len(values),
    }
    if statistic is not None:
        result["statistic"] = statistic
    if lower_is_better:
        result["better"] = "lower"
    result.update(extra)
    return result


def database_name(purpose: str) -> str:
    """A PostgreSQL database name nobody has used yet, so every call starts from nothing."""
    return f"bench_{purpose}_{uuid.uuid4().hex[:10]}"


# -- seeding -------------------------------------------------------------------------------------
# Events are written straight into twofold's own tables, not through ``append``: setting up a
# million events must take seconds, and what is measured afterwards only reads them.


def _seed_rows(streams: int, events_per_stream: int, recorded_at: Any) -> Iterator[tuple[Any, ...]]:
    """Round robin over the streams, as commands arrive: stream 0 v1, stream 1 v1, … stream 0 v2, …"""
    data = json.dumps(PAYLOAD, separators=(",", ":"))
    position = 0
    for version in range(1, events_per_stream + 1):
        for n in range(streams):
            position += 1
            # Zero-padded ids grow with the position, so the unique index on event_id is appended to.
            yield (
                position,
                f"{CATEGORY}-{stream_key(n)}",
                version,
                f"{position:032d}",
                EVENT_TYPE,
                1,
                data,
                "{}",
                recorded_at,
                CATEGORY,
            )


async def seed_sqlite(path: Path, streams: int, events_per_stream: int) -> int:
    """Fill a fresh SQLite event store (twofold's schema, made by the store itself); return the head."""
    await SQLiteEventStore(path).close()  # creates the tables exactly as twofold declares them
    insert = f"INSERT INTO events (position, {SQLITE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"

    def fill() -> int:
        with closing(sqlite3.connect(path, isolation_level=None)) as conn:
            conn.execute("PRAGMA synchronous=OFF")  # setup, untimed: the measured reader opens its own
            conn.execute("BEGIN")
            rows = _seed_rows(streams, events_per_stream, datetime.now(UTC).isoformat())
            while chunk := list(itertools.islice(rows, 50_000)):
                conn.executemany(insert, chunk)
            conn.execute("COMMIT")
            return int(conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0])

    return await asyncio.to_thread(fill)


async def seed_postgres(url: str, streams: int, events_per_stream: int) -> int:
    """Fill a fresh PostgreSQL event store (migrated by the store itself) with COPY; return the head."""
    store = PostgresEventStore(url)
    try:
        await store.head_position()  # the first use migrates the schema
    finally:
        await store.close()
    conn = await asyncpg.connect(url)
    try:
        await conn.copy_records_to_table(
            "events", records=_seed_rows(streams, events_per_stream, datetime.now(UTC)), columns=PG_COLUMNS
        )
        await conn.execute("ANALYZE events")
        return int(await conn.fetchval("SELECT coalesce(max(position), 0) FROM events"))
    finally:
        await conn.close()


# -- server processes ----------------------------------------------------------------------------


class Server:
    """One ``twofold serve tests.monolith:shop`` process on a port of 127.0.0.1, stopped by its pid."""

    def __init__(self, role: str, port: int, env: dict[str, str], log: Path) -> None:
        self.role, self.port, self.log = role, port, log
        script = Path(sys.executable).with_name("twofold")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "twofold.cli"]
        self.base_url = f"http://127.0.0.1:{port}"
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [*command, "serve", "tests.monolith:shop", "--role", role, "--host", "127.0.0.1", "--port", str(port)],
                cwd=ROOT,
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def wait_ready(self) -> None:
        """Poll ``/ready`` until it answers 200; fail with the server's log if it dies or never does."""
        deadline = time.monotonic() + READY_TIMEOUT
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2.0) as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.role} server exited ({self.process.returncode}):\n{self.tail()}")
                try:
                    if (await client.get("/ready")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.role} server on port {self.port} never became ready:\n{self.tail()}")
                await asyncio.sleep(0.05)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else "(no log)"

    def stop(self) -> None:
        """SIGTERM (uvicorn shuts down cleanly), then SIGKILL if it lingers."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def start_servers(specs: Sequence[tuple[str, int, dict[str, str], Path]]) -> list[Server]:
    """Start every server, then wait for all to be ready; on failure stop those already started."""
    servers: list[Server] = []
    try:
        for role, port, env, log in specs:
            servers.append(Server(role, port, env, log))
        for server in servers:
            await server.wait_ready()
    except BaseException:
        stop_all(servers)
        raise
    return servers


def stop_all(servers: Sequence[Server]) -> None:
    for server in servers:
        server.stop()


# -- a lean HTTP client --------------------------------------------------------------------------
# httpx spends more CPU per request than the server it measures (about 2 ms a request on the
# 2-core benchmark machine, against 1 ms for the server's /health): with it, the load generator
# and not twofold would set the ceiling. This speaks just enough HTTP/1.1 for small JSON requests
# on keep-alive connections, at a fraction of the cost.


class HTTPError(Exception):
    """The connection failed or the answer was not HTTP/1.1 as uvicorn sends it."""


class Connection:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1:``port``; one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
        self._reader, self._writer, self._host = reader, writer, f"127.0.0.1:{port}"

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, port)

    async def request(
        self, method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """Send one request; return the status code and the body."""
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self._host}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body or method == "POST":
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        try:
            head = await self._reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as exc:
            raise HTTPError(f"no answer to {method} {target}: {exc}") from exc
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        length = None
        for line in header_lines:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        if length is None:
            raise HTTPError(f"{method} {target}: an answer without Content-Length: {status_line}")
        try:
            payload = await self._reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise HTTPError(f"{method} {target}: the answer was cut short: {exc}") from exc
        return int(status_line.split(" ", 2)[1]), payload

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()


class Pool:
    """Idle connections to one port, reused; a new one is opened whenever none is idle.

    A connection idle for longer than ``IDLE_LIMIT`` is closed rather than reused: uvicorn closes
    keep-alive connections after 5 s of silence, and a request sent on one it is closing would fail.
    """

    IDLE_LIMIT = 3.0  # seconds

    def __init__(self, port: int) -> None:
        self.port = port
        self._idle: list[tuple[float, Connection]] = []
        self._all: list[Connection] = []

    async def request(
        self, method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        conn = await self._take()
        try:
            answer = await conn.request(method, target, body, headers)
        except BaseException:
            await self._discard(conn)
            raise
        self._idle.append((time.monotonic(), conn))
        return answer

    async def _take(self) -> Connection:
        while self._idle:
            used, conn = self._idle.pop()
            if time.monotonic() - used < self.IDLE_LIMIT:
                return conn
            await self._discard(conn)
        conn = await Connection.open(self.port)
        self._all.append(conn)
        return conn

    async def _discard(self, conn: Connection) -> None:
        self._all.remove(conn)
        await conn.close()

    async def close(self) -> None:
        for conn in self._all:
            await conn.close()
        self._all.clear()
        self._idle.clear()
