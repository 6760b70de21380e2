"""Snapshots (Hypothesis): loading from the newest snapshot gives exactly the state of a full replay.

The shop's handlers run here on subclasses of its aggregates that snapshot every 3 events, on the
memory, SQLite and PostgreSQL stores. A snapshot that a changed class cannot read is ignored.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings

from tests.monolith.domain import Order, Product
from tests.monolith.messages import AddProduct, CancelOrder, PlaceOrder, PricedLine, ReceiveStock
from tests.property.strategies import ORDER_IDS, SKUS, shop_commands
from twofold import Aggregate, Command, DomainError, Envelope, EventStore, NewEvent, Runtime, Service, UnitOfWork
from twofold.commands import SNAPSHOT_TYPE, snapshot_stream
from twofold.store.memory import MemoryEventStore
from twofold.store.postgres import PostgresEventStore
from twofold.store.sqlite import SQLiteEventStore
from twofold.testing.servers import PostgresServer

A = TypeVar("A", bound=Aggregate)
EVERY = 3
_databases = itertools.count(1)


class SnappedProduct(Product, category="product", snapshot_every=EVERY):
    pass


class SnappedOrder(Order, category="order", snapshot_every=EVERY):
    pass


class ReshapedProduct(Product, category="product", snapshot_every=EVERY):
    """The product class after a release that added a field: old snapshots no longer fit it."""

    reserved_orders: int = 0


async def add_product(command: AddProduct, uow: UnitOfWork) -> None:
    product = await uow.load(SnappedProduct, command.sku)
    uow.emit(product, product.add(command.name, command.price))


async def receive_stock(command: ReceiveStock, uow: UnitOfWork) -> None:
    product = await uow.load(SnappedProduct, command.sku)
    uow.emit(product, product.receive(command.quantity))


async def place_order(command: PlaceOrder, uow: UnitOfWork) -> None:
    order = await uow.load(SnappedOrder, command.order_id)
    products = [await uow.load(SnappedProduct, line.sku) for line in command.lines]
    priced = [
        PricedLine(sku=p.id, quantity=line.quantity, price=p.price)
        for p, line in zip(products, command.lines, strict=True)
    ]
    uow.emit(order, order.place(command.customer_id, priced))
    for product, line in zip(products, command.lines, strict=True):
        uow.emit(product, product.reserve(command.order_id, line.quantity))


async def cancel_order(command: CancelOrder, uow: UnitOfWork) -> None:
    order = await uow.load(SnappedOrder, command.order_id)
    cancelled = order.cancel()
    uow.emit(order, cancelled)
    for line in cancelled.lines:
        product = await uow.load(SnappedProduct, line.sku)
        uow.emit(product, product.release(command.order_id, line.quantity))


shop = Service(
    "snapshotting-shop",
    commands={AddProduct: add_product, ReceiveStock: receive_stock, PlaceOrder: place_order, CancelOrder: cancel_order},
)


@asynccontextmanager
async def opened(kind: str, folder: Path, server: PostgresServer | None) -> AsyncIterator[EventStore]:
    store: EventStore
    if kind == "memory":
        store = MemoryEventStore()
    elif kind == "sqlite":
        store = SQLiteEventStore(folder / f"events-{next(_databases)}.db")
    else:
        assert server is not None
        store = PostgresEventStore(server.create_database(f"snapshots_{next(_databases)}"))
    try:
        yield store
    finally:
        await store.close()


async def run(store: EventStore, commands: Sequence[Command]) -> None:
    runtime = Runtime(shop, store=store)  # not entered: stopping a runtime closes its store
    for command in commands:
        with suppress(DomainError):
            await runtime.execute(command)


async def load(store: EventStore, aggregate_type: type[A], id: str) -> A:
    return await UnitOfWork(store, Envelope(CancelOrder(order_id="unused"))).load(aggregate_type, id)


async def assert_snapshots_load_as_a_full_replay(store: EventStore) -> None:
    pairs = [(Product, SnappedProduct, sku) for sku in SKUS] + [(Order, SnappedOrder, o) for o in ORDER_IDS]
    for plain, snapped, id in pairs:
        replayed, loaded = await load(store, plain, id), await load(store, snapped, id)
        assert loaded.model_dump() == replayed.model_dump(), f"{snapped.__name__} {id}"
        snapshots = await store.stream_version(snapshot_stream(replayed.stream_id))
        assert snapshots == replayed.version // EVERY  # each command adds one event per stream


def run_on(kind: str, server: PostgresServer | None, scenario: Callable[[EventStore], Awaitable[None]]) -> None:
    async def main(folder: Path) -> None:
        async with opened(kind, folder, server) as store:
            await scenario(store)

    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(main(Path(folder)))


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server(kind: str, request: pytest.FixtureRequest) -> PostgresServer | None:
    if kind != "postgres":
        return None
    found: PostgresServer = request.getfixturevalue("postgres_server")
    return found


def replays(commands: Sequence[Command]) -> Callable[[EventStore], Awaitable[None]]:
    async def scenario(store: EventStore) -> None:
        await run(store, commands)
        await assert_snapshots_load_as_a_full_replay(store)

    return scenario


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
@settings(max_examples=40, deadline=None)
@given(commands=shop_commands(max_size=30))
def test_loading_from_snapshots_gives_the_state_and_version_of_a_full_replay(
    store_kind: str, commands: list[Command]
) -> None:
    run_on(store_kind, None, replays(commands))


@settings(max_examples=10, deadline=None)
@given(commands=shop_commands(max_size=30))
def test_loading_from_snapshots_on_postgresql_gives_the_state_and_version_of_a_full_replay(
    postgres_server: PostgresServer, commands: list[Command]
) -> None:
    run_on("postgres", postgres_server, replays(commands))


RECEIVE_SIX = [AddProduct(sku="A-1", name="Mug", price=Decimal("2.50"))] + [
    ReceiveStock(sku="A-1", quantity=n) for n in range(1, 6)
]


def test_the_newest_snapshot_is_what_loading_starts_from(kind: str, server: PostgresServer | None) -> None:
    async def scenario(store: EventStore) -> None:
        await run(store, RECEIVE_SIX)
        real = await load(store, SnappedProduct, "A-1")
        forged = real.model_copy(update={"available": 999})
        await append_snapshot(store, forged, {"state": forged.model_dump(mode="json")}, keep_schema=True)

        assert (await load(store, SnappedProduct, "A-1")).model_dump() == {**real.model_dump(), "available": 999}

    run_on(kind, server, scenario)


@pytest.mark.parametrize(
    "snapshot",
    [
        {"schema": "from-an-older-release"},
        {"state": {"id": "A-1", "version": 6, "available": "plenty"}},
        {"state": "not an object"},
    ],
    ids=["other schema", "state that does not validate", "malformed state"],
)
def test_a_stale_or_invalid_snapshot_is_ignored_for_a_full_replay(
    kind: str, server: PostgresServer | None, snapshot: dict[str, Any]
) -> None:
    async def scenario(store: EventStore) -> None:
        await run(store, RECEIVE_SIX)
        real = await load(store, SnappedProduct, "A-1")
        state = {"state": real.model_copy(update={"available": 999}).model_dump(mode="json")}
        await append_snapshot(store, real, state | snapshot, keep_schema="schema" not in snapshot)

        assert (await load(store, SnappedProduct, "A-1")).model_dump() == real.model_dump()

    run_on(kind, server, scenario)


def test_a_snapshot_taken_before_the_class_changed_shape_is_ignored(kind: str, server: PostgresServer | None) -> None:
    async def scenario(store: EventStore) -> None:
        await run(store, RECEIVE_SIX)
        assert await store.stream_version(snapshot_stream("product-A-1")) == 2

        reshaped = await load(store, ReshapedProduct, "A-1")

        assert reshaped.model_dump() == {**(await load(store, Product, "A-1")).model_dump(), "reserved_orders": 0}

    run_on(kind, server, scenario)


def test_a_failed_snapshot_never_fails_the_command(caplog: pytest.LogCaptureFixture) -> None:
    class NoSnapshots(MemoryEventStore):
        async def append(self, stream_id: str, events: Sequence[NewEvent], *args: Any, **kwargs: Any) -> Any:
            if stream_id.startswith("snapshot-"):
                raise OSError("disk full")
            return await super().append(stream_id, events, *args, **kwargs)

    async def scenario() -> None:
        store = NoSnapshots()
        with caplog.at_level(logging.WARNING, logger="twofold.commands"):
            await run(store, RECEIVE_SIX)
        assert (await load(store, SnappedProduct, "A-1")).available == 15
        assert await store.stream_version(snapshot_stream("product-A-1")) == 0

    asyncio.run(scenario())
    assert "Could not save snapshot snapshot-product-A-1" in caplog.text


async def append_snapshot(store: EventStore, state: Aggregate, data: dict[str, Any], *, keep_schema: bool) -> None:
    """Append ``data`` as the newest snapshot of ``state``'s stream, with the current schema if asked."""
    if keep_schema:
        async for previous in store.read_stream(snapshot_stream(state.stream_id)):
            data = {"schema": previous.data["schema"], **data}
            break
    await store.append(snapshot_stream(state.stream_id), [NewEvent(SNAPSHOT_TYPE, data)])
