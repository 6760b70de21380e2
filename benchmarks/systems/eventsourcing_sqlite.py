"""eventsourcing on its SQLite persistence module: ``PERSISTENCE_MODULE=eventsourcing.sqlite``, ``SQLITE_DBNAME``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.systems.eventsourcing_app import Counter, Counters, Eventsourcing

__all__ = ["Counter", "Counters", "EventsourcingSQLite"]

SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def _env(path: str) -> dict[str, str]:
    return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": path}


class EventsourcingSQLite(Eventsourcing):
    def __init__(self, folder: Path) -> None:
        super().__init__(_env, lambda: self._read_settings(folder / "eventsourcing-settings.db"))

    def _read_settings(self, path: Path) -> dict[str, Any]:
        """eventsourcing sets WAL but never ``PRAGMA synchronous``: read what its connections get."""
        app = self.open(str(path))
        try:
            with app.recorder.datastore.get_connection(commit=False) as conn:  # type: ignore[attr-defined]
                raw: Any = conn._sqlite_conn  # read-only look at the pool's own connection
                level = raw.execute("PRAGMA synchronous").fetchone()[0]
                mode = raw.execute("PRAGMA journal_mode").fetchone()[0]
        finally:
            app.close()
        path.unlink(missing_ok=True)
        return {"synchronous": f"{SYNCHRONOUS.get(level, level)} (SQLite default; not set)", "journal_mode": mode}
