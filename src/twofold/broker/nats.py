"""The relay: every event of a service's store, published to NATS JetStream in position order.

    relay = JetStreamRelay("shop", store, read_store, "nats://127.0.0.1:4222")
    await relay.start()            # tails the store from its checkpoint, forever
    print(await relay.progress())  # Progress(worker='twofold.relay.shop', position=…, head=…, …)
    await relay.stop()

The event store is the outbox: nothing else is written when a command commits. Each event goes
to ``twofold.<service>.events.<category>.<type>`` (see :mod:`twofold.broker.subjects`) in the
stream ``TWOFOLD_<SERVICE>_EVENTS``, as a CloudEvent (:mod:`twofold.broker.cloudevents`), with
header ``Nats-Msg-Id`` = the event id, and ``traceparent``/``tracestate`` when the event's metadata
has them (the same trace context the CloudEvent carries as its Distributed Tracing extension).

**Order.** Every publish carries ``Nats-Expected-Last-Sequence``: the stream sequence the
previous event got (or will get). JetStream stores a message only if the stream's last sequence
is exactly that, so a message whose predecessor was lost, rejected or is still unacknowledged
after a failure can never be stored after it: the stream stays a gap-free prefix of the store,
in position order. That lets the relay pipeline a whole page of publishes (up to 500) and
then wait for their acknowledgements together, instead of one round trip per event.

**Resuming.** Whenever it (re)starts or anything goes wrong, the relay asks the stream for its
last message and resumes after that message's position (or after its checkpoint, if the stream
is empty or further behind). So an event published but not yet checkpointed when the relay
crashed is not published again at all; ``Nats-Msg-Id`` deduplication is the second line of
defence, for an acknowledgement that is lost in flight.

**Checkpoint.** After each acknowledged page the relay moves its checkpoint (``twofold.relay.<service>``
in the read store) with a fenced write: it only succeeds if the checkpoint is still where this
relay last saw it, so two relays of one service never both advance it over the same events
(and the expected sequence keeps them from both publishing the same event).

The checkpoint says how far the relay got, for health and lag. Renaming it (``checkpoint_name``)
is harmless: the stream itself says where to resume.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

try:
    import nats
    from nats.aio.client import Client
    from nats.js import JetStreamContext, api
    from nats.js.errors import BadRequestError
except ModuleNotFoundError as exc:  # pragma: no cover - depends on what is installed
    raise ModuleNotFoundError("The NATS relay needs the nats extra: pip install 'twofold[nats]'") from exc

from twofold.broker._publisher import Publisher, PublishRefused
from twofold.broker.cloudevents import CONTENT_TYPE, decode, encode
from twofold.broker.subjects import events_filter, events_stream, events_subject
from twofold.errors import BrokerError
from twofold.health import Progress
from twofold.messages import utc_now
from twofold.observability import TRACE_FIELDS
from twofold.readmodels import CheckpointConflict, Database, ReadStore
from twofold.store import EventStore, StoredEvent
from twofold.store._follow import follow_pages

__all__ = ["JetStreamRelay"]

log = logging.getLogger("twofold.broker.relay")

RETRY_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)  # seconds before trying again after a failure, then every 5 s
SNAPSHOT_TYPE = "twofold.Snapshot"  # a cache of aggregate state, private to its service: never published
WRONG_LAST_SEQUENCE = 10071  # JetStream's error code when Nats-Expected-Last-Sequence does not match


class _OutOfStep(Exception):
    """The stream or the checkpoint moved under this relay (a duplicate, another relay): resynchronise."""


class JetStreamRelay:
    """Publishes a service's events to its JetStream stream, in order, at least once, deduplicated.

    Args:
        service_name: the service, the ``source`` of its CloudEvents and part of every subject.
        store: the event store to tail.
        read_store: where the relay's checkpoint lives.
        nats_url: the NATS server(s), e.g. ``nats://127.0.0.1:4222`` (comma-separated for several).
        page_size: the most events read, published and acknowledged as one pipelined batch.
        ack_timeout: seconds to wait for JetStream's acknowledgements before starting over.
        duplicate_window: seconds JetStream remembers message ids, for a stream this relay creates.
        checkpoint_name: the durable name of the checkpoint (``twofold.relay.<service>``).
    """

    def __init__(
        self,
        service_name: str,
        store: EventStore,
        read_store: ReadStore[Database],
        nats_url: str,
        *,
        page_size: int = 500,
        ack_timeout: float = 5.0,
        duplicate_window: float = 120.0,
        checkpoint_name: str | None = None,
    ) -> None:
        self.service_name = service_name
        self.stream = events_stream(service_name)
        self.checkpoint_name = checkpoint_name or f"twofold.relay.{service_name}"
        self._store = store
        self._read_store = read_store
        self._url = nats_url
        self._page_size = page_size
        self._ack_timeout = ack_timeout
        self._duplicate_window = duplicate_window
        self._client: Client | None = None
        self._publisher: Publisher | None = None
        self._stream_ready = False
        self._task: asyncio.Task[None] | None = None
        self._expected_sequence = 0  # the stream's last sequence, as far as this relay's publishes go
        self.position = 0
        self.checkpoint = 0
        self.head = 0
        self.last_progress = utc_now()  # when ``position`` last moved, or the relay found nothing to do
        self.failures = 0
        self.last_error: str | None = None

    @property
    def running(self) -> bool:
        """True while the relay's task is alive."""
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Read the checkpoint and start relaying in a task; calling it again does nothing."""
        if self.running:
            return
        self.checkpoint = await self._read_store.checkpoint(self.checkpoint_name)
        self.position = self.checkpoint
        self.last_progress = utc_now()
        self._task = asyncio.create_task(self._run(), name=f"relay {self.service_name}")

    async def stop(self) -> None:
        """Stop relaying and close the NATS connection (the stores stay open: they are the caller's)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        client, self._client, self._publisher = self._client, None, None
        self._stream_ready = False
        if client is not None and not client.is_closed:
            await client.close()

    async def progress(self) -> Progress:
        """Where the relay stands against the store's head, for health checks and ``/metrics``.

        ``position`` is the last event JetStream acknowledged (``checkpoint``, ``failures`` and
        ``last_error`` are attributes of the relay). Lag alone is merely behind; lag with no
        progress for long is stuck.
        """
        self.head = max(self.head, await self._store.head_position())
        position, waiting_since = self.position, None
        if self.head > position:
            oldest = [e async for e in self._store.read_all(position + 1, limit=1)]
            waiting_since = oldest[0].recorded_at if oldest else None
        elif self.running:
            self.last_progress = utc_now()  # nothing to do is progress too: idle is not stuck
        return Progress(self.checkpoint_name, position, self.head, self.last_progress, waiting_since)

    async def _run(self) -> None:
        while True:
            try:
                await self._relay()
            except asyncio.CancelledError:
                raise
            except _OutOfStep as reason:  # expected after a restart or beside another relay: no back-off
                log.info("relay %s: %s; resynchronising with stream %s", self.service_name, reason, self.stream)
                await asyncio.sleep(0.01)
            except Exception as exc:  # a failure must not kill the relay: try again, never skipping
                delay = RETRY_DELAYS[min(self.failures, len(RETRY_DELAYS) - 1)]
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "relay %s failed after position %d (%s); retrying in %ss",
                    self.service_name,
                    self.position,
                    self.last_error,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _relay(self) -> None:
        js = await self._jetstream()
        await self._synchronise(js)
        await self._save_checkpoint()  # the stream may be ahead of it: a page another relay published
        async for page in follow_pages(self._store, self.position + 1, self._page_size):
            await self._publish(page)
            await self._save_checkpoint()
            self.failures, self.last_error = 0, None
            self.last_progress = utc_now()

    async def _jetstream(self) -> JetStreamContext:
        if self._client is None or self._client.is_closed:
            self._client = await nats.connect(
                self._url,
                name=f"twofold relay {self.service_name}",
                allow_reconnect=True,
                max_reconnect_attempts=-1,  # reconnect forever: the relay waits for NATS, it never gives up
                reconnect_time_wait=0.25,
                connect_timeout=2.0,
                error_cb=self._on_error,
            )
            self._publisher = Publisher(self._client)
            self._stream_ready = False
        js = self._client.jetstream(timeout=self._ack_timeout)
        if not self._stream_ready:
            await self._ensure_stream(js)
            self._stream_ready = True
        return js

    async def _on_error(self, exc: Exception) -> None:
        # The client keeps (re)connecting by itself; this is where a relay waiting for NATS says why.
        self.last_error = f"NATS connection: {type(exc).__name__}: {exc}"
        log.debug("relay %s: %s", self.service_name, self.last_error)

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        """Create the service's events stream, file-backed, unless it exists and takes our subjects."""
        subjects = events_filter(self.service_name)
        config = api.StreamConfig(
            name=self.stream,
            description=f"twofold: the events of service {self.service_name}, in position order",
            subjects=[subjects],
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS,
            duplicate_window=self._duplicate_window,
        )
        try:
            await js.add_stream(config)
        except BadRequestError:  # it exists with another configuration (an operator's: keep it)
            info = await js.stream_info(self.stream)
            if subjects not in (info.config.subjects or []):
                raise BrokerError(
                    f"JetStream stream {self.stream} exists but does not take subjects {subjects} "
                    f"(it takes {info.config.subjects}); add them, or delete the stream"
                ) from None

    async def _synchronise(self, js: JetStreamContext) -> None:
        """Resume after the stream's last message, or after the checkpoint if that is further on.

        The checkpoint is read *before* the stream: every position it names was in the stream
        before it was written, so the stream read next holds it too, and the pair (last sequence,
        position) that the next publishes count from describes one state of the stream. Read the
        other way round, another relay could publish and checkpoint in between, and this relay
        would number the events after the checkpoint from a sequence that is already taken by
        one of them: a pipelined publish refused and the next one accepted would leave a gap.
        """
        self.checkpoint = max(self.checkpoint, await self._read_store.checkpoint(self.checkpoint_name))
        info = await js.stream_info(self.stream)
        last_sequence = info.state.last_seq
        published = 0
        if info.state.messages:
            last = await js.get_msg(self.stream, last_sequence)
            published = decode(last.data or b"").event.position
        self._expected_sequence = last_sequence
        # Only a stream emptied or replaced behind the relay's back is behind its checkpoint.
        self.position = max(self.checkpoint, published)

    async def _publish(self, page: Sequence[StoredEvent]) -> None:
        """Publish a page's new events pipelined, then take their acknowledgements in order."""
        self.head = max(self.head, page[-1].position)
        events = [e for e in page if e.position > self.position and e.type != SNAPSHOT_TYPE]
        pending: list[tuple[StoredEvent, asyncio.Future[api.PubAck]]] = []
        assert self._publisher is not None  # made with the connection, in _jetstream
        try:
            for offset, event in enumerate(events):
                headers = {
                    "Nats-Msg-Id": event.event_id,
                    "Nats-Expected-Last-Sequence": str(self._expected_sequence + offset),
                    "Content-Type": CONTENT_TYPE,
                    **{name: value for name in TRACE_FIELDS if isinstance(value := event.metadata.get(name), str)},
                }
                subject = events_subject(self.service_name, event.category, event.type)
                future = await self._publisher.publish(subject, encode(event, self.service_name), headers)
                pending.append((event, future))
            if pending:
                await asyncio.wait([future for _, future in pending], timeout=self._ack_timeout)
            for event, future in pending:  # in order: the first failure stops the page
                self._acknowledged(event, self._ack(future))
        finally:
            for _, future in pending:
                if not future.done():
                    future.cancel()  # an acknowledgement that may never come: the next try starts afresh
                elif not future.cancelled():
                    future.exception()  # seen: a failure after the first one is not "never retrieved"
        self.position = max(self.position, page[-1].position)  # past the snapshots left out, too

    def _ack(self, future: asyncio.Future[api.PubAck]) -> api.PubAck:
        if not future.done():
            raise BrokerError(f"JetStream did not acknowledge within {self._ack_timeout}s")
        try:
            return future.result()
        except PublishRefused as exc:
            if exc.err_code == WRONG_LAST_SEQUENCE:
                raise _OutOfStep(f"the stream is not where this relay expected it ({exc.description})") from None
            raise

    def _acknowledged(self, event: StoredEvent, ack: api.PubAck) -> None:
        if ack.duplicate or ack.seq != self._expected_sequence + 1:
            raise _OutOfStep(f"event at position {event.position} was already in the stream (sequence {ack.seq})")
        self._expected_sequence = ack.seq
        self.position = event.position

    async def _save_checkpoint(self) -> None:
        if self.position <= self.checkpoint:
            return
        try:
            await self._read_store.transact(
                self.checkpoint_name, _nothing, expected=self.checkpoint, position=self.position
            )
        except CheckpointConflict as conflict:
            self.checkpoint = conflict.actual
            raise _OutOfStep(str(conflict)) from None
        self.checkpoint = self.position


def _nothing(db: Database) -> None:
    """The checkpoint moves alone: the relay writes nothing else to the read store."""
