"""The two backends every core workload runs on, each handing out a fresh database per run.

SQLite: a new file in a temporary folder, removed after the run. PostgreSQL: a new database on the
one server the runner started (durable: fsync and synchronous_commit left on), dropped after the run
so the disk stays bounded.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks.shape import Shape
from benchmarks.systems import System
from benchmarks.systems.eventsourcing_postgres import EventsourcingPostgres
from benchmarks.systems.eventsourcing_sqlite import EventsourcingSQLite
from benchmarks.systems.limit_postgres import LimitPostgres
from benchmarks.systems.limit_sqlite import LimitSQLite
from benchmarks.systems.twofold_postgres import TwofoldPostgres
from benchmarks.systems.twofold_sqlite import TwofoldSQLite
from twofold.testing.servers import PostgresServer

# Read back from the server, never assumed: these decide whether a commit waits for the disk.
POSTGRES_DURABILITY = ("fsync", "synchronous_commit", "full_page_writes", "wal_sync_method", "wal_level")


@dataclass
class SQLiteBackend:
    folder: Path
    shape: Shape
    name: str = "sqlite"
    systems: list[System] = field(init=False)

    def __post_init__(self) -> None:
        self.systems = [TwofoldSQLite(), EventsourcingSQLite(self.folder), LimitSQLite()]

    def fresh(self, label: str) -> str:
        return str(self.folder / f"{label}.db")

    async def discard(self, db: str) -> None:
        _remove(db)

    async def durability(self) -> dict[str, Any]:
        """The same for all three systems; each one's settings say who sets it (eventsourcing's is read back)."""
        return {"journal_mode": "wal", "synchronous": "FULL"}

    async def version(self) -> str:
        return sqlite3.sqlite_version


@dataclass
class PostgresBackend:
    server: PostgresServer
    shape: Shape
    name: str = "postgresql"
    systems: list[System] = field(init=False)

    def __post_init__(self) -> None:
        settings_db = self.server.create_database("core_eventsourcing_settings", exist_ok=True)
        self.systems = [TwofoldPostgres(), EventsourcingPostgres(settings_db), LimitPostgres()]

    def fresh(self, label: str) -> str:
        return self.server.create_database(f"core_{label}")

    async def discard(self, db: str) -> None:
        name = db.rsplit("/", 1)[1]
        conn = await asyncpg.connect(self.server.url())
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # name: letters, digits, _
        finally:
            await conn.close()

    async def durability(self) -> dict[str, Any]:
        conn = await asyncpg.connect(self.server.url())
        try:
            found = {name: await conn.fetchval(f"SHOW {name}") for name in POSTGRES_DURABILITY}
        finally:
            await conn.close()
        return found

    async def version(self) -> str:
        conn = await asyncpg.connect(self.server.url())
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()


def _remove(db: str) -> None:
    """The database file and whatever SQLite keeps beside it."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(db + suffix).unlink(missing_ok=True)


Backend = SQLiteBackend | PostgresBackend
