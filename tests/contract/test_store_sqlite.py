"""The event store contract, bound to the SQLite store."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from twofold.store.sqlite import SQLiteEventStore
from twofold.testing.contracts import EventStoreContract


class TestSQLiteEventStore(EventStoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[SQLiteEventStore]:
        store = SQLiteEventStore(tmp_path / "events.db")
        yield store
        await store.close()
