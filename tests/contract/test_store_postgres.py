from collections.abc import AsyncIterator

import pytest

from twofold.store.postgres import PostgresEventStore
from twofold.testing.contracts import EventStoreContract


class TestPostgresEventStore(EventStoreContract):
    @pytest.fixture
    async def store(self, postgres_url: str) -> AsyncIterator[PostgresEventStore]:
        store = PostgresEventStore(postgres_url)
        yield store
        await store.close()
