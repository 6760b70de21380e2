"""The one event store contract suite: every backend binds it and passes it.

    from twofold.testing.contracts import EventStoreContract

    class TestSQLiteEventStore(EventStoreContract):
        @pytest.fixture
        async def store(self, tmp_path):
            store = SQLiteEventStore(tmp_path / "events.db")
            yield store
            await store.close()

The ``store`` fixture yields a fresh, empty store and closes it afterwards. The suite needs pytest
and pytest-asyncio (``asyncio_mode = "auto"``), which is why ``twofold.testing`` does not import it.
Every wait is bounded, so a store that loses an event fails the test instead of hanging it.
"""

from __future__ import annotations

import pytest

from twofold.store import EventStore
from twofold.testing.contracts._following import FollowingContract
from twofold.testing.contracts._inspecting import InspectingContract
from twofold.testing.contracts._reading import ReadingContract
from twofold.testing.contracts._writing import WritingContract

__all__ = ["EventStoreContract"]


class EventStoreContract(WritingContract, ReadingContract, FollowingContract, InspectingContract):
    """Tests every :class:`~twofold.store.EventStore` must pass. Subclass it and override ``store``."""

    @pytest.fixture
    async def store(self) -> EventStore:
        pytest.fail(
            "Bind the contract: override the `store` fixture to yield a fresh, empty store and close it afterwards"
        )
