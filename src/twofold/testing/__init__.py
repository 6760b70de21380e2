"""Tools for testing twofold services and backends (docs/testing.md).

    from twofold.testing import projection_scenario, saga_scenario, scenario

    scenario(shop).given("product-A-1", ProductAdded(...)).when(PlaceOrder(...)).then(OrderPlaced(...))
    projection_scenario(levels).given(StockReceived(sku="A-1", quantity=5)).then_query(StockLevel(sku="A-1"), ...)
    saga_scenario(Checkout).given(OrderPlaced(...)).after(timedelta(minutes=2)).then_sends(CancelOrder(...))

    await assert_consistent(runtime)   # read models equal a rebuild from their events

``twofold.testing.contracts`` (the store contract suite) and ``twofold.testing.pytest_plugin``
(the ``twofold_postgres`` and ``twofold_nats`` fixtures) need pytest, and are imported on their own.
"""

from twofold.testing._checks import SCENARIO_START
from twofold.testing.consistency import assert_consistent
from twofold.testing.projections import ProjectionScenario, projection_scenario
from twofold.testing.sagas import SagaScenario, Sent, saga_scenario
from twofold.testing.scenario import Scenario, scenario

__all__ = [
    "SCENARIO_START",
    "ProjectionScenario",
    "SagaScenario",
    "Scenario",
    "Sent",
    "assert_consistent",
    "projection_scenario",
    "saga_scenario",
    "scenario",
]
