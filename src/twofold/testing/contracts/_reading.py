"""Reading one stream and the global log, and the head and stream versions."""

from __future__ import annotations

from twofold.store import (
    EventStore,
)
from twofold.testing.contracts._support import (
    LONG,
    _event,
    _events,
    _positions,
    _read_all,
    _read_stream,
    _versions,
)


class ReadingContract:
    """Reading one stream and the global log, and the head and stream versions."""

    # -- reading one stream ----------------------------------------------------------------------

    async def test_read_stream_yields_only_that_streams_events_in_version_order(self, store: EventStore) -> None:
        for stream_id in ["order-1", "order-2", "order-1", "cart-1", "order-1"]:
            await store.append(stream_id, _events(2))
        events = await _read_stream(store, "order-1")
        assert [(e.stream_id, e.version) for e in events] == [("order-1", v) for v in range(1, 7)]
        assert _positions(events) == [1, 2, 5, 6, 9, 10]

    async def test_read_stream_from_version_starts_at_that_version_inclusive(self, store: EventStore) -> None:
        await store.append("order-1", _events(5))
        assert _versions(await _read_stream(store, "order-1", from_version=3)) == [3, 4, 5]
        assert await _read_stream(store, "order-1", from_version=6) == []

    async def test_read_stream_to_version_gives_the_stream_as_it_was_at_that_version(self, store: EventStore) -> None:
        await store.append("order-1", _events(3))
        at_three = await _read_stream(store, "order-1")
        await store.append("order-1", _events(4))
        assert await _read_stream(store, "order-1", to_version=3) == at_three
        assert _versions(await _read_stream(store, "order-1", from_version=2, to_version=4)) == [2, 3, 4]
        assert _versions(await _read_stream(store, "order-1", to_version=99)) == list(range(1, 8))
        assert await _read_stream(store, "order-1", from_version=3, to_version=2) == []

    async def test_read_stream_of_a_missing_stream_yields_nothing(self, store: EventStore) -> None:
        await store.append("order-1", _events(2))
        assert await _read_stream(store, "order-2") == []
        assert await _read_stream(store, "order") == []

    async def test_read_stream_reads_a_stream_longer_than_a_page_completely_and_in_order(
        self, store: EventStore
    ) -> None:
        for _ in range(LONG // 100 + 1):
            await store.append("long-1", _events(100))
            await store.append("other-1", _events(7))
        events = await _read_stream(store, "long-1")
        assert _versions(events) == list(range(1, (LONG // 100 + 1) * 100 + 1))
        assert [e.data["n"] for e in events[:101]] == [*range(100), 0]
        assert _versions(await _read_stream(store, "long-1", from_version=450, to_version=1_050)) == list(
            range(450, 1_051)
        )

    # -- reading the global log ------------------------------------------------------------------

    async def test_read_all_on_an_empty_store_yields_nothing(self, store: EventStore) -> None:
        assert await _read_all(store) == []

    async def test_read_all_from_position_is_inclusive(self, store: EventStore) -> None:
        await store.append("order-1", _events(5))
        assert _positions(await _read_all(store, from_position=3)) == [3, 4, 5]
        assert await _read_all(store, from_position=6) == []

    async def test_read_all_limit_caps_how_many_events_are_yielded(self, store: EventStore) -> None:
        await store.append("order-1", _events(5))
        assert _positions(await _read_all(store, 2, 2)) == [2, 3]
        assert _positions(await _read_all(store, 4, 10)) == [4, 5]
        assert await _read_all(store, 1, 0) == []

    async def test_read_all_with_categories_yields_only_those_categories(self, store: EventStore) -> None:
        for stream_id in ["order-1", "cart-1", "order-2", "user-1", "cart-2"]:
            await store.append(stream_id, [_event()])
        assert [e.stream_id for e in await _read_all(store, categories={"order", "user"})] == [
            "order-1",
            "order-2",
            "user-1",
        ]
        assert await _read_all(store, categories=["missing"]) == []

    async def test_read_all_with_types_yields_only_those_types(self, store: EventStore) -> None:
        await store.append(
            "order-1", [_event("shop.OrderPlaced"), _event("shop.OrderPaid"), _event("shop.OrderShipped")]
        )
        await store.append("order-2", [_event("shop.OrderPlaced")])
        chosen = await _read_all(store, types=["shop.OrderPlaced", "shop.OrderShipped"])
        assert [(e.stream_id, e.type) for e in chosen] == [
            ("order-1", "shop.OrderPlaced"),
            ("order-1", "shop.OrderShipped"),
            ("order-2", "shop.OrderPlaced"),
        ]

    async def test_read_all_with_categories_and_types_yields_events_matching_both(self, store: EventStore) -> None:
        await store.append("order-1", [_event("shop.Placed"), _event("shop.Paid")])
        await store.append("cart-1", [_event("shop.Placed"), _event("shop.Emptied")])
        chosen = await _read_all(store, 2, 10, categories={"order", "cart"}, types={"shop.Placed"})
        assert [(e.position, e.stream_id, e.type) for e in chosen] == [(3, "cart-1", "shop.Placed")]

    async def test_read_all_reads_across_page_boundaries_completely_and_in_order(self, store: EventStore) -> None:
        for _ in range(LONG // 100 + 1):
            await store.append("order-1", _events(90))
            await store.append("cart-1", _events(10, "test.Carted"))
        total = (LONG // 100 + 1) * 100
        assert _positions(await _read_all(store)) == list(range(1, total + 1))
        assert _positions(await _read_all(store, 300, 700)) == list(range(300, 1_000))
        carts = await _read_all(store, categories=["cart"])
        assert [e.position for e in carts] == [p for p in range(1, total + 1) if p % 100 > 90 or p % 100 == 0]
        assert await _read_all(store, 150, 60, types={"test.Carted"}) == carts[10:70]

    # -- positions and versions ------------------------------------------------------------------

    async def test_head_position_and_stream_version_are_zero_on_an_empty_store(self, store: EventStore) -> None:
        assert await store.head_position() == 0
        assert await store.stream_version("order-1") == 0

    async def test_head_position_and_stream_version_follow_appends(self, store: EventStore) -> None:
        await store.append("order-1", _events(3))
        await store.append("cart-1", _events(2))
        await store.append("order-1", _events(1))
        assert await store.head_position() == 6
        assert (await store.stream_version("order-1"), await store.stream_version("cart-1")) == (4, 2)
