"""eventsourcing (pyeventsourcing) used as its documentation shows, on whichever persistence module it is given.

An ``Application`` configured through its ``env`` (``PERSISTENCE_MODULE`` and the module's own keys),
an ``Aggregate`` whose ``@event`` methods record events, ``app.save``/``app.repository.get``, and
the notification log for reading the global sequence. No snapshots, no aggregate cache (its defaults).
Its API is synchronous: concurrent writers are threads sharing one Application and its connection pool.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from benchmarks.shape import PAYLOAD, Shape, share
from benchmarks.systems import in_threads

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


class Eventsourcing:
    """The workloads, given the ``env`` that points an Application at a database (a path or a URL)."""

    name = "eventsourcing"

    def __init__(self, env: Callable[[str], dict[str, str]], settings: Callable[[], dict[str, Any]]) -> None:
        self._env = env
        self._settings = settings

    def open(self, db: str) -> Counters:
        return Counters(env=self._env(db))

    def settings(self) -> dict[str, Any]:
        return self._settings()

    async def append_per_command(self, db: str, shape: Shape, writers: int) -> float:
        """Each writer thread creates its share of the aggregates (the first command needs no load),
        then goes round them: ``repository.get``, call the method, ``save``."""
        app = self.open(db)
        created = threading.Barrier(writers)  # ids are per thread; no round starts before all exist

        def writer(k: int) -> None:
            ids = []
            for _ in share(shape.streams, writers, k):
                counter = Counter(**PAYLOAD)
                app.save(counter)
                ids.append(counter.id)
            created.wait()
            for _ in range(shape.rounds - 1):
                for counter_id in ids:
                    counter = app.repository.get(counter_id)
                    counter.happen(**PAYLOAD)
                    app.save(counter)

        try:
            started = time.perf_counter()
            await in_threads(writer, writers)
            elapsed = time.perf_counter() - started
            count = _count(app)
        finally:
            app.close()
        assert count == shape.commands, (count, shape.commands)
        return elapsed

    async def append_batch_then_read(self, db: str, shape: Shape) -> dict[str, float]:
        app = self.open(db)
        try:
            started = time.perf_counter()
            ids = _fill(app, shape)
            seconds = {"append_batch": time.perf_counter() - started}
            started = time.perf_counter()
            replayed = sum(app.repository.get(counter_id).happenings for counter_id in ids)
            seconds["load_aggregate"] = time.perf_counter() - started
            assert replayed == shape.events, (replayed, shape.events)
            started = time.perf_counter()
            count = _read_all(app)
            seconds["read_all"] = time.perf_counter() - started
            assert count == shape.events, (count, shape.events)
        finally:
            app.close()
        return seconds


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


def _count(app: Counters) -> int:
    """Events in the notification log, counted untimed after a write workload."""
    count, start = 0, 1
    while page := app.notification_log.select(start, PAGE_SIZE):
        count += len(page)
        start = page[-1].id + 1
    return count


def _read_all(app: Counters) -> int:
    """The notification log in sections of ``PAGE_SIZE``, each notification mapped to its domain event."""
    count, start = 0, 1
    while page := app.notification_log.select(start, PAGE_SIZE):
        count += len([app.mapper.to_domain_event(n) for n in page])
        start = page[-1].id + 1
    return count
