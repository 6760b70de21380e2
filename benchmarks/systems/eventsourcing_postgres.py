"""eventsourcing on its PostgreSQL persistence module (psycopg 3), configured by its ``POSTGRES_*`` keys.

``POSTGRES_POOL_SIZE`` is raised from its default of 5 to the 8 writer threads, as a user running
8 threads would; everything else is left at eventsourcing's defaults (among them an ``EXCLUSIVE``
table lock per insert, which is how it keeps its notification ids in commit order).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from benchmarks.systems.eventsourcing_app import Eventsourcing

POOL_SIZE = 8


def _env(url: str) -> dict[str, str]:
    parts = urlsplit(url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": parts.path.lstrip("/"),
        "POSTGRES_HOST": parts.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_USER": parts.username or "postgres",
        "POSTGRES_PASSWORD": parts.password or "",  # the benchmark's server trusts local connections
        "POSTGRES_POOL_SIZE": str(POOL_SIZE),
    }


class EventsourcingPostgres(Eventsourcing):
    def __init__(self, settings_url: str) -> None:
        super().__init__(_env, lambda: self._read_settings(settings_url))

    def _read_settings(self, url: str) -> dict[str, Any]:
        """What eventsourcing's own pooled connection runs with (it sets no durability of its own)."""
        app = self.open(url)
        try:
            with app.recorder.datastore.transaction(commit=False) as cursor:  # type: ignore[attr-defined]
                found = {}
                for name in ("fsync", "synchronous_commit"):
                    cursor.execute(f"SHOW {name}")
                    found[name] = next(iter(cursor.fetchone().values()))
        finally:
            app.close()
        env = {k: v for k, v in _env(url).items() if k != "POSTGRES_PASSWORD"}
        return {**found, "env": env}
