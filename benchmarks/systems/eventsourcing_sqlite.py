"""eventsourcing (pyeventsourcing) on its SQLite persistence module, used as its documentation shows.

An ``Application`` configured with ``PERSISTENCE_MODULE=eventsourcing.sqlite`` and ``SQLITE_DBNAME``,
an ``Aggregate`` whose ``@event`` methods record events, ``app.save``/``app.repository.get``, and
the notification log for reading the global sequence. No snapshots, no aggregate cache (its defaults).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from benchmarks.shape import PAYLOAD, Shape

PAGE_SIZE = 500  # as twofold's read_all pages; eventsourcing's default section size is 10


class Counter(Aggregate):
    @event("Created")
    def __init__(self, sku: str, name: str, quantity: int) -> None:
        self.happenings = 1

    @event("Happened")
    def happen(self, sku: str, name: str, quantity: int) -> None:
        self.happenings += 1


class Counters(Application[UUID]):
    log_section_size = PAGE_SIZE


def _open(path: Path) -> Counters:
    return Counters(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)})


class EventsourcingSQLite:
    name = "eventsourcing"

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    def settings(self) -> dict[str, str]:
        """eventsourcing sets WAL but never ``PRAGMA synchronous``: read what its connections get."""
        app = _open(self._folder / "eventsourcing-settings.db")
        try:
            with app.recorder.datastore.get_connection(commit=False) as conn:  # type: ignore[attr-defined]
                raw: Any = conn._sqlite_conn  # read-only look at the pool's own connection
                level = raw.execute("PRAGMA synchronous").fetchone()[0]
                mode = raw.execute("PRAGMA journal_mode").fetchone()[0]
        finally:
            app.close()
        names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
        return {"synchronous": f"{names.get(level, level)} (SQLite default; not set)", "journal_mode": mode}

    async def append_per_command(self, path: Path, shape: Shape) -> float:
        app = _open(path)
        try:
            started = time.perf_counter()
            ids = []
            for _ in range(shape.streams):  # the first command creates each aggregate
                counter = Counter(**PAYLOAD)
                app.save(counter)
                ids.append(counter.id)
            for _ in range(shape.events_per_stream - 1):
                for counter_id in ids:
                    counter = app.repository.get(counter_id)
                    counter.happen(**PAYLOAD)
                    app.save(counter)
            return time.perf_counter() - started
        finally:
            app.close()

    async def append_batch(self, path: Path, shape: Shape) -> float:
        app = _open(path)
        try:
            started = time.perf_counter()
            _fill(app, shape)
            return time.perf_counter() - started
        finally:
            app.close()

    async def load_aggregate(self, path: Path, shape: Shape) -> float:
        app = _open(path)
        try:
            ids = _fill(app, shape)
            started = time.perf_counter()
            replayed = sum(app.repository.get(counter_id).happenings for counter_id in ids)
            elapsed = time.perf_counter() - started
        finally:
            app.close()
        assert replayed == shape.events, (replayed, shape.events)
        return elapsed

    async def read_all(self, path: Path, shape: Shape) -> float:
        app = _open(path)
        try:
            _fill(app, shape)
            started = time.perf_counter()
            count, start = 0, 1
            while page := app.notification_log.select(start, PAGE_SIZE):
                count += len([app.mapper.to_domain_event(n) for n in page])
                start = page[-1].id + 1
            elapsed = time.perf_counter() - started
        finally:
            app.close()
        assert count == shape.events, (count, shape.events)
        return elapsed


def _fill(app: Counters, shape: Shape) -> list[UUID]:
    """One ``save`` (one transaction) of ``events_per_stream`` events per aggregate."""
    ids = []
    for _ in range(shape.streams):
        counter = Counter(**PAYLOAD)
        for _ in range(shape.events_per_stream - 1):
            counter.happen(**PAYLOAD)
        app.save(counter)
        ids.append(counter.id)
    return ids
