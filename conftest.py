"""Servers shared by the whole run (tests/ and examples/): one PostgreSQL, a fresh database per test that asks,
and one NATS with JetStream."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from twofold.readmodels import ReadStore
from twofold.readmodels.postgres import PostgresReadStore
from twofold.readmodels.sqlite import SQLiteReadStore
from twofold.store import EventStore
from twofold.store.postgres import PostgresEventStore
from twofold.store.sqlite import SQLiteEventStore
from twofold.testing.servers import NatsServer, PostgresServer

_databases = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL on 127.0.0.1; a failure to start fails the run, it never skips."""
    # fsync off: a test's data need only survive the server process, never the machine; the page
    # cache does that, and createdb and commits get several times faster.
    with PostgresServer(settings={"fsync": "off"}) as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a new, empty database on the session's server."""
    return postgres_server.create_database(f"test_{next(_databases)}")


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """A real nats-server with JetStream (fsync on every message) on 127.0.0.1; it fails the run if it cannot start."""
    with NatsServer() as server:
        yield server


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    """The session's NATS URL, started again if an earlier test left it stopped.

    Tests share the server: each names its own service, hence its own JetStream stream.
    """
    nats_server.start()
    return nats_server.url


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
