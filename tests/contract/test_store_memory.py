"""The event store contract, bound to the in-memory store."""

from collections.abc import AsyncIterator

import pytest

from twofold.store.memory import MemoryEventStore
from twofold.testing.contracts import EventStoreContract


class TestMemoryEventStore(EventStoreContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[MemoryEventStore]:
        store = MemoryEventStore()
        yield store
        await store.close()
