"""The command side: the unit of work a handler sees, and the dispatcher that appends what it decides."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.monolith.domain import Order, Product
from tests.monolith.handlers import place_order
from tests.monolith.messages import (
    AddProduct,
    OrderLine,
    PlaceOrder,
    ProductAdded,
    ReceiveStock,
    StockReceived,
)
from twofold import (
    NO_STREAM,
    AccessDenied,
    Command,
    ConcurrencyError,
    DomainError,
    Envelope,
    NotFound,
    StoreError,
    UnitOfWork,
)
from twofold.commands import CommandDispatcher, CommandHandler
from twofold.store import AppendResult, NewEvent
from twofold.store.memory import MemoryEventStore
from twofold.store.sqlite import SQLiteEventStore

MUG = ProductAdded(sku="A-1", name="Mug", price=Decimal("9.50"))


def new(event: ProductAdded | StockReceived, *, tenant: str | None = None) -> NewEvent:
    return NewEvent(event.type_name, event.model_dump(mode="json"), {"tenant": tenant} if tenant else {})


def order(order_id: str = "o-1", quantity: int = 2) -> PlaceOrder:
    return PlaceOrder(order_id=order_id, customer_id="c-1", lines=[OrderLine(sku="A-1", quantity=quantity)])


@pytest.fixture
async def store() -> AsyncIterator[MemoryEventStore]:
    store = MemoryEventStore()
    await store.append("product-A-1", [new(MUG), new(StockReceived(sku="A-1", quantity=5))])
    yield store
    await store.close()


def uow_for(store: MemoryEventStore, command: Command | None = None, **envelope: str) -> UnitOfWork:
    return UnitOfWork(store, Envelope(command or order(), **envelope))


# -- the unit of work ----------------------------------------------------------------------------


async def test_loading_a_stream_that_does_not_exist_gives_a_fresh_aggregate_at_version_zero(
    store: MemoryEventStore,
) -> None:
    loaded = await uow_for(store).load(Order, "nope")

    assert loaded == Order(id="nope")
    assert loaded.version == 0
    assert not loaded.exists


async def test_loading_an_existing_stream_folds_its_events_and_takes_its_version(store: MemoryEventStore) -> None:
    product = await uow_for(store).load(Product, "A-1")

    assert (product.name, product.available, product.version) == ("Mug", 5, 2)


async def test_loading_a_stream_again_returns_the_state_this_command_brought_it_to(store: MemoryEventStore) -> None:
    uow = uow_for(store)
    product = await uow.load(Product, "A-1")
    after = uow.emit(product, product.receive(3))

    assert await uow.load(Product, "A-1") is after


async def test_loading_one_stream_as_two_aggregate_types_is_refused(store: MemoryEventStore) -> None:
    uow = uow_for(store)
    await uow.load(Product, "A-1")

    class Other(Product, category="product"):
        pass

    with pytest.raises(TypeError, match="Stream product-A-1 was loaded as Product"):
        await uow.load(Other, "A-1")


async def test_loading_a_stream_holding_an_event_the_aggregate_does_not_name_fails(store: MemoryEventStore) -> None:
    await store.append("order-o-9", [NewEvent("shop.Mystery", {})])

    with pytest.raises(StoreError, match=r"order-o-9 holds a shop\.Mystery event at version 1, which Order\.evolve"):
        await uow_for(store).load(Order, "o-9")


async def test_emit_returns_the_state_after_the_events_with_its_version_moved_on(store: MemoryEventStore) -> None:
    uow = uow_for(store)
    product = await uow.load(Product, "A-1")

    after = uow.emit(product, [product.receive(3), product.receive(4)])

    assert (after.available, after.version) == (12, 4)
    assert (product.available, product.version) == (5, 2)


async def test_emitting_again_from_the_returned_state_extends_the_same_write(store: MemoryEventStore) -> None:
    uow = uow_for(store)
    product = await uow.load(Product, "A-1")
    product = uow.emit(product, product.receive(1))
    product = uow.emit(product, product.reserve("o-1", 6))

    [write] = uow.writes()
    assert [e.type for e in write.events] == ["shop.StockReceived", "shop.StockReserved"]
    assert write.expected_version == 2
    assert product.available == 0


async def test_emitting_from_a_stale_value_is_refused(store: MemoryEventStore) -> None:
    uow = uow_for(store)
    product = await uow.load(Product, "A-1")
    uow.emit(product, product.receive(1))

    with pytest.raises(RuntimeError, match="Stale state for stream product-A-1: emitted from version 2, but this"):
        uow.emit(product, product.receive(1))
    assert len(uow.writes()[0].events) == 1


async def test_writes_across_streams_carry_each_streams_expected_version(store: MemoryEventStore) -> None:
    uow = uow_for(store)
    await place_order(order(), uow)

    writes = {w.stream_id: w for w in uow.writes()}

    assert writes["order-o-1"].expected_version is NO_STREAM
    assert writes["product-A-1"].expected_version == 2
    assert [e.type for e in writes["order-o-1"].events] == ["shop.OrderPlaced"]
    assert [e.type for e in writes["product-A-1"].events] == ["shop.StockReserved"]


async def test_a_loaded_stream_without_new_events_is_not_written(store: MemoryEventStore) -> None:
    uow = uow_for(store)
    await uow.load(Product, "A-1")

    assert uow.writes() == []


async def test_every_event_carries_the_commands_ids_principal_and_tenant() -> None:
    store = MemoryEventStore()
    await store.append("product-A-1", [new(MUG, tenant="t-1"), new(StockReceived(sku="A-1", quantity=5), tenant="t-1")])
    uow = uow_for(
        store, message_id="cmd-1", correlation_id="corr-1", causation_id="cause-0", principal="ann", tenant="t-1"
    )
    await place_order(order(), uow)

    metadata = [e.metadata for w in uow.writes() for e in w.events]

    assert len(metadata) == 2
    for meta in metadata:
        assert meta["command_id"] == "cmd-1"
        assert meta["command_type"] == "PlaceOrder"
        assert meta["correlation_id"] == "corr-1"
        assert meta["causation_id"] == "cmd-1"  # the command is what directly caused its events
        assert meta["principal"] == "ann"
        assert meta["tenant"] == "t-1"


async def test_a_stream_belongs_to_its_tenant_and_no_other_tenant_may_load_it(store: MemoryEventStore) -> None:
    # product-A-1 was written without a tenant: it belongs to no tenant, so a tenant's command is refused
    with pytest.raises(AccessDenied, match="product-A-1 belongs to another tenant"):
        await uow_for(store, tenant="t-1").load(Product, "A-1")

    await store.append("product-B-1", [new(MUG.model_copy(update={"sku": "B-1"}), tenant="t-1")])
    assert (await uow_for(store, tenant="t-1").load(Product, "B-1")).name == "Mug"
    for other in ("t-2", None):
        with pytest.raises(AccessDenied) as refused:
            await uow_for(store, tenant=other).load(Product, "B-1")
        assert "t-1" not in str(refused.value)  # never says whose it is


async def test_a_tenant_may_start_any_stream_no_one_has_written(store: MemoryEventStore) -> None:
    loaded = await uow_for(store, tenant="t-2").load(Order, "o-new")

    assert not loaded.exists


class SnappedProduct(Product, category="product", snapshot_every=2):
    pass


async def snapped_stock(command: ReceiveStock, uow: UnitOfWork) -> None:
    product = await uow.load(SnappedProduct, command.sku)
    uow.emit(product, product.receive(command.quantity))


async def test_a_snapshot_taken_for_one_tenant_never_lets_another_load_the_stream() -> None:
    store = MemoryEventStore()
    dispatcher = CommandDispatcher(store, {ReceiveStock: snapped_stock})
    await store.append("product-S-1", [new(MUG.model_copy(update={"sku": "S-1"}), tenant="t-1")])
    for _ in range(3):
        await dispatcher.dispatch(Envelope(ReceiveStock(sku="S-1", quantity=1), tenant="t-1"))
    snapshots = [e async for e in store.read_stream("snapshot-product-S-1")]
    assert snapshots
    assert snapshots[-1].metadata["tenant"] == "t-1"

    with pytest.raises(AccessDenied):
        await dispatcher.dispatch(Envelope(ReceiveStock(sku="S-1", quantity=1), tenant="t-2"))
    assert (await uow_for(store, tenant="t-1").load(SnappedProduct, "S-1")).available == 3


async def test_a_first_command_starts_its_own_correlation(store: MemoryEventStore) -> None:
    uow = uow_for(store, message_id="cmd-2")
    await place_order(order(), uow)

    assert uow.writes()[0].events[0].metadata["correlation_id"] == "cmd-2"
    assert uow.principal is None


# -- the dispatcher ------------------------------------------------------------------------------


class Counting:
    """Wraps a handler and counts its runs."""

    def __init__(self, handler: CommandHandler) -> None:
        self.handler = handler
        self.calls = 0

    async def __call__(self, command: Command, uow: UnitOfWork) -> None:
        self.calls += 1
        await self.handler(command, uow)


async def test_a_command_without_a_handler_is_not_found(store: MemoryEventStore) -> None:
    dispatcher = CommandDispatcher(store, {})

    with pytest.raises(NotFound, match="No handler for command PlaceOrder"):
        await dispatcher.dispatch(Envelope(order()))


async def test_dispatch_appends_every_stream_in_one_append_and_reports_the_first_stream(
    store: MemoryEventStore,
) -> None:
    result = await CommandDispatcher(store, {PlaceOrder: place_order}).dispatch(Envelope(order(), message_id="c"))

    assert (result.command_id, result.stream_id, result.version, result.position) == ("c", "order-o-1", 1, 4)
    assert [(e.stream_id, e.type) for e in result.events] == [
        ("order-o-1", "shop.OrderPlaced"),
        ("product-A-1", "shop.StockReserved"),
    ]


async def test_the_same_command_id_runs_once_and_returns_the_first_result(store: MemoryEventStore) -> None:
    handler = Counting(place_order)
    dispatcher = CommandDispatcher(store, {PlaceOrder: handler})

    first = await dispatcher.dispatch(Envelope(order(), message_id="c-1"))
    # Run again, the handler would now refuse: the order exists. The first result comes back instead.
    again = await dispatcher.dispatch(Envelope(order(), message_id="c-1"))

    assert handler.calls == 1
    assert again == first
    assert await store.head_position() == 4


async def test_the_same_command_id_dispatched_concurrently_returns_the_first_result_to_both(
    store: MemoryEventStore,
) -> None:
    async def slow_place_order(command: PlaceOrder, uow: UnitOfWork) -> None:
        await asyncio.sleep(0)  # both dispatches pass the idempotency check before either appends
        await place_order(command, uow)

    dispatcher = CommandDispatcher(store, {PlaceOrder: slow_place_order})
    envelope = Envelope(order(), message_id="c-1")

    async with asyncio.timeout(5):
        first, second = await asyncio.gather(dispatcher.dispatch(envelope), dispatcher.dispatch(envelope))

    assert first == second
    assert await store.head_position() == 4


async def test_a_command_id_is_remembered_across_processes(tmp_path: Path) -> None:
    one, two = SQLiteEventStore(tmp_path / "e.db"), SQLiteEventStore(tmp_path / "e.db")
    try:
        handler = Counting(place_order)
        await one.append("product-A-1", [new(MUG), new(StockReceived(sku="A-1", quantity=5))])
        first = await CommandDispatcher(one, {PlaceOrder: handler}).dispatch(Envelope(order(), message_id="c-1"))
        again = await CommandDispatcher(two, {PlaceOrder: handler}).dispatch(Envelope(order(), message_id="c-1"))
    finally:
        await one.close()
        await two.close()

    assert handler.calls == 1
    assert (again.stream_id, again.version, again.position) == (first.stream_id, first.version, first.position)
    assert [e.event_id for e in again.events] == [e.event_id for e in first.events]


async def test_a_conflicting_append_is_retried_on_fresh_state(store: MemoryEventStore) -> None:
    async def racing_receive(command: ReceiveStock, uow: UnitOfWork) -> None:
        product = await uow.load(Product, command.sku)
        if handler.calls == 1:  # another writer moves the stream on after this attempt loaded it
            await store.append(product.stream_id, [new(StockReceived(sku=command.sku, quantity=100))])
        uow.emit(product, product.receive(command.quantity))

    handler = Counting(racing_receive)
    result = await CommandDispatcher(store, {ReceiveStock: handler}).dispatch(
        Envelope(ReceiveStock(sku="A-1", quantity=1))
    )

    assert handler.calls == 2
    assert (result.stream_id, result.version, result.position) == ("product-A-1", 4, 4)
    async with asyncio.timeout(5):
        versions = [e.version async for e in store.read_stream("product-A-1")]
    assert versions == [1, 2, 3, 4]


async def test_conflicts_are_retried_a_bounded_number_of_times_then_raised(store: MemoryEventStore) -> None:
    async def always_overtaken(command: ReceiveStock, uow: UnitOfWork) -> None:
        product = await uow.load(Product, command.sku)
        await store.append(product.stream_id, [new(StockReceived(sku=command.sku, quantity=100))])
        uow.emit(product, product.receive(command.quantity))

    handler = Counting(always_overtaken)
    dispatcher = CommandDispatcher(store, {ReceiveStock: handler}, max_attempts=3)

    with pytest.raises(ConcurrencyError, match="Wrong expected version for stream product-A-1") as raised:
        await dispatcher.dispatch(Envelope(ReceiveStock(sku="A-1", quantity=1), message_id="c-1"))

    assert handler.calls == 3
    assert (raised.value.stream_id, raised.value.expected, raised.value.actual) == ("product-A-1", 4, 5)
    assert await store.command_result("c-1") is None
    assert [e.data["quantity"] async for e in store.read_all(3)] == [100, 100, 100]


async def test_a_handler_that_emits_nothing_returns_no_position(store: MemoryEventStore) -> None:
    async def look(command: ReceiveStock, uow: UnitOfWork) -> None:
        await uow.load(Product, command.sku)

    result = await CommandDispatcher(store, {ReceiveStock: look}).dispatch(
        Envelope(ReceiveStock(sku="A-1", quantity=1))
    )

    assert (result.stream_id, result.version, result.position, result.events) == ("product-A-1", 2, None, ())
    assert await store.head_position() == 2


async def test_a_refused_command_appends_nothing(store: MemoryEventStore) -> None:
    dispatcher = CommandDispatcher(store, {PlaceOrder: place_order, AddProduct: Counting(place_order)})

    with pytest.raises(DomainError, match="Not enough stock for A-1: ordered 6, available 5"):
        await dispatcher.dispatch(Envelope(order(quantity=6), message_id="c-1"))

    assert await store.head_position() == 2
    assert await store.command_result("c-1") is None


async def test_a_generated_command_id_is_not_looked_up_before_the_handler_but_a_given_one_is(
    store: MemoryEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups: list[str] = []
    recorded = store.command_result

    async def counting(command_id: str) -> AppendResult | None:
        lookups.append(command_id)
        return await recorded(command_id)

    monkeypatch.setattr(store, "command_result", counting)
    dispatcher = CommandDispatcher(store, {PlaceOrder: place_order})

    fresh = await dispatcher.dispatch(Envelope(order("o-1")), new_id=True)
    given = await dispatcher.dispatch(Envelope(order("o-2"), message_id="c-2"))
    again = await dispatcher.dispatch(Envelope(order("o-2"), message_id="c-2"))

    assert lookups == ["c-2", "c-2"]  # one lookup each for the given id; none for the generated one
    assert fresh.position is not None
    assert given.position is not None
    assert again == given
