"""Rebuilding a projection while queries go on: built aside in a shadow store, then swapped in.

    await rebuild_projection(catalog, store, read_store)

The live read model stays where it is, kept up to date and queried, while a scratch store of the
same database (:meth:`ReadStore.scratch <twofold.readmodels.ReadStore.scratch>`) replays every
event from the first, a page per transaction. Once the shadow has caught up with the head,
:meth:`ReadStore.swap_in <twofold.readmodels.ReadStore.swap_in>` replaces the live tables and
checkpoint by the shadow's in one transaction: queries answer from the old model until then and
from the new one after, never from a half-built one. A runner keeping the live model, in this
process or another, finds its checkpoint moved on at its next batch and resumes from there.

The main store is swapped first, then each tenant's copy in turn (each atomically, each rebuilt
from the tenant's own events); the tenant list is taken after the main swap, so that a tenant
whose first events the swap jumped over is rebuilt too.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from twofold.messages import EventTypes, Upcaster
from twofold.personal import KeyStore, PersonalData
from twofold.projections import Projection
from twofold.readmodels import CheckpointConflict, Database, ReadStore
from twofold.store import EventStore, StoredEvent
from twofold.tenancy import Tenancy

__all__ = ["OnProgress", "Replay", "rebuild_projection"]

SWAP_ATTEMPTS = 20  # catch-ups before giving up on a live model that keeps moving past the shadow

OnProgress = Callable[[str, int, int], None]  # (projection, or projection@tenant; position reached; target position)


@dataclass
class Replay:
    """Applies one projection's events, of one tenant (``None``: events without one), to a store.

    Each page of ``batch_size`` events is one transaction that moves ``projection.name``'s
    checkpoint to the last position read, so memory stays bounded however long the log is.

    Args:
        projection: whose ``apply`` runs.
        store: where the events come from.
        tenant: whose events are applied; the others are passed over.
        upcasters: bring older stored events up to the classes ``apply`` names.
        batch_size: events per page and per transaction.
    """

    projection: Projection
    store: EventStore
    tenant: str | None = None
    upcasters: Sequence[Upcaster] = ()
    batch_size: int = 500
    tenants_seen: set[str] = field(default_factory=set)  # every tenant met on the way

    def __post_init__(self) -> None:
        self._types = EventTypes(self.projection.event_types(), self.upcasters)

    def label(self) -> str:
        return self.projection.name if self.tenant is None else f"{self.projection.name}@{self.tenant}"

    async def into(self, target: ReadStore[Any], after: int, upto: int, progress: OnProgress | None = None) -> int:
        """Apply the events after position ``after`` up to ``upto`` to ``target``; return ``upto``."""
        position = after
        while position < upto:
            page = [e async for e in self.store.read_all(position + 1, self.batch_size, types=self._types.names)]
            page = [e for e in page if e.position <= upto]
            reached = page[-1].position if page and len(page) == self.batch_size else upto
            records = await self._opened([e for e in page if self._mine(e)])
            await target.transact(self.projection.name, self._applying(records), expected=position, position=reached)
            position = reached
            if progress is not None:
                progress(self.label(), position, upto)
        return position

    async def events(self, upto: int) -> AsyncGenerator[StoredEvent, None]:
        """Every event this replay would apply up to ``upto``, in order, read a page at a time."""
        position = 0
        while position < upto:
            page = [e async for e in self.store.read_all(position + 1, self.batch_size, types=self._types.names)]
            for record in await self._opened([e for e in page if e.position <= upto and self._mine(e)]):
                yield record
            position = page[-1].position if len(page) == self.batch_size else upto

    async def _opened(self, records: list[StoredEvent]) -> list[StoredEvent]:
        """Personal fields in clear, as the live runner applies them (forgotten ones as the placeholder)."""
        return await PersonalData(self.store if isinstance(self.store, KeyStore) else None).open(records, self._types)

    def _mine(self, record: StoredEvent) -> bool:
        tenant = record.metadata.get("tenant")
        if tenant is not None:
            self.tenants_seen.add(tenant)
        return bool(tenant == self.tenant)

    def _applying(self, records: list[StoredEvent]) -> Callable[[Any], None]:
        def work(db: Any) -> None:
            for record in records:
                event = self._types.decode(record.type, record.data, record.schema_version)
                self.projection.apply(event, db, record)

        return work


async def rebuild_projection(
    projection: Projection,
    store: EventStore,
    read_store: ReadStore[Any],
    *,
    upcasters: Sequence[Upcaster] = (),
    batch_size: int = 500,
    progress: OnProgress | None = None,
    registry: ReadStore[Database] | None = None,
) -> None:
    """Rebuild ``projection``'s read model, every tenant's copy included, and swap each in atomically.

    ``read_store`` is the store of the projection's target; ``registry`` the SQL store its tenants
    are registered in, when that is another (see :class:`~twofold.tenancy.Tenancy`).
    Raises :class:`~twofold.errors.StoreError` if a store fails; the live model is then left as
    it was, and the shadow is dropped either way.
    """
    replay = Replay(projection, store, None, upcasters, batch_size)
    await _rebuild_store(replay, read_store, progress)
    tenancy = Tenancy(read_store, [projection], registry=registry)
    for tenant in sorted(set(await tenancy.tenants()) | replay.tenants_seen):
        live = await tenancy.store_for(tenant)  # registers a tenant the live runner has not met yet
        await _rebuild_store(Replay(projection, store, tenant, upcasters, batch_size), live, progress)


async def _rebuild_store(replay: Replay, live: ReadStore[Any], progress: OnProgress | None) -> None:
    projection = replay.projection
    shadow = live.scratch("rebuild_" + hashlib.sha256(projection.name.encode()).hexdigest()[:12])
    try:
        await shadow.transact(projection.name, projection.setup)
        position = 0
        for _ in range(SWAP_ATTEMPTS):
            position = await replay.into(shadow, position, await replay.store.head_position(), progress)
            try:
                await live.swap_in(shadow, projection.name, projection.tables)
                return
            except CheckpointConflict:  # the live model moved past the shadow meanwhile: catch up again
                continue
        raise CheckpointConflict(projection.name, position, await live.checkpoint(projection.name))
    finally:
        await shadow.discard()
