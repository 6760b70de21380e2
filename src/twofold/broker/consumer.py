"""The consumer: another service's events, from its JetStream stream into this service's store.

    consumer = JetStreamConsumer(orders, store, read_store, Subscription("inventory", ["reservation"]),
                                 "nats://127.0.0.1:4222")
    await consumer.start()            # fetches, imports and acknowledges, forever
    print(await consumer.progress())  # Progress(worker='twofold_orders_from_inventory', …)
    await consumer.stop()

Each (service, source) pair has one durable pull consumer, ``twofold_<service>_from_<source>``,
on the source's stream ``TWOFOLD_<SOURCE>_EVENTS``, filtered to the subscribed categories
(``twofold.<source>.events.<category>.>``). Its name is a durable id: JetStream keeps its place
across restarts, and renaming it starts over from the first event (harmlessly: the import is
idempotent). Several processes may share one consumer: the version check keeps every stream in order.

Each fetched batch is imported in order by an :class:`~twofold.subscriptions.Importer`, and
every message is acknowledged only after its import committed: a crash before the
acknowledgement redelivers it, and the redelivery is a duplicate that changes nothing. A message
that cannot be imported yet (a gap, a failure with attempts left) is negatively acknowledged with
a delay; JetStream's delivery count is the attempt count, and after ``max_attempts`` the importer
parks the message instead (see :mod:`twofold.deadletters`). JetStream itself never gives up on a
message (``max_deliver`` is unlimited): only the importer decides when to park.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Sequence
from datetime import datetime

try:
    import nats
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.errors import TimeoutError as FetchTimeout
    from nats.js import JetStreamContext, api
except ModuleNotFoundError as exc:  # pragma: no cover - depends on what is installed
    raise ModuleNotFoundError("The NATS consumer needs the nats extra: pip install 'twofold[nats]'") from exc

from twofold.broker._fetch import fetch_promptly
from twofold.broker.cloudevents import InvalidCloudEvent, decode
from twofold.broker.subjects import events_filter, events_stream, subject_token
from twofold.health import Progress, Total
from twofold.messages import utc_now
from twofold.readmodels import Database, ReadStore
from twofold.service import Service
from twofold.store import EventStore, StoredEvent
from twofold.subscriptions import DEFAULT_MAX_ATTEMPTS, Importer, Outcome, Subscription

__all__ = ["JetStreamConsumer", "category_filter", "consumer_name", "decode_event"]

log = logging.getLogger("twofold.broker.consumer")

RETRY_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)  # seconds before a message is delivered again, by attempt; then 5 s
FAILURE_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)  # seconds before fetching again after the consumer itself failed
FETCH_WAIT = 1.0  # seconds a fetch waits for messages (its pull request expires with it)
STOP_GRACE = 5.0  # seconds beyond a fetch that stopping waits for the batch at hand


def consumer_name(service: str, source: str) -> str:
    """``("orders", "inventory")`` → ``twofold_orders_from_inventory``: the durable JetStream consumer."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"twofold_{service}_from_{source}")


def category_filter(source: str, category: str) -> str:
    """``twofold.<source>.events.<category>.>``: every event of one category of ``source``."""
    return f"{events_filter(source)[:-1]}{subject_token(category)}.>"


def decode_event(text: str) -> StoredEvent:
    """A CloudEvent's text back into the source's stored event (for parked messages)."""
    return decode(text).event


class JetStreamConsumer:
    """Imports one subscription's events from JetStream, in order per stream, each once in effect.

    Args:
        service: the importing service.
        store: its event store (the inbox).
        read_store: where parked messages live.
        subscription: the source service and the categories imported from it.
        nats_url: the NATS server(s).
        batch_size: the most messages fetched and imported together.
        max_attempts: deliveries of a failing message before it is parked.
        max_gap_attempts: deliveries of an event whose predecessor has not arrived before it is parked.
        ack_wait: seconds JetStream waits for an acknowledgement before delivering again.
        retry_delays: seconds before a message that could not be imported yet is delivered again, by attempt.
    """

    def __init__(
        self,
        service: Service,
        store: EventStore,
        read_store: ReadStore[Database],
        subscription: Subscription,
        nats_url: str,
        *,
        batch_size: int = 256,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        max_gap_attempts: int | None = None,
        ack_wait: float = 10.0,
        retry_delays: Sequence[float] = RETRY_DELAYS,
    ) -> None:
        self.name = consumer_name(service.name, subscription.source)
        self.stream = events_stream(subscription.source)
        self.importer = Importer(
            service,
            store,
            read_store,
            subscription,
            max_attempts=max_attempts,
            max_gap_attempts=max_gap_attempts,
            decode_raw=decode_event,
        )
        self._subscription = subscription
        self._url = nats_url
        self._batch_size = batch_size
        self._ack_wait = ack_wait
        self._retry_delays = tuple(retry_delays)
        self._client: Client | None = None
        self._pull: JetStreamContext.PullSubscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.position = 0  # the last source position this consumer finished with
        self.pending = 0  # messages JetStream has not had acknowledged yet, when last asked
        self.imported = 0
        self.last_progress = utc_now()
        self._waiting_since: datetime | None = None
        self.failures = 0
        self.last_error: str | None = None

    @property
    def running(self) -> bool:
        """True while the consumer's task is alive."""
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start consuming in a task; calling it again does nothing."""
        if self.running:
            return
        await self.importer.dead_letters.setup()
        self.last_progress = utc_now()
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name=f"consumer {self.name}")

    async def stop(self) -> None:
        """Finish the batch at hand, then close the connection.

        The consumer stops between fetches, so that no pull request of its own outlives it on the
        server (messages sent to a request nobody reads come again only after ``ack_wait``). If
        that takes longer than a fetch and a batch should, it is cancelled: nothing is lost, its
        unacknowledged messages come again later.
        """
        if self._task is not None:
            self._stopping.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), FETCH_WAIT + STOP_GRACE)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        client, self._client, self._pull = self._client, None, None
        if client is not None and not client.is_closed:
            await client.close()

    async def progress(self) -> Progress:
        """Where the consumer stands: ``head - position`` is the messages JetStream still holds for it.

        A consumer with messages pending that has not finished one for long is stuck.
        """
        if self._pull is not None:
            try:
                info = await self._pull.consumer_info()
                self.pending = (info.num_pending or 0) + (info.num_ack_pending or 0)
            except Exception as exc:  # health reads what it can: the last count stands
                log.debug("consumer %s: no consumer info (%s)", self.name, exc)
        if self.pending and self._waiting_since is None:
            self._waiting_since = utc_now()
        elif not self.pending:
            self._waiting_since = None
            if self.running:
                self.last_progress = utc_now()  # idle is not stuck
        return Progress(self.name, self.position, self.position + self.pending, self.last_progress, self._waiting_since)

    def totals(self) -> list[Total]:
        """Events imported since the process started (duplicates not counted)."""
        return [Total("imported_events", {"worker": self.name, "source": self.importer.source}, self.importer.imported)]

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failure must not kill the consumer: unacknowledged messages come again
                delay = FAILURE_DELAYS[min(self.failures, len(FAILURE_DELAYS) - 1)]
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("consumer %s failed (%s); retrying in %ss", self.name, self.last_error, delay)
                await self._drop_subscription()
                with contextlib.suppress(TimeoutError):  # a stop ends the wait
                    await asyncio.wait_for(self._stopping.wait(), delay)

    async def _consume(self) -> None:
        pull = await self._subscribe()
        while not self._stopping.is_set():
            try:
                messages = await fetch_promptly(pull, self._batch_size, FETCH_WAIT)
            except (FetchTimeout, TimeoutError):  # nats-py raises either when nothing came
                continue
            await self._handle(messages)
            self.failures, self.last_error = 0, None

    async def _subscribe(self) -> JetStreamContext.PullSubscription:
        if self._client is None or self._client.is_closed:
            self._client = await nats.connect(
                self._url,
                name=f"twofold consumer {self.name}",
                allow_reconnect=True,
                max_reconnect_attempts=-1,  # wait for NATS forever: the consumer never gives up
                reconnect_time_wait=0.25,
                connect_timeout=2.0,
                error_cb=self._on_error,
            )
        js = self._client.jetstream()
        config = api.ConsumerConfig(
            durable_name=self.name,
            description=f"twofold: {self._subscription.source} events imported by {self.name}",
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self._ack_wait,
            max_deliver=-1,  # never dropped by JetStream: the importer parks what keeps failing
            max_ack_pending=self._batch_size * 4,
            filter_subjects=[category_filter(self._subscription.source, c) for c in self._subscription.categories],
        )
        await js.add_consumer(self.stream, config)  # creates it, or finds it as it is (its place kept)
        self._pull = await js.pull_subscribe_bind(durable=self.name, stream=self.stream)
        return self._pull

    async def _drop_subscription(self) -> None:
        """Forget the pull subscription, so that no request of it holds messages out of reach of the next."""
        pull, self._pull = self._pull, None
        if pull is not None:
            with contextlib.suppress(Exception):  # the connection may be gone with it
                await pull.unsubscribe()

    async def _on_error(self, exc: Exception) -> None:
        self.last_error = f"NATS connection: {type(exc).__name__}: {exc}"
        log.debug("consumer %s: %s", self.name, self.last_error)

    async def _handle(self, messages: Sequence[Msg]) -> None:
        """Import a batch in order, then acknowledge what is done and delay what must come again."""
        readable: list[tuple[Msg, StoredEvent]] = []
        outcomes: dict[int, Outcome] = {}
        for index, msg in enumerate(messages):
            try:
                readable.append((msg, decode(msg.data).event))
            except InvalidCloudEvent as exc:
                text = msg.data.decode(errors="replace")
                outcomes[index] = await self.importer.receive_unreadable(
                    text, msg.metadata.sequence.stream, str(exc), msg.metadata.num_delivered
                )
        try:
            results = await self.importer.receive_many([(e, m.metadata.num_delivered) for m, e in readable])
        except Exception:  # the store failed: nothing of the batch is acknowledged; have it all again soon
            for index, msg in enumerate(messages):
                with contextlib.suppress(Exception):  # the connection may be what failed
                    parked = outcomes.get(index) is Outcome.PARKED
                    await (msg.ack() if parked else msg.nak(delay=self._retry_delays[-1]))
            raise
        by_msg = {id(m): o for (m, _), o in zip(readable, results, strict=True)}
        for index, msg in enumerate(messages):
            outcome = outcomes.get(index) or by_msg[id(msg)]
            if outcome is Outcome.RETRY:
                attempt = msg.metadata.num_delivered
                await msg.nak(delay=self._retry_delays[min(attempt - 1, len(self._retry_delays) - 1)])
            else:
                await msg.ack()
        done = [e for (m, e), o in zip(readable, results, strict=True) if o is not Outcome.RETRY]
        self.imported += sum(1 for o in results if o is Outcome.IMPORTED)
        if done:
            self.position = max(self.position, max(e.position for e in done))
            self.last_progress = utc_now()
            self._waiting_since = None
