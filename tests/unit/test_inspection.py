"""Inspection: an aggregate at a past version, the aggregate class of a stream, one correlation's causal tree."""

from __future__ import annotations

from typing import Any

import pytest

from twofold import Aggregate, Event, Service
from twofold.errors import ConfigurationError
from twofold.inspection import TracedCommand, TracedEvent, aggregate_for, causal_trace, state_at
from twofold.saga_runner import REACTED
from twofold.store import NewEvent
from twofold.store.memory import MemoryEventStore


class Counted(Event, name="test.Counted"):
    by: int


class Counter(Aggregate, category="counter"):
    total: int = 0

    def evolve(self, event: Counted) -> Counter:
        return self.model_copy(update={"total": self.total + event.by})


class Tally(Aggregate, category="tally"):
    def evolve(self, event: Counted) -> Tally:
        return self


async def test_state_at_folds_the_stream_up_to_the_version_asked() -> None:
    store = MemoryEventStore()
    await store.append("counter-1", [NewEvent("test.Counted", {"by": n}) for n in (1, 10, 100)])
    assert (await state_at(store, Counter, "1", version=2)).model_dump() == {"id": "1", "version": 2, "total": 11}
    assert (await state_at(store, Counter, "1")).total == 111
    assert (await state_at(store, Counter, "2")).version == 0


def test_aggregate_for_finds_the_declaring_service_by_the_streams_category() -> None:
    counting, tallying = Service("counting", aggregates=[Counter]), Service("tallying", aggregates=[Tally])
    assert aggregate_for([counting, tallying], "tally-7-b") == (tallying, Tally)
    assert aggregate_for([counting, tallying], "order-1") is None


def test_a_service_refuses_two_aggregates_of_one_category() -> None:
    class Other(Aggregate, category="counter"):
        pass

    with pytest.raises(ConfigurationError, match="Service counting: two aggregates share the category 'counter'"):
        Service("counting", aggregates=[Counter, Other])


def _meta(command_id: str, command_type: str, causation_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "command_id": command_id,
        "command_type": command_type,
        "correlation_id": "corr-1",
        "causation_id": causation_id,
        "principal": "ada",
        **extra,
    }


def _shape(node: TracedEvent | TracedCommand) -> Any:
    if isinstance(node, TracedCommand):
        return (f"{node.service}:{node.type}", [_shape(child) for child in node.children])
    imported = f" (imported into {', '.join(node.imported_into)})" if node.imported_into else ""
    return (f"{node.service}:{node.event.type}{imported}", [_shape(child) for child in node.children])


async def test_causal_trace_links_commands_events_reactions_and_sent_commands_across_stores() -> None:
    orders, payments = MemoryEventStore(), MemoryEventStore()
    placed = NewEvent("shop.OrderPlaced", {}, _meta("cmd-1", "shop.PlaceOrder", "cmd-1"), event_id="e-placed")
    await orders.append("order-1", [placed])
    sends = [{"service": "payments", "type": "shop.AuthorizePayment", "data": {}, "command_id": "cmd-2"}]
    reaction = NewEvent(REACTED, {"sends": sends}, _meta("r-1", REACTED, "e-placed"), event_id="r-1")
    await orders.append("saga-1", [reaction])
    paid = NewEvent("shop.PaymentAuthorized", {}, _meta("cmd-2", "shop.AuthorizePayment", "cmd-2"), event_id="e-paid")
    await payments.append("payment-1", [paid])
    copy = NewEvent(paid.type, {}, {**paid.metadata, "source": "payments", "source_position": 1}, event_id="e-paid")
    await orders.append("payments.payment-1", [copy])
    await orders.append("order-2", [NewEvent("shop.OrderPlaced", {}, {**placed.metadata, "correlation_id": "other"})])

    trace = await causal_trace({"payments": payments, "orders": orders}, "corr-1")

    assert [_shape(root) for root in trace.roots] == [
        (
            "orders:shop.PlaceOrder",
            [
                (
                    "orders:shop.OrderPlaced",
                    [
                        (
                            f"orders:{REACTED}",
                            [
                                (
                                    "payments:shop.AuthorizePayment",
                                    [("payments:shop.PaymentAuthorized (imported into orders)", [])],
                                )
                            ],
                        )
                    ],
                )
            ],
        )
    ]
    assert [node.event.event_id for node in trace.events()] == ["e-placed", "r-1", "e-paid"]
    root = trace.to_json()["roots"][0]
    assert (root["kind"], root["command_id"], root["principal"]) == ("command", "cmd-1", "ada")
    assert root["children"][0]["stream_id"] == "order-1"


async def test_a_sent_command_that_recorded_nothing_still_shows_under_its_reaction() -> None:
    store = MemoryEventStore()
    placed = NewEvent("shop.OrderPlaced", {}, _meta("cmd-1", "shop.PlaceOrder", "cmd-1"), event_id="e-1")
    sends = [{"service": "payments", "type": "shop.AuthorizePayment", "data": {}, "command_id": "cmd-2"}]
    await store.append("order-1", [placed])
    await store.append("saga-1", [NewEvent(REACTED, {"sends": sends}, _meta("r-1", REACTED, "e-1"), event_id="r-1")])
    trace = await causal_trace({"orders": store}, "corr-1")
    assert _shape(trace.roots[0]) == (
        "orders:shop.PlaceOrder",
        [("orders:shop.OrderPlaced", [(f"orders:{REACTED}", [("payments:shop.AuthorizePayment", [])])])],
    )


async def test_causes_that_loop_on_themselves_are_cut_so_each_event_still_shows_once() -> None:
    store = MemoryEventStore()
    placed = NewEvent("shop.OrderPlaced", {}, _meta("cmd-1", "shop.PlaceOrder", "cmd-1"), event_id="e-1")
    sends = [{"service": "orders", "type": "shop.PlaceOrder", "data": {}, "command_id": "cmd-1"}]  # its own cause
    await store.append("order-1", [placed])
    await store.append("saga-1", [NewEvent(REACTED, {"sends": sends}, _meta("r-1", REACTED, "e-1"), event_id="r-1")])
    trace = await causal_trace({"orders": store}, "corr-1")
    assert len(trace.roots) == 1
    assert sorted(node.event.event_id for node in trace.events()) == ["e-1", "r-1"]


async def test_an_unknown_correlation_traces_to_an_empty_tree() -> None:
    trace = await causal_trace({"orders": MemoryEventStore()}, "nothing")
    assert (trace.roots, trace.to_json()) == ([], {"correlation_id": "nothing", "roots": []})
