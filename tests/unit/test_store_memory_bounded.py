"""Reading stays bounded in memory: the SQLite store streams its events page by page.

Memory is measured with tracemalloc (every thread's Python allocations, so the reader threads'
pages count too) and compared with a size measured here: what holding events in a list costs.
The peak while streaming must stay under what 2,500 events take (five 500-event pages), a
twelfth of holding all 30,000. The bound does not depend on the count, so 30,000 proves what
200,000 would at a seventh of the time (writing and tracing 200,000 takes over a minute here).
"""

import asyncio
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from twofold.store import NO_STREAM, NewEvent, StoredEvent
from twofold.store.sqlite import SQLiteEventStore

TOTAL = 30_000
BATCH = 10_000
SAMPLE = 2_000  # events held in a list to learn what one event costs
BOUND = 2_500  # events' worth of memory a streaming read may peak at


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One file of TOTAL events in one stream, written once for the module."""
    path = tmp_path_factory.mktemp("bounded") / "events.db"

    async def fill() -> None:
        store = SQLiteEventStore(path, durability="normal")
        try:
            for batch in range(TOTAL // BATCH):
                events = [NewEvent("test.Happened", {"n": n, "note": "x" * 100}) for n in range(BATCH)]
                await store.append("big-1", events, batch * BATCH if batch else NO_STREAM)
        finally:
            await store.close()

    asyncio.run(fill())
    return path


@pytest.fixture
async def store(database: Path) -> AsyncIterator[SQLiteEventStore]:
    store = SQLiteEventStore(database)
    yield store
    await store.close()


async def _bytes_to_hold(events: AsyncIterator[StoredEvent]) -> int:
    """What keeping every event of ``events`` in a list costs."""
    tracemalloc.start()
    try:
        held = [event async for event in events]
        size, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(held) == SAMPLE
    return size


async def _peak_while_streaming(events: AsyncIterator[StoredEvent]) -> tuple[int, int]:
    """How many events ``events`` yielded, and the peak memory while consuming them one by one."""
    count, last = 0, 0
    tracemalloc.start()
    try:
        async for event in events:
            count, last = count + 1, event.version
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert last == TOTAL
    return count, peak


async def test_read_all_streams_every_event_without_holding_more_than_a_few_pages(store: SQLiteEventStore) -> None:
    per_event = await _bytes_to_hold(store.read_all(limit=SAMPLE)) / SAMPLE
    count, peak = await _peak_while_streaming(store.read_all())
    assert count == TOTAL
    assert peak < BOUND * per_event, f"peak {peak:,} bytes; holding all would take {per_event * TOTAL:,.0f}"


async def test_read_stream_streams_a_long_stream_without_holding_more_than_a_few_pages(store: SQLiteEventStore) -> None:
    per_event = await _bytes_to_hold(store.read_stream("big-1", to_version=SAMPLE)) / SAMPLE
    count, peak = await _peak_while_streaming(store.read_stream("big-1"))
    assert count == TOTAL
    assert peak < BOUND * per_event, f"peak {peak:,} bytes; holding all would take {per_event * TOTAL:,.0f}"
