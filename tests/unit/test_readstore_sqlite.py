"""The read-store contract, bound to SQLite: two store objects on one file stand in for two processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.readstore_contract import OpenStore, ReadStoreContract
from twofold.readmodels.sqlite import SQLiteReadStore


class TestSQLiteReadStore(ReadStoreContract):
    @pytest.fixture
    def open_store(self, tmp_path: Path) -> OpenStore:
        return lambda: SQLiteReadStore(tmp_path / "read.db")
