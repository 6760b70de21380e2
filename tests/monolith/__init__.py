"""A shop in one service: the domain the framework's own tests and benchmarks put under load.

Products with their stock and orders that reserve it, all in one event store, so that a single
command appends to several streams at once. The reference shop, four services and a checkout
saga, is ``examples/shop``.

twofold serve tests.monolith:shop
"""

from tests.monolith.service import shop

__all__ = ["shop"]
