"""The relay against a real nats-server and both event stores: once, in order, across restarts and crashes."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from conftest import StoreFactory
from nats.js import JetStreamContext

from twofold.broker.cloudevents import CONTENT_TYPE, decode
from twofold.broker.nats import JetStreamRelay
from twofold.broker.subjects import events_subject
from twofold.errors import StoreError
from twofold.messages import utc_now
from twofold.readmodels import Database, ReadStore
from twofold.store import EventStore, NewEvent, StoredEvent
from twofold.testing.servers import NatsServer, free_port

_services = itertools.count(1)
WAIT = 20.0  # seconds for a relay to catch up before the test fails


@dataclass
class Published:
    sequence: int
    subject: str
    headers: dict[str, str]
    event: StoredEvent


@pytest.fixture
def service() -> str:
    """A service name of this test's own, hence its own JetStream stream on the shared server."""
    return f"svc{next(_services)}"


RelayFactory = Callable[..., JetStreamRelay]


@pytest.fixture
async def relay_of() -> AsyncIterator[RelayFactory]:
    """Makes relays and stops every one of them after the test, however it ends."""
    made: list[JetStreamRelay] = []

    def make(*args: Any, **kwargs: Any) -> JetStreamRelay:
        made.append(JetStreamRelay(*args, **kwargs))
        return made[-1]

    yield make
    for relay in made:
        await relay.stop()


@pytest.fixture
async def jetstream(nats_url: str) -> AsyncIterator[JetStreamContext]:
    client = await nats.connect(nats_url)
    yield client.jetstream()
    await client.close()


async def append_events(store: EventStore, count: int, *, streams: int = 3, prefix: str = "order") -> None:
    for number in range(count):
        await store.append(
            f"{prefix}-{number % streams}",
            [
                NewEvent(
                    "shop.OrderPlaced" if number % 2 else "Item added!", {"n": number}, {"command_id": f"c{number}"}
                )
            ],
        )


async def stream_contents(js: JetStreamContext, stream: str) -> list[Published]:
    info = await js.stream_info(stream)
    found = []
    for sequence in range(info.state.first_seq, info.state.last_seq + 1):
        message = await js.get_msg(stream, sequence)
        found.append(
            Published(sequence, message.subject or "", dict(message.headers or {}), decode(message.data or b"").event)
        )
    return found


async def caught_up(relay: JetStreamRelay, *, timeout: float = WAIT, position: int = 0) -> None:
    """Wait until ``relay`` has nothing left to publish, and has published up to ``position`` at least:
    on PostgreSQL an event is numbered just after its append commits, so the head can lag the append."""

    async def wait() -> None:
        while (progress := await relay.progress()).lag or progress.position < position:  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(wait(), timeout)
    except TimeoutError:
        pytest.fail(f"relay did not catch up in {timeout}s: {await relay.progress()}")


async def all_events(store: EventStore) -> list[StoredEvent]:
    return [e async for e in store.read_all(1)]


def assert_published_once_in_order(published: list[Published], events: list[StoredEvent]) -> None:
    assert [p.event.position for p in published] == [e.position for e in events]
    assert [p.event.event_id for p in published] == [e.event_id for e in events]
    assert [p.sequence for p in published] == list(range(1, len(events) + 1))


async def test_every_event_arrives_once_in_position_order_as_a_cloudevent_on_its_subject(
    open_stores: StoreFactory, relay_of: RelayFactory, nats_url: str, jetstream: JetStreamContext, service: str
) -> None:
    store, read_store = open_stores()
    await append_events(store, 40)
    await store.append("snapshot-order-0", [NewEvent("twofold.Snapshot", {"state": {}})])  # private: not published
    relay = relay_of(service, store, read_store, nats_url)
    await relay.start()
    try:
        await caught_up(relay)
        await append_events(store, 35, prefix="cart")  # and live, after catching up
        await caught_up(relay)
        progress = await relay.progress()
    finally:
        await relay.stop()
    events = [e for e in await all_events(store) if e.type != "twofold.Snapshot"]
    published = await stream_contents(jetstream, relay.stream)
    assert_published_once_in_order(published, events)
    for item, event in zip(published, events, strict=True):
        assert item.event == event  # the whole stored event, as any CloudEvents reader gets it
        assert item.subject == events_subject(service, event.category, event.type)
        assert item.headers["Nats-Msg-Id"] == event.event_id
        assert item.headers["Content-Type"] == CONTENT_TYPE
    assert published[1].subject == f"twofold.{service}.events.order.shop.OrderPlaced"
    assert published[0].subject == f"twofold.{service}.events.order.Item%20added%21"
    head = await store.head_position()
    assert (progress.worker, progress.position, progress.head, progress.lag) == (relay.checkpoint_name, head, head, 0)
    assert progress.waiting_since is None
    assert relay.failures == 0
    assert await read_store.checkpoint(relay.checkpoint_name) == head
    await store.close()
    await read_store.close()


async def test_a_relay_restarted_from_its_checkpoint_publishes_nothing_twice(
    open_stores: StoreFactory, relay_of: RelayFactory, nats_url: str, jetstream: JetStreamContext, service: str
) -> None:
    store, read_store = open_stores()
    await append_events(store, 30)
    first = relay_of(service, store, read_store, nats_url)
    await first.start()
    await caught_up(first)
    await first.stop()
    await store.close()
    await read_store.close()

    store, read_store = open_stores()  # as a new process would
    await append_events(store, 30, prefix="cart")
    second = relay_of(service, store, read_store, nats_url)
    await second.start()
    assert second.position == 30  # from the checkpoint
    await caught_up(second)
    await second.stop()
    assert_published_once_in_order(await stream_contents(jetstream, second.stream), await all_events(store))
    assert await read_store.checkpoint(second.checkpoint_name) == 60
    await store.close()
    await read_store.close()


class WrappedReadStore:
    """A real read store behind a wrapper whose checkpoint writes a test can change."""

    def __init__(self, inner: ReadStore) -> None:
        self.inner = inner
        self.dialect = inner.dialect

    async def transact(
        self, name: str, work: Callable[[Database], None], *, expected: int | None = None, position: int | None = None
    ) -> None:
        await self.inner.transact(name, work, expected=expected, position=position)

    async def read(self, work: Callable[[Database], Any]) -> Any:
        return await self.inner.read(work)

    async def checkpoint(self, name: str) -> int:
        return await self.inner.checkpoint(name)

    async def close(self) -> None:
        await self.inner.close()


class FailingCheckpoints(WrappedReadStore):
    """A read store whose checkpoint writes fail, as a relay killed right after publishing would leave it."""

    async def transact(
        self, name: str, work: Callable[[Database], None], *, expected: int | None = None, position: int | None = None
    ) -> None:
        raise StoreError("simulated crash before the checkpoint commits")


async def test_a_relay_that_dies_between_publishing_and_checkpointing_leaves_no_duplicate_in_the_stream(
    open_stores: StoreFactory, relay_of: RelayFactory, nats_url: str, jetstream: JetStreamContext, service: str
) -> None:
    store, read_store = open_stores()
    await append_events(store, 50)
    doomed = relay_of(service, store, FailingCheckpoints(read_store), nats_url)
    await doomed.start()
    while doomed.failures == 0:  # noqa: ASYNC110 - it published a page, then failed to record it
        await asyncio.sleep(0.01)
    await doomed.stop()
    assert await read_store.checkpoint(doomed.checkpoint_name) == 0
    assert (await jetstream.stream_info(doomed.stream)).state.messages > 0

    await append_events(store, 20, prefix="cart")
    heir = relay_of(service, store, read_store, nats_url)
    await heir.start()
    await caught_up(heir, position=70)
    await heir.stop()
    assert_published_once_in_order(await stream_contents(jetstream, heir.stream), await all_events(store))
    assert await read_store.checkpoint(heir.checkpoint_name) == 70
    await store.close()
    await read_store.close()


async def test_nats_restarted_while_relaying_loses_nothing_and_reorders_nothing(
    open_stores: StoreFactory, relay_of: RelayFactory, tmp_path: Path, service: str, caplog: pytest.LogCaptureFixture
) -> None:
    store, read_store = open_stores()
    with NatsServer(tmp_path / "nats") as server:
        relay = relay_of(service, store, read_store, server.url, ack_timeout=1.0)
        await relay.start()

        async def write() -> None:
            for batch in range(30):
                await append_events(store, 5, prefix=f"b{batch}")
                await asyncio.sleep(0.01)

        writer = asyncio.create_task(write())
        await asyncio.sleep(0.1)
        server.stop(fast=False)  # a crash (SIGKILL), down for longer than the relay waits for an ack
        await asyncio.sleep(1.5)
        server.start()  # the same store and port
        await asyncio.sleep(0.2)
        server.restart()  # and a clean restart
        await writer
        await caught_up(relay)
        await relay.stop()
        assert "retrying in" in caplog.text  # it did meet the outage, and came through it
        client = await nats.connect(server.url)
        published = await stream_contents(client.jetstream(), relay.stream)
        await client.close()
    assert_published_once_in_order(published, await all_events(store))
    await store.close()
    await read_store.close()


class RecordingCheckpoints(WrappedReadStore):
    """A read store that records every checkpoint move that commits, and which relay made it."""

    def __init__(self, inner: ReadStore, who: str, moves: list[tuple[str, int | None, int | None]]) -> None:
        super().__init__(inner)
        self.who, self.moves = who, moves

    async def transact(
        self, name: str, work: Callable[[Database], None], *, expected: int | None = None, position: int | None = None
    ) -> None:
        await self.inner.transact(name, work, expected=expected, position=position)
        self.moves.append((self.who, expected, position))


async def test_relays_side_by_side_never_both_advance_the_checkpoint_nor_leave_a_gap_or_a_duplicate(
    open_stores: StoreFactory, relay_of: RelayFactory, nats_url: str, jetstream: JetStreamContext, service: str
) -> None:
    """Three relays of one service, small pages, events arriving in bursts: they race on every page.

    This once caught relays numbering their publishes from a stream state older than the
    checkpoint they resumed from: a gap in about one run in three.
    """
    moves: list[tuple[str, int | None, int | None]] = []
    stores = [open_stores() for _ in range(3)]
    relays = [
        relay_of(service, store, RecordingCheckpoints(read_store, name, moves), nats_url, page_size=5)
        for name, (store, read_store) in zip("abc", stores, strict=True)
    ]
    for relay in relays:
        await relay.start()
    for batch in range(30):
        await append_events(stores[batch % 3][0], 10, prefix=f"b{batch}")
        await asyncio.sleep(0.005)
    for relay in relays:
        await caught_up(relay)
    for relay in relays:
        await relay.stop()
    assert_published_once_in_order(await stream_contents(jetstream, relays[0].stream), await all_events(stores[0][0]))
    # Every committed move starts where the previous one ended: one chain, no range advanced twice.
    chain = [(expected, position) for _, expected, position in moves]
    assert chain[0][0] == 0
    assert all(previous[1] == current[0] for previous, current in itertools.pairwise(chain)), chain
    assert chain[-1][1] == 300
    for store, read_store in stores:
        await store.close()
        await read_store.close()


async def test_a_relay_that_cannot_reach_nats_reports_events_waiting_and_no_progress(
    open_stores: StoreFactory, relay_of: RelayFactory, service: str
) -> None:
    store, read_store = open_stores()
    relay = relay_of(service, store, read_store, f"nats://127.0.0.1:{free_port()}")  # nothing listens
    await relay.start()
    await append_events(store, 5)
    first = (await all_events(store))[0]
    await asyncio.sleep(0.3)
    progress = await relay.progress()
    await relay.stop()
    assert (progress.position, progress.head, progress.lag) == (0, 5, 5)
    assert progress.waiting_since == first.recorded_at
    assert progress.stalled_for(utc_now()) > 0.2
    assert relay.last_error is not None
    assert relay.last_error.startswith("NATS connection: ")
    await store.close()
    await read_store.close()
