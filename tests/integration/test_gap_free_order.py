"""Concurrent writers commit out of order; live subscribers must still see every event once, in one order.

Each writer sleeps a random few milliseconds *inside* its append transaction, so transactions that
began first often commit last: the case where stores that number events at insert time lose them.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

from twofold.store import NewEvent, StoredEvent, StreamWrite
from twofold.store.postgres import PostgresEventStore

if TYPE_CHECKING:
    from twofold.store.postgres import Connection

WRITERS = 32
EVENTS_EACH = 500
SUBSCRIBERS = 4
DEADLINE = 120.0  # seconds for the whole run; it takes a fraction of that


class SlowCommittingStore(PostgresEventStore):
    """The real store, holding each append's transaction open a random 0–4 ms before it commits."""

    async def _write(
        self, conn: Connection, writes: Sequence[StreamWrite], command_id: str | None
    ) -> tuple[dict[str, int] | None, list[str]]:
        written = await super()._write(conn, writes, command_id)
        await asyncio.sleep(random.uniform(0, 0.004))
        return written


async def _writer(store: PostgresEventStore, writer: int) -> None:
    for n in range(EVENTS_EACH):
        await store.append(f"writer-{writer}", [NewEvent("test.Written", {"writer": writer, "n": n})])


async def _subscriber(url: str, total: int) -> list[StoredEvent]:
    store = PostgresEventStore(url, pool_size=2)
    seen: list[StoredEvent] = []
    try:
        async for event in store.subscribe(1):
            seen.append(event)
            if len(seen) == total:
                return seen
    finally:
        await store.close()
    raise AssertionError("unreachable: a subscription never ends by itself")


async def test_late_commits_are_never_skipped_by_live_subscribers(postgres_url: str) -> None:
    total = WRITERS * EVENTS_EACH
    async with asyncio.timeout(DEADLINE):
        subscribers = [asyncio.create_task(_subscriber(postgres_url, total)) for _ in range(SUBSCRIBERS)]
        store = SlowCommittingStore(postgres_url, pool_size=WRITERS)
        try:
            await asyncio.gather(*(_writer(store, w) for w in range(WRITERS)))
            final = [event async for event in store.read_all()]
        finally:
            await store.close()
        seen = await asyncio.gather(*subscribers)

    assert [e.position for e in final] == list(range(1, total + 1))
    assert len({e.event_id for e in final}) == total
    for events in seen:
        assert [(e.position, e.event_id) for e in events] == [(e.position, e.event_id) for e in final]
    for writer in range(WRITERS):
        versions = [e.version for e in final if e.stream_id == f"writer-{writer}"]
        assert versions == list(range(1, EVENTS_EACH + 1))
