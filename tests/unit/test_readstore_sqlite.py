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


async def test_a_scratch_store_is_a_file_beside_the_stores_and_discarding_it_leaves_none(tmp_path: Path) -> None:
    store = SQLiteReadStore(tmp_path / "read.db")
    shadow = store.scratch("check_1")
    await shadow.transact("test.items", lambda db: db.execute("CREATE TABLE items (sku TEXT)"), position=1)
    assert (tmp_path / "read.scratch-check_1.db").exists()

    await shadow.discard()
    await store.close()

    assert scratch_files(tmp_path) == []


def scratch_files(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if "scratch" in p.name]
