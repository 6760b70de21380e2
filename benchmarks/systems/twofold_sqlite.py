"""twofold through its public API: Runtime, Service, UnitOfWork, on SQLiteEventStore(durability="full")."""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.shape import EVENT_TYPE, PAYLOAD, Shape, stream_key
from twofold import NO_STREAM, Aggregate, Command, Envelope, Event, NewEvent, Runtime, Service, UnitOfWork
from twofold.store.sqlite import SQLiteEventStore

DURABILITY = "full"


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


class TwofoldSQLite:
    name = "twofold"

    def settings(self) -> dict[str, str]:
        return {"durability": DURABILITY, "synchronous": "FULL (twofold sets it)", "journal_mode": "wal"}

    async def append_per_command(self, path: Path, shape: Shape) -> float:
        async with Runtime(BENCH, store=SQLiteEventStore(path, durability=DURABILITY)) as runtime:
            started = time.perf_counter()
            for _ in range(shape.events_per_stream):
                for n in range(shape.streams):
                    await runtime.execute(RecordHappening(counter_id=stream_key(n), **PAYLOAD))
            return time.perf_counter() - started

    async def append_batch(self, path: Path, shape: Shape) -> float:
        store = SQLiteEventStore(path, durability=DURABILITY)
        try:
            started = time.perf_counter()
            await _fill(store, shape)
            return time.perf_counter() - started
        finally:
            await store.close()

    async def load_aggregate(self, path: Path, shape: Shape) -> float:
        store = SQLiteEventStore(path, durability=DURABILITY)
        try:
            await _fill(store, shape)
            envelope = Envelope(RecordHappening(counter_id="none", **PAYLOAD))
            started = time.perf_counter()
            replayed = 0
            for n in range(shape.streams):
                replayed += (await UnitOfWork(store, envelope).load(Counter, stream_key(n))).happenings
            elapsed = time.perf_counter() - started
        finally:
            await store.close()
        assert replayed == shape.events, (replayed, shape.events)
        return elapsed

    async def read_all(self, path: Path, shape: Shape) -> float:
        store = SQLiteEventStore(path, durability=DURABILITY)
        try:
            await _fill(store, shape)
            started = time.perf_counter()
            count = sum([1 async for _ in store.read_all()])
            elapsed = time.perf_counter() - started
        finally:
            await store.close()
        assert count == shape.events, (count, shape.events)
        return elapsed


async def _fill(store: SQLiteEventStore, shape: Shape) -> None:
    """One append of ``events_per_stream`` events per stream."""
    for n in range(shape.streams):
        events = [NewEvent(EVENT_TYPE, PAYLOAD) for _ in range(shape.events_per_stream)]
        await store.append(f"{Counter.category}-{stream_key(n)}", events, NO_STREAM)
