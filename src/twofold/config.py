"""Settings from the environment, and the stores they name.

    TWOFOLD_DATABASE_URL       the event store: sqlite:///data/shop.db (default) or postgresql://…
    TWOFOLD_READ_DATABASE_URL  the read models; defaults beside the event store
    TWOFOLD_NATS_URL           NATS JetStream (nats://127.0.0.1:4222): the relay publishes events there,
                               and consumers import the subscribed ones; unset, nothing is published
    HOST, PORT                 where HTTP listens (127.0.0.1:8000)

``sqlite:///relative/path.db`` is relative to the working directory, ``sqlite:////abs/path.db`` absolute.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from twofold.errors import ConfigurationError
from twofold.readmodels import ReadStore
from twofold.readmodels.sqlite import SQLiteReadStore
from twofold.runtime import Runtime, Worker
from twofold.service import Service
from twofold.store import EventStore
from twofold.store.sqlite import SQLiteEventStore

__all__ = ["Role", "Settings", "runtime_for"]

Role = Literal["all", "commands", "queries", "projections", "relay", "consumers"]


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
    the relay (which keeps its checkpoint in the read store), or the consumers of the service's
    subscriptions (parking what fails in the read store). ``all`` runs relay and consumers too when NATS is set."""
    relay = settings.nats_url is not None and role in ("all", "relay")
    consume = settings.nats_url is not None and role in ("all", "consumers")
    if role in ("relay", "consumers") and settings.nats_url is None:
        verb = "publishes to" if role == "relay" else "imports from"
        raise ConfigurationError(f"--role {role} {verb} NATS: set TWOFOLD_NATS_URL, e.g. nats://127.0.0.1:4222")
    both = ("relay", "consumers")
    store = open_event_store(settings.database_url) if role in ("all", "commands", "projections", *both) else None
    read_store = (
        open_read_store(settings.read_database_url) if role in ("all", "queries", "projections", *both) else None
    )
    workers: list[Worker] = []
    if relay and store is not None and read_store is not None and settings.nats_url is not None:
        workers.append(_relay(service.name, store, read_store, settings.nats_url))
    if consume and store is not None and read_store is not None and settings.nats_url is not None:
        workers.extend(_consumers(service, store, read_store, settings.nats_url))
    return Runtime(service, store=store, read_store=read_store, project=role in ("all", "projections"), workers=workers)


def _relay(service_name: str, store: EventStore, read_store: ReadStore, nats_url: str) -> Worker:
    try:
        from twofold.broker.nats import JetStreamRelay
    except ModuleNotFoundError as exc:
        raise ConfigurationError(f"TWOFOLD_NATS_URL is set, but {exc}") from exc
    return JetStreamRelay(service_name, store, read_store, nats_url)


def _consumers(service: Service, store: EventStore, read_store: ReadStore, nats_url: str) -> list[Worker]:
    if not service.subscriptions:
        return []
    try:
        from twofold.broker.consumer import JetStreamConsumer
    except ModuleNotFoundError as exc:
        raise ConfigurationError(f"TWOFOLD_NATS_URL is set, but {exc}") from exc
    return [JetStreamConsumer(service, store, read_store, s, nats_url) for s in service.subscriptions]
