"""A whole system in one process: the embedded mode of ``make run``.

    runtimes = embedded_runtimes(shop)          # catalog, inventory, orders, payments
    app = gateway_in_process(shop, runtimes)    # one API in front of them all

Every service keeps its own stores, exactly as it would in cluster mode — by default SQLite
files ``data/<service>.db`` and ``data/<service>-read.db`` — so that nothing couples services but
messages. Commands a saga sends to another service travel on an :class:`~twofold.bus.InProcessBus`;
the events a service subscribes to are imported by an
:class:`~twofold.broker.inprocess.InProcessFeed` straight from the source service's store.

Each service's stores may be set apart with ``TWOFOLD_<SERVICE>_DATABASE_URL`` and
``TWOFOLD_<SERVICE>_READ_DATABASE_URL`` (``TWOFOLD_ORDERS_DATABASE_URL=postgresql://…/orders``),
and its warehouse and search stores, when its projections name them, with
``TWOFOLD_<SERVICE>_WAREHOUSE_URL`` and ``TWOFOLD_<SERVICE>_SEARCH_URL``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

from twofold.broker.inprocess import InProcessFeed
from twofold.bus import InProcessBus
from twofold.config import Settings, open_event_store, open_read_store, open_targets
from twofold.readmodels import Database, ReadStore
from twofold.runtime import Runtime, Worker
from twofold.service import Service
from twofold.store import EventStore
from twofold.system import System

__all__ = ["database_url_variable", "embedded_runtimes", "service_environ", "settle", "target_url_variable"]

SERVICE_URLS = ("DATABASE_URL", "READ_DATABASE_URL", "WAREHOUSE_URL", "SEARCH_URL")  # each service's own
SETTLE_PAUSE = 0.02  # seconds between rounds: long enough for a feed to look at another service's appends


def database_url_variable(service: str, *, read: bool = False) -> str:
    """``orders`` → ``TWOFOLD_ORDERS_DATABASE_URL`` (``…_READ_DATABASE_URL`` with ``read``): where one
    service of a system finds its own store."""
    return f"{_prefix(service)}{'READ_' if read else ''}DATABASE_URL"


def target_url_variable(service: str, target: str) -> str:
    """``orders``, ``warehouse`` → ``TWOFOLD_ORDERS_WAREHOUSE_URL``: where one service finds a target store."""
    return f"{_prefix(service)}{target.upper()}_URL"


def _prefix(service: str) -> str:
    return f"TWOFOLD_{service.upper().replace('-', '_')}_"


def service_environ(environ: Mapping[str, str], service: str) -> dict[str, str]:
    """The environment one service of a system sees: its own ``TWOFOLD_<SERVICE>_…`` URLs, or its defaults.

    The system-wide ``TWOFOLD_DATABASE_URL`` is not used: services of one system never share a database.
    """
    prefix = _prefix(service)
    own = dict(environ)
    for name in SERVICE_URLS:
        own.pop("TWOFOLD_" + name, None)
    for name in SERVICE_URLS:
        if environ.get(prefix + name):
            own["TWOFOLD_" + name] = environ[prefix + name]
    return own


def embedded_runtimes(system: System, environ: Mapping[str, str] = os.environ) -> dict[str, Runtime]:
    """A runtime per service, wired together in this process, not yet started.

    The runtimes come in dependency order: a service after those it imports from. Start them in
    this order and stop them in the reverse one, so that no feed reads a store already closed.
    """
    stores: dict[str, tuple[EventStore, ReadStore[Database]]] = {}
    targets: dict[str, dict[str, ReadStore[Any]]] = {}
    for service in system.services:
        settings = Settings.from_env(service, service_environ(environ, service.name))
        stores[service.name] = (open_event_store(settings.database_url), open_read_store(settings.read_database_url))
        targets[service.name] = open_targets(service, settings)
    bus = InProcessBus()
    runtimes: dict[str, Runtime] = {}
    for service in _sources_first(system):
        store, read_store = stores[service.name]
        feeds: list[Worker] = [
            InProcessFeed(stores[s.source][0], s.source, service, store, read_store, s) for s in service.subscriptions
        ]
        runtimes[service.name] = Runtime(
            service, store=store, read_store=read_store, targets=targets[service.name], workers=feeds, bus=bus
        )
        bus.register(runtimes[service.name])
    return runtimes


def _sources_first(system: System) -> list[Service]:
    """The services, each after the ones it subscribes to (cycles keep their declared order)."""
    placed: list[Service] = []
    waiting = list(system.services)
    while waiting:
        ready = [s for s in waiting if all(sub.source in {p.name for p in placed} for sub in s.subscriptions)]
        chosen = ready[0] if ready else waiting[0]
        placed.append(chosen)
        waiting.remove(chosen)
    return placed


async def settle(runtimes: Mapping[str, Runtime], *, within: float = 30.0) -> None:
    """Return once no service of an embedded system has anything left to do.

    That is: every import feed has taken all its source holds, every projection and saga has
    caught up, and a round of that moved no store on (a saga's reaction may send commands whose
    events start another round). For tests and tools; a live system is never settled for long.
    Raises ``TimeoutError`` when ``within`` seconds pass first.
    """

    async def heads() -> list[int]:
        return [await r.store.head_position() for r in runtimes.values() if r.store is not None]

    async with asyncio.timeout(within):
        while True:
            before = await heads()
            for runtime in runtimes.values():
                await runtime.catch_up()
            feeds = [await worker.progress() for runtime in runtimes.values() for worker in runtime.workers]
            if before == await heads() and all(feed.lag == 0 for feed in feeds):
                return
            await asyncio.sleep(SETTLE_PAUSE)
