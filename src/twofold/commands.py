"""The command side: a handler loads aggregates, decides, and the dispatcher appends atomically.

    async def place_order(command: PlaceOrder, uow: UnitOfWork) -> None:
        order = await uow.load(Order, command.order_id)
        uow.emit(order, order.place(command.customer_id, command.lines))

Everything a handler emits, across any number of streams, is appended in one transaction with
each stream's expected version taken from the state the handler loaded. When another writer got
there first, the dispatcher runs the handler again on fresh state, a bounded number of times.

An aggregate declared with ``snapshot_every=N`` loads from its newest snapshot, an ordinary event
in stream ``snapshot-<stream_id>``, plus the events after it; the dispatcher appends a new snapshot
whenever a command carries the aggregate past a multiple of ``N``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import ValidationError

from twofold.aggregate import SNAPSHOT_CATEGORY, Aggregate
from twofold.errors import AccessDenied, ConcurrencyError, ConfigurationError, NotFound, StoreError
from twofold.messages import Command, Envelope, Event, EventTypes, Upcaster
from twofold.observability import trace_context
from twofold.personal import KeyStore, PersonalData
from twofold.store import NO_STREAM, AppendResult, EventStore, NewEvent, StoredEvent, StreamWrite

__all__ = [
    "SNAPSHOT_TYPE",
    "CommandDispatcher",
    "CommandHandler",
    "CommandResult",
    "UnitOfWork",
    "fold_stream",
    "snapshot_stream",
]

log = logging.getLogger("twofold.commands")

A = TypeVar("A", bound=Aggregate)
SNAPSHOT_TYPE = "twofold.Snapshot"
CommandHandler = Callable[[Any, "UnitOfWork"], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What a command did: its first stream's new version and the global position of its last event.

    A command that emitted nothing has no ``position``; a repeated command id returns the first result.
    """

    command_id: str
    stream_id: str | None
    version: int | None
    position: int | None
    events: Sequence[StoredEvent]

    @classmethod
    def of(cls, command_id: str, appended: AppendResult, first_stream: str | None) -> CommandResult:
        stream_id = first_stream or next(iter(appended.versions), None)
        version = appended.versions.get(stream_id) if stream_id else None
        return cls(command_id, stream_id, version, appended.position, tuple(appended.events))


class UnitOfWork:
    """What one attempt at a command loaded and emitted; handed to the command's handler.

    Args:
        store: where aggregates are loaded from.
        envelope: the command being handled.
        upcasters: bring events stored at older schema versions up to the aggregates' classes.
    """

    def __init__(self, store: EventStore, envelope: Envelope[Any], *, upcasters: Sequence[Upcaster] = ()) -> None:
        self._store = store
        self.envelope = envelope
        self._upcasters = tuple(upcasters)
        self._states: dict[str, Aggregate] = {}
        self._expected: dict[str, int] = {}
        self._pending: dict[str, list[Event]] = {}
        self._personal = PersonalData(store if isinstance(store, KeyStore) else None)
        self.forgotten: list[str] = []

    @property
    def principal(self) -> str | None:
        """Who sent the command (``None`` when authentication is off)."""
        return self.envelope.principal

    async def load(self, aggregate_type: type[A], id: str) -> A:
        """The aggregate's current state; a new, empty one (``version`` 0) if its stream does not exist."""
        state = aggregate_type(id=id)
        cached = self._states.get(state.stream_id)
        if cached is not None:
            if not isinstance(cached, aggregate_type):
                raise TypeError(f"Stream {state.stream_id} was loaded as {type(cached).__name__}")
            return cached
        state = await _latest_snapshot(self._store, state, self.envelope.tenant)
        state = await fold_stream(
            self._store, state, upcasters=self._upcasters, check=self._check_tenant, personal=self._personal
        )
        self._states[state.stream_id] = state
        self._expected[state.stream_id] = state.version
        return state

    def _check_tenant(self, stream_id: str, metadata: Mapping[str, Any]) -> None:
        """A stream belongs to the tenant its events were written for; no other may load it.

        The refusal does not say whose it is: a tenant learns only that the id is taken.
        """
        if metadata.get("tenant") != self.envelope.tenant:
            raise AccessDenied(f"Stream {stream_id} belongs to another tenant")

    def emit(self, aggregate: A, events: Event | Iterable[Event]) -> A:
        """Record ``events`` for ``aggregate``'s stream and return its state after them.

        Emit from the latest state: emitting twice from the same value would decide twice on stale
        state, so it is refused.
        """
        batch = [events] if isinstance(events, Event) else list(events)
        stream_id = aggregate.stream_id
        expected = self._expected.setdefault(stream_id, aggregate.version)
        pending = self._pending.setdefault(stream_id, [])
        if aggregate.version != expected + len(pending):
            raise RuntimeError(
                f"Stale state for stream {stream_id}: emitted from version {aggregate.version}, "
                f"but this command already brought it to {expected + len(pending)}; emit from the value emit returned"
            )
        pending.extend(batch)
        state = aggregate.fold(batch)
        self._states[stream_id] = state
        return state

    def forget(self, subject: str) -> None:
        """Destroy ``subject``'s key before this command's events are appended (``twofold.personal``).

        The key goes first: should the append then fail, the data is already unreadable and the
        command, run again, records the forgetting.
        """
        self.forgotten.append(subject)

    @property
    def emitted(self) -> list[Event]:
        """Every event this command emitted so far, stream by stream."""
        return [e for events in self._pending.values() for e in events]

    def writes(self, stored: Mapping[int, Mapping[str, Any]] | None = None) -> list[StreamWrite]:
        """One write per stream that has events, each expecting the version it was loaded at.

        ``stored`` gives events' stored data by ``id()`` (their personal fields sealed); the others
        are stored as they dump.
        """
        metadata, stored = self._metadata(), stored or {}
        return [
            StreamWrite(
                stream_id,
                [
                    NewEvent(
                        e.type_name,
                        stored.get(id(e)) or e.model_dump(mode="json"),
                        metadata,
                        schema_version=e.schema_version,
                    )
                    for e in events
                ],
                self._expected[stream_id] or NO_STREAM,
            )
            for stream_id, events in self._pending.items()
            if events
        ]

    def snapshot_writes(self) -> list[StreamWrite]:
        """A snapshot of each aggregate whose new events carried it past a multiple of its ``snapshot_every``."""
        due: list[StreamWrite] = []
        for stream_id, events in self._pending.items():
            state = self._states[stream_id]
            every = type(state).snapshot_every
            if events and every and self._expected[stream_id] // every < state.version // every:
                due.append(StreamWrite(snapshot_stream(stream_id), [_snapshot_event(state, self.envelope.tenant)]))
        return due

    def version_of(self, stream_id: str) -> int:
        """The version a stream has with this command's events so far."""
        return self._states[stream_id].version

    @property
    def first_stream(self) -> str | None:
        return next((s for s, events in self._pending.items() if events), next(iter(self._states), None))

    def _metadata(self) -> dict[str, Any]:
        envelope = self.envelope
        return {
            "command_id": envelope.message_id,
            "command_type": envelope.type_name,
            "correlation_id": envelope.correlation_id,
            "causation_id": envelope.message_id,
            "principal": envelope.principal,
            "tenant": envelope.tenant,
            **trace_context(),  # the command's span: what the events cause continues its trace
        }


class CommandDispatcher:
    """Routes each command type to its one handler and appends what the handler decides.

    Args:
        store: where events are appended.
        handlers: command class → ``async def handler(command, uow)``.
        max_attempts: how often a command runs when other writers keep moving its streams on.
        upcasters: bring events stored at older schema versions up to the aggregates' classes.
    """

    def __init__(
        self,
        store: EventStore,
        handlers: Mapping[type[Command], CommandHandler],
        *,
        max_attempts: int = 5,
        upcasters: Sequence[Upcaster] = (),
    ) -> None:
        self._store = store
        self._handlers = dict(handlers)
        self._max_attempts = max_attempts
        self._upcasters = tuple(upcasters)
        self._keys = store if isinstance(store, KeyStore) else None

    async def dispatch(self, envelope: Envelope[Command], *, new_id: bool = False) -> CommandResult:
        """Run a command at most once per ``envelope.message_id``; raise what its handler raises.

        ``new_id=True`` says the id was generated for this dispatch, so no earlier run can have
        recorded it, and the lookup before the handler runs is skipped (the store still checks
        the id when it appends).
        """
        handler = self._handlers.get(type(envelope.message))
        if handler is None:
            raise NotFound(f"No handler for command {envelope.type_name}")
        command_id = envelope.message_id
        if not new_id and (previous := await self._recorded(command_id)) is not None:
            return previous
        for attempt in range(1, self._max_attempts + 1):
            uow = UnitOfWork(self._store, envelope, upcasters=self._upcasters)
            try:
                await handler(envelope.message, uow)
            except Exception:
                # A concurrent dispatch of the same id may have appended since the check above; then
                # the handler refuses on state the command itself made, and the first result stands.
                if (previous := await self._recorded(command_id)) is not None:
                    return previous
                raise
            writes = uow.writes(await PersonalData(self._keys).seal(uow.emitted))
            if not writes:
                return self._unchanged(command_id, uow)
            for subject in uow.forgotten:
                await self._forget(subject)
            try:
                appended = await self._store.append_streams(writes, command_id)
            except ConcurrencyError:
                if attempt == self._max_attempts:
                    raise
                await asyncio.sleep(random.uniform(0, 0.002 * attempt))  # spread contending retries apart
                continue
            await self._save_snapshots(uow)
            return CommandResult.of(command_id, appended, uow.first_stream)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _forget(self, subject: str) -> None:
        if self._keys is None:
            raise ConfigurationError("Forgetting a subject needs an event store that keeps keys")
        await self._keys.forget_subject(subject)

    async def _save_snapshots(self, uow: UnitOfWork) -> None:
        """Append the snapshots ``uow`` made due, best effort: the command has already succeeded."""
        for write in uow.snapshot_writes():
            try:
                await self._store.append(write.stream_id, write.events)
            except Exception:  # a missing snapshot only costs a longer replay; never fail the command for it
                log.warning(
                    "Could not save snapshot %s; loads replay from the previous one", write.stream_id, exc_info=True
                )

    async def _recorded(self, command_id: str) -> CommandResult | None:
        previous = await self._store.command_result(command_id)
        return None if previous is None else CommandResult.of(command_id, previous, None)

    @staticmethod
    def _unchanged(command_id: str, uow: UnitOfWork) -> CommandResult:
        stream_id = uow.first_stream
        return CommandResult(command_id, stream_id, uow.version_of(stream_id) if stream_id else None, None, ())


async def fold_stream(
    store: EventStore,
    state: A,
    *,
    upcasters: Sequence[Upcaster] = (),
    to_version: int | None = None,
    check: Callable[[str, Mapping[str, Any]], None] | None = None,
    personal: PersonalData | None = None,
) -> A:
    """``state`` after the events of its stream from ``state.version + 1`` up to ``to_version`` (the end).

    How every aggregate is loaded, by commands and by inspection alike. ``check(stream_id, metadata)``
    sees each event before it is folded, and may refuse it by raising. Personal fields are read in
    clear through ``personal`` (by default, the store's own keys), or as the placeholder once forgotten.
    """
    aggregate_type = type(state)
    version, event_types = state.version, _event_types(aggregate_type, tuple(upcasters))
    personal = personal or PersonalData(store if isinstance(store, KeyStore) else None)
    async for stored in store.read_stream(state.stream_id, from_version=version + 1, to_version=to_version):
        if check is not None:
            check(stored.stream_id, stored.metadata)
        [stored] = await personal.open([stored], event_types)
        if stored.type not in event_types:
            raise StoreError(
                f"Stream {stored.stream_id} holds a {stored.type} event at version {stored.version}, "
                f"which {aggregate_type.__name__}.evolve does not name in its annotation"
            )
        state = state.evolve(event_types.decode(stored.type, stored.data, stored.schema_version))
        version = stored.version
    return state.model_copy(update={"version": version})


@functools.cache
def _event_types(aggregate_type: type[Aggregate], upcasters: tuple[Upcaster, ...]) -> EventTypes:
    return EventTypes(aggregate_type.event_types(), upcasters)


def snapshot_stream(stream_id: str) -> str:
    """``product-A-1`` → ``snapshot-product-A-1``: where that stream's snapshots are appended."""
    return f"{SNAPSHOT_CATEGORY}-{stream_id}"


def _snapshot_event(state: Aggregate, tenant: str | None) -> NewEvent:
    data = {"schema": _schema_of(type(state)), "state": state.model_dump(mode="json")}
    return NewEvent(SNAPSHOT_TYPE, data, {"stream_id": state.stream_id, "version": state.version, "tenant": tenant})


async def _latest_snapshot(store: EventStore, empty: A, tenant: str | None) -> A:
    """The newest usable snapshot of ``empty``'s stream, or ``empty`` when there is none.

    A snapshot taken by a different shape of the aggregate class is ignored: replaying every
    event is slower but always right. One taken for another tenant is ignored too, so the
    events after it, which carry their tenant, decide whether this command may load the stream.
    """
    aggregate_type = type(empty)
    if aggregate_type.snapshot_every is None:
        return empty
    stream_id = snapshot_stream(empty.stream_id)
    last = await store.stream_version(stream_id)
    records = [r async for r in store.read_stream(stream_id, from_version=last)] if last else []
    if not records:
        return empty
    data = records[-1].data
    if records[-1].metadata.get("tenant") != tenant:
        return empty
    if records[-1].type != SNAPSHOT_TYPE or data.get("schema") != _schema_of(aggregate_type):
        log.info("Ignoring snapshot %s at version %d: the aggregate class changed", stream_id, records[-1].version)
        return empty
    try:
        state = aggregate_type.model_validate(data.get("state"))
    except ValidationError:
        log.info("Ignoring snapshot %s at version %d: it no longer validates", stream_id, records[-1].version)
        return empty
    return state if state.id == empty.id and state.version > 0 else empty


@functools.cache
def _schema_of(aggregate_type: type[Aggregate]) -> str:
    """A fingerprint of the aggregate's state schema; a snapshot is only read by the same schema."""
    try:
        schema: object = aggregate_type.model_json_schema()
    except Exception:  # a field pydantic cannot describe: fall back to the annotations
        schema = {name: repr(field.annotation) for name, field in aggregate_type.model_fields.items()}
    text = json.dumps(schema, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
