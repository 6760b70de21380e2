"""A causal trace holds every event of its correlation exactly once, however the stores interleave.

Hypothesis builds a random causal history — commands, their events, saga reactions to any event,
the commands those send to any service, copies imported into other services — and appends it to
three stores in a random interleaving, beside another correlation's events.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from twofold.inspection import TracedCommand, TracedEvent, causal_trace
from twofold.saga_runner import REACTED
from twofold.store import NewEvent
from twofold.store.memory import MemoryEventStore

SERVICES = ("catalog", "orders", "payments")


@dataclass(frozen=True)
class Write:
    service: str
    stream_id: str
    event: NewEvent


def _metadata(correlation: str, command_id: str, command_type: str, causation: str, **extra: Any) -> dict[str, Any]:
    return {
        "command_id": command_id,
        "command_type": command_type,
        "correlation_id": correlation,
        "causation_id": causation,
        **extra,
    }


@st.composite
def histories(draw: st.DrawFn, correlation: str = "corr") -> tuple[list[Write], dict[str, str]]:
    """Writes of one correlation, and each original event's id → the command (or reaction) it belongs to."""
    writes: list[Write] = []
    owners: dict[str, str] = {}
    originals: list[Write] = []
    counter = iter(range(10_000))

    def command(service: str, command_id: str, count: int) -> None:
        for _ in range(count):
            event_id = f"{correlation}-e{next(counter)}"
            metadata = _metadata(correlation, command_id, "test.Do", command_id)
            write = Write(service, f"thing-{event_id}", NewEvent("test.Done", {}, metadata, event_id=event_id))
            writes.append(write)
            originals.append(write)
            owners[event_id] = command_id

    command(draw(st.sampled_from(SERVICES)), f"{correlation}-c0", draw(st.integers(1, 3)))
    for _ in range(draw(st.integers(0, 6))):
        trigger = draw(st.sampled_from(originals))
        reaction_id = f"{correlation}-r{next(counter)}"
        sent = [
            (draw(st.sampled_from(SERVICES)), f"{correlation}-c{next(counter)}") for _ in range(draw(st.integers(0, 2)))
        ]
        sends = [{"service": s, "type": "test.Do", "data": {}, "command_id": c} for s, c in sent]
        metadata = _metadata(correlation, reaction_id, REACTED, trigger.event.event_id)
        reaction = NewEvent(REACTED, {"sends": sends}, metadata, event_id=reaction_id)
        reacting = Write(draw(st.sampled_from(SERVICES)), f"saga-{reaction_id}", reaction)
        writes.append(reacting)
        originals.append(reacting)
        owners[reaction_id] = reaction_id
        for service, command_id in sent:
            command(service, command_id, draw(st.integers(0, 2)))
    for original in draw(st.lists(st.sampled_from(originals), max_size=4, unique_by=lambda w: w.event.event_id)):
        into = draw(st.sampled_from([s for s in SERVICES if s != original.service]))
        metadata = {**original.event.metadata, "source": original.service, "source_position": 0}
        copy = NewEvent(original.event.type, original.event.data, metadata, event_id=original.event.event_id)
        writes.append(Write(into, f"{original.service}.{original.stream_id}", copy))
    return writes, owners


@settings(max_examples=150, deadline=None)
@given(history=histories(), noise=histories(correlation="other"), data=st.data())
def test_a_trace_holds_every_correlated_event_exactly_once(
    history: tuple[list[Write], dict[str, str]], noise: tuple[list[Write], dict[str, str]], data: st.DataObject
) -> None:
    writes, owners = history
    interleaved = data.draw(st.permutations(writes + noise[0]))
    trace = asyncio.run(_trace(interleaved))

    events = trace.events()
    assert sorted(node.event.event_id for node in events) == sorted(owners)
    for node in events:
        assert "source" not in node.event.metadata  # the original, never a copy, where one exists
    for root in trace.roots:
        _check_owners(root, owners)


def _check_owners(node: TracedEvent | TracedCommand, owners: dict[str, str]) -> None:
    """A command's children are the events recorded for it; a reaction's, the commands it sent."""
    for child in node.children:
        if isinstance(node, TracedCommand):
            assert isinstance(child, TracedEvent)
            assert owners[child.event.event_id] == node.command_id
        _check_owners(child, owners)


async def _trace(writes: list[Write]) -> Any:
    stores = {service: MemoryEventStore() for service in SERVICES}
    for write in writes:
        await stores[write.service].append(write.stream_id, [write.event])
    return await causal_trace(stores, "corr")
