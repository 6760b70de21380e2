"""The social network embedded, on SQLite files and on PostgreSQL, driven over HTTP through the gateway."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from examples.social import social as system
from examples.social.tests.client import Social
from twofold.embedded import embedded_runtimes
from twofold.http.gateway import gateway_in_process
from twofold.testing.servers import PostgresServer

_databases = itertools.count(1)


@pytest.fixture(params=["sqlite", "postgresql"])
def environ(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)  # SQLite: data/<service>.db under the working directory
    if request.param == "sqlite":
        return {}
    server: PostgresServer = request.getfixturevalue("postgres_server")
    run = next(_databases)
    return server.databases_for(system.names, prefix=f"social_{run}_")


@pytest.fixture
async def social(environ: dict[str, str]) -> AsyncIterator[Social]:
    runtimes = embedded_runtimes(system, environ=environ)
    app = gateway_in_process(system, runtimes)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://social") as c:
        yield Social(c, runtimes["network"])
