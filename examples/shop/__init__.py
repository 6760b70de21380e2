"""The shop: four services that integrate only through events and commands, and a checkout saga.

    catalog    products, prices, search; prices orders
    inventory  stock per sku; reserves every line of an order or none, never oversells
    payments   authorizes payments through a simulated card gateway
    orders     orders, the checkout saga, each customer's order history

twofold serve examples.shop:shop       # embedded: every service in one process (make run)
twofold cluster examples.shop:shop     # a process per part, on PostgreSQL and NATS (make run-cluster)
"""

from examples.shop.catalog import catalog
from examples.shop.inventory import inventory
from examples.shop.orders import orders
from examples.shop.payments import payments
from twofold import System

shop = System(
    "shop",
    [catalog, inventory, orders, payments],
    description="A shop in four services: a catalog, an inventory that never oversells, payments, and orders"
    " that a checkout saga sees through to confirmed, rejected or cancelled.",
)

__all__ = ["catalog", "inventory", "orders", "payments", "shop"]
