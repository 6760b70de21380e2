"""Appending: expected versions, several streams at once, command ids and event ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from twofold.errors import ConcurrencyError
from twofold.store import (
    ANY,
    NO_STREAM,
    EventStore,
    ExpectedVersion,
    NewEvent,
    StreamWrite,
    category_of,
)
from twofold.testing.contracts._support import (
    _event,
    _events,
    _facts,
    _positions,
    _read_all,
    _read_stream,
    _versions,
)


class WritingContract:
    """Appending: expected versions, several streams at once, command ids and event ids."""

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
