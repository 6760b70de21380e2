"""Helpers shared by the contract suite's parts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Collection, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest

from twofold.errors import ConcurrencyError
from twofold.store import (
    ANY,
    AppendResult,
    EventStore,
    ExpectedVersion,
    NewEvent,
    StoredEvent,
)

WAIT = 5.0  # seconds a subscriber gets to deliver what it owes before the test fails
LONG = 1_234  # events: longer than two 500-event pages, so reads cross page boundaries
SETTLE = 0.05  # seconds to let a subscriber reach its wait for new events


def _event(event_type: str = "test.Happened", **data: Any) -> NewEvent:
    return NewEvent(event_type, data)


def _events(count: int, event_type: str = "test.Happened") -> list[NewEvent]:
    return [NewEvent(event_type, {"n": n}) for n in range(count)]


async def _read_all(
    store: EventStore, from_position: int = 1, limit: int | None = None, **filters: Any
) -> list[StoredEvent]:
    return [event async for event in store.read_all(from_position, limit, **filters)]


async def _read_stream(store: EventStore, stream_id: str, **versions: int) -> list[StoredEvent]:
    return [event async for event in store.read_stream(stream_id, **versions)]


def _versions(events: Sequence[StoredEvent]) -> list[int]:
    return [event.version for event in events]


def _positions(events: Sequence[StoredEvent]) -> list[int]:
    return [event.position for event in events]


def _facts(result: AppendResult | None) -> tuple[str | None, dict[str, int], list[StoredEvent]] | None:
    """What two append results must share to be the same result, whatever containers a backend uses."""
    return None if result is None else (result.command_id, dict(result.versions), list(result.events))


@asynccontextmanager
async def _subscription(
    store: EventStore,
    from_position: int = 1,
    categories: Collection[str] | None = None,
    types: Collection[str] | None = None,
) -> AsyncIterator[AsyncIterator[StoredEvent]]:
    """A subscription that is closed on the way out, whether or not it was read to the end."""
    events = store.subscribe(from_position, categories, types)
    try:
        yield events
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


async def _take(events: AsyncIterator[StoredEvent], count: int, timeout: float = WAIT) -> list[StoredEvent]:
    """The next ``count`` events of a subscription; fails the test if they do not come in time."""
    taken: list[StoredEvent] = []
    try:
        async with asyncio.timeout(timeout):
            while len(taken) < count:
                taken.append(await anext(events))
    except TimeoutError:
        pytest.fail(f"The subscription yielded {len(taken)} of {count} events within {timeout}s: {_positions(taken)}")
    return taken


async def _take_while(events: AsyncIterator[StoredEvent], count: int, action: Awaitable[object]) -> list[StoredEvent]:
    """Take ``count`` events while ``action`` runs once the subscriber is waiting for new ones."""
    async with asyncio.TaskGroup() as group:
        taking = group.create_task(_take(events, count))
        await asyncio.sleep(SETTLE)
        await action
    return taking.result()


async def _expect_no_more(events: AsyncIterator[StoredEvent], within: float = 0.1) -> None:
    try:
        async with asyncio.timeout(within):
            extra = await anext(events)
    except TimeoutError:
        return
    pytest.fail(f"The subscription yielded an event it had already delivered or never should: {extra}")


def _stream_of(writer: int) -> tuple[str, bool]:
    """Which stream a writer appends to, and whether it names an exact expected version.

    Even writers share three streams and retry on conflicts; writers 1, 5, 9… share one stream
    with ``ANY``; the rest own a stream each.
    """
    if writer % 2 == 0:
        return f"shared-{writer // 2 % 3}", True
    if writer % 4 == 1:
        return "busy-1", False
    return f"solo-{writer}", True


def _expected_lengths(writers: int, events_each: int) -> dict[str, int]:
    lengths: dict[str, int] = {}
    for writer in range(writers):
        stream_id, _ = _stream_of(writer)
        lengths[stream_id] = lengths.get(stream_id, 0) + events_each
    return lengths


async def _write_concurrently(store: EventStore, writer: int, appends: int, per_append: int) -> None:
    stream_id, exact = _stream_of(writer)
    for n in range(appends):
        events = [NewEvent("test.Written", {"writer": writer, "n": n, "i": i}) for i in range(per_append)]
        while True:
            expected: int | ExpectedVersion = await store.stream_version(stream_id) if exact else ANY
            await asyncio.sleep(0)  # let other writers run between reading the version and appending
            try:
                result = await store.append(stream_id, events, expected)
            except ConcurrencyError:
                continue
            assert _positions(result.events) == sorted(set(_positions(result.events)))
            break
