"""However a transport duplicates and reorders deliveries, the imported streams end equal to the source's."""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter, deque
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twofold import Service
from twofold.readmodels.sqlite import SQLiteReadStore
from twofold.store import EventStore, NewEvent, StoredEvent
from twofold.store.memory import MemoryEventStore
from twofold.subscriptions import Importer, Outcome, Subscription

SOURCE = "inventory"
STREAMS = ("reservation-a", "reservation-b", "reservation-c")


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[int], list[list[int]]]:
    """Which stream each source event goes to, and the order the transport first delivers them in,
    with duplicates mixed in, cut into batches."""
    streams = draw(st.lists(st.integers(0, len(STREAMS) - 1), min_size=1, max_size=25))
    order = draw(st.permutations(range(len(streams))))
    duplicates = draw(st.lists(st.integers(0, len(streams) - 1), max_size=15))
    schedule = list(order)
    for index, duplicate in enumerate(duplicates):
        schedule.insert(draw(st.integers(0, len(schedule))) if index % 2 else len(schedule), duplicate)
    cuts = sorted(draw(st.lists(st.integers(1, len(schedule)), max_size=6, unique=True)))
    batches = [schedule[start:end] for start, end in zip([0, *cuts], [*cuts, len(schedule)], strict=False)]
    return streams, [b for b in batches if b]


async def source_events(streams: list[int]) -> tuple[MemoryEventStore, list[StoredEvent]]:
    source = MemoryEventStore()
    for number, stream in enumerate(streams):
        await source.append(STREAMS[stream], [NewEvent("inventory.Reserved", {"n": number})])
    return source, [e async for e in source.read_all(1)]


async def contents(store: EventStore, prefix: str) -> dict[str, list[tuple[int, str, dict[str, object]]]]:
    found: dict[str, list[tuple[int, str, dict[str, object]]]] = {}
    async for e in store.read_all(1):
        found.setdefault(e.stream_id.removeprefix(prefix), []).append((e.version, e.event_id, dict(e.data)))
    return found


async def scenario(folder: Path, streams: list[int], batches: list[list[int]], max_attempts: int) -> None:
    source, events = await source_events(streams)
    target, read_store = MemoryEventStore(), SQLiteReadStore(folder / "read.db")
    service = Service("orders", subscriptions=[Subscription(SOURCE, ["reservation"])])
    subscription = service.subscriptions[0]
    importer = Importer(
        service, target, read_store, subscription, max_attempts=max_attempts, max_gap_attempts=max_attempts
    )
    pending = deque(batches)
    delivered: Counter[int] = Counter()
    rounds = 0
    while pending:  # what is not acknowledged comes again, later, as JetStream redelivers it
        batch = pending.popleft()
        delivered.update(batch)
        outcomes = await importer.receive_many([(events[i], delivered[i]) for i in batch])
        again = [i for i, outcome in zip(batch, outcomes, strict=True) if outcome is Outcome.RETRY]
        if again:
            pending.append(again)
        rounds += 1
        assert rounds < 10_000, "redelivery never finished"
    await importer.retry()  # gaps that outlasted their attempts were parked: one retry lets them in
    assert await contents(target, f"{SOURCE}.") == await contents(source, "")
    assert await importer.dead_letters.parked() == []
    await read_store.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=deliveries(), max_attempts=st.sampled_from([1, 2, 10**6]))
def test_any_duplication_and_reordering_by_redelivery_ends_with_the_source_streams(
    plan: tuple[list[int], list[list[int]]], max_attempts: int
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(scenario(Path(folder), *plan, max_attempts))
