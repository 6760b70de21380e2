"""Waiting, subscribing, and concurrent writers seen by live subscribers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from twofold.errors import ConcurrencyError
from twofold.store import (
    NO_STREAM,
    AppendResult,
    EventStore,
    StoredEvent,
    StreamWrite,
)
from twofold.testing.contracts._support import (
    LONG,
    SETTLE,
    WAIT,
    _event,
    _events,
    _expect_no_more,
    _expected_lengths,
    _facts,
    _positions,
    _read_all,
    _subscription,
    _take,
    _take_while,
    _write_concurrently,
)


class FollowingContract:
    """Waiting, subscribing, and concurrent writers seen by live subscribers."""

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
