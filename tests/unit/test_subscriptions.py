"""Importing another service's streams: once each, in order per stream, poison parked with what follows it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from twofold import Database, Event, Projection, Service, StoredEvent
from twofold.deadletters import UNREADABLE_STREAM, DeadLetter
from twofold.messages import utc_now
from twofold.readmodels import ReadStore
from twofold.readmodels.postgres import PostgresReadStore
from twofold.readmodels.sqlite import SQLiteReadStore
from twofold.store import EventStore
from twofold.store.memory import MemoryEventStore
from twofold.store.postgres import PostgresEventStore
from twofold.store.sqlite import SQLiteEventStore
from twofold.subscriptions import Importer, Outcome, Subscription, imported_stream_id, record_json

SOURCE = "inventory"


class StockReserved(Event, name="inventory.StockReserved"):
    sku: str
    quantity: int


class Reservations(Projection, name="orders.reservations"):
    def apply(self, event: StockReserved, db: Database, record: StoredEvent) -> None:
        pass


def service() -> Service:
    return Service("orders", projections=[Reservations()], subscriptions=[Subscription(SOURCE, ["reservation"])])


def source_event(stream: str, version: int, position: int, *, quantity: object = 1) -> StoredEvent:
    return StoredEvent(
        position=position,
        stream_id=stream,
        version=version,
        event_id=f"{stream}/{version}",
        type="inventory.StockReserved",
        schema_version=1,
        data={"sku": "A-1", "quantity": quantity},
        metadata={"correlation_id": "c-1"},
        recorded_at=utc_now(),
    )


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[EventStore, ReadStore]]:
    store: EventStore
    read_store: ReadStore
    if request.param == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        store, read_store = PostgresEventStore(url), PostgresReadStore(url)
    else:
        store = MemoryEventStore() if request.param == "memory" else SQLiteEventStore(tmp_path / "e.db")
        read_store = SQLiteReadStore(tmp_path / "read.db")
    yield store, read_store
    await store.close()
    await read_store.close()


ImporterFactory = Callable[..., Importer]


@pytest.fixture
def importer_of(stores: tuple[EventStore, ReadStore]) -> ImporterFactory:
    def make(max_attempts: int = 3, max_gap_attempts: int | None = None) -> Importer:
        store, read_store = stores
        subscription = Subscription(SOURCE, ["reservation"])
        return Importer(
            service(), store, read_store, subscription, max_attempts=max_attempts, max_gap_attempts=max_gap_attempts
        )

    return make


async def local(store: EventStore, stream: str) -> list[tuple[int, str]]:
    return [(e.version, e.event_id) async for e in store.read_stream(imported_stream_id(SOURCE, stream))]


async def test_an_import_keeps_version_id_type_data_and_adds_where_it_came_from(
    importer_of: ImporterFactory, stores: tuple[EventStore, ReadStore]
) -> None:
    event = source_event("reservation-o-1", 1, 42)
    assert await importer_of().receive(event) is Outcome.IMPORTED
    [imported] = [e async for e in stores[0].read_stream("inventory.reservation-o-1")]
    assert (imported.version, imported.event_id, imported.type, imported.data) == (
        1,
        event.event_id,
        event.type,
        event.data,
    )
    assert imported.metadata["correlation_id"] == "c-1"
    assert (imported.metadata["source"], imported.metadata["source_position"]) == (SOURCE, 42)
    assert imported.metadata["source_time"] == event.recorded_at.isoformat()


async def test_a_duplicate_however_late_changes_nothing(
    importer_of: ImporterFactory, stores: tuple[EventStore, ReadStore]
) -> None:
    importer = importer_of()
    first, second = source_event("reservation-o-1", 1, 1), source_event("reservation-o-1", 2, 2)
    assert await importer.receive_many([(first, 1), (second, 1)]) == [Outcome.IMPORTED] * 2
    assert await importer.receive(first, attempts=7) is Outcome.DUPLICATE
    assert await importer.receive_many([(first, 1), (second, 1)]) == [Outcome.DUPLICATE] * 2
    assert await local(stores[0], "reservation-o-1") == [(1, first.event_id), (2, second.event_id)]
    assert await stores[0].head_position() == 2


async def test_an_event_whose_predecessor_has_not_arrived_waits_and_order_is_kept(
    importer_of: ImporterFactory, stores: tuple[EventStore, ReadStore]
) -> None:
    importer = importer_of()
    first, second = source_event("reservation-o-1", 1, 1), source_event("reservation-o-1", 2, 2)
    assert await importer.receive(second) is Outcome.RETRY
    assert await local(stores[0], "reservation-o-1") == []
    assert await importer.receive(first) is Outcome.IMPORTED
    assert await importer.receive(second, attempts=2) is Outcome.IMPORTED
    assert await local(stores[0], "reservation-o-1") == [(1, first.event_id), (2, second.event_id)]


async def test_poison_is_parked_with_the_later_events_of_its_stream_while_another_stream_flows(
    importer_of: ImporterFactory, stores: tuple[EventStore, ReadStore]
) -> None:
    importer = importer_of(max_attempts=2)
    good = source_event("reservation-o-1", 1, 1)
    poison = source_event("reservation-o-1", 2, 2, quantity="many")
    later = source_event("reservation-o-1", 3, 3)
    other = source_event("reservation-o-2", 1, 4)
    assert await importer.receive_many([(good, 1), (poison, 1)]) == [Outcome.IMPORTED, Outcome.RETRY]
    assert await importer.receive(poison, attempts=2) is Outcome.PARKED
    assert await importer.receive_many([(later, 1), (other, 1)]) == [Outcome.PARKED, Outcome.IMPORTED]
    assert await importer.receive(poison, attempts=3) is Outcome.PARKED  # parking twice is harmless

    parked = await importer.dead_letters.parked(SOURCE)
    assert [(p.stream_id, p.version) for p in parked] == [("reservation-o-1", 2), ("reservation-o-1", 3)]
    assert "quantity" in parked[0].error
    assert parked[0].attempts == 2
    assert "waiting behind" in parked[1].error
    assert await local(stores[0], "reservation-o-1") == [(1, good.event_id)]
    assert await local(stores[0], "reservation-o-2") == [(1, other.event_id)]
    assert await importer.dead_letters.counts() == {SOURCE: 2}


async def test_retry_that_still_fails_stops_at_the_first_and_keeps_the_rest_parked(
    importer_of: ImporterFactory, stores: tuple[EventStore, ReadStore]
) -> None:
    importer = importer_of(max_attempts=1)
    await importer.receive(source_event("reservation-o-1", 1, 1))
    await importer.receive(source_event("reservation-o-1", 2, 2, quantity="many"))
    await importer.receive(source_event("reservation-o-1", 3, 3))

    result = await importer.retry("reservation-o-1")

    assert (result.imported, result.parked) == (0, 2)
    parked = await importer.dead_letters.parked(SOURCE, "reservation-o-1")
    assert [(p.version, p.attempts) for p in parked] == [(2, 2), (3, 1)]
    assert await local(stores[0], "reservation-o-1") == [(1, "reservation-o-1/1")]


async def test_retry_with_the_fix_deployed_drains_the_stream_in_order(
    importer_of: ImporterFactory, stores: tuple[EventStore, ReadStore]
) -> None:
    importer = importer_of(max_attempts=1)
    await importer.receive(source_event("reservation-o-1", 1, 1))
    poison = source_event("reservation-o-1", 2, 2, quantity="many")
    await importer.receive(poison)
    await importer.receive(source_event("reservation-o-1", 3, 3))
    fixed = importer_of()
    fixed._invalid = lambda record: None  # type: ignore[method-assign]  # the deployed fix reads "many"

    assert (await fixed.retry()).imported == 2
    assert await fixed.dead_letters.parked() == []
    assert await local(stores[0], "reservation-o-1") == [(v, f"reservation-o-1/{v}") for v in (1, 2, 3)]
    assert await fixed.receive(source_event("reservation-o-1", 4, 4)) is Outcome.IMPORTED
    assert (await fixed.retry()).imported == 0  # nothing left: idempotent


async def test_a_parked_message_that_was_imported_meanwhile_is_dropped_by_retry(
    importer_of: ImporterFactory, stores: tuple[EventStore, ReadStore]
) -> None:
    importer = importer_of(max_attempts=1)
    event = source_event("reservation-o-1", 1, 1)
    await importer.dead_letters.park(DeadLetter(SOURCE, "reservation-o-1", 1, record_json(event), "x"))
    await stores[0].append("inventory.reservation-o-1", [importer._new(event)])  # a crash after the import
    assert (await importer.retry()).imported == 1
    assert await local(stores[0], "reservation-o-1") == [(1, event.event_id)]


async def test_an_unreadable_message_is_retried_then_parked_without_a_stream(importer_of: ImporterFactory) -> None:
    importer = importer_of(max_attempts=2)
    assert await importer.receive_unreadable("{not json", 17, "InvalidCloudEvent: not JSON", 1) is Outcome.RETRY
    assert await importer.receive_unreadable("{not json", 17, "InvalidCloudEvent: not JSON", 2) is Outcome.PARKED
    [letter] = await importer.dead_letters.parked(SOURCE)
    assert (letter.stream_id, letter.version, letter.payload) == (UNREADABLE_STREAM, 17, "{not json")
    assert (await importer.retry()).parked == 1  # no decoder given: it stays


async def test_a_gap_that_never_fills_is_parked_after_its_own_longer_attempts(importer_of: ImporterFactory) -> None:
    importer = importer_of(max_attempts=2, max_gap_attempts=4)
    orphan = source_event("reservation-o-9", 2, 5)
    assert await importer.receive(orphan, attempts=3) is Outcome.RETRY
    assert await importer.receive(orphan, attempts=4) is Outcome.PARKED
    [letter] = await importer.dead_letters.parked(SOURCE)
    assert letter.error.startswith("gap: stream reservation-o-9 of inventory is imported up to version 0")


async def test_the_missing_event_of_a_parked_gap_is_imported_and_lets_the_parked_ones_follow(
    importer_of: ImporterFactory, stores: tuple[EventStore, ReadStore]
) -> None:
    importer = importer_of(max_attempts=1, max_gap_attempts=1)
    first, second, third = (source_event("reservation-o-1", v, v) for v in (1, 2, 3))
    assert await importer.receive_many([(second, 1), (third, 1)]) == [Outcome.PARKED, Outcome.PARKED]
    assert await importer.receive(first) is Outcome.IMPORTED
    assert await importer.dead_letters.parked() == []
    assert await local(stores[0], "reservation-o-1") == [(v, f"reservation-o-1/{v}") for v in (1, 2, 3)]


@pytest.mark.parametrize(
    ("source", "categories", "message"),
    [
        ("inventory", "reservation", r"categories must be a list, e.g. \['reservation'\]"),
        ("inventory", [], r"name the source and at least one category"),
        ("", ["reservation"], r"name the source and at least one category"),
        ("inventory", ["reservation-o-1"], r"'reservation-o-1' is not a category \(the text of a stream id"),
    ],
)
def test_a_subscription_names_a_source_and_whole_categories(source: str, categories: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Subscription(source, categories)
