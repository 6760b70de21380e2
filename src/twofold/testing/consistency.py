"""``assert_consistent``: a test fails with a readable report when a read model differs from its events.

async def test_checkout_keeps_the_read_models_right(runtime):
    ...drive the service...
    await assert_consistent(runtime)
"""

from __future__ import annotations

from collections.abc import Collection

from twofold.checking import ConsistencyReport, check_consistency
from twofold.errors import ConfigurationError
from twofold.runtime import Runtime

__all__ = ["assert_consistent"]


async def assert_consistent(runtime: Runtime, *, projections: Collection[str] | None = None) -> ConsistencyReport:
    """Check ``runtime``'s read models against a rebuild from its events; raise ``AssertionError`` if any differs.

    Every tenant's copy is checked too. Returns the report, for a test that wants the figures.
    """
    if runtime.store is None or runtime.read_store is None:
        raise ConfigurationError("assert_consistent needs a runtime with both an event store and a read store")
    report = await check_consistency(
        runtime.service, runtime.store, runtime.read_store, projections=projections, targets=runtime.targets
    )
    if not report.consistent:
        raise AssertionError(
            f"The read models of {runtime.service.name} differ from a rebuild from their events:\n{report.render()}"
        )
    return report
