"""Hypothesis strategies for the shop: commands over a few skus and order ids, so they collide often.

Few skus and order ids make the interesting cases common: orders for stock that ran short, skus
never added, order ids placed twice, orders cancelled twice or never placed.
"""

from __future__ import annotations

from decimal import Decimal

from hypothesis import strategies as st

from tests.monolith.messages import AddProduct, CancelOrder, OrderLine, PlaceOrder, ReceiveStock
from twofold import Command

SKUS = ("A-1", "B-2", "C-3", "D-4")
ORDER_IDS = tuple(f"o-{number}" for number in range(6))
CUSTOMERS = ("c-1", "c-2", "c-3")
NAMES = ("Blue mug", "Green tea", "Mug rack", 'Tea "special" (NEAR-mint)', "Café crème")

skus = st.sampled_from(SKUS)
order_ids = st.sampled_from(ORDER_IDS)
prices = st.decimals(min_value=Decimal(0), max_value=Decimal(1000), places=2, allow_nan=False, allow_infinity=False)

names = st.sampled_from(NAMES)
quantities = st.integers(min_value=1, max_value=8)

add_product = st.builds(AddProduct, sku=skus, name=names, price=prices)
receive_stock = st.builds(ReceiveStock, sku=skus, quantity=quantities)
order_lines = st.lists(
    st.builds(OrderLine, sku=skus, quantity=st.integers(min_value=1, max_value=4)),
    min_size=1,
    max_size=2,
    unique_by=lambda line: line.sku,
)
place_order = st.builds(PlaceOrder, order_id=order_ids, customer_id=st.sampled_from(CUSTOMERS), lines=order_lines)
cancel_order = st.builds(CancelOrder, order_id=order_ids)


@st.composite
def shop_commands(draw: st.DrawFn, max_size: int = 40) -> list[Command]:
    """An opening that adds and stocks some products, then any commands at all, in any order."""
    opened = draw(st.lists(skus, min_size=1, max_size=len(SKUS) - 1, unique=True))
    opening: list[Command] = [draw(st.builds(AddProduct, sku=st.just(sku), name=names, price=prices)) for sku in opened]
    opening += [draw(st.builds(ReceiveStock, sku=st.just(sku), quantity=quantities)) for sku in opened]
    command = st.one_of(place_order, receive_stock, cancel_order, place_order, add_product)
    return opening + draw(st.lists(command, min_size=min(10, max_size), max_size=max_size))
