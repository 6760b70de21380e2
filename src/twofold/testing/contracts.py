"""The one event store contract suite: every backend binds it and passes it.

    from twofold.testing.contracts import EventStoreContract

    class TestSQLiteEventStore(EventStoreContract):
        @pytest.fixture
        async def store(self, tmp_path):
            store = SQLiteEventStore(tmp_path / "events.db")
            yield store
            await store.close()

The ``store`` fixture yields a fresh, empty store and closes it afterwards. The suite needs pytest
and pytest-asyncio (``asyncio_mode = "auto"``), which is why ``twofold.testing`` does not import it.
Every wait is bounded, so a store that loses an event fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Collection, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from twofold.errors import ConcurrencyError
from twofold.store import (
    ANY,
    NO_STREAM,
    AppendResult,
    EventStore,
    ExpectedVersion,
    NewEvent,
    StoredEvent,
    StreamWrite,
    category_of,
)

__all__ = ["EventStoreContract"]

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


class EventStoreContract:
    """Tests every :class:`~twofold.store.EventStore` must pass. Subclass it and override ``store``."""

    @pytest.fixture
    async def store(self) -> EventStore:
        raise NotImplementedError(
            "Bind the contract: override the `store` fixture to yield a fresh, empty store and close it afterwards"
        )

    # -- appending -------------------------------------------------------------------------------

    @pytest.mark.parametrize("expected_version", [NO_STREAM, 0, ANY], ids=["no_stream", "zero", "any"])
    async def test_append_to_a_new_stream_gives_versions_from_one_and_positions_from_one(
        self, store: EventStore, expected_version: int | ExpectedVersion
    ) -> None:
        result = await store.append("order-1", _events(3), expected_version)
        assert result.versions == {"order-1": 3}
        assert _versions(result.events) == [1, 2, 3]
        assert _positions(result.events) == [1, 2, 3]
        assert result.position == 3

    async def test_append_with_the_current_version_continues_the_stream(self, store: EventStore) -> None:
        await store.append("order-1", _events(2), NO_STREAM)
        result = await store.append("order-1", _events(2), 2)
        assert result.versions == {"order-1": 4}
        assert _versions(await _read_stream(store, "order-1")) == [1, 2, 3, 4]

    async def test_positions_increase_strictly_from_one_across_streams(self, store: EventStore) -> None:
        for stream_id in ["order-1", "cart-1", "order-2", "order-1", "cart-1"]:
            await store.append(stream_id, _events(2))
        assert _positions(await _read_all(store)) == list(range(1, 11))

    async def test_a_stored_event_round_trips_every_field_exactly(self, store: EventStore) -> None:
        data = {
            "text": "Zoë ordered 2 × café ☕ — 日本語 🎉",
            "escapes": 'quote " backslash \\ newline \n tab \t',
            "lines": [{"sku": "A-1", "quantity": 2, "price": 12.5}, {"sku": "B-2", "quantity": 1, "price": None}],
            "flags": {"gift": True, "express": False, "nested": {"deeper": [[], {}, [1, [2, [3]]]]}},
            "big": 2**53 + 1,
            "negative": -7,
            "empty": {},
        }
        metadata = {"command_id": "cmd-1", "correlation_id": "corr-1", "principal": "zoë", "trace": {"id": "ab"}}
        new = NewEvent(
            "shop.OrderPlaced", data, metadata, event_id="0f8c5a56-8a38-4a7b-9d3c-1e2f3a4b5c6d", schema_version=3
        )
        [appended] = (await store.append("order-Zoë-1", [new])).events
        [in_stream] = await _read_stream(store, "order-Zoë-1")
        [in_log] = await _read_all(store)
        for event in (appended, in_stream, in_log):
            assert (event.position, event.stream_id, event.version) == (1, "order-Zoë-1", 1)
            assert (event.event_id, event.type, event.schema_version) == (new.event_id, "shop.OrderPlaced", 3)
            assert event.data == data
            assert event.metadata == metadata
            assert isinstance(event.data["big"], int)

    async def test_recorded_at_is_the_utc_time_of_the_append(self, store: EventStore) -> None:
        before = datetime.now(UTC)
        await store.append("order-1", _events(2))
        after = datetime.now(UTC)
        for event in await _read_all(store):
            assert event.recorded_at.utcoffset() == timedelta(0)
            assert before <= event.recorded_at <= after

    async def test_the_events_an_append_returns_are_the_events_readers_see(self, store: EventStore) -> None:
        first = await store.append("order-1", _events(2))
        second = await store.append("cart-1", _events(3))
        assert [*first.events, *second.events] == await _read_all(store)

    async def test_the_store_keeps_its_own_copy_of_data_and_metadata(self, store: EventStore) -> None:
        data: dict[str, Any] = {"lines": [1, 2]}
        metadata: dict[str, Any] = {"tags": ["a"]}
        await store.append("order-1", [NewEvent("test.Happened", data, metadata)])
        data["lines"].append(3)
        metadata["tags"].append("b")
        [event] = await _read_all(store)
        assert (event.data, event.metadata) == ({"lines": [1, 2]}, {"tags": ["a"]})

    async def test_an_append_of_no_events_writes_nothing_and_reports_the_current_version(
        self, store: EventStore
    ) -> None:
        await store.append("order-1", _events(2))
        result = await store.append("order-1", [], 2)
        assert (result.versions, list(result.events), result.position) == ({"order-1": 2}, [], None)
        assert await store.head_position() == 2

    async def test_the_category_is_the_text_before_the_first_dash(self, store: EventStore) -> None:
        for stream_id in ["order-7f3c-2b", "orders-1", "order", "ord_r-1", "order-1"]:
            await store.append(stream_id, [_event()])
        assert [e.stream_id for e in await _read_all(store, categories=["order"])] == [
            "order-7f3c-2b",
            "order",
            "order-1",
        ]
        assert [e.category for e in await _read_all(store)] == ["order", "orders", "order", "ord_r", "order"]
        assert category_of("order-7f3c-2b") == "order"

    # -- expected versions -----------------------------------------------------------------------

    async def test_append_with_a_stale_expected_version_raises_concurrency_error_and_writes_nothing(
        self, store: EventStore
    ) -> None:
        await store.append("order-1", _events(5))
        await store.append("cart-1", _events(1))
        before = await _read_all(store)
        with pytest.raises(
            ConcurrencyError, match=r"^Wrong expected version for stream order-1: expected 3, actual 5$"
        ) as raised:
            await store.append("order-1", _events(2), 3)
        assert (raised.value.stream_id, raised.value.expected, raised.value.actual) == ("order-1", 3, 5)
        assert await _read_all(store) == before
        assert (await store.head_position(), await store.stream_version("order-1")) == (6, 5)

    async def test_append_with_no_stream_to_an_existing_stream_raises_concurrency_error(
        self, store: EventStore
    ) -> None:
        await store.append("order-1", _events(2))
        with pytest.raises(
            ConcurrencyError, match=r"^Wrong expected version for stream order-1: expected no stream, actual 2$"
        ):
            await store.append("order-1", [_event()], NO_STREAM)
        assert await store.head_position() == 2

    async def test_append_with_version_zero_to_an_existing_stream_raises_concurrency_error(
        self, store: EventStore
    ) -> None:
        await store.append("order-1", [_event()])
        with pytest.raises(
            ConcurrencyError, match=r"^Wrong expected version for stream order-1: expected 0, actual 1$"
        ):
            await store.append("order-1", [_event()], 0)
        assert await store.head_position() == 1

    async def test_append_with_an_expected_version_ahead_of_the_stream_raises_concurrency_error(
        self, store: EventStore
    ) -> None:
        with pytest.raises(
            ConcurrencyError, match=r"^Wrong expected version for stream order-1: expected 3, actual 0$"
        ):
            await store.append("order-1", [_event()], 3)
        assert await store.head_position() == 0

    async def test_append_with_a_negative_expected_version_is_a_value_error(self, store: EventStore) -> None:
        with pytest.raises(ValueError, match=r"^Expected version must be 0 or more \(got -1\)$"):
            await store.append("order-1", [_event()], -1)
        assert await store.head_position() == 0

    @pytest.mark.parametrize("stream_id", ["", "x" * 256], ids=["empty", "too_long"])
    async def test_append_to_a_stream_id_that_is_empty_or_too_long_is_a_value_error(
        self, store: EventStore, stream_id: str
    ) -> None:
        with pytest.raises(ValueError, match=r"^Stream id must be 1 to 255 characters"):
            await store.append(stream_id, [_event()])
        assert await store.head_position() == 0

    # -- appending to several streams at once ----------------------------------------------------

    async def test_append_streams_writes_each_stream_against_its_own_expected_version(self, store: EventStore) -> None:
        await store.append("account-1", _events(2))
        result = await store.append_streams(
            [
                StreamWrite("account-1", _events(1), 2),
                StreamWrite("account-2", _events(2), NO_STREAM),
                StreamWrite("ledger-1", _events(1), ANY),
            ]
        )
        assert result.versions == {"account-1": 3, "account-2": 2, "ledger-1": 1}
        assert _positions(result.events) == [3, 4, 5, 6]
        assert [(e.stream_id, e.version) for e in result.events] == [
            ("account-1", 3),
            ("account-2", 1),
            ("account-2", 2),
            ("ledger-1", 1),
        ]
        assert list(result.events) == await _read_all(store, from_position=3)

    async def test_append_streams_with_one_stale_expected_version_writes_none_of_the_streams(
        self, store: EventStore
    ) -> None:
        await store.append("account-2", _events(1))
        with pytest.raises(
            ConcurrencyError, match=r"^Wrong expected version for stream account-2: expected no stream, actual 1$"
        ):
            await store.append_streams(
                [StreamWrite("account-1", _events(2), NO_STREAM), StreamWrite("account-2", _events(1), NO_STREAM)]
            )
        assert [e.stream_id for e in await _read_all(store)] == ["account-2"]
        assert await store.stream_version("account-1") == 0

    async def test_append_streams_naming_a_stream_twice_is_a_value_error_and_writes_nothing(
        self, store: EventStore
    ) -> None:
        with pytest.raises(ValueError, match=r"^Stream account-1 appears twice in one append$"):
            await store.append_streams([StreamWrite("account-1", _events(1)), StreamWrite("account-1", _events(1))])
        assert await store.head_position() == 0

    async def test_append_streams_with_an_empty_stream_id_is_a_value_error_and_writes_nothing(
        self, store: EventStore
    ) -> None:
        with pytest.raises(ValueError, match=r"^Stream id must be 1 to 255 characters \(got ''\)$"):
            await store.append_streams([StreamWrite("account-1", _events(1)), StreamWrite("", _events(1))])
        assert await store.head_position() == 0

    # -- command ids -----------------------------------------------------------------------------

    async def test_the_same_command_id_appended_twice_appends_once_and_returns_the_first_result(
        self, store: EventStore
    ) -> None:
        first = await store.append("order-1", _events(2), NO_STREAM, command_id="cmd-1")
        again = await store.append("order-1", _events(5, "test.Other"), NO_STREAM, command_id="cmd-1")
        assert _facts(again) == _facts(first)
        assert (again.command_id, again.versions, _positions(again.events)) == ("cmd-1", {"order-1": 2}, [1, 2])
        assert await _read_all(store) == list(first.events)

    async def test_a_repeated_command_id_returns_the_first_result_whatever_streams_it_names(
        self, store: EventStore
    ) -> None:
        first = await store.append_streams(
            [StreamWrite("account-1", _events(1)), StreamWrite("account-2", _events(1))], command_id="cmd-1"
        )
        await store.append("account-3", _events(1))
        again = await store.append("account-9", _events(3), command_id="cmd-1")
        assert _facts(again) == _facts(first)
        assert again.versions == {"account-1": 1, "account-2": 1}
        assert await store.head_position() == 3

    async def test_command_result_returns_the_recorded_result_and_none_for_an_unknown_id(
        self, store: EventStore
    ) -> None:
        result = await store.append("order-1", _events(2), command_id="cmd-1")
        await store.append("order-1", _events(1), command_id="cmd-2")
        assert _facts(await store.command_result("cmd-1")) == _facts(result)
        assert await store.command_result("cmd-unknown") is None

    async def test_an_append_that_fails_does_not_record_its_command_id(self, store: EventStore) -> None:
        await store.append("order-1", _events(1))
        with pytest.raises(ConcurrencyError):
            await store.append("order-1", _events(1), NO_STREAM, command_id="cmd-1")
        assert await store.command_result("cmd-1") is None
        retried = await store.append("order-1", _events(1), 1, command_id="cmd-1")
        assert retried.versions == {"order-1": 2}
        assert _facts(await store.command_result("cmd-1")) == _facts(retried)

    # -- event ids -------------------------------------------------------------------------------

    async def test_appending_an_event_id_that_is_already_stored_is_a_value_error_and_writes_nothing(
        self, store: EventStore
    ) -> None:
        [stored] = (await store.append("order-1", [_event()])).events
        again = NewEvent("test.Happened", {}, event_id=stored.event_id)
        with pytest.raises(ValueError, match="already stored"):
            await store.append("order-2", [_event(), again, _event()])
        assert await _read_all(store) == [stored]
        assert await store.stream_version("order-2") == 0

    async def test_an_event_id_given_twice_in_one_append_is_a_value_error_and_writes_nothing(
        self, store: EventStore
    ) -> None:
        twice = _event()
        with pytest.raises(ValueError, match=f"^Event id {twice.event_id} appears twice in one append$"):
            await store.append_streams([StreamWrite("order-1", [twice]), StreamWrite("order-2", [_event(), twice])])
        assert await store.head_position() == 0

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

    # -- waiting and subscribing -----------------------------------------------------------------

    async def test_wait_for_events_returns_true_promptly_after_an_append(self, store: EventStore) -> None:
        await store.append("order-1", [_event()])
        async with asyncio.timeout(WAIT), asyncio.TaskGroup() as group:
            waiting = group.create_task(store.wait_for_events(1, timeout=60))
            await asyncio.sleep(SETTLE)
            assert not waiting.done()
            await store.append("order-1", [_event()])
        assert waiting.result() is True

    async def test_wait_for_events_returns_true_at_once_when_later_events_exist(self, store: EventStore) -> None:
        await store.append("order-1", _events(2))
        async with asyncio.timeout(WAIT):
            assert await store.wait_for_events(1, timeout=60) is True

    async def test_wait_for_events_returns_false_on_timeout_when_nothing_is_appended(self, store: EventStore) -> None:
        await store.append("order-1", _events(2))
        assert await store.wait_for_events(2, timeout=0.1) is False

    async def test_subscribers_started_before_and_after_appends_see_the_same_events_in_order(
        self, store: EventStore
    ) -> None:
        await store.append("order-1", _events(3))
        async with _subscription(store) as early:
            seen_early = await _take(early, 3)
            seen_early += await _take_while(early, 4, store.append("order-2", _events(4)))
            await store.append("cart-1", _events(2))
            await store.append("order-1", _events(1))
            seen_early += await _take(early, 3)
            async with _subscription(store) as late:
                seen_late = await _take(late, 10)
                await _expect_no_more(late)
            await _expect_no_more(early)
        assert seen_early == seen_late == await _read_all(store)
        assert _positions(seen_early) == list(range(1, 11))

    async def test_a_subscriber_catches_up_through_many_pages_without_skipping_and_then_goes_live(
        self, store: EventStore
    ) -> None:
        for _ in range(LONG // 100 + 1):
            await store.append("order-1", _events(70))
            await store.append("cart-1", _events(30))
        backlog = await _read_all(store)
        async with _subscription(store) as everything, _subscription(store, categories={"order"}) as orders:
            assert await _take(everything, len(backlog)) == backlog
            order_events = [e for e in backlog if e.stream_id == "order-1"]
            assert await _take(orders, len(order_events)) == order_events
            appending = store.append("order-1", [_event()])
            [live] = await _take_while(everything, 1, appending)
            assert await _take(orders, 1) == [live]
            assert live.position == len(backlog) + 1

    async def test_subscribe_from_a_position_starts_there_inclusive(self, store: EventStore) -> None:
        await store.append("order-1", _events(5))
        async with _subscription(store, from_position=4) as events:
            assert _positions(await _take(events, 2)) == [4, 5]
            assert _positions(await _take_while(events, 1, store.append("order-1", [_event()]))) == [6]

    async def test_a_category_subscriber_sees_new_matching_events_live(self, store: EventStore) -> None:
        await store.append("order-1", [_event()])
        await store.append("cart-1", [_event()])
        async with _subscription(store, categories={"cart"}) as carts:
            assert _positions(await _take(carts, 1)) == [2]
            live = await _take_while(
                carts, 1, store.append_streams([StreamWrite("order-1", _events(2)), StreamWrite("cart-1", _events(1))])
            )
            assert [(e.position, e.stream_id) for e in live] == [(5, "cart-1")]
            await _expect_no_more(carts)

    async def test_a_type_subscriber_sees_new_matching_events_live(self, store: EventStore) -> None:
        await store.append("order-1", [_event("shop.OrderPlaced")])
        async with _subscription(store, types={"shop.OrderPaid"}) as paid:
            appending = store.append("order-1", [_event("shop.OrderPacked"), _event("shop.OrderPaid")])
            assert [(e.position, e.type) for e in await _take_while(paid, 1, appending)] == [(3, "shop.OrderPaid")]
            await _expect_no_more(paid)

    async def test_a_filtered_subscriber_does_not_stall_behind_many_non_matching_events(
        self, store: EventStore
    ) -> None:
        async def noise_then_one_match() -> None:
            # Each kind of noise matches one filter but not the other, three pages' worth in all.
            for _ in range(3):
                await store.append("noise-1", _events(400, "test.Wanted"))
                await store.append("match-1", _events(100, "test.Unwanted"))
            await store.append("match-1", [_event("test.Wanted")])

        async with _subscription(store, categories={"match"}, types={"test.Wanted"}) as matches:
            [wanted] = await _take_while(matches, 1, noise_then_one_match())
            assert (wanted.position, wanted.stream_id, wanted.type) == (1_501, "match-1", "test.Wanted")
            await _expect_no_more(matches)

    async def test_an_idle_filtered_subscriber_does_not_busy_loop(
        self, store: EventStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Counts calls to read_all; a backend whose subscription reads some other way passes trivially.
        await store.append("noise-1", _events(3))
        reads = 0
        read_all = store.read_all

        def counting_read_all(*args: Any, **kwargs: Any) -> AsyncIterator[StoredEvent]:
            nonlocal reads
            reads += 1
            return read_all(*args, **kwargs)

        async def idle_then_one_match() -> int:
            await asyncio.sleep(0.5)
            idle_reads = reads
            await store.append("match-1", [_event()])
            return idle_reads

        monkeypatch.setattr(store, "read_all", counting_read_all)
        async with _subscription(store, categories={"match"}) as matches, asyncio.TaskGroup() as group:
            idle_reads = group.create_task(idle_then_one_match())
            assert _positions(await _take(matches, 1)) == [4]
        assert idle_reads.result() <= 5, f"An idle subscriber read the log {idle_reads.result()} times in 0.5s"

    # -- concurrent writers ----------------------------------------------------------------------

    async def test_concurrent_appends_expecting_the_same_version_let_exactly_one_win(self, store: EventStore) -> None:
        outcomes = await asyncio.gather(
            *(store.append("race-1", [_event(writer=n)], NO_STREAM) for n in range(10)), return_exceptions=True
        )
        winners = [o for o in outcomes if isinstance(o, AppendResult)]
        losers = [o for o in outcomes if isinstance(o, ConcurrencyError)]
        assert (len(winners), len(losers)) == (1, 9)
        assert {str(o) for o in losers} == {"Wrong expected version for stream race-1: expected no stream, actual 1"}
        assert await _read_all(store) == list(winners[0].events)

    async def test_concurrent_appends_with_the_same_command_id_append_once(self, store: EventStore) -> None:
        results = await asyncio.gather(*(store.append(f"order-{n}", _events(2), command_id="cmd-1") for n in range(10)))
        assert all(_facts(result) == _facts(results[0]) for result in results)
        assert await _read_all(store) == list(results[0].events)

    async def test_concurrent_writers_leave_gap_free_positions_and_versions_and_a_live_subscriber_sees_them_all(
        self, store: EventStore
    ) -> None:
        writers, appends, per_append = 20, 25, 2
        total = writers * appends * per_append
        async with _subscription(store) as live, asyncio.timeout(30), asyncio.TaskGroup() as group:
            watching = group.create_task(_take(live, total, timeout=30))
            for writer in range(writers):
                group.create_task(_write_concurrently(store, writer, appends, per_append))
        stored = await _read_all(store)
        assert _positions(stored) == list(range(1, total + 1))
        assert watching.result() == stored
        streams: dict[str, list[int]] = {}
        for event in stored:
            streams.setdefault(event.stream_id, []).append(event.version)
        assert all(versions == list(range(1, len(versions) + 1)) for versions in streams.values())
        lengths = {stream_id: len(versions) for stream_id, versions in streams.items()}
        assert lengths == _expected_lengths(writers, appends * per_append)


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
