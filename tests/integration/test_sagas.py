"""Sagas on real stores: reactions, sends, deadlines across restarts, compensation, inspection.

The domain is a small checkout in one service: an order reserves stock through the saga, then is
confirmed when paid, or cancelled (its stock released) when the payment deadline passes.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Literal

from conftest import StoreFactory
from pydantic import Field

from twofold import Aggregate, Command, DomainError, Event, Runtime, Service, UnitOfWork
from twofold.bus import InProcessBus
from twofold.sagas import Actions, Saga, Timeout
from twofold.store.memory import MemoryEventStore
from twofold.testing import saga_scenario

PAYMENT_DEADLINE = timedelta(minutes=10)


class PlaceOrder(Command):
    order_id: str
    sku: str
    quantity: int


class PayOrder(Command):
    order_id: str


class ConfirmOrder(Command):
    order_id: str


class CancelOrder(Command):
    order_id: str
    reason: str


class Restock(Command):
    sku: str
    quantity: int


class ReserveStock(Command):
    order_id: str
    sku: str
    quantity: int


class ReleaseStock(Command):
    order_id: str
    sku: str


class OrderPlaced(Event):
    order_id: str
    sku: str
    quantity: int


class OrderPaid(Event):
    order_id: str


class OrderConfirmed(Event):
    order_id: str


class OrderCancelled(Event):
    order_id: str
    reason: str


class Restocked(Event):
    sku: str
    quantity: int


class StockReserved(Event):
    order_id: str
    sku: str
    quantity: int


class StockShortage(Event):
    order_id: str
    sku: str


class StockReleased(Event):
    order_id: str
    sku: str
    quantity: int


class Order(Aggregate, category="order"):
    status: Literal["new", "placed", "paid", "confirmed", "cancelled"] = "new"

    def evolve(self, event: OrderPlaced | OrderPaid | OrderConfirmed | OrderCancelled) -> Order:
        match event:
            case OrderPlaced():
                return self.model_copy(update={"status": "placed"})
            case OrderPaid():
                return self.model_copy(update={"status": "paid"})
            case OrderConfirmed():
                return self.model_copy(update={"status": "confirmed"})
            case OrderCancelled():
                return self.model_copy(update={"status": "cancelled"})


class Stock(Aggregate, category="stock"):
    available: int = 0
    reserved: dict[str, int] = Field(default_factory=dict)

    def evolve(self, event: Restocked | StockReserved | StockShortage | StockReleased) -> Stock:
        match event:
            case Restocked(quantity=quantity):
                return self.model_copy(update={"available": self.available + quantity})
            case StockReserved(order_id=order_id, quantity=quantity):
                reserved = {**self.reserved, order_id: quantity}
                return self.model_copy(update={"available": self.available - quantity, "reserved": reserved})
            case StockReleased(order_id=order_id, quantity=quantity):
                reserved = {k: v for k, v in self.reserved.items() if k != order_id}
                return self.model_copy(update={"available": self.available + quantity, "reserved": reserved})
        return self


async def place_order(command: PlaceOrder, uow: UnitOfWork) -> None:
    order = await uow.load(Order, command.order_id)
    if order.exists:
        raise DomainError(f"Order {command.order_id} exists")
    uow.emit(order, OrderPlaced(order_id=command.order_id, sku=command.sku, quantity=command.quantity))


async def pay_order(command: PayOrder, uow: UnitOfWork) -> None:
    order = await uow.load(Order, command.order_id)
    if order.status != "placed":
        raise DomainError(f"Order {command.order_id} is {order.status}")
    uow.emit(order, OrderPaid(order_id=command.order_id))


async def confirm_order(command: ConfirmOrder, uow: UnitOfWork) -> None:
    order = await uow.load(Order, command.order_id)
    uow.emit(order, OrderConfirmed(order_id=command.order_id))


async def cancel_order(command: CancelOrder, uow: UnitOfWork) -> None:
    order = await uow.load(Order, command.order_id)
    uow.emit(order, OrderCancelled(order_id=command.order_id, reason=command.reason))


async def restock(command: Restock, uow: UnitOfWork) -> None:
    stock = await uow.load(Stock, command.sku)
    uow.emit(stock, Restocked(sku=command.sku, quantity=command.quantity))


async def reserve_stock(command: ReserveStock, uow: UnitOfWork) -> None:
    stock = await uow.load(Stock, command.sku)
    if command.order_id in stock.reserved:
        return
    if stock.available < command.quantity:  # a refusal the saga must hear of: recorded, not raised
        uow.emit(stock, StockShortage(order_id=command.order_id, sku=command.sku))
    else:
        uow.emit(stock, StockReserved(order_id=command.order_id, sku=command.sku, quantity=command.quantity))


async def release_stock(command: ReleaseStock, uow: UnitOfWork) -> None:
    stock = await uow.load(Stock, command.sku)
    quantity = stock.reserved.get(command.order_id)
    if quantity is not None:
        uow.emit(stock, StockReleased(order_id=command.order_id, sku=command.sku, quantity=quantity))


class Checkout(Saga, name="checkout", key="order_id"):
    stage: Literal["new", "reserving", "awaiting_payment", "confirmed", "rejected", "cancelled"] = "new"
    paid: bool = False

    def react(self, event: OrderPlaced | StockReserved | StockShortage | OrderPaid | Timeout, do: Actions) -> Checkout:
        match event:
            case OrderPlaced(order_id=order_id, sku=sku, quantity=quantity):
                do.send(
                    ReserveStock(order_id=order_id, sku=sku, quantity=quantity),
                    compensate=ReleaseStock(order_id=order_id, sku=sku),
                )
                do.schedule("payment", after=PAYMENT_DEADLINE)
                return self.model_copy(update={"stage": "reserving"})
            case StockShortage():
                do.send(CancelOrder(order_id=self.id, reason="out of stock"))
                do.complete()
                return self.model_copy(update={"stage": "rejected"})
            case StockReserved():
                return self._confirm_if_ready(do, stage="awaiting_payment", reserved=True)
            case OrderPaid():
                return self._confirm_if_ready(do, stage=self.stage, paid=True)
            case Timeout(name="payment"):
                do.compensate()
                do.send(CancelOrder(order_id=self.id, reason="not paid in time"))
                do.complete()
                return self.model_copy(update={"stage": "cancelled"})
        return self

    def _confirm_if_ready(self, do: Actions, *, stage: str, reserved: bool = False, paid: bool = False) -> Checkout:
        state = self.model_copy(update={"stage": stage, "paid": self.paid or paid})
        if state.paid and (reserved or self.stage == "awaiting_payment"):
            do.send(ConfirmOrder(order_id=self.id))
            do.complete()
            return state.model_copy(update={"stage": "confirmed"})
        return state


shop = Service(
    "shop",
    commands={
        PlaceOrder: place_order,
        PayOrder: pay_order,
        ConfirmOrder: confirm_order,
        CancelOrder: cancel_order,
        Restock: restock,
        ReserveStock: reserve_stock,
        ReleaseStock: release_stock,
    },
    sagas=[Checkout],
)


checkout = saga_scenario(Checkout)
PLACED = OrderPlaced(order_id="o-1", sku="A", quantity=2)
RESERVED = StockReserved(order_id="o-1", sku="A", quantity=2)


async def statuses(runtime: Runtime, *order_ids: str) -> list[str]:
    assert runtime.store is not None
    found = []
    for order_id in order_ids:
        events = [e.type async for e in runtime.store.read_stream(f"order-{order_id}")]
        found.append(events[-1] if events else "none")
    return found


async def available(runtime: Runtime, sku: str) -> int:
    assert runtime.store is not None
    total = 0
    async for record in runtime.store.read_stream(f"stock-{sku}"):
        if record.type in ("Restocked", "StockReleased"):
            total += record.data["quantity"]
        elif record.type == "StockReserved":
            total -= record.data["quantity"]
    return total


def runtime_on(open_stores: StoreFactory, service: Service = shop, **kwargs: object) -> Runtime:
    store, read_store = open_stores()
    return Runtime(service, store=store, read_store=read_store, **kwargs)  # type: ignore[arg-type]


async def test_a_paid_order_is_confirmed_and_its_stock_stays_reserved(open_stores: StoreFactory) -> None:
    async with runtime_on(open_stores) as runtime:
        await runtime.execute(Restock(sku="A", quantity=5))
        await runtime.execute(PlaceOrder(order_id="o-1", sku="A", quantity=2))
        await runtime.catch_up()
        await runtime.execute(PayOrder(order_id="o-1"))
        await runtime.catch_up()

        assert await statuses(runtime, "o-1") == ["OrderConfirmed"]
        assert await available(runtime, "A") == 3
        state = await runtime.sagas["checkout"].state("o-1")
        assert state is not None
        assert (state.saga.stage, state.completed, state.deadlines) == ("confirmed", True, {})


def test_payment_before_the_reservation_still_confirms_once() -> None:
    checkout.given(PLACED).when(OrderPaid(order_id="o-1")).then_sends()
    reserved_last = checkout.given(PLACED, OrderPaid(order_id="o-1")).when(RESERVED)

    reserved_last.then_sends(ConfirmOrder(order_id="o-1"))
    reserved_last.then_completes()


async def test_a_shortage_rejects_the_order_and_reserves_nothing(open_stores: StoreFactory) -> None:
    async with runtime_on(open_stores) as runtime:
        await runtime.execute(Restock(sku="A", quantity=1))
        await runtime.execute(PlaceOrder(order_id="o-1", sku="A", quantity=2))
        await runtime.catch_up()
        assert await statuses(runtime, "o-1") == ["OrderCancelled"]
        assert await available(runtime, "A") == 1
        state = await runtime.sagas["checkout"].state("o-1")
        assert state is not None
        assert (state.saga.stage, state.completed) == ("rejected", True)


async def test_an_unpaid_order_is_cancelled_at_its_deadline_and_its_stock_released(open_stores: StoreFactory) -> None:
    async with runtime_on(open_stores) as runtime:
        await runtime.execute(Restock(sku="A", quantity=5))
        placed = await runtime.execute(PlaceOrder(order_id="o-1", sku="A", quantity=2))
        await runtime.catch_up()
        assert await available(runtime, "A") == 3
        runner = runtime.sagas["checkout"]
        placed_at = placed.events[0].recorded_at

        assert await runner.fire_due(placed_at + PAYMENT_DEADLINE - timedelta(seconds=1)) == (
            placed_at + PAYMENT_DEADLINE
        )
        await runtime.catch_up()
        assert await statuses(runtime, "o-1") == ["OrderPlaced"]  # not yet due: nothing fired

        assert await runner.fire_due(placed_at + PAYMENT_DEADLINE) is None
        await runtime.catch_up()
        assert await statuses(runtime, "o-1") == ["OrderCancelled"]
        assert await available(runtime, "A") == 5  # the compensation released the reservation


async def test_a_deadline_survives_a_restart(open_stores: StoreFactory) -> None:
    async with runtime_on(open_stores) as runtime:
        await runtime.execute(Restock(sku="A", quantity=5))
        placed = await runtime.execute(PlaceOrder(order_id="o-1", sku="A", quantity=2))
        await runtime.catch_up()
    due = placed.events[0].recorded_at + PAYMENT_DEADLINE

    async with runtime_on(open_stores) as restarted:
        assert await restarted.sagas["checkout"].fire_due(due + timedelta(seconds=1)) is None
        await restarted.catch_up()
        assert await statuses(restarted, "o-1") == ["OrderCancelled"]
        assert await available(restarted, "A") == 5


async def test_a_deadline_fires_on_its_own_while_the_runtime_runs(open_stores: StoreFactory) -> None:
    later = datetime.now(UTC) + PAYMENT_DEADLINE + timedelta(minutes=1)
    async with runtime_on(open_stores) as runtime:
        await runtime.execute(Restock(sku="A", quantity=5))
        await runtime.execute(PlaceOrder(order_id="o-1", sku="A", quantity=2))
        await runtime.catch_up()
        runtime.sagas["checkout"]._clock = lambda: later  # the wall clock jumps past the deadline
        for _ in range(100):
            if await statuses(runtime, "o-1") == ["OrderCancelled"]:
                break
            await runtime.store.wait_for_events(await runtime.store.head_position(), 0.05)  # type: ignore[union-attr]
        assert await statuses(runtime, "o-1") == ["OrderCancelled"]


def test_paying_in_time_drops_the_deadline() -> None:
    checkout.given(PLACED, RESERVED, OrderPaid(order_id="o-1")).after(timedelta(days=1)).then_sends()


async def test_reacting_again_after_a_crash_has_no_second_effect(open_stores: StoreFactory) -> None:
    async with runtime_on(open_stores) as runtime:
        await runtime.execute(Restock(sku="A", quantity=5))
        for n in range(3):
            await runtime.execute(PlaceOrder(order_id=f"o-{n}", sku="A", quantity=1))
        await runtime.catch_up()
        assert runtime.store is not None
        head = await runtime.store.head_position()

        # As if the runner had crashed after reacting but before its checkpoint committed.
        runner = runtime.sagas["checkout"]
        await runner.stop()
        await runtime.read_store.transact(runner.name, lambda db: None, position=0)  # type: ignore[union-attr]
        runner.position = 0
        await runner.catch_up()

        assert await runtime.store.head_position() == head
        assert await available(runtime, "A") == 2


async def test_reactions_carry_the_correlation_of_the_command_that_started_them(open_stores: StoreFactory) -> None:
    async with runtime_on(open_stores) as runtime:
        await runtime.execute(Restock(sku="A", quantity=5))
        placed = await runtime.execute(PlaceOrder(order_id="o-1", sku="A", quantity=2), correlation_id="req-42")
        await runtime.catch_up()
        assert runtime.store is not None
        reserved = [e async for e in runtime.store.read_stream("stock-A")][-1]
        reactions = [e async for e in runtime.store.read_stream("saga.checkout-o-1")]
        reaction = reactions[0]
        assert reserved.type == "StockReserved"
        assert reserved.metadata["correlation_id"] == "req-42"
        assert reaction.metadata["causation_id"] == placed.events[0].event_id
        assert reserved.metadata["command_id"] == reaction.data["sends"][0]["command_id"]


async def test_the_instances_are_listed_with_their_state_in_the_read_store(open_stores: StoreFactory) -> None:
    async with runtime_on(open_stores) as runtime:
        await runtime.execute(Restock(sku="A", quantity=1))
        await runtime.execute(PlaceOrder(order_id="o-1", sku="A", quantity=1))
        await runtime.execute(PlaceOrder(order_id="o-2", sku="A", quantity=5))  # more than there is, ever
        await runtime.catch_up()
        assert runtime.read_store is not None
        rows = await runtime.read_store.read(
            lambda db: db.fetch_all("SELECT instance, status, state FROM twofold_sagas ORDER BY instance")
        )
        assert [(r["instance"], r["status"]) for r in rows] == [("o-1", "active"), ("o-2", "completed")]
        assert '"stage": "awaiting_payment"' in rows[0]["state"]


class Receipt(Command, name="mail.SendReceipt"):
    order_id: str


class ReceiptSent(Event, name="mail.ReceiptSent"):
    order_id: str


class Mailbox(Aggregate, category="mailbox"):
    def evolve(self, event: ReceiptSent) -> Mailbox:
        return self


async def send_receipt(command: Receipt, uow: UnitOfWork) -> None:
    box = await uow.load(Mailbox, command.order_id)
    uow.emit(box, ReceiptSent(order_id=command.order_id))


class Receipts(Saga, name="receipts", key="order_id"):
    def react(self, event: OrderConfirmed, do: Actions) -> Receipts:
        do.send(Receipt(order_id=event.order_id), to="mail")
        do.complete()
        return self


async def test_a_saga_sends_to_another_service_over_the_in_process_bus(open_stores: StoreFactory) -> None:
    bus = InProcessBus()
    with_receipts = Service("shop", commands=shop.commands, sagas=[Checkout, Receipts])
    mail = Service("mail", commands={Receipt: send_receipt})
    async with (
        runtime_on(open_stores, with_receipts, bus=bus) as runtime,
        Runtime(mail, store=MemoryEventStore()) as mailer,
    ):
        bus.register(runtime)
        bus.register(mailer)
        await runtime.execute(Restock(sku="A", quantity=1))
        # One request's work: whichever of the two lets the saga confirm, the receipt carries its id.
        await runtime.execute(PlaceOrder(order_id="o-1", sku="A", quantity=1), correlation_id="req-7")
        await runtime.execute(PayOrder(order_id="o-1"), correlation_id="req-7")
        await runtime.catch_up()
        assert mailer.store is not None
        sent = [e async for e in mailer.store.read_stream("mailbox-o-1")]
        assert [e.type for e in sent] == ["mail.ReceiptSent"]
        assert sent[0].metadata["correlation_id"] == "req-7"


async def test_a_send_to_an_unknown_service_keeps_the_saga_retrying_and_says_why(open_stores: StoreFactory) -> None:
    with_receipts = Service("shop", commands=shop.commands, sagas=[Checkout, Receipts])
    async with runtime_on(open_stores, with_receipts) as runtime:
        await runtime.execute(Restock(sku="A", quantity=1))
        await runtime.execute(PlaceOrder(order_id="o-1", sku="A", quantity=1))
        await runtime.execute(PayOrder(order_id="o-1"))
        receipts = runtime.sagas["receipts"]
        for _ in range(500):
            if receipts.failures >= 2:
                break
            await asyncio.sleep(0.01)
        assert receipts.last_error is not None
        assert "no bus" in receipts.last_error
        assert (await receipts.progress()).lag > 0  # the event it cannot act on is still waiting
