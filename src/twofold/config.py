"""Settings from the environment, and the stores they name.

    TWOFOLD_DATABASE_URL       the event store: sqlite:///data/shop.db (default) or postgresql://…
    TWOFOLD_READ_DATABASE_URL  the read models; defaults beside the event store
    TWOFOLD_NATS_URL           NATS JetStream (nats://127.0.0.1:4222): the relay publishes events there,
                               and asynchronous commands go to its work queue for command workers;
                               unset, nothing is published and 202 commands run in the API process
    HOST, PORT                 where HTTP listens (127.0.0.1:8000)

``sqlite:///relative/path.db`` is relative to the working directory, ``sqlite:////abs/path.db`` absolute.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from twofold.command_queue import CommandQueue
from twofold.errors import ConfigurationError
from twofold.readmodels import ReadStore
from twofold.readmodels.sqlite import SQLiteReadStore
from twofold.runtime import Runtime, Worker
from twofold.service import Service
from twofold.store import EventStore
from twofold.store.sqlite import SQLiteEventStore

__all__ = ["Role", "Settings", "async_commands_for", "runtime_for"]

Role = Literal["all", "commands", "queries", "projections", "relay", "command-worker"]


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str
    read_database_url: str
    host: str = "127.0.0.1"
    port: int = 8000
    nats_url: str | None = None

    @classmethod
    def from_env(cls, service: Service, environ: Mapping[str, str] = os.environ) -> Settings:
        """Read settings, defaulting to SQLite files under ``./data`` named after the service."""
        database_url = environ.get("TWOFOLD_DATABASE_URL") or f"sqlite:///data/{service.name}.db"
        read_url = environ.get("TWOFOLD_READ_DATABASE_URL") or _beside(database_url)
        port = environ.get("PORT", "8000")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigurationError(f"PORT must be a TCP port number from 1 to 65535 (got {port!r})")
        nats_url = environ.get("TWOFOLD_NATS_URL") or None
        if nats_url is not None and not nats_url.startswith(("nats://", "tls://")):
            raise ConfigurationError(f"TWOFOLD_NATS_URL must be nats://host:port or tls://host:port (got {nats_url!r})")
        return cls(database_url, read_url, environ.get("HOST", "127.0.0.1"), int(port), nats_url)


def _beside(database_url: str) -> str:
    """SQLite read models go in a file of their own, so projecting never waits on the append lock."""
    if database_url.startswith("sqlite:///"):
        path = Path(database_url.removeprefix("sqlite:///"))
        return "sqlite:///" + str(path.with_name(f"{path.stem}-read{path.suffix or '.db'}"))
    return database_url


def open_event_store(url: str) -> EventStore:
    if _is_postgres(url):
        from twofold.store.postgres import PostgresEventStore

        return PostgresEventStore(url)
    return SQLiteEventStore(_sqlite_path(url, "TWOFOLD_DATABASE_URL"))


def open_read_store(url: str) -> ReadStore:
    if _is_postgres(url):
        from twofold.readmodels.postgres import PostgresReadStore

        return PostgresReadStore(url)
    return SQLiteReadStore(_sqlite_path(url, "TWOFOLD_READ_DATABASE_URL"))


def _is_postgres(url: str) -> bool:
    if not url.startswith(("postgresql://", "postgres://")):
        return False
    try:
        import asyncpg  # noqa: F401
        import psycopg  # noqa: F401
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            "A postgresql:// URL needs the PostgreSQL drivers: pip install 'twofold[postgres]'"
        ) from exc
    return True


def _sqlite_path(url: str, variable: str) -> str:
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if path:
            return path
    raise ConfigurationError(
        f"{variable}={url!r} is not a database this installation can open; use sqlite:///path/to/file.db "
        "(relative), sqlite:////absolute/path.db or postgresql://user@host:port/database"
    )


def runtime_for(service: Service, settings: Settings, role: Role = "all") -> Runtime:
    """A runtime for one role: everything, the command API, a query replica, the projection worker,
    or the relay (which keeps its checkpoint in the read store). ``all`` relays too when NATS is set."""
    relay = settings.nats_url is not None and role in ("all", "relay")
    if role == "relay" and not relay:
        raise ConfigurationError("--role relay publishes to NATS: set TWOFOLD_NATS_URL, e.g. nats://127.0.0.1:4222")
    command_worker = settings.nats_url is not None and role in ("all", "command-worker")
    if role == "command-worker" and not command_worker:
        raise ConfigurationError(
            "--role command-worker takes commands from NATS: set TWOFOLD_NATS_URL, e.g. nats://127.0.0.1:4222"
        )
    store_roles = ("all", "commands", "projections", "relay", "command-worker")
    store = open_event_store(settings.database_url) if role in store_roles else None
    read_store = (
        open_read_store(settings.read_database_url) if role in ("all", "queries", "projections", "relay") else None
    )
    workers: list[Worker] = []
    if relay and store is not None and read_store is not None and settings.nats_url is not None:
        workers.append(_relay(service.name, store, read_store, settings.nats_url))
    runtime = Runtime(
        service, store=store, read_store=read_store, project=role in ("all", "projections"), workers=workers
    )
    if command_worker and settings.nats_url is not None:
        runtime.workers.append(_command_worker(runtime, settings.nats_url))
    return runtime


def _relay(service_name: str, store: EventStore, read_store: ReadStore, nats_url: str) -> Worker:
    try:
        from twofold.broker.nats import JetStreamRelay
    except ModuleNotFoundError as exc:
        raise ConfigurationError(f"TWOFOLD_NATS_URL is set, but {exc}") from exc
    return JetStreamRelay(service_name, store, read_store, nats_url)


def async_commands_for(runtime: Runtime, settings: Settings) -> CommandQueue | None:
    """Where the command API queues ``Prefer: respond-async`` commands: NATS when it is set, else
    ``None`` (a task of the API process each, as :func:`twofold.http.create_app` does by default)."""
    if settings.nats_url is None or runtime.store is None:
        return None
    try:
        from twofold.broker.commands import JetStreamCommands
    except ModuleNotFoundError as exc:
        raise ConfigurationError(f"TWOFOLD_NATS_URL is set, but {exc}") from exc
    return JetStreamCommands(runtime, settings.nats_url)


def _command_worker(runtime: Runtime, nats_url: str) -> Worker:
    try:
        from twofold.broker.commands import CommandWorker
    except ModuleNotFoundError as exc:
        raise ConfigurationError(f"TWOFOLD_NATS_URL is set, but {exc}") from exc
    return CommandWorker(runtime, nats_url)
