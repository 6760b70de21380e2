"""Settings from the environment, and the stores they name.

    TWOFOLD_DATABASE_URL       the event store: sqlite:///data/shop.db (default) or postgresql://…
    TWOFOLD_READ_DATABASE_URL  the read models; defaults beside the event store
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
from twofold.runtime import Runtime
from twofold.service import Service
from twofold.store import EventStore
from twofold.store.sqlite import SQLiteEventStore

__all__ = ["Role", "Settings", "runtime_for"]

Role = Literal["all", "commands", "queries", "projections"]


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str
    read_database_url: str
    host: str = "127.0.0.1"
    port: int = 8000

    @classmethod
    def from_env(cls, service: Service, environ: Mapping[str, str] = os.environ) -> Settings:
        """Read settings, defaulting to SQLite files under ``./data`` named after the service."""
        database_url = environ.get("TWOFOLD_DATABASE_URL") or f"sqlite:///data/{service.name}.db"
        read_url = environ.get("TWOFOLD_READ_DATABASE_URL") or _beside(database_url)
        port = environ.get("PORT", "8000")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigurationError(f"PORT must be a TCP port number from 1 to 65535 (got {port!r})")
        return cls(database_url, read_url, environ.get("HOST", "127.0.0.1"), int(port))


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
    """A runtime for one role: everything, the command API, a query replica, or the projection worker."""
    store = open_event_store(settings.database_url) if role in ("all", "commands", "projections") else None
    read_store = open_read_store(settings.read_database_url) if role in ("all", "queries", "projections") else None
    return Runtime(service, store=store, read_store=read_store, project=role in ("all", "projections"))
