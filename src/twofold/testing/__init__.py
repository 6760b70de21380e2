"""Tools for testing twofold services and backends (docs/testing.md).

    from twofold.testing import projection_scenario, scenario

    scenario(shop).given("product-A-1", ProductAdded(...)).when(PlaceOrder(...)).then(OrderPlaced(...))
    projection_scenario(levels).given(StockReceived(sku="A-1", quantity=5)).then_query(StockLevel(sku="A-1"), ...)

``twofold.testing.contracts`` (the store contract suite) (the store contract suite, which needs pytest) is imported on its own.
"""

from twofold.testing._checks import SCENARIO_START
from twofold.testing.projections import ProjectionScenario, projection_scenario
from twofold.testing.scenario import Scenario, scenario

__all__ = [
    "SCENARIO_START",
    "ProjectionScenario",
    "Scenario",
    "projection_scenario",
    "scenario",
]
