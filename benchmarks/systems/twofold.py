"""twofold through its public API (Runtime, Service, UnitOfWork), on whichever event store a backend opens.

The domain is the smallest that still does a command's whole job: a handler loads an aggregate
that counts its events (replaying every one) and emits one event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks.shape import EVENT_TYPE, PAYLOAD, Shape, share, stream_key
from twofold import NO_STREAM, Aggregate, Command, Envelope, Event, EventStore, NewEvent, Runtime, Service, UnitOfWork


class Happened(Event, name=EVENT_TYPE):
    sku: str
    name: str
    quantity: int


class RecordHappening(Command, name="bench.RecordHappening"):
    counter_id: str
    sku: str
    name: str
    quantity: int


class Counter(Aggregate, category="counter"):
    """Counts its events: the smallest aggregate that still replays every one."""

    happenings: int = 0

    def record(self, sku: str, name: str, quantity: int) -> Happened:
        return Happened(sku=sku, name=name, quantity=quantity)

    def evolve(self, event: Happened) -> Counter:
        return self.model_copy(update={"happenings": self.happenings + 1})


async def record_happening(command: RecordHappening, uow: UnitOfWork) -> None:
    counter = await uow.load(Counter, command.counter_id)
    uow.emit(counter, counter.record(command.sku, command.name, command.quantity))


BENCH = Service("bench", commands={RecordHappening: record_happening})


class Twofold:
    """The workloads, given how to open the backend's store on a database (a path or a URL)."""

    name = "twofold"

    def __init__(self, open_store: Callable[[str], EventStore], settings: dict[str, Any]) -> None:
        self._open = open_store
        self._settings = settings

    def settings(self) -> dict[str, Any]:
        return self._settings

    async def append_per_command(self, db: str, shape: Shape, writers: int) -> float:
        """``writers`` tasks on one Runtime, each executing the commands for its own share of the streams."""

        async def writer(k: int) -> None:
            for _ in range(shape.rounds):
                for n in share(shape.streams, writers, k):
                    await runtime.execute(RecordHappening(counter_id=stream_key(n), **PAYLOAD))

        async with Runtime(BENCH, store=self._open(db)) as runtime:
            assert runtime.store is not None
            await _ready(runtime.store, writers)
            started = time.perf_counter()
            await asyncio.gather(*(writer(k) for k in range(writers)))
            elapsed = time.perf_counter() - started
            positions = [e.position async for e in runtime.store.read_all()]
        # Gap-free and in order, whatever the writers did at once: 1, 2, ..., N.
        assert positions == list(range(1, shape.commands + 1)), (len(positions), shape.commands)
        return elapsed

    async def append_batch_then_read(self, db: str, shape: Shape) -> dict[str, float]:
        store = self._open(db)
        try:
            await _ready(store, 1)
            seconds = {"append_batch": await _timed(_fill(store, shape))}
            seconds["load_aggregate"] = await _timed(_load_each(store, shape))
            seconds["read_all"] = await _timed(_read_all(store, shape))
            assert await store.head_position() == shape.events
        finally:
            await store.close()
        return seconds


async def _timed(work: Awaitable[None]) -> float:
    started = time.perf_counter()
    await work
    return time.perf_counter() - started


async def _ready(store: EventStore, connections: int) -> None:
    """Untimed, as the other systems are before their clocks start: the schema created and the
    connections a long-running process would already hold (``connections`` reads at once open them)."""
    await asyncio.gather(*(store.head_position() for _ in range(connections)))


async def _fill(store: EventStore, shape: Shape) -> None:
    """One append of ``events_per_stream`` events per stream."""
    for n in range(shape.streams):
        events = [NewEvent(EVENT_TYPE, PAYLOAD) for _ in range(shape.events_per_stream)]
        await store.append(f"{Counter.category}-{stream_key(n)}", events, NO_STREAM)


async def _load_each(store: EventStore, shape: Shape) -> None:
    """Every aggregate rebuilt from its events, as a command handler's ``uow.load`` does."""
    envelope = Envelope(RecordHappening(counter_id="none", **PAYLOAD))
    replayed = 0
    for n in range(shape.streams):
        replayed += (await UnitOfWork(store, envelope).load(Counter, stream_key(n))).happenings
    assert replayed == shape.events, (replayed, shape.events)


async def _read_all(store: EventStore, shape: Shape) -> None:
    """The whole global stream, decoded, as a projection catching up reads it."""
    count = sum([1 async for _ in store.read_all()])
    assert count == shape.events, (count, shape.events)
