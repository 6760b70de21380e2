"""Tools for testing twofold services and backends.

    from twofold.testing import scenario

    scenario(shop).given("product-A-1", ProductAdded(...)).when(PlaceOrder(...)).then(OrderPlaced(...))

``twofold.testing.contracts`` (the store contract suite, which needs pytest) is imported on its own.
"""

from twofold.testing.scenario import Scenario, scenario

__all__ = ["Scenario", "scenario"]
