"""Command handlers: load what a command touches, let the aggregates decide, emit the result.

Everything a handler emits is appended in one transaction, so an order and the stock it reserves
are recorded together or not at all, and a concurrent order for the same stock is retried on
fresh state: the shop never oversells.
"""

from __future__ import annotations

from tests.monolith.domain import Order, Product
from tests.monolith.messages import AddProduct, CancelOrder, PlaceOrder, PricedLine, ReceiveStock
from twofold import UnitOfWork


async def add_product(command: AddProduct, uow: UnitOfWork) -> None:
    product = await uow.load(Product, command.sku)
    uow.emit(product, product.add(command.name, command.price))


async def receive_stock(command: ReceiveStock, uow: UnitOfWork) -> None:
    product = await uow.load(Product, command.sku)
    uow.emit(product, product.receive(command.quantity))


async def place_order(command: PlaceOrder, uow: UnitOfWork) -> None:
    order = await uow.load(Order, command.order_id)
    products = [await uow.load(Product, line.sku) for line in command.lines]
    priced = [
        PricedLine(sku=p.id, quantity=line.quantity, price=p.price)
        for p, line in zip(products, command.lines, strict=True)
    ]
    uow.emit(order, order.place(command.customer_id, priced))
    for product, line in zip(products, command.lines, strict=True):
        uow.emit(product, product.reserve(command.order_id, line.quantity))


async def cancel_order(command: CancelOrder, uow: UnitOfWork) -> None:
    order = await uow.load(Order, command.order_id)
    cancelled = order.cancel()
    uow.emit(order, cancelled)
    for line in cancelled.lines:
        product = await uow.load(Product, line.sku)
        uow.emit(product, product.release(command.order_id, line.quantity))
