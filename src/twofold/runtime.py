"""A service bound to its stores and running: the object an application or its tests hold.

    async with Runtime(shop, store=SQLiteEventStore("data/shop.db"),
                       read_store=SQLiteReadStore("data/shop-read.db")) as runtime:
        placed = await runtime.execute(PlaceOrder(order_id="o-1", customer_id="c-1", lines=[...]))
        history = await runtime.query(OrderHistory(customer_id="c-1"), min_position=placed.position)

One process can play every part (the embedded mode), or only some: leave out ``store`` for a query
replica, or pass ``project=False`` where projections run in a separate worker.

Projections whose ``target`` is ``"warehouse"`` or ``"search"`` write to the stores given in
``targets``; each runner gets its projection's store, and each target store its own tenancy.
``project`` may name the targets this process projects (``project={"sql"}``): an embedded store
is projected by the process that serves its queries (docs/architecture.md, "Read-model targets").

Other long-running parts, such as the relay to NATS, come in as ``workers``: started with the
runtime, stopped before its stores close.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Collection, Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol, Self

from twofold.bus import CommandSender
from twofold.commands import CommandDispatcher, CommandResult
from twofold.errors import AccessDenied, ConfigurationError, DomainError, InvalidMessage, NotFound
from twofold.health import Progress
from twofold.messages import Command, Envelope, Query, new_id, parse
from twofold.observability import command_span, handling
from twofold.projections import ProjectionRunner
from twofold.queries import QueryDispatcher
from twofold.readmodels import SQL_DIALECTS, Database, ReadStore
from twofold.rebuilds import OnProgress, rebuild_projection
from twofold.saga_runner import SagaRunner
from twofold.service import Service
from twofold.store import EventStore
from twofold.tenancy import Tenancy, check_tenant

__all__ = ["Runtime", "Worker"]

log = logging.getLogger("twofold.runtime")

REFUSALS = (AccessDenied, DomainError, InvalidMessage, NotFound)  # a sent command's answers, not faults


class Worker(Protocol):
    """A long-running part of a runtime (the relay, say): started with it, stopped before its stores close."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def progress(self) -> Progress:
        """Where it stands, for ``/ready`` and ``/metrics`` (a stuck worker turns them red)."""
        ...


class Runtime:
    """Runs a :class:`~twofold.service.Service` against an event store and a read store.

    Args:
        service: what to run.
        store: the event store; ``None`` in a process that only answers queries.
        read_store: where read models live (the ``"sql"`` target); ``None`` in a process that only handles commands.
        targets: the other target stores, by target (``{"warehouse": DuckDBReadStore(...)}``).
        project: run the service's projections in this process (needs the event store and each
            projection's target store); or the targets whose projections run here (sagas run with ``"sql"``).
        max_attempts: how often a command is tried when its streams keep moving on under it.
        batch_size: the most events a projection applies in one transaction.
        workers: other long-running parts to start and stop with the runtime, in order.
        bus: carries the commands this service's sagas send to other services.
    """

    def __init__(
        self,
        service: Service,
        *,
        store: EventStore | None = None,
        read_store: ReadStore[Database] | None = None,
        targets: Mapping[str, ReadStore[Any]] | None = None,
        project: bool | Collection[str] = True,
        max_attempts: int = 5,
        batch_size: int = 500,
        workers: Sequence[Worker] = (),
        bus: CommandSender | None = None,
    ) -> None:
        self.service = service
        self.bus = bus
        self.workers = list(workers)
        self.store = store
        self.read_store = read_store
        self.targets: dict[str, ReadStore[Any]] = dict(targets or {})
        if read_store is not None:
            self.targets["sql"] = read_store
        self.runners: dict[str, ProjectionRunner] = {}
        self.batch_size = batch_size
        self.sagas: dict[str, SagaRunner] = {}
        self.tenancies = {target: self._tenancy_of(target) for target in self.targets}
        self.tenancy = self.tenancies.get("sql")
        # project=True: every projection, each needing its target's store; none without a read store, as
        # in a process that only handles commands.
        every = {p.target for p in service.projections} | {"sql"} if read_store is not None else set()
        projected = set(every if project is True else () if project is False else project)
        if store is not None:
            self.runners = {
                p.name: ProjectionRunner(
                    p,
                    store,
                    self._target(p.target, p.name),
                    batch_size=batch_size,
                    upcasters=service.upcasters,
                    tenancy=self.tenancies[p.target],
                )
                for p in service.projections
                if p.target in projected
            }
        if "sql" in projected and store is not None and read_store is not None:
            self.sagas = {
                s.name: SagaRunner(s, store, read_store, self.send, batch_size=batch_size, upcasters=service.upcasters)
                for s in service.sagas
            }
        self._commands = (
            CommandDispatcher(store, service.commands, max_attempts=max_attempts, upcasters=service.upcasters)
            if store
            else None
        )
        names = [p.name for p in service.projections]
        self._queries = (
            QueryDispatcher(
                read_store,
                service.queries,
                names,
                self.runners,
                self.tenancy,
                targets=self.targets,
                tenancies=self.tenancies,
                target_of={p.name: p.target for p in service.projections},
            )
            if read_store
            else None
        )
        self._started = False
        self._lock = asyncio.Lock()

    def _target(self, target: str, projection: str) -> ReadStore[Any]:
        store = self.targets.get(target)
        if store is None:
            raise ConfigurationError(
                f"Projection {projection} writes to the {target!r} target, but this runtime has no such store:"
                f" give Runtime(targets={{{target!r}: ...}}) (or read_store= for 'sql'), or leave {target!r} out of"
                " project="
            )
        return store

    def _tenancy_of(self, target: str) -> Tenancy:
        """A target's tenancy; a store that is no SQL database registers its tenants in the read database."""
        store = self.targets[target]
        registry = self.read_store if store.dialect not in SQL_DIALECTS else None
        return Tenancy(store, [p for p in self.service.projections if p.target == target], registry=registry)

    async def start(self) -> None:
        """Set up read models and start the projections; calling it again does nothing."""
        async with self._lock:
            if self._started:
                return
            # The tasks started here inherit the service's name, for the log lines they write.
            with handling(service=self.service.name):
                for runner in self.runners.values():
                    await runner.start()
                for saga in self.sagas.values():
                    await saga.start()
                for worker in self.workers:
                    await worker.start()
            self._started = True

    async def stop(self) -> None:
        """Stop the workers and the projections, and close both stores."""
        async with self._lock:
            for worker in reversed(self.workers):
                await worker.stop()
            for saga in self.sagas.values():
                await saga.stop()
            for runner in self.runners.values():
                await runner.stop()
            close = getattr(self.bus, "close", None)  # a broker sender holds a connection; an in-process bus none
            if close is not None:
                await close()
            if self.store is not None:
                await self.store.close()
            for target in self.targets.values():
                await target.close()
            self._started = False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def execute(
        self,
        command: Command,
        *,
        command_id: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        principal: str | None = None,
        tenant: str | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> CommandResult:
        """Handle ``command`` once per ``command_id`` (a fresh id when left out), for ``principal`` and ``tenant``.

        Its span (``twofold.command <Type>``) continues the trace ``traceparent`` names, or the
        current span's when it is left out.
        """
        check_tenant(tenant)
        envelope = Envelope(
            command,
            message_id=command_id or new_id(),
            correlation_id=correlation_id or "",
            causation_id=causation_id,
            principal=principal,
            tenant=tenant,
            traceparent=traceparent,
            tracestate=tracestate,
        )
        with command_span(self.service.name, envelope):
            # An id made here was never recorded: the dispatcher need not look it up first.
            return await self._dispatch(envelope, new_id=not command_id)

    async def _dispatch(self, envelope: Envelope[Command], *, new_id: bool) -> CommandResult:
        if self._commands is None:
            raise ConfigurationError("This runtime has no event store: give Runtime(store=...) to handle commands")
        return await self._commands.dispatch(envelope, new_id=new_id)

    async def send(self, service: str | None, envelope: Envelope[Command]) -> None:
        """Deliver a command a saga sent: to this service (``None`` or its own name), or over the bus."""
        if service is not None and service != self.service.name:
            if self.bus is None:
                raise ConfigurationError(
                    f"A saga of {self.service.name} sends {envelope.type_name} to {service}, but this runtime has"
                    " no bus: give Runtime(bus=...)"
                )
            await self.bus.send(service, envelope)
            return
        await self.receive(envelope)

    async def receive(self, envelope: Envelope[Command]) -> None:
        """Handle a command another part sent, as a broker would deliver it: checked against this
        service's own class, applied once per id, a refusal logged (the sender learns from events).

        The refusal is logged inside the command's span, so that its log line names the span.
        """
        check_tenant(envelope.tenant)
        try:
            with command_span(self.service.name, envelope):
                try:
                    await self._dispatch(dataclasses.replace(envelope, message=self._parsed(envelope)), new_id=False)
                except REFUSALS as exc:
                    log.warning("%s refused %s %s: %s", self.service.name, envelope.type_name, envelope.message_id, exc)
                    raise
        except REFUSALS:
            return

    def _parsed(self, envelope: Envelope[Command]) -> Command:
        """The command in this service's own class: a sender may hold only its name and fields."""
        command_type = self.service.command_type(envelope.type_name)
        if command_type is None:
            raise NotFound(f"{self.service.name} has no command {envelope.type_name}")
        return parse(command_type, envelope.message.model_dump(mode="json"))

    async def query(
        self, query: Query, *, min_position: int | None = None, timeout: float = 5.0, tenant: str | None = None
    ) -> Any:
        """Answer ``query`` from ``tenant``'s read models, first waiting up to ``timeout`` s for ``min_position``."""
        if self._queries is None:
            raise ConfigurationError("This runtime has no read store: give Runtime(read_store=...) to answer queries")
        return await self._queries.ask(query, min_position=min_position, timeout=timeout, tenant=tenant)

    async def positions(self) -> Mapping[str, int]:
        """Each projection's committed checkpoint, as its target store has it (those whose store is open here)."""
        return {
            p.name: await self.targets[p.target].checkpoint(p.name)
            for p in self.service.projections
            if p.target in self.targets
        }

    async def catch_up(self) -> None:
        """Bring every projection and saga up to the current head of the store, then return.

        Sagas may append reactions and send commands that append more events, so this goes round
        until the head stays still.
        """
        while True:
            head = await self.store.head_position() if self.store is not None else 0
            for runner in self.runners.values():
                await runner.catch_up()
            for saga in self.sagas.values():
                await saga.catch_up()
            if self.store is None or await self.store.head_position() == head:
                return

    async def rebuild(self, name: str, *, progress: OnProgress | None = None) -> None:
        """Rebuild a projection's read model aside from the first event, then swap it in at once.

        Queries answer from the old model until the swap and from the new one after
        (``twofold.rebuilds``); every tenant's copy is rebuilt too.
        """
        runner = self._runner(name)
        assert self.store is not None
        await rebuild_projection(
            runner.projection,
            self.store,
            runner.read_store,
            upcasters=self.service.upcasters,
            batch_size=self.batch_size,
            progress=progress,
            registry=self.tenancies[runner.projection.target].registry,
        )
        await runner.follow_checkpoint()

    async def reset(self, name: str) -> None:
        """Drop a projection's read model and replay it from the first event in place: queries see it fill up."""
        await self._runner(name).rebuild()

    def _runner(self, name: str) -> ProjectionRunner:
        runner = self.runners.get(name)
        if runner is None:
            raise NotFound(f"No projection named {name!r} runs in this process")
        return runner
