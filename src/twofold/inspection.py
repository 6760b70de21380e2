"""Looking inside stores: an aggregate at any version, and the causal tree of one correlation.

    order = await state_at(store, Order, "o-1", version=2)      # the order as its second event left it
    trace = await causal_trace({"orders": orders_store, "payments": payments_store}, correlation_id)
    for node in trace.roots: ...                                # commands, their events, what those caused

A trace follows causation: a command's events carry its ``command_id``; a saga's reaction
(``twofold.SagaReacted``) names the event that triggered it in ``causation_id`` and the commands it
sent in its data, and each of those commands' events carry the sent ``command_id``. An event a
service imported from another keeps its id, so the copy is shown once, at the original, with the
services that imported it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from twofold.aggregate import Aggregate
from twofold.commands import fold_stream
from twofold.messages import Upcaster
from twofold.saga_runner import REACTED
from twofold.service import Service
from twofold.store import EventStore, StoredEvent, category_of

__all__ = ["Trace", "TracedCommand", "TracedEvent", "aggregate_for", "causal_trace", "state_at"]

A = TypeVar("A", bound=Aggregate)


def aggregate_for(services: Iterable[Service], stream_id: str) -> tuple[Service, type[Aggregate]] | None:
    """The service declaring the aggregate of ``stream_id``'s category, and its class (``order-o-1`` → Order)."""
    category = category_of(stream_id)
    for service in services:
        found = service.aggregate_type(category)
        if found is not None:
            return service, found
    return None


async def state_at(
    store: EventStore,
    aggregate_type: type[A],
    aggregate_id: str,
    version: int | None = None,
    *,
    upcasters: Sequence[Upcaster] = (),
) -> A:
    """The aggregate as its events up to ``version`` (all of them when ``None``) left it.

    Folded from the first event, as a command loads it but without snapshots, which only ever
    hold the newest state, and without a tenant check: an operator inspects every tenant's streams.
    """
    return await fold_stream(store, aggregate_type(id=aggregate_id), upcasters=upcasters, to_version=version)


@dataclass(slots=True)
class TracedEvent:
    """An event in a trace: where it was recorded, who imported it, and what it caused."""

    event: StoredEvent
    service: str
    imported_into: list[str] = field(default_factory=list)
    children: list[TracedEvent | TracedCommand] = field(default_factory=list)  # reactions; a reaction's commands

    def to_json(self) -> dict[str, Any]:
        event = self.event
        return {
            "kind": "event",
            "event_id": event.event_id,
            "type": event.type,
            "service": self.service,
            "stream_id": event.stream_id,
            "version": event.version,
            "position": event.position,
            "recorded_at": event.recorded_at.isoformat(),
            "imported_into": self.imported_into,
            "children": [child.to_json() for child in self.children],
        }


@dataclass(slots=True)
class TracedCommand:
    """A command in a trace, known from the events it caused or from the saga that sent it."""

    command_id: str
    type: str
    service: str | None
    principal: str | None
    children: list[TracedEvent] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "command",
            "command_id": self.command_id,
            "type": self.type,
            "service": self.service,
            "principal": self.principal,
            "children": [child.to_json() for child in self.children],
        }


@dataclass(slots=True)
class Trace:
    """The causal tree of one correlation: its roots are what nothing in the correlation caused."""

    correlation_id: str
    roots: list[TracedEvent | TracedCommand]

    def to_json(self) -> dict[str, Any]:
        return {"correlation_id": self.correlation_id, "roots": [root.to_json() for root in self.roots]}

    def events(self) -> list[TracedEvent]:
        """Every event in the tree, depth first."""
        found: list[TracedEvent] = []
        stack: list[TracedEvent | TracedCommand] = list(reversed(self.roots))
        while stack:
            node = stack.pop()
            if isinstance(node, TracedEvent):
                found.append(node)
            stack.extend(reversed(node.children))
        return found


async def causal_trace(stores: Mapping[str, EventStore], correlation_id: str) -> Trace:
    """The causal tree of ``correlation_id`` across ``stores`` (service name → its event store).

    Reads only that correlation's events, through each store's correlation index. Siblings come in
    the order they were recorded (time, then service, then position), whatever order the stores
    are given in.
    """
    events: dict[str, TracedEvent] = {}
    for service in sorted(stores):
        async for stored in stores[service].read_correlated(correlation_id):
            _gather(events, service, stored)
    return _Tree(events).build(correlation_id)


def _gather(events: dict[str, TracedEvent], service: str, stored: StoredEvent) -> None:
    """Keep one node per event id: the original where it is known, noting each store that imported it."""
    source = stored.metadata.get("source")
    node = events.get(stored.event_id)
    if node is None:
        node = events[stored.event_id] = TracedEvent(stored, str(source or service))
    elif source is None:  # the original, found after a copy of it
        node.event, node.service = stored, service
    if source is not None:
        node.imported_into.append(service)
        node.imported_into.sort()


Node = TracedEvent | TracedCommand
_NEVER = datetime.max.replace(tzinfo=UTC)


def _order(node: Node) -> tuple[datetime, str, int]:
    """Siblings in the order they happened: an event by its time, a command by its first event's."""
    if isinstance(node, TracedEvent):
        return (node.event.recorded_at, node.service, node.event.position)
    return min((_order(child) for child in node.children), default=(_NEVER, "", 0))  # sent, nothing recorded: last


class _Tree:
    """Links a correlation's events to the commands that recorded them and the events that caused them."""

    def __init__(self, events: Mapping[str, TracedEvent]) -> None:
        self.events = events
        self.commands: dict[str, TracedCommand] = {}
        self.parents: dict[int, Node] = {}
        ordered = sorted(events.values(), key=_order)
        for reaction in (node for node in ordered if node.event.type == REACTED):
            self._link_sent(reaction)
        for node in ordered:
            cause = self._cause(node) if node.event.type == REACTED else self._command_of(node)
            if cause is not None:
                self.parents[id(node)] = cause

    def _link_sent(self, reaction: TracedEvent) -> None:
        """A reaction's sends name their command ids: each command is the reaction's child."""
        for sent in reaction.event.data.get("sends", []):
            command_id = sent.get("command_id")
            if command_id and command_id not in self.commands:
                principal = reaction.event.metadata.get("principal")
                command = TracedCommand(command_id, sent["type"], sent.get("service"), principal)
                self.commands[command_id] = command
                self.parents[id(command)] = reaction

    def _command_of(self, node: TracedEvent) -> TracedCommand:
        metadata = node.event.metadata
        command_id = str(metadata.get("command_id") or node.event.event_id)
        command = self.commands.get(command_id)
        if command is None:
            command_type = str(metadata.get("command_type") or "unknown")
            command = self.commands[command_id] = TracedCommand(command_id, command_type, None, None)
            command.principal = metadata.get("principal")
        command.service = node.service  # where its events are recorded is where it ran
        return command

    def _cause(self, reaction: TracedEvent) -> TracedEvent | None:
        """The event that triggered a reaction; none for a deadline, whose cause is itself."""
        causation = reaction.event.metadata.get("causation_id")
        return None if causation == reaction.event.event_id else self.events.get(str(causation))

    def build(self, correlation_id: str) -> Trace:
        nodes: list[Node] = [*self.events.values(), *self.commands.values()]
        for node in nodes:
            if self._in_cycle(node):  # only corrupt metadata makes one: cut it, so the tree stays a tree
                del self.parents[id(node)]
        roots: list[Node] = []
        for node in nodes:
            parent = self.parents.get(id(node))
            if parent is None:
                roots.append(node)
            elif isinstance(parent, TracedCommand):
                assert isinstance(node, TracedEvent)  # a command's children are the events it recorded
                parent.children.append(node)
            else:
                parent.children.append(node)
        for node in nodes:
            node.children.sort(key=_order)
        return Trace(correlation_id, sorted(roots, key=_order))

    def _in_cycle(self, node: Node) -> bool:
        seen: set[int] = set()
        current = self.parents.get(id(node))
        while current is not None and id(current) not in seen:
            if current is node:
                return True
            seen.add(id(current))
            current = self.parents.get(id(current))
        return False
