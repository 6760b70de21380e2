"""Runs one saga: feeds it events in global order and fires its deadlines, durably.

Each reaction is one event, ``twofold.SagaReacted``, appended to the instance's stream under a
command id derived from what triggered it (an event id, or a deadline). It holds the instance's
new state, its pending deadlines and compensations, and the commands to send, each with an id of
its own. So the work of a reaction survives any crash:

1. react and append (a second run finds the first append by its command id and reuses it);
2. send the recorded commands (a resend has no second effect: receivers apply a command id once);
3. commit the checkpoint together with the read-store tables that list instances and deadlines.

Deadlines are rows in the read store, written in step 3 from the recorded reactions; the runner
fires those due whenever it has no events to process, so a deadline set before a restart fires
after it. The tables also make sagas inspectable: ``twofold_sagas`` holds each instance's latest
state and status.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ConfigDict

from twofold.errors import ConcurrencyError
from twofold.health import Progress, Total, progress_of
from twofold.messages import Command, Envelope, Event, EventTypes, Upcaster, utc_now
from twofold.observability import handling, reaction_span, trace_context
from twofold.personal import KeyStore, PersonalData
from twofold.readmodels import CheckpointConflict, Database, ReadStore
from twofold.sagas import Actions, Saga, SentCommand, Timeout, stream_of
from twofold.store import NO_STREAM, EventStore, NewEvent, StoredEvent
from twofold.store._follow import IDLE_WAIT

__all__ = ["REACTED", "SagaRunner", "SagaState", "SendCommand"]

log = logging.getLogger("twofold.sagas")

REACTED = "twofold.SagaReacted"
RETRY_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)  # seconds before re-trying a failed page, then every 5 s
MAX_ATTEMPTS = 10  # reactions re-run when a deadline and an event move one instance on at once
DUE_PAGE = 100  # deadlines fired per read of the deadline table
CONCURRENT_INSTANCES = 16  # instances reacting at once within a page
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_IDS = uuid.UUID("6f1d3c2e-8f3b-4a8e-9c47-2b1f0d6a7e55")  # namespace of the ids derived from triggers

SendCommand = Callable[[str | None, Envelope[Command]], Awaitable[None]]

SETUP = (
    "CREATE TABLE IF NOT EXISTS twofold_sagas (saga TEXT NOT NULL, instance TEXT NOT NULL, version INTEGER NOT NULL,"
    " status TEXT NOT NULL, state TEXT NOT NULL, updated_at TEXT NOT NULL, PRIMARY KEY (saga, instance))",
    "CREATE TABLE IF NOT EXISTS twofold_saga_deadlines (saga TEXT NOT NULL, instance TEXT NOT NULL,"
    " name TEXT NOT NULL, due_at TEXT NOT NULL, PRIMARY KEY (saga, instance, name))",
    "CREATE INDEX IF NOT EXISTS twofold_saga_deadlines_due ON twofold_saga_deadlines (saga, due_at)",
)
UPSERT_INSTANCE = (
    "INSERT INTO twofold_sagas (saga, instance, version, status, state, updated_at) VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (saga, instance) DO UPDATE SET version = excluded.version, status = excluded.status,"
    " state = excluded.state, updated_at = excluded.updated_at WHERE twofold_sagas.version < excluded.version"
)


@dataclass(frozen=True, slots=True)
class SagaState:
    """One instance as its latest reaction left it."""

    saga: Saga
    deadlines: dict[str, datetime]
    compensations: tuple[SentCommand, ...]
    completed: bool
    updated_at: datetime
    metadata: Mapping[str, Any] = field(default_factory=dict)  # the latest reaction's: who, for which tenant

    @property
    def status(self) -> str:
        return "completed" if self.completed else "active"


class SagaRunner:
    """Keeps one saga fed with events and deadlines; a worker of the runtime that owns the saga.

    Args:
        saga: the saga class.
        store: the service's event store: triggers are read from it, reactions appended to it.
        read_store: where the checkpoint, the instance list and the deadlines live.
        send: delivers a recorded command to a service (``None``: this one).
        batch_size: the most events read per page.
        upcasters: bring events stored at older schema versions up to the classes ``react`` names.
        clock: the wall clock deadlines are compared with (tests pass their own).
    """

    def __init__(
        self,
        saga: type[Saga],
        store: EventStore,
        read_store: ReadStore[Database],
        send: SendCommand,
        *,
        batch_size: int = 500,
        upcasters: Sequence[Upcaster] = (),
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.saga = saga
        self._store = store
        self._read_store = read_store
        self._send = send
        self._batch_size = batch_size
        self._types = EventTypes(saga.event_types(), upcasters)
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        # One page or one round of deadlines at a time, whether the runner's task or catch_up does
        # it: when catch_up returns, no reaction of this runner is half done, its sends included.
        self._busy = asyncio.Lock()
        self.position = 0
        self.reactions = 0  # triggers and deadlines this runner has handled, for /metrics
        self.failures = 0
        self.last_error: str | None = None
        self.last_progress = utc_now()

    @property
    def name(self) -> str:
        """The checkpoint's name in the read store."""
        return f"saga.{self.saga.name}"

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        await self._read_store.transact(self.name, _setup)
        self.position = await self._read_store.checkpoint(self.name)
        self.last_progress = utc_now()
        self._task = asyncio.create_task(self._run(), name=f"saga {self.saga.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def progress(self) -> Progress:
        return await progress_of(self.name, self._store, self.position, self.last_progress)

    def totals(self) -> list[Total]:
        return [Total("saga_reactions", {"saga": self.saga.name}, self.reactions)]

    async def catch_up(self) -> None:
        """React to every event committed so far, then return (for tests and tools)."""
        head = await self._store.head_position()
        while self.position < head:
            page = [e async for e in self._store.read_all(self.position + 1, self._batch_size)]
            if not page:
                return
            await self.apply_page(page)

    async def apply_page(self, page: Sequence[StoredEvent]) -> None:
        """React to the page's events in order, then commit the checkpoint and the tables at once."""
        async with self._busy:
            await self._apply_page(page)

    async def _apply_page(self, page: Sequence[StoredEvent]) -> None:
        page = [e for e in page if e.position > self.position]
        if not page:
            return
        triggers: dict[str, list[tuple[Event, StoredEvent]]] = {}
        keys = self._store if isinstance(self._store, KeyStore) else None
        handled = [r for r in page if r.type in self._types]
        for record in await PersonalData(keys).open(handled, self._types):
            event = self._types.decode(record.type, record.data, record.schema_version)
            instance = self.saga.instance_of(event)
            if instance is not None:
                triggers.setdefault(instance, []).append((event, record))
        changed: dict[str, SagaState] = {}
        room = asyncio.Semaphore(CONCURRENT_INSTANCES)

        async def react_in_order(instance: str, steps: list[tuple[Event, StoredEvent]]) -> None:
            async with room:
                for event, record in steps:
                    changed[instance] = await self._react(instance, event, record)

        # Instances are independent: each reacts to its own events in order, several at once, so
        # that the round trips of one reaction (store, broker) overlap with another's.
        # A failure stops the others (the page is tried again) and is raised as itself.
        try:
            async with asyncio.TaskGroup() as group:
                for instance, steps in triggers.items():
                    group.create_task(react_in_order(instance, steps))
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None
        try:
            await self._read_store.transact(
                self.name, _record(self.saga.name, changed), expected=self.position, position=page[-1].position
            )
        except CheckpointConflict as conflict:  # another runner got there; its tables are as good as ours
            self.position = conflict.actual
            return
        self.position = page[-1].position
        self.last_progress = utc_now()

    async def fire_due(self, now: datetime | None = None) -> datetime | None:
        """Fire every deadline due by ``now``; return when the next one falls due (``None``: none pending)."""
        async with self._busy:
            return await self._fire_due(now or self._clock())

    async def _fire_due(self, now: datetime) -> datetime | None:
        while True:
            due = await self._read_store.read(_due(self.saga.name, now, DUE_PAGE))
            for row in due:
                instance, name, at = row["instance"], row["name"], _parse_time(row["due_at"])
                state = await self._react(instance, Timeout(name=name, at=at), None)
                await self._read_store.transact(self.name, _record(self.saga.name, {instance: state}))
            if len(due) < DUE_PAGE:
                break
        upcoming = await self._read_store.read(_next_due(self.saga.name))
        return _parse_time(upcoming["due_at"]) if upcoming else None

    async def state(self, instance: str) -> SagaState | None:
        """The instance as its latest reaction left it, from the event store (``None``: never started)."""
        stream_id = stream_of(self.saga, instance)
        version = await self._store.stream_version(stream_id)
        if not version:
            return None
        records = [r async for r in self._store.read_stream(stream_id, from_version=version)]
        return self._state_of(instance, records[-1])

    async def _react(self, instance: str, message: Event, trigger: StoredEvent | None) -> SagaState:
        """React once per trigger: reuse the recorded reaction if there is one, then send its commands.

        A deadline has no trigger: its span continues the trace of the instance's latest reaction.
        """
        reaction_id = _reaction_id(self.saga.name, instance, message, trigger)
        cause = trigger.metadata if trigger is not None else await self._latest_metadata(instance)
        causation = trigger.event_id if trigger is not None else reaction_id
        with (
            reaction_span(self.saga.name, instance, cause, message.type_name),
            handling(command_id=reaction_id, causation_id=causation),
        ):
            state = await self._reaction(instance, message, trigger, reaction_id)
        self.reactions += 1
        return state

    async def _latest_metadata(self, instance: str) -> Mapping[str, Any]:
        current = await self.state(instance)
        return current.metadata if current is not None else {}

    async def _reaction(
        self, instance: str, message: Event, trigger: StoredEvent | None, reaction_id: str
    ) -> SagaState:
        recorded = await self._store.command_result(reaction_id)
        for _ in range(MAX_ATTEMPTS):
            if recorded is not None:
                break
            current = await self.state(instance)
            version = current.saga.version if current else 0
            if current is not None and (current.completed or _stale(message, current)):
                return current  # nothing to do: a finished instance, or a deadline since moved or dropped
            new_event = self._decide(instance, current, message, trigger, reaction_id)
            try:
                recorded = await self._store.append(
                    stream_of(self.saga, instance), [new_event], version or NO_STREAM, command_id=reaction_id
                )
            except ConcurrencyError:  # a deadline fired for this instance meanwhile: decide again on fresh state
                recorded = await self._store.command_result(reaction_id)
        if recorded is None:
            raise ConcurrencyError(stream_of(self.saga, instance), "a stable version", -1)
        reaction = recorded.events[-1]
        for sent in reaction.data["sends"]:
            await self._deliver(SentCommand.from_json(sent), reaction)
        return self._state_of(instance, reaction)

    def _decide(
        self, instance: str, current: SagaState | None, message: Event, trigger: StoredEvent | None, reaction_id: str
    ) -> NewEvent:
        now = trigger.recorded_at if trigger is not None else message.at  # type: ignore[attr-defined]
        do = Actions(now, dict(current.deadlines) if current else {}, list(current.compensations) if current else [])
        if isinstance(message, Timeout):
            do.timeouts.pop(message.name, None)  # a deadline fires once, unless react sets it again
        saga = current.saga if current else self.saga(id=instance)
        new = saga.react(message, do)
        sends = [
            SentCommand(s.service, s.type, s.data, str(uuid.uuid5(_IDS, f"{reaction_id}:{i}")))
            for i, s in enumerate(do.sends)
        ]
        data = {
            "saga": self.saga.name,
            "instance": instance,
            "trigger": {"type": message.type_name, "event_id": trigger.event_id if trigger else None},
            "state": new.model_dump(mode="json", exclude={"id", "version"}),
            "deadlines": {name: _format_time(at) for name, at in sorted(do.timeouts.items())},
            "compensations": [c.to_json() for c in do.compensations],
            "sends": [s.to_json() for s in sends],
            "completed": do.completed,
        }
        metadata = _metadata_of(trigger, reaction_id, current)
        return NewEvent(REACTED, data, metadata, event_id=reaction_id)

    async def _deliver(self, sent: SentCommand, reaction: StoredEvent) -> None:
        metadata = reaction.metadata
        envelope: Envelope[Command] = Envelope(
            recorded_command(sent.type, sent.data),
            message_id=sent.command_id,
            correlation_id=str(metadata.get("correlation_id") or ""),
            causation_id=reaction.event_id,
            principal=metadata.get("principal"),
            tenant=metadata.get("tenant"),
            traceparent=metadata.get("traceparent"),  # the reaction's span, as recorded: a resend stays in it
            tracestate=metadata.get("tracestate"),
        )
        await self._send(sent.service, envelope)

    def _state_of(self, instance: str, reaction: StoredEvent) -> SagaState:
        data = reaction.data
        saga = self.saga.model_validate({**data["state"], "id": instance, "version": reaction.version})
        return SagaState(
            saga,
            {name: _parse_time(at) for name, at in data["deadlines"].items()},
            tuple(SentCommand.from_json(c) for c in data["compensations"]),
            bool(data["completed"]),
            reaction.recorded_at,
            reaction.metadata,
        )

    async def _run(self) -> None:
        while True:
            try:
                page = [e async for e in self._store.read_all(self.position + 1, self._batch_size)]
                if page:
                    await self.apply_page(page)
                else:
                    next_due = await self.fire_due()
                    self.last_progress = utc_now()
                    wait = IDLE_WAIT
                    if next_due is not None:
                        wait = max(0.0, min(wait, (next_due - self._clock()).total_seconds()))
                    await self._store.wait_for_events(self.position, wait)
                self.failures, self.last_error = 0, None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failing reaction must not kill the runner: retry it
                delay = RETRY_DELAYS[min(self.failures, len(RETRY_DELAYS) - 1)]
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("saga %s failed after position %d; retrying in %ss", self.saga.name, self.position, delay)
                await asyncio.sleep(delay)


def recorded_command(type_name: str, data: dict[str, Any]) -> Command:
    """A command rebuilt from its recorded JSON, for a sender that needs only its name and fields."""
    return _command_class(type_name).model_validate(data)


_COMMAND_CLASSES: dict[str, type[Command]] = {}


def _command_class(type_name: str) -> type[Command]:
    cls = _COMMAND_CLASSES.get(type_name)
    if cls is None:
        cls = type(type_name.rpartition(".")[2] or "Recorded", (_RecordedCommand,), {}, name=type_name)
        _COMMAND_CLASSES[type_name] = cls
    return cls


class _RecordedCommand(Command):
    """Any command's fields, unchecked: the receiving service validates them against its own class."""

    model_config = ConfigDict(extra="allow", frozen=True)


def _reaction_id(saga: str, instance: str, message: Event, trigger: StoredEvent | None) -> str:
    if trigger is not None:
        cause = f"event:{trigger.event_id}"
    else:
        assert isinstance(message, Timeout)
        cause = f"deadline:{message.name}:{_format_time(message.at)}"
    return str(uuid.uuid5(_IDS, f"{saga}:{instance}:{cause}"))


def _stale(message: Event, current: SagaState) -> bool:
    """A deadline row whose deadline the instance no longer has (moved or cancelled since)."""
    return isinstance(message, Timeout) and current.deadlines.get(message.name) != message.at


def _metadata_of(trigger: StoredEvent | None, reaction_id: str, current: SagaState | None) -> dict[str, Any]:
    """A reaction's metadata: the trigger's correlation, principal and tenant; a deadline, which
    has no trigger, keeps those of the instance's latest reaction, so that what it sends acts for
    the same tenant and stays in the same causal trace."""
    source = trigger.metadata if trigger is not None else (current.metadata if current is not None else {})
    return {
        "command_id": reaction_id,
        "command_type": REACTED,
        "correlation_id": source.get("correlation_id") or reaction_id,
        "causation_id": trigger.event_id if trigger is not None else reaction_id,
        "principal": source.get("principal"),
        "tenant": source.get("tenant"),
        **trace_context(),  # the reaction's span: the commands it sends continue its trace
    }


def _setup(db: Database) -> None:
    for statement in SETUP:
        db.execute(statement)


def _record(saga: str, changed: dict[str, SagaState]) -> Callable[[Database], None]:
    """The read-store side of some reactions: each instance's row and its pending deadlines."""

    def work(db: Database) -> None:
        for instance, state in changed.items():
            state_json = json.dumps(state.saga.model_dump(mode="json", exclude={"id", "version"}), sort_keys=True)
            updated = _format_time(state.updated_at)
            db.execute(UPSERT_INSTANCE, (saga, instance, state.saga.version, state.status, state_json, updated))
            db.execute("DELETE FROM twofold_saga_deadlines WHERE saga = ? AND instance = ?", (saga, instance))
            db.executemany(
                "INSERT INTO twofold_saga_deadlines (saga, instance, name, due_at) VALUES (?, ?, ?, ?)",
                [(saga, instance, name, _format_time(at)) for name, at in state.deadlines.items()],
            )

    return work


def _due(saga: str, now: datetime, limit: int) -> Callable[[Database], list[dict[str, Any]]]:
    def read(db: Database) -> list[dict[str, Any]]:
        return db.fetch_all(
            "SELECT instance, name, due_at FROM twofold_saga_deadlines WHERE saga = ? AND due_at <= ?"
            " ORDER BY due_at, instance, name LIMIT ?",
            (saga, _format_time(now), limit),
        )

    return read


def _next_due(saga: str) -> Callable[[Database], dict[str, Any] | None]:
    def read(db: Database) -> dict[str, Any] | None:
        return db.fetch_one(
            "SELECT due_at FROM twofold_saga_deadlines WHERE saga = ? ORDER BY due_at LIMIT 1",
            (saga,),
        )

    return read


def _format_time(at: datetime) -> str:
    """UTC, fixed width: text that sorts as the times do, on every backend."""
    return at.astimezone(UTC).strftime(TIME_FORMAT)


def _parse_time(text: str) -> datetime:
    return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC)


async def saga_instances(
    read_store: ReadStore[Database], saga: str, *, status: str | None = None, after: str = "", limit: int = 100
) -> list[dict[str, Any]]:
    """Instances of ``saga`` in key order, from the read store: a page after key ``after``."""

    def read(db: Database) -> list[dict[str, Any]]:
        sql = "SELECT instance, version, status, state, updated_at FROM twofold_sagas WHERE saga = ? AND instance > ?"
        params: list[Any] = [saga, after]
        if status is not None:
            sql += " AND status = ?"
            params.append(status)
        rows = db.fetch_all(sql + " ORDER BY instance LIMIT ?", [*params, limit])
        deadlines = _deadlines_of(db, saga, [r["instance"] for r in rows])
        return [_instance_json(row, deadlines.get(row["instance"], {})) for row in rows]

    return await read_store.read(read)


async def saga_instance(read_store: ReadStore[Database], saga: str, instance: str) -> dict[str, Any] | None:
    """One instance of ``saga`` with its pending deadlines, from the read store (``None``: unknown)."""

    def read(db: Database) -> dict[str, Any] | None:
        row = db.fetch_one(
            "SELECT instance, version, status, state, updated_at FROM twofold_sagas WHERE saga = ? AND instance = ?",
            (saga, instance),
        )
        return None if row is None else _instance_json(row, _deadlines_of(db, saga, [instance]).get(instance, {}))

    return await read_store.read(read)


def _deadlines_of(db: Database, saga: str, instances: list[str]) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    if not instances:
        return found
    marks = ", ".join("?" for _ in instances)
    for row in db.fetch_all(
        f"SELECT instance, name, due_at FROM twofold_saga_deadlines WHERE saga = ? AND instance IN ({marks})",
        [saga, *instances],
    ):
        found.setdefault(row["instance"], {})[row["name"]] = row["due_at"]
    return found


def _instance_json(row: dict[str, Any], deadlines: dict[str, str]) -> dict[str, Any]:
    return {
        "instance": row["instance"],
        "version": row["version"],
        "status": row["status"],
        "state": json.loads(row["state"]),
        "deadlines": deadlines,
        "updated_at": row["updated_at"],
    }


async def saga_status_counts(read_store: ReadStore[Database]) -> dict[tuple[str, str], int]:
    """How many instances each saga has in each status: ``{("checkout", "active"): 3, …}``."""

    def read(db: Database) -> dict[tuple[str, str], int]:
        rows = db.fetch_all("SELECT saga, status, COUNT(*) AS instances FROM twofold_sagas GROUP BY saga, status")
        return {(row["saga"], row["status"]): int(row["instances"]) for row in rows}

    return await read_store.read(read)


async def ensure_saga_tables(read_store: ReadStore[Database]) -> None:
    """Create the tables that list instances and deadlines, if no runner has yet (a query replica)."""
    await read_store.transact("saga tables", _setup)
