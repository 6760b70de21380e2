"""Projections: read models kept up to date from the global event stream.

    class Catalog(Projection, name="shop.catalog"):
        tables = ("products",)

        def setup(self, db: Database) -> None:
            db.execute("CREATE TABLE IF NOT EXISTS products (sku TEXT PRIMARY KEY, name TEXT)")

        def apply(self, event: ProductAdded, db: Database, record: StoredEvent) -> None:
            db.execute("INSERT INTO products VALUES (?, ?)", (event.sku, event.name))

A projection's ``target`` names the read store that holds its model: ``"sql"`` (the service's read
database, the default), ``"warehouse"`` (DuckDB, for reports) or ``"search"`` (a full-text index).
``setup``, ``apply`` and ``reset`` receive that store's handle, and so do the projection's own
query methods.

A projection's ``name`` is a durable id: its checkpoint is stored under it, so renaming a
projection rebuilds it from the first event. ``apply``'s annotation names the events it handles;
the runner skips the rest without decoding them. Each batch of events, applied together with the
checkpoint, commits as one transaction: a crash anywhere re-applies nothing and loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from twofold._notify import Notifier
from twofold.aggregate import event_types_of
from twofold.health import Progress, progress_of
from twofold.messages import Event, EventTypes, Upcaster, utc_now
from twofold.observability import projection_span
from twofold.personal import KeyStore, PersonalData
from twofold.readmodels import TARGETS, CheckpointConflict, ReadStore
from twofold.store import EventStore, StoredEvent
from twofold.store._follow import follow_pages
from twofold.tenancy import Tenancy

__all__ = ["Projection", "ProjectionRunner"]

log = logging.getLogger("twofold.projections")

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RETRY_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)  # seconds before re-trying a failed batch, then every 5 s
CATCH_UP_CHECK = 0.05  # seconds catch_up gives a running task to show progress before reading itself


class Projection:
    """Base of projections: override ``setup`` and ``apply``; list the tables it owns in ``tables``.

    ``target`` names the store the model lives in (``"sql"``, ``"warehouse"`` or ``"search"``);
    the handle parameters are typed ``Any`` here so that a subclass annotates the one its target
    hands out (``db: Database``, ``index: SearchIndex``).
    """

    name: ClassVar[str]
    tables: ClassVar[tuple[str, ...]] = ()
    target: ClassVar[str] = "sql"

    def __init_subclass__(cls, *, name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.name = name or cls.__name__
        bad = [t for t in cls.tables if not _IDENTIFIER.match(t)]
        if bad:
            raise ValueError(f"{cls.__name__}.tables: {bad} are not plain SQL identifiers")
        if cls.target not in TARGETS:
            raise ValueError(f"{cls.__name__}.target must be one of {', '.join(TARGETS)} (got {cls.target!r})")

    def setup(self, db: Any) -> None:
        """Create the read model's tables if they do not exist yet."""

    def apply(self, event: Any, db: Any, record: StoredEvent) -> None:
        """Change the read model for one event; ``record`` has its position, stream and metadata."""
        raise TypeError(f"{type(self).__name__} must define apply(self, event, db, record)")

    def reset(self, db: Any) -> None:
        """Drop the read model's tables, before a rebuild from the first event (SQL targets; others override it)."""
        for table in self.tables:
            db.execute(f'DROP TABLE IF EXISTS "{table}"')  # names checked as identifiers at class creation

    @classmethod
    def event_types(cls) -> tuple[type[Event], ...]:
        """The event classes named in ``apply``'s annotation."""
        return event_types_of(cls.apply, "event")


class ProjectionRunner:
    """Keeps one projection caught up: reads pages of events, applies each page in one transaction.

    Args:
        projection: what to keep up to date.
        store: where events come from.
        read_store: where the read model and its checkpoint live: the store of the projection's target.
        batch_size: the most events applied in one transaction.
        upcasters: bring events stored at older schema versions up to the classes ``apply`` names.
        tenancy: opens tenants' read stores; shared with the runtime's other projections and queries.

    An event stamped with a tenant is applied in that tenant's read store (``twofold.tenancy``),
    which keeps a checkpoint of its own; this runner's position is the main store's checkpoint,
    committed after the tenants' part of each page.
    """

    def __init__(
        self,
        projection: Projection,
        store: EventStore,
        read_store: ReadStore[Any],
        *,
        batch_size: int = 500,
        upcasters: Sequence[Upcaster] = (),
        tenancy: Tenancy | None = None,
    ) -> None:
        self.projection = projection
        self._store = store
        self._read_store = read_store
        self._tenancy = tenancy or Tenancy(read_store, [projection])
        self._batch_size = batch_size
        self._types = EventTypes(projection.event_types(), upcasters)
        self._notifier = Notifier()
        self._task: asyncio.Task[None] | None = None
        self.failures = 0
        self.last_error: str | None = None
        self.last_progress = utc_now()

    @property
    def name(self) -> str:
        return self.projection.name

    @property
    def running(self) -> bool:
        """True while the runner's task is alive."""
        return self._task is not None and not self._task.done()

    @property
    def read_store(self) -> ReadStore[Any]:
        """The store this runner projects into."""
        return self._read_store

    @property
    def position(self) -> int:
        """The last position this runner committed."""
        return self._notifier.head

    async def progress(self) -> Progress:
        """Where this runner stands against the store's head, for health checks."""
        return await progress_of(self.name, self._store, self.position, self.last_progress)

    async def start(self) -> None:
        await self._read_store.transact(self.name, self.projection.setup)
        self.last_progress = utc_now()
        self._notifier.announce(await self._read_store.checkpoint(self.name))
        self._task = asyncio.create_task(self._run(), name=f"projection {self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def wait_for(self, position: int, timeout: float) -> bool:
        """Wait until the checkpoint reaches ``position``; ``False`` if ``timeout`` runs out first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.position < position:
            left = deadline - loop.time()
            if left <= 0 or not await self._notifier.wait(self.position, left):
                return self.position >= position
        return True

    async def rebuild(self) -> None:
        """Drop the read model, every tenant's included, and replay every event into it from position 1."""
        await self.stop()

        def reset(db: Any) -> None:
            self.projection.reset(db)
            self.projection.setup(db)

        for tenant in await self._tenancy.tenants():
            await (await self._tenancy.store_for(tenant)).transact(self.name, reset, position=0)
        await self._read_store.transact(self.name, reset, position=0)
        self._notifier.head = 0
        self._task = asyncio.create_task(self._run(), name=f"projection {self.name}")

    async def follow_checkpoint(self) -> None:
        """Move on to the read store's checkpoint when it is further on, as after a rebuild swapped a model in."""
        self._notifier.announce(await self._read_store.checkpoint(self.name))

    async def catch_up(self) -> None:
        """Apply every event committed so far, then return (for tests, tools and rebuilds).

        While the runner's own task is applying pages, this waits for it rather than reading the
        same pages a second time. When the task makes no progress for a moment (it is failing, or
        waiting for a poll to notice another process's appends), this applies pages itself, so
        that it returns promptly and the caller gets any error.
        """
        head = await self._store.head_position()
        while self.position < head:
            if self.running and not self.failures:
                before = self.position
                await self._notifier.wait(before, CATCH_UP_CHECK)
                if self.position > before:
                    continue
            page = [e async for e in self._store.read_all(self.position + 1, self._batch_size)]
            if not page:
                return
            try:
                await self.apply_page(page)
            except CheckpointConflict as conflict:  # this runner's own task, or another worker, was first
                self._notifier.announce(conflict.actual)

    async def apply_page(self, page: Sequence[StoredEvent]) -> None:
        """Apply one page of consecutive events and move the checkpoint past the last, atomically.

        Events at or before this runner's position are left out: ``catch_up`` or a lost race may
        have applied them since the page was read, and the checkpoint fence alone cannot tell.
        """
        # The fence is the checkpoint as this call found it: while the tenants' part below is
        # awaited, this runner's task (or catch_up) may commit the same page and move
        # self.position on, and a fence read after that would let the page be applied twice.
        expected = self.position
        page = [e for e in page if e.position > expected]
        if not page:
            return
        handled = [record for record in page if record.type in self._types]
        if handled:  # a span only for pages with work in them: every projection reads every event
            with projection_span(self.name, handled):
                await self._apply(page, handled, expected)
        else:
            await self._apply(page, handled, expected)
        self.last_progress = utc_now()
        self._notifier.announce(page[-1].position)

    async def _apply(self, page: Sequence[StoredEvent], handled: Sequence[StoredEvent], expected: int) -> None:
        by_tenant: dict[str | None, list[StoredEvent]] = {}
        for record in await self._personal().open(list(handled), self._types):
            by_tenant.setdefault(record.metadata.get("tenant"), []).append(record)
        for tenant, records in by_tenant.items():
            if tenant is not None:
                await self._apply_for_tenant(tenant, records)
        untenanted = self._applying(by_tenant.get(None, []))
        await self._read_store.transact(self.name, untenanted, expected=expected, position=page[-1].position)

    def _personal(self) -> PersonalData:
        """Fresh for each page: a key forgotten since the last page is never read from a cache."""
        return PersonalData(self._store if isinstance(self._store, KeyStore) else None)

    async def _apply_for_tenant(self, tenant: str, records: list[StoredEvent]) -> None:
        """Apply a tenant's events of the page in its own store, skipping what that store has applied.

        The tenant's checkpoint commits with its rows, before this runner's own; after a crash
        between the two, the page comes round again and the tenant's part is found done.
        """
        store = await self._tenancy.store_for(tenant)
        while True:
            done = await store.checkpoint(self.name)
            todo = [r for r in records if r.position > done]
            if not todo:
                return
            try:
                await store.transact(self.name, self._applying(todo), expected=done, position=todo[-1].position)
                return
            except CheckpointConflict:  # another worker applied some of them first: skip those
                continue

    def _applying(self, records: Sequence[StoredEvent]) -> Callable[[Any], None]:
        def work(db: Any) -> None:
            for record in records:
                self.projection.apply(self._types.decode(record.type, record.data, record.schema_version), db, record)

        return work

    async def _run(self) -> None:
        while True:
            try:
                async for page in follow_pages(self._store, self.position + 1, self._batch_size):
                    await self.apply_page(page)
                    self.failures, self.last_error = 0, None
            except asyncio.CancelledError:
                raise
            except CheckpointConflict as conflict:  # another worker applied these events first
                log.info("projection %s: %s; resuming from there", self.name, conflict)
                self._notifier.announce(conflict.actual)
            except Exception as exc:  # a failing batch must not kill the runner: retry it
                delay = RETRY_DELAYS[min(self.failures, len(RETRY_DELAYS) - 1)]
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception(
                    "projection %s failed at position %d; retrying in %ss", self.name, self.position + 1, delay
                )
                await asyncio.sleep(delay)
