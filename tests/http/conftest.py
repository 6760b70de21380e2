"""Fixtures for the HTTP tests: the shop served in-process, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.http import Api, serve
from tests.monolith import shop

if TYPE_CHECKING:
    from conftest import StoreFactory


@pytest.fixture
async def api(tmp_path: Path, open_stores: StoreFactory) -> AsyncIterator[Api]:
    """The shop, empty, on each backend in turn."""
    async with serve(shop, tmp_path, stores=open_stores) as running:
        yield running


@pytest.fixture
async def stocked(api: Api) -> Api:
    """The shop with A-1 (3 in stock, 1.50) and B-2 (10 in stock, 2.25)."""
    await api.add_product("A-1", "Apple", "1.50", stock=3)
    await api.add_product("B-2", "Banana", "2.25", stock=10)
    return api
