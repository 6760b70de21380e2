"""What the stream pages read: a page of streams, a page of one stream's events, an aggregate at a version.

Every read is a keyset page: streams by id after the last id shown (the store's own listing), or
by their latest event, newest first, before the last position shown; events by version after the
last version shown. Nothing counts rows, and nothing skips them with OFFSET.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from twofold.aggregate import Aggregate
from twofold.inspection import state_at
from twofold.service import Service
from twofold.store import EventStore, StoredEvent, StreamSummary

WINDOW = 500  # positions one step back through the log spans, looking for streams' latest events
SCAN_BUDGET = 5_000  # positions one page may read back; a page that finds fewer streams still gives a next cursor


@dataclass(frozen=True, slots=True)
class StreamPage:
    """Some streams, and where the next page starts (``None``: this is the last)."""

    streams: list[StreamSummary]
    next_after: str | None = None  # by id: the last stream id shown
    next_before: int | None = None  # newest first: the position the next page reads back from


async def streams_by_id(store: EventStore, category: str | None, after: str | None, limit: int) -> StreamPage:
    """Streams in id order after ``after``; one more is read than shown, to know whether a next page exists."""
    found = await store.streams(category=category, after=after, limit=limit + 1)
    shown = found[:limit]
    return StreamPage(shown, next_after=shown[-1].stream_id if len(found) > limit else None)


async def streams_by_activity(store: EventStore, category: str | None, before: int | None, limit: int) -> StreamPage:
    """Streams by their latest event, newest first, among events before position ``before``.

    Reads the log backwards a window of positions at a time. An event is its stream's entry only
    if it is the stream's latest (its version is the stream's): a stream that moved on since was
    shown on an earlier page, at its newer event. A page reads back at most :data:`SCAN_BUDGET`
    positions. The category is filtered here, not by the store: ``read_all`` has no upper bound,
    and with a category it would read on past the window to find as many events as asked for.
    """
    high = before if before is not None else await store.head_position() + 1
    shown: list[StreamSummary] = []
    seen: set[str] = set()
    floor = max(1, high - SCAN_BUDGET)
    while high > floor:
        low = max(floor, high - WINDOW)
        window = [e async for e in store.read_all(low, high - low) if e.position < high]
        for event in reversed(window):
            if event.stream_id in seen or (category is not None and event.category != category):
                continue
            seen.add(event.stream_id)
            if await store.stream_version(event.stream_id) == event.version:
                shown.append(await _summary(store, event))
            if len(shown) == limit:
                return StreamPage(shown, next_before=event.position if event.position > 1 else None)
        high = low
    return StreamPage(shown, next_before=high if high > 1 else None)


async def _summary(store: EventStore, latest: StoredEvent) -> StreamSummary:
    first = [e async for e in store.read_stream(latest.stream_id, 1, 1)]
    first_position = first[0].position if first else latest.position
    return StreamSummary(latest.stream_id, latest.version, first_position, latest.position, latest.recorded_at)


async def events_page(store: EventStore, stream_id: str, after: int, limit: int) -> list[StoredEvent]:
    """Up to ``limit`` events of ``stream_id`` after version ``after``, in version order."""
    return [e async for e in store.read_stream(stream_id, after + 1, after + limit)]


def aggregate_of(service: Service, stream_id: str) -> type[Aggregate] | None:
    """The class whose state ``stream_id`` holds, when the service declares one for its category."""
    category, _, _ = stream_id.partition("-")
    return service.aggregate_type(category)


async def state_json(
    store: EventStore, service: Service, aggregate_type: type[Aggregate], stream_id: str, at: int
) -> str:
    """The aggregate as the stream's events up to version ``at`` left it, as indented JSON."""
    aggregate_id = stream_id.partition("-")[2]
    state = await state_at(store, aggregate_type, aggregate_id, at, upcasters=service.upcasters)
    return pretty(state.model_dump(mode="json"))


def pretty(value: Any) -> str:
    """JSON for a person to read: indented, keys sorted, non-ASCII kept as it is."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
