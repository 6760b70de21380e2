"""Events a service takes in from other services.

    orders = Service("orders", ..., subscriptions=[Subscription("inventory", categories=["reservation"])])

A subscription imports whole streams of another service into this service's own event store:
``reservation-o-1`` of ``inventory`` becomes ``inventory.reservation-o-1`` here, each event at the
same version, with the same id, type, data and metadata. Projections and sagas then see those
events in this service's global order like any other, and can be rebuilt from this store alone.

The local event store is the inbox. An event at version ``v`` is appended expecting version
``v - 1``, so a duplicate, however late, meets a stream already past it and changes nothing, and
an event whose predecessor has not arrived meets a stream short of it and waits (a *gap*).
An :class:`Importer` does this for any transport (JetStream, or another store in-process):

    importer = Importer(orders, store, read_store, orders.subscriptions[0])
    await importer.receive(record, attempts=1)   # Outcome.IMPORTED, DUPLICATE, RETRY or PARKED
    await importer.retry()                       # drain parked messages, stream by stream, in order

A message that keeps failing (unreadable, data its handlers' classes refuse, a gap that never
fills) is parked in :mod:`twofold.deadletters` after ``max_attempts``, and every later message of
its stream is parked behind it, in order; other streams keep flowing.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from twofold.deadletters import UNREADABLE_STREAM, DeadLetter, DeadLetters
from twofold.errors import ConcurrencyError
from twofold.messages import Event, EventTypes
from twofold.observability import handling, import_span
from twofold.readmodels import Database, ReadStore
from twofold.store import NO_STREAM, EventStore, NewEvent, StoredEvent, StreamWrite

if TYPE_CHECKING:
    from twofold.service import Service

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_GAP_ATTEMPTS",
    "Importer",
    "Outcome",
    "RetryResult",
    "Subscription",
    "imported_stream_id",
    "record_from_json",
    "record_json",
    "service_event_types",
]

DEFAULT_MAX_ATTEMPTS = 5  # tries before a failing message is parked
# Deliveries before a gap is parked: its predecessor may be a message a crashed or stopped
# consumer had fetched, which JetStream delivers again only after the acknowledgement wait
# (10 s by default); with the consumer's back-off, 20 deliveries span about 80 s.
DEFAULT_MAX_GAP_ATTEMPTS = 20


@dataclass(frozen=True, slots=True)
class Subscription:
    """The categories of streams this service imports from the service named ``source``.

    A subscription takes whole categories, never single event types, so that each imported
    stream arrives complete and its order can be checked by version.
    """

    source: str
    categories: Sequence[str]

    def __post_init__(self) -> None:
        if isinstance(self.categories, str):  # a lone string would be taken letter by letter
            raise ValueError(f"Subscription to {self.source}: categories must be a list, e.g. [{self.categories!r}]")
        object.__setattr__(self, "categories", tuple(self.categories))
        if not self.source or not self.categories:
            raise ValueError(f"Subscription to {self.source!r}: name the source and at least one category")
        bad = [c for c in self.categories if not c or "-" in c]
        if bad:
            raise ValueError(
                f"Subscription to {self.source}: {bad[0]!r} is not a category (the text of a stream id "
                "before its first '-', e.g. 'reservation' for reservation-o-1)"
            )


def imported_stream_id(source: str, stream_id: str) -> str:
    """``("inventory", "reservation-o-1")`` → ``inventory.reservation-o-1``: where an import lands."""
    return f"{source}.{stream_id}"


class Outcome(enum.Enum):
    """What became of one received message; the transport acknowledges all but ``RETRY``."""

    IMPORTED = "imported"
    DUPLICATE = "duplicate"  # imported before: nothing changed
    RETRY = "retry"  # not now (a gap, or a failure with attempts left): deliver it again later
    PARKED = "parked"  # kept in the dead letters, to be retried by an operator


@dataclass(frozen=True, slots=True)
class RetryResult:
    """What a retry did: messages imported (or found imported already) and messages still parked."""

    imported: int
    parked: int


def service_event_types(service: Service) -> EventTypes:
    """The event classes a service's projections and sagas name, with its upcasters."""
    types = EventTypes(upcasters=service.upcasters)
    handlers: list[Any] = [*service.projections, *service.sagas]
    for handler in handlers:
        named: Callable[[], Iterable[type[Event]]] | None = getattr(handler, "event_types", None)
        for cls in named() if named is not None else ():
            types.add(cls)
    return types


class Importer:
    """Imports one subscription's events into a service's store, once each and stream by stream in order.

    Args:
        service: the importing service (its projections' and sagas' classes validate the data).
        store: the importing service's event store.
        read_store: where the dead letters live.
        subscription: what is imported, and from where.
        max_attempts: deliveries of a failing message before it is parked.
        max_gap_attempts: deliveries of an event whose predecessor has not arrived before it is parked.
        decode_raw: reads a message that was parked unreadable (the transport's decoder), for retries.
    """

    def __init__(
        self,
        service: Service,
        store: EventStore,
        read_store: ReadStore[Database],
        subscription: Subscription,
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        max_gap_attempts: int | None = None,
        decode_raw: Callable[[str], StoredEvent] | None = None,
    ) -> None:
        self.source = subscription.source
        self.subscription = subscription
        self.dead_letters = DeadLetters(read_store)
        self.max_attempts = max_attempts
        self.max_gap_attempts = max(
            max_attempts, DEFAULT_MAX_GAP_ATTEMPTS if max_gap_attempts is None else max_gap_attempts
        )
        self._store = store
        self._types = service_event_types(service)
        self._decode_raw = decode_raw
        self.imported = 0  # events this importer appended (duplicates not counted), for /metrics

    async def receive(self, record: StoredEvent, attempts: int = 1) -> Outcome:
        """Import one event of the source (``attempts``: how often it has been delivered, this time included)."""
        return (await self.receive_many([(record, attempts)]))[0]

    async def receive_many(self, deliveries: Sequence[tuple[StoredEvent, int]]) -> list[Outcome]:
        """Import consecutive deliveries in order; one transaction for all when nothing is amiss.

        The batch has a span, ``twofold.import <source>``, in the trace of its first event.
        """
        if not deliveries:
            return []
        records = [record for record, _ in deliveries]
        with import_span(self.source, records), handling(source=self.source):
            outcomes = await self._receive_many(deliveries)
        self.imported += outcomes.count(Outcome.IMPORTED)
        return outcomes

    async def _receive_many(self, deliveries: Sequence[tuple[StoredEvent, int]]) -> list[Outcome]:
        parked = await self.dead_letters.parked_streams(self.source)
        errors = [self._invalid(record) for record, _ in deliveries]
        if not parked and not any(errors) and _consecutive([r for r, _ in deliveries]):
            try:
                await self._store.append_streams(self._writes([record for record, _ in deliveries]))
                return [Outcome.IMPORTED] * len(deliveries)
            except ConcurrencyError:
                pass  # a duplicate or a gap among them: sort them out one by one
        outcomes = []
        for (record, attempts), error in zip(deliveries, errors, strict=True):
            outcomes.append(await self._receive_one(record, attempts, error, parked))
        return outcomes

    async def receive_unreadable(self, payload: str, key: int, error: str, attempts: int) -> Outcome:
        """A message that is not a readable event: retried, then parked under ``key`` (its transport place)."""
        if attempts < self.max_attempts:
            return Outcome.RETRY
        letter = DeadLetter(self.source, UNREADABLE_STREAM, key, payload, error, attempts)
        await self.dead_letters.park(letter)
        return Outcome.PARKED

    async def retry(self, stream_id: str | None = None) -> RetryResult:
        """Import ``stream_id``'s parked messages (every stream's, if ``None``) in order, with the current code.

        Each stream stops at its first message that still fails, which stays parked with the rest
        behind it. Safe to run again, or beside a consumer: each message is imported before its
        row is removed, and importing it again changes nothing.
        """
        imported, blocked = 0, set[str]()
        while True:  # again while it lets messages in: a consumer may park more behind them meanwhile
            letters = [x for x in await self.dead_letters.parked(self.source, stream_id) if x.stream_id not in blocked]
            before = imported
            for letter in letters:
                if letter.stream_id in blocked:
                    continue
                if await self._retry_one(letter):
                    imported += 1
                else:
                    blocked.add(letter.stream_id)
            if imported == before:
                break
        return RetryResult(imported, len(await self.dead_letters.parked(self.source, stream_id)))

    async def _receive_one(self, record: StoredEvent, attempts: int, error: str | None, parked: set[str]) -> Outcome:
        behind = record.stream_id in parked and await self._behind_parked(record)
        if behind:
            if await self._store.stream_version(self._local(record)) >= record.version:
                return Outcome.DUPLICATE
            return await self._park(record, attempts, "waiting behind an earlier parked message of its stream", parked)
        if error is not None:
            return await self._failed(record, attempts, error, parked)
        outcome, reason = await self._import(record)
        if outcome is Outcome.RETRY:
            return await self._failed(record, attempts, reason, parked, self.max_gap_attempts)
        # It came before what was parked (the gap it fills): let those follow it.
        if record.stream_id in parked and (await self.retry(record.stream_id)).parked == 0:
            parked.discard(record.stream_id)
        return outcome

    async def _behind_parked(self, record: StoredEvent) -> bool:
        letters = await self.dead_letters.parked(self.source, record.stream_id)
        return bool(letters) and record.version >= letters[0].version

    async def _import(self, record: StoredEvent) -> tuple[Outcome, str]:
        """Append one event at its own version: IMPORTED, DUPLICATE, or RETRY with the gap described."""
        expected = record.version - 1 if record.version > 1 else NO_STREAM
        try:
            await self._store.append(self._local(record), [self._new(record)], expected)
        except ConcurrencyError as conflict:
            if conflict.actual >= record.version:
                return Outcome.DUPLICATE, ""
            return Outcome.RETRY, (
                f"gap: stream {record.stream_id} of {self.source} is imported up to version {conflict.actual}, "
                f"this event is version {record.version}"
            )
        return Outcome.IMPORTED, ""

    async def _failed(
        self, record: StoredEvent, attempts: int, error: str, parked: set[str], limit: int | None = None
    ) -> Outcome:
        if attempts < (self.max_attempts if limit is None else limit):
            return Outcome.RETRY
        return await self._park(record, attempts, error, parked)

    async def _park(self, record: StoredEvent, attempts: int, error: str, parked: set[str]) -> Outcome:
        letter = DeadLetter(
            self.source, record.stream_id, record.version, record_json(record), error, attempts, record.event_id
        )
        await self.dead_letters.park(letter)
        parked.add(record.stream_id)
        return Outcome.PARKED

    async def _retry_one(self, letter: DeadLetter) -> bool:
        try:
            record = self._read_parked(letter)
        except Exception as exc:  # still unreadable with this code
            await self.dead_letters.failed_again(letter, _describe(exc))
            return False
        error = self._invalid(record)
        outcome, reason = (Outcome.RETRY, error) if error is not None else await self._import(record)
        if outcome is Outcome.RETRY:
            await self.dead_letters.failed_again(letter, reason)
            return False
        await self.dead_letters.remove(letter.source, letter.stream_id, letter.version)  # after the import: crash-safe
        return True

    def _read_parked(self, letter: DeadLetter) -> StoredEvent:
        if letter.stream_id != UNREADABLE_STREAM:
            return record_from_json(letter.payload)
        if self._decode_raw is None:
            raise ValueError("no decoder for unreadable messages was given to this importer")
        return self._decode_raw(letter.payload)

    def _invalid(self, record: StoredEvent) -> str | None:
        """Why the service's handlers could not read ``record`` (``None`` if they can, or ignore its type)."""
        if record.type not in self._types:
            return None
        try:
            self._types.decode(record.type, record.data, record.schema_version)
        except Exception as exc:  # a validation error, a missing upcaster: the data does not fit the class
            return _describe(exc)
        return None

    def _local(self, record: StoredEvent) -> str:
        return imported_stream_id(self.source, record.stream_id)

    def _new(self, record: StoredEvent) -> NewEvent:
        metadata = {
            **record.metadata,
            "source": self.source,
            "source_position": record.position,
            "source_time": record.recorded_at.isoformat(),
        }
        return NewEvent(record.type, record.data, metadata, record.event_id, record.schema_version)

    def _writes(self, records: Sequence[StoredEvent]) -> list[StreamWrite]:
        """One write per stream, expecting the version just before its first event here."""
        by_stream: dict[str, list[StoredEvent]] = {}
        for record in records:
            by_stream.setdefault(record.stream_id, []).append(record)
        return [
            StreamWrite(
                imported_stream_id(self.source, stream_id),
                [self._new(r) for r in events],
                events[0].version - 1 if events[0].version > 1 else NO_STREAM,
            )
            for stream_id, events in by_stream.items()
        ]


def _consecutive(records: Sequence[StoredEvent]) -> bool:
    """True when each stream's events among ``records`` follow one another by version."""
    last: dict[str, int] = {}
    for record in records:
        previous = last.get(record.stream_id)
        if previous is not None and record.version != previous + 1:
            return False
        last[record.stream_id] = record.version
    return True


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def record_json(record: StoredEvent) -> str:
    """A source event as JSON text, as it is kept while parked."""
    fields = {
        "position": record.position,
        "stream_id": record.stream_id,
        "version": record.version,
        "event_id": record.event_id,
        "type": record.type,
        "schema_version": record.schema_version,
        "data": record.data,
        "metadata": record.metadata,
        "recorded_at": record.recorded_at.isoformat(),
    }
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def record_from_json(text: str) -> StoredEvent:
    """The source event kept by :func:`record_json`."""
    fields = json.loads(text)
    fields["recorded_at"] = datetime.fromisoformat(fields["recorded_at"])
    return StoredEvent(**fields)
