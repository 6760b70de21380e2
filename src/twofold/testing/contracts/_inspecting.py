"""Listing streams and reading one correlation: what inspection tools ask of a store."""

from __future__ import annotations

from twofold.store import EventStore, NewEvent
from twofold.testing.contracts._support import LONG, _event, _events, _positions


def _correlated(correlation_id: str, count: int = 1) -> list[NewEvent]:
    return [NewEvent("test.Correlated", {"n": n}, {"correlation_id": correlation_id}) for n in range(count)]


class InspectingContract:
    """Listing streams and reading one correlation."""

    # -- listing streams -------------------------------------------------------------------------

    async def test_streams_on_an_empty_store_lists_nothing(self, store: EventStore) -> None:
        assert await store.streams() == []
        assert await store.streams(category="order", after="order-1", limit=10) == []

    async def test_streams_lists_each_stream_once_in_id_order_with_its_version_and_positions(
        self, store: EventStore
    ) -> None:
        await store.append("order-2", _events(2))
        await store.append("cart-1", _events(1))
        last = await store.append("order-2", _events(3))
        listed = await store.streams()
        assert [(s.stream_id, s.category, s.version, s.first_position, s.last_position) for s in listed] == [
            ("cart-1", "cart", 1, 3, 3),
            ("order-2", "order", 5, 1, 6),
        ]
        assert listed[1].last_recorded_at == last.events[-1].recorded_at

    async def test_streams_pages_by_stream_id_after_and_limit(self, store: EventStore) -> None:
        ids = [f"item-{n:03}" for n in range(25)]
        for stream_id in reversed(ids):
            await store.append(stream_id, [_event()])
        pages: list[list[str]] = []
        after: str | None = None
        while page := await store.streams(after=after, limit=10):
            pages.append([s.stream_id for s in page])
            after = page[-1].stream_id
        assert [len(p) for p in pages] == [10, 10, 5]
        assert [s for p in pages for s in p] == ids
        assert await store.streams(limit=0) == []

    async def test_streams_of_a_category_lists_only_that_category(self, store: EventStore) -> None:
        for stream_id in ["order-1", "orders-1", "order-2", "cart-1", "orderly-9", "order-3"]:
            await store.append(stream_id, [_event()])
        assert [s.stream_id for s in await store.streams(category="order")] == ["order-1", "order-2", "order-3"]
        assert [s.stream_id for s in await store.streams(category="order", after="order-1", limit=1)] == ["order-2"]
        assert await store.streams(category="missing") == []

    # -- reading a correlation -------------------------------------------------------------------

    async def test_read_correlated_yields_that_correlations_events_across_streams_in_global_order(
        self, store: EventStore
    ) -> None:
        await store.append("order-1", _correlated("c-1", 2))
        await store.append("cart-1", [*_correlated("c-2"), _event()])
        await store.append("payment-1", _correlated("c-1"))
        await store.append("order-1", _correlated("c-1"))
        chosen = [event async for event in store.read_correlated("c-1")]
        assert [(e.position, e.stream_id) for e in chosen] == [
            (1, "order-1"),
            (2, "order-1"),
            (5, "payment-1"),
            (6, "order-1"),
        ]
        assert [event async for event in store.read_correlated("c-9")] == []

    async def test_read_correlated_reads_a_correlation_longer_than_a_page_completely(self, store: EventStore) -> None:
        for _ in range(LONG // 100 + 1):
            await store.append("order-1", _correlated("long", 100))
            await store.append("other-1", _correlated("short", 3))
        chosen = [event async for event in store.read_correlated("long")]
        assert _positions(chosen) == [p for p in range(1, (LONG // 100 + 1) * 103 + 1) if (p - 1) % 103 < 100]
