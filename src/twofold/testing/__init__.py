"""Tools for testing twofold services and backends.

    from twofold.testing import scenario

    scenario(shop).given("product-A-1", ProductAdded(...)).when(PlaceOrder(...)).then(OrderPlaced(...))

    await assert_consistent(runtime)   # read models equal a rebuild from their events

``twofold.testing.contracts`` (the store contract suite, which needs pytest) is imported on its own.
"""

from twofold.testing.consistency import assert_consistent
from twofold.testing.scenario import Scenario, scenario

__all__ = ["Scenario", "assert_consistent", "scenario"]
