"""Catch-up-then-live reading, written once for every backend on top of ``read_all``.

A backend supplies three things: ``read_all`` that never returns an event while an earlier one
may still commit, ``head_position`` that is the last such safe position, and ``wait_for_events``
that wakes soon after a commit (a notification, or a poll as the fallback).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from twofold.store import StoredEvent


class Followable(Protocol):
    """The three things a follower needs of a store."""

    def read_all(
        self,
        from_position: int = 1,
        limit: int | None = None,
        categories: Collection[str] | None = None,
        types: Collection[str] | None = None,
    ) -> AsyncIterator[StoredEvent]: ...

    async def head_position(self) -> int: ...

    async def wait_for_events(self, after_position: int, timeout: float) -> bool: ...


IDLE_WAIT = 1.0  # seconds a follower sleeps between checks when no notification arrives


async def follow_pages(
    store: Followable,
    from_position: int,
    page_size: int = 500,
    categories: Collection[str] | None = None,
    types: Collection[str] | None = None,
) -> AsyncIterator[list[StoredEvent]]:
    """Yield non-empty pages of events in global order, forever, from ``from_position`` on."""
    position = from_position
    filtered = categories is not None or types is not None
    while True:
        # Filtered, a short page says nothing of how far the store was scanned; the head read
        # *before* the page does. Unfiltered, the page itself says it, and the read is saved.
        head = await store.head_position() if filtered else None
        page = [e async for e in store.read_all(position, page_size, categories, types)]
        if page:
            position = page[-1].position + 1
            yield page
            if len(page) == page_size:
                continue
        if head is not None:
            position = max(position, head + 1)
        await store.wait_for_events(position - 1, IDLE_WAIT)


async def follow(
    store: Followable,
    from_position: int,
    categories: Collection[str] | None = None,
    types: Collection[str] | None = None,
) -> AsyncIterator[StoredEvent]:
    """Yield events one by one, catch-up then live, never skipping and never repeating one."""
    async for page in follow_pages(store, from_position, categories=categories, types=types):
        for event in page:
            yield event
