"""Servers shared by the whole run (tests/ and examples/): one PostgreSQL, a fresh database per test that asks."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from twofold.testing.servers import PostgresServer

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
