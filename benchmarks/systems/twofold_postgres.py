"""twofold on PostgresEventStore (asyncpg): appends commit, then a sequencing step numbers them gap-free."""

from __future__ import annotations

from benchmarks.systems.twofold import Twofold
from twofold.store.postgres import PostgresEventStore

POOL_SIZE = 10  # the store's default, and more than the 8 writers need


class TwofoldPostgres(Twofold):
    def __init__(self) -> None:
        super().__init__(
            lambda url: PostgresEventStore(url, pool_size=POOL_SIZE),
            {"store": "PostgresEventStore", "pool_size": POOL_SIZE},
        )
