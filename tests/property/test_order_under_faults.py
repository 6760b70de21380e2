"""A state machine that interleaves commits, rollbacks, delayed commits, idle transactions and restarts.

Invariants, checked after every step:
- a subscriber's checkpoint never passes an event that commits later: what it has read is always
  a prefix of ``read_all``, whatever committed since;
- a projection fed by that subscriber equals an independent fold of the same prefix of ``read_all``.

On PostgreSQL, appends can be held open (their transaction stays uncommitted) while others commit,
then committed or rolled back; a separate session can sit idle in a writing transaction; and the
server can be restarted under it all. SQLite allows one writer at a time, so there the machine
interleaves commits, rollbacks and store restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from twofold.errors import ConcurrencyError, StoreError
from twofold.store import ANY, EventStore, NewEvent, StoredEvent, StreamWrite
from twofold.store.postgres import PostgresEventStore
from twofold.store.sqlite import SQLiteEventStore
from twofold.testing.servers import PostgresServer

if TYPE_CHECKING:
    from twofold.store.postgres import Connection

STREAMS = st.sampled_from(["a-1", "a-2", "b-1"])
MACHINE_SETTINGS = settings(
    max_examples=12, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


class Rollback(Exception):
    """Raised inside a held append's transaction to roll it back."""


class GatedStore(PostgresEventStore):
    """The real store; each append waits inside its open transaction until the test lets it go."""

    gates: dict[str, asyncio.Future[bool]]

    async def _write(
        self, conn: Connection, writes: Sequence[StreamWrite], command_id: str | None
    ) -> tuple[dict[str, int] | None, list[StoredEvent]]:
        written = await super()._write(conn, writes, command_id)
        gate = self.gates.get(command_id or "")
        if gate is not None and not await gate:
            raise Rollback(command_id)
        return written


def fold(events: Sequence[StoredEvent]) -> Counter[str]:
    """The projection under test, computed independently: the sum of each stream's values."""
    totals: Counter[str] = Counter()
    for event in events:
        totals[event.stream_id] += int(event.data["value"])
    return totals


class OrderMachine(RuleBasedStateMachine):
    """Drives one store from one event loop; rules run the loop just long enough for their step."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.store: EventStore = self.open_store()
        self.seen: list[StoredEvent] = []
        self.projection: Counter[str] = Counter()
        self.counter = 0

    def open_store(self) -> EventStore:
        raise TypeError("a machine for one backend says how to open its store")

    def run(self, work: object) -> object:
        return self.loop.run_until_complete(work)  # type: ignore[arg-type]

    def busy(self, stream: str) -> bool:
        """A stream with a held append: another append to it would wait on the held one's lock."""
        return False

    @rule(stream=STREAMS, value=st.integers(1, 9))
    def commit(self, stream: str, value: int) -> None:
        if self.busy(stream):
            return
        self.counter += 1
        self.run(self.store.append(stream, [NewEvent("test.Added", {"value": value})], ANY, f"c{self.counter}"))

    @rule(stream=STREAMS)
    def refused(self, stream: str) -> None:
        """An append with an impossible expected version rolls back and leaves nothing."""
        if self.busy(stream):
            return
        with pytest.raises(ConcurrencyError):
            self.run(self.store.append(stream, [NewEvent("test.Added", {"value": 1000})], 10_000))

    @rule()
    def subscriber_reads(self) -> None:
        """The subscriber reads what it can, from its checkpoint on, and projects it."""

        async def read() -> list[StoredEvent]:
            start = self.seen[-1].position + 1 if self.seen else 1
            return [e async for e in self.store.read_all(start)]

        fresh = self.run(read())
        assert isinstance(fresh, list)
        self.seen.extend(fresh)
        self.projection.update(fold(fresh))

    @invariant()
    def the_subscriber_has_read_a_prefix_of_the_log_and_projected_it_exactly(self) -> None:
        async def everything() -> list[StoredEvent]:
            return [e async for e in self.store.read_all()]

        log = self.run(everything())
        assert isinstance(log, list)
        assert [e.event_id for e in self.seen] == [e.event_id for e in log[: len(self.seen)]]
        assert [e.position for e in log] == list(range(1, len(log) + 1))
        assert self.projection == fold(log[: len(self.seen)])
        for stream in {e.stream_id for e in log}:
            assert [e.version for e in log if e.stream_id == stream] == list(
                range(1, sum(e.stream_id == stream for e in log) + 1)
            )

    def teardown(self) -> None:
        self.run(self.store.close())
        self.loop.close()


class SQLiteOrderMachine(OrderMachine):
    folder: Path

    def open_store(self) -> EventStore:
        return SQLiteEventStore(self.folder / "events.db")

    @rule()
    def restart(self) -> None:
        self.run(self.store.close())
        self.store = self.open_store()


class PostgresOrderMachine(OrderMachine):
    server: PostgresServer
    url: str

    def __init__(self) -> None:
        self.held: dict[str, asyncio.Task[object]] = {}
        self.held_streams: dict[str, str] = {}
        self.idle: asyncpg.Connection[asyncpg.Record] | None = None
        super().__init__()

    def open_store(self) -> EventStore:
        store = GatedStore(self.url, pool_size=8)
        store.gates = {}
        return store

    @property
    def gated(self) -> GatedStore:
        assert isinstance(self.store, GatedStore)
        return self.store

    @initialize()
    def empty(self) -> None:
        """Every example starts from an empty log."""

        async def wipe() -> None:
            conn = await asyncpg.connect(self.url)
            try:
                # The whole schema, so that every table and function the store made goes with it.
                await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
            finally:
                await conn.close()

        self.run(wipe())

    def busy(self, stream: str) -> bool:
        return stream in self.held_streams.values()

    @rule(stream=STREAMS, value=st.integers(1, 9))
    def hold(self, stream: str, value: int) -> None:
        """Start an append and keep its transaction open (a delayed commit)."""
        if self.busy(stream):
            return
        self.counter += 1
        command_id = f"h{self.counter}"
        self.held_streams[command_id] = stream
        self.gated.gates[command_id] = self.loop.create_future()
        append = self.store.append(stream, [NewEvent("test.Added", {"value": value})], ANY, command_id)
        self.held[command_id] = self.loop.create_task(append)
        self.run(asyncio.sleep(0.02))  # let it reach its open transaction

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data(), commit=st.booleans())
    def finish_held(self, data: st.DataObject, commit: bool) -> None:
        """Commit or roll back one held append; rolled back, none of its events may ever appear."""
        command_id = data.draw(st.sampled_from(sorted(self.held)))
        task = self.held.pop(command_id)
        self.held_streams.pop(command_id)
        gate = self.gated.gates.pop(command_id)
        if not gate.done():
            gate.set_result(commit)

        async def settle() -> BaseException | None:
            try:
                await task
            except (Rollback, StoreError) as exc:
                return exc
            return None

        self.run(settle())

    @precondition(lambda self: self.idle is None)
    @rule()
    def leave_a_transaction_idle(self) -> None:
        """Another session writes in a transaction and then sits idle: no reader may wait on it."""

        async def idle() -> asyncpg.Connection[asyncpg.Record]:
            conn = await asyncpg.connect(self.url)
            await conn.execute(
                "BEGIN; CREATE TEMP TABLE IF NOT EXISTS idle_marker (n int); INSERT INTO idle_marker VALUES (1)"
            )
            return conn

        self.idle = self.run(idle())  # type: ignore[assignment]

    @rule()
    def restart_the_server(self) -> None:
        """Restart PostgreSQL: held appends die with their connections and write nothing."""
        self.server.restart(fast=False)
        if self.idle is not None:
            self.idle.terminate()  # its server process is gone; just drop the socket
            self.idle = None
        for command_id, task in list(self.held.items()):
            self.gated.gates.pop(command_id).cancel()

            async def settle(task: asyncio.Task[object] = task) -> None:
                with contextlib.suppress(Rollback, StoreError, asyncio.CancelledError):
                    await task

            self.run(settle())
        self.held.clear()
        self.held_streams.clear()
        self.run(self.store.close())
        self.store = self.open_store()

    def teardown(self) -> None:
        for command_id, task in self.held.items():
            gate = self.gated.gates.get(command_id)
            if gate is not None and not gate.done():
                gate.set_result(False)

            async def settle(task: asyncio.Task[object] = task) -> None:
                with contextlib.suppress(Rollback, StoreError):
                    await task

            self.run(settle())
        if self.idle is not None:
            self.run(self.idle.close())
        super().teardown()


@pytest.fixture(scope="module")
def own_server() -> Iterator[PostgresServer]:
    """A server of this module's own, since the machine restarts it."""
    with PostgresServer(settings={"fsync": "off"}) as server:
        yield server


def test_subscribers_never_pass_a_late_commit_on_postgresql(own_server: PostgresServer) -> None:
    url = own_server.create_database("order_machine")

    class Machine(PostgresOrderMachine):
        server = own_server

    Machine.url = url
    run_state_machine_as_test(Machine, settings=MACHINE_SETTINGS)


def test_subscribers_never_pass_a_late_commit_on_sqlite(tmp_path_factory: pytest.TempPathFactory) -> None:
    counter = iter(range(10_000))

    class Machine(SQLiteOrderMachine):
        def __init__(self) -> None:
            self.folder = tmp_path_factory.mktemp(f"machine{next(counter)}")
            super().__init__()

    run_state_machine_as_test(Machine, settings=MACHINE_SETTINGS)
