"""The in-process transport: another service's events, read straight from its store (embedded mode).

    feed = InProcessFeed(inventory_runtime.store, "inventory", orders_runtime,
                         orders.subscriptions[0])
    orders_runtime = Runtime(orders, store=..., read_store=..., workers=[feed])

When services share one process, a subscription needs no broker: the feed follows the source's
event store, only the subscribed categories, and imports each page with the same
:class:`~twofold.subscriptions.Importer` as the JetStream consumer, so the same guarantees hold
(once per event, in order per stream, poison parked with the rest of its stream). Its
checkpoint, the last source position it finished with, lives in the importing service's read
store as ``twofold.feed.<service>.from.<source>``; it moves after each page's import, so a crash
in between imports that page again, which changes nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence

from twofold.health import Progress, Total, progress_of
from twofold.messages import utc_now
from twofold.readmodels import Database, ReadStore
from twofold.service import Service
from twofold.store import EventStore, StoredEvent
from twofold.store._follow import follow_pages
from twofold.subscriptions import DEFAULT_MAX_ATTEMPTS, Importer, Outcome, Subscription

__all__ = ["InProcessFeed"]

log = logging.getLogger("twofold.broker.inprocess")

RETRY_DELAYS = (0.05, 0.2, 0.5, 1.0, 2.0)  # seconds between attempts at a page's failing events


class InProcessFeed:
    """Imports one subscription's events from the source service's store in this process.

    Args:
        source_store: the source service's event store (only read).
        source_name: the source service's name (must be the subscription's source).
        service: the importing service.
        store: the importing service's event store.
        read_store: the importing service's read store (checkpoint and parked messages).
        subscription: the categories imported.
        page_size: the most events imported together.
        max_attempts: attempts at a failing event before it is parked.
        retry_delays: seconds between those attempts.
    """

    def __init__(
        self,
        source_store: EventStore,
        source_name: str,
        service: Service,
        store: EventStore,
        read_store: ReadStore[Database],
        subscription: Subscription,
        *,
        page_size: int = 500,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry_delays: Sequence[float] = RETRY_DELAYS,
    ) -> None:
        if subscription.source != source_name:
            raise ValueError(f"The subscription is to {subscription.source!r}, not to {source_name!r}")
        self.name = f"twofold.feed.{service.name}.from.{source_name}"
        self.importer = Importer(service, store, read_store, subscription, max_attempts=max_attempts)
        self._source = source_store
        self._read_store = read_store
        self._categories = tuple(subscription.categories)
        self._page_size = page_size
        self._retry_delays = tuple(retry_delays)
        self._task: asyncio.Task[None] | None = None
        self.position = 0
        self.last_progress = utc_now()
        self.failures = 0
        self.last_error: str | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Read the checkpoint and start following the source; calling it again does nothing."""
        if self.running:
            return
        await self.importer.dead_letters.setup()
        self.position = await self._read_store.checkpoint(self.name)
        self.last_progress = utc_now()
        self._task = asyncio.create_task(self._run(), name=f"feed {self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def progress(self) -> Progress:
        """Where the feed stands against the source's head (events of other categories count as done)."""
        progress = await progress_of(self.name, self._source, self.position, self.last_progress, self._categories)
        if progress.lag == 0 and self.running:  # caught up: idle, which is healthy
            self.last_progress = utc_now()
            progress = dataclasses.replace(progress, last_progress=self.last_progress)
        return progress

    def totals(self) -> list[Total]:
        """Events imported since the process started (duplicates not counted)."""
        return [Total("imported_events", {"worker": self.name, "source": self.importer.source}, self.importer.imported)]

    async def catch_up(self) -> None:
        """Import every subscribed event the source holds now, then return (for tests and tools)."""
        head = await self._source.head_position()
        while self.position < head:
            page = [e async for e in self._source.read_all(self.position + 1, self._page_size, self._categories)]
            if not page:
                break
            await self._import(page)
        await self._save(head)

    async def _run(self) -> None:
        while True:
            try:
                async for page in follow_pages(self._source, self.position + 1, self._page_size, self._categories):
                    await self._import(page)
                    self.failures, self.last_error = 0, None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store failed: try the page again, never skipping it
                delay = self._retry_delays[min(self.failures, len(self._retry_delays) - 1)]
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("feed %s failed after position %d (%s)", self.name, self.position, self.last_error)
                await asyncio.sleep(delay)

    async def _import(self, page: Sequence[StoredEvent]) -> None:
        page = [e for e in page if e.position > self.position]
        attempts = 1
        waiting = [(e, attempts) for e in page]
        while waiting:
            outcomes = await self.importer.receive_many(waiting)
            retry = [e for (e, _), o in zip(waiting, outcomes, strict=True) if o is Outcome.RETRY]
            if not retry:
                break
            await asyncio.sleep(self._retry_delays[min(attempts - 1, len(self._retry_delays) - 1)])
            attempts += 1
            waiting = [(e, attempts) for e in retry]
        if page:
            await self._save(page[-1].position)

    async def _save(self, position: int) -> None:
        if position > self.position:
            await self._read_store.transact(self.name, _nothing, position=position)
            self.position = position
            self.last_progress = utc_now()


def _nothing(db: Database) -> None:
    """The checkpoint moves alone: the imported events went to the event store."""
