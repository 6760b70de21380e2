"""Servers shared by the whole run (tests/ and examples/): one PostgreSQL, a fresh database per test that asks,
and one NATS with JetStream. They are the test kit's own fixtures (``twofold.testing.pytest_plugin``),
under the names this repository's tests have always used."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from twofold.readmodels import ReadStore
from twofold.readmodels.postgres import PostgresReadStore
from twofold.readmodels.sqlite import SQLiteReadStore
from twofold.store import EventStore
from twofold.store.postgres import PostgresEventStore
from twofold.store.sqlite import SQLiteEventStore
from twofold.testing.servers import NatsServer, PostgresServer

# Registered once, whether or not the installed package's pytest11 entry point has loaded it
# already: the entry point carries the module's name, which pytest checks before registering.
pytest_plugins = ["twofold.testing.pytest_plugin"]


@pytest.fixture(scope="session")
def postgres_server(twofold_postgres_server: PostgresServer) -> PostgresServer:
    return twofold_postgres_server


@pytest.fixture
def postgres_url(twofold_postgres: str) -> str:
    return twofold_postgres


@pytest.fixture(scope="session")
def nats_server(twofold_nats_server: NatsServer) -> NatsServer:
    return twofold_nats_server


@pytest.fixture
def nats_url(twofold_nats: str) -> str:
    return twofold_nats


StoreFactory = Callable[[], tuple[EventStore, ReadStore]]


@pytest.fixture(params=["sqlite", "postgresql"])
def open_stores(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Opens an event store and a read store on one fresh place, on each backend in turn.

    Called twice, it opens two sets on the same place, as two processes would.
    """
    if request.param == "sqlite":
        return lambda: (
            SQLiteEventStore(tmp_path / "events.db", durability="normal"),
            SQLiteReadStore(tmp_path / "read.db"),
        )
    url: str = request.getfixturevalue("postgres_url")
    return lambda: (PostgresEventStore(url), PostgresReadStore(url))
