"""Given/when/then for sagas: past events in, one event or some time passing, the commands sent out.

    placed = saga_scenario(Checkout).given(OrderPlaced(order_id="o-1", customer_id="c-1", lines=lines))
    placed.when(OrderPriced(order_id="o-1", lines=priced, total=Decimal("19.00"))) \\
        .then_sends(ReserveStock(order_id="o-1", lines=lines), to="inventory")
    placed.after(timedelta(minutes=2)).then_sends(CancelOrder(order_id="o-1", reason="not paid in time"))

The real :class:`~twofold.saga_runner.SagaRunner` reacts, with a fresh
:class:`~twofold.store.memory.MemoryEventStore`, a SQLite read store in a temporary folder for
its deadlines, and a recording sender in place of a bus: a test sees exactly the commands, ids
and envelopes production would send. Every event is recorded at :data:`SCENARIO_START`;
:meth:`SagaScenario.after` moves the clock on and fires what is due then, without sleeping.
Only what the step under test sends is compared (the given events' reactions are history):

    checkout, reacting to payments.PaymentDeclined, sent other commands than expected (- expected, + sent):
      payments.VoidPayment {"order_id": "o-1"}
    - orders.RejectOrder {"order_id": "o-1", "reason": "declined"}
    + inventory.ReleaseStock {"order_id": "o-1"}
    + orders.RejectOrder {"order_id": "o-1", "reason": "payment declined: card declined"}
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, Final

from twofold.messages import Command, Envelope, Event, Upcaster
from twofold.readmodels.sqlite import SQLiteReadStore
from twofold.saga_runner import SagaRunner, SagaState, ensure_saga_tables
from twofold.sagas import Saga
from twofold.store.memory import MemoryEventStore
from twofold.testing._checks import SCENARIO_START, diff, listing, new_event, render, run_to_completion, same_message

__all__ = ["SagaScenario", "Sent", "saga_scenario"]


class _AnyService:
    def __repr__(self) -> str:
        return "any service"


ANY_SERVICE: Final = _AnyService()  # then_sends without to=: the receiving services are not compared


def saga_scenario(saga: type[Saga], *, upcasters: Sequence[Upcaster] = ()) -> SagaScenario:
    """Start a given/when/then scenario for ``saga``."""
    return SagaScenario(saga, tuple(upcasters))


@dataclass(frozen=True, slots=True)
class Sent:
    """A command as the saga sent it: to which service (``None``: its own), in which envelope."""

    to: str | None
    envelope: Envelope[Command]

    @property
    def command(self) -> Command:
        return self.envelope.message


@dataclass(frozen=True, slots=True)
class _Delivery:
    event: Event
    principal: str | None
    tenant: str | None


@dataclass(frozen=True, slots=True)
class _Outcome:
    sent: tuple[Sent, ...]
    state: SagaState | None


@dataclass(frozen=True, eq=False)
class SagaScenario:
    """One step of a saga, an event or time passing, after a history of events.

    Args:
        saga: the saga class under test.
        upcasters: bring older stored events up to the classes ``react`` names.
        history: the events given, each with the metadata it was recorded with.
        event: the event under test, set by :meth:`when`.
        delay: the time that passes, set by :meth:`after`.
    """

    saga: type[Saga]
    upcasters: tuple[Upcaster, ...] = ()
    history: tuple[_Delivery, ...] = ()
    event: _Delivery | None = None
    delay: timedelta | None = None

    def given(self, *events: Event, principal: str | None = None, tenant: str | None = None) -> SagaScenario:
        """Events the saga has reacted to before the step; ``principal`` and ``tenant`` go in their metadata."""
        return replace(self, history=(*self.history, *(_Delivery(e, principal, tenant) for e in events)))

    def when(self, event: Event, *, principal: str | None = None, tenant: str | None = None) -> SagaScenario:
        """The step under test: the saga reacts to ``event``."""
        self._no_step_yet()
        return replace(self, event=_Delivery(event, principal, tenant))

    def after(self, delay: timedelta) -> SagaScenario:
        """The step under test: ``delay`` passes from :data:`SCENARIO_START` and every deadline due by then fires."""
        self._no_step_yet()
        return replace(self, delay=delay)

    # -- expectations ----------------------------------------------------------------------------

    def then_sends(self, *expected: Command, to: str | _AnyService | None = ANY_SERVICE) -> Sequence[Sent]:
        """Assert the step sent exactly ``expected``, in order, each to service ``to`` (``None``:
        the saga's own) if given; returns what was sent. With no command, asserts it sent nothing."""
        __tracebackhide__ = True
        sent = self.sent
        matched = len(expected) == len(sent) and all(
            _same(e, s) and (to is ANY_SERVICE or s.to == to) for e, s in zip(expected, sent, strict=True)
        )
        if not matched:
            wanted = [_expected_line(e, to, sent) for e in expected]
            raise AssertionError(
                f"{self._name} sent other commands than expected (- expected, + sent):\n"
                + diff(wanted, [_sent_line(s, to) for s in sent])
            )
        return sent

    def then_schedules(self, name: str, *, at: datetime | None = None, after: timedelta | None = None) -> datetime:
        """Assert deadline ``name`` is set, ``at`` a time or ``after`` a delay from the step's time; returns it."""
        __tracebackhide__ = True
        if at is not None and after is None:
            due = at
        elif after is not None and at is None:
            due = self._now + after
        else:
            raise ValueError("then_schedules() takes exactly one of at= or after=")
        deadlines = self.state.deadlines
        if deadlines.get(name) != due:
            pending = listing([f"{n} at {d.isoformat()}" for n, d in sorted(deadlines.items())], "none")
            raise AssertionError(
                f"Expected {self._name} to leave deadline {name!r} at {due.isoformat()}; its deadlines:\n{pending}"
            )
        return due

    def then_completes(self) -> SagaState:
        """Assert the instance is completed after the step: no deadline left, later events ignored."""
        __tracebackhide__ = True
        state = self.state
        if not state.completed:
            raise AssertionError(
                f"Expected {self._name} to complete the instance, but it is still active:\n"
                + listing([render(self.saga.name, state.saga.model_dump(mode="json"))], "no state")
            )
        return state

    # -- what happened ---------------------------------------------------------------------------

    @property
    def sent(self) -> tuple[Sent, ...]:
        """What the step sent, in order."""
        return self._outcome.sent

    @property
    def state(self) -> SagaState:
        """The instance of the step's event (or of the last given event) as the step left it."""
        state = self._outcome.state
        if state is None:
            raise AssertionError(f"{self.saga.name} has no instance {self._instance!r}: no event reached it")
        return state

    # -- running ---------------------------------------------------------------------------------

    @property
    def _name(self) -> str:
        if self.event is not None:
            return f"{self.saga.name}, reacting to {self.event.event.type_name},"
        return f"{self.saga.name}, {self.delay} after the given events,"

    @property
    def _now(self) -> datetime:
        return SCENARIO_START + (self.delay or timedelta())

    @property
    def _instance(self) -> str | None:
        last = self.event or (self.history[-1] if self.history else None)
        return None if last is None else self.saga.instance_of(last.event)

    def _no_step_yet(self) -> None:
        if self.event is not None or self.delay is not None:
            raise ValueError(f"This scenario already has its step ({self._name.rstrip(',')}); start another")

    @cached_property
    def _outcome(self) -> _Outcome:
        if self.event is None and self.delay is None:
            raise ValueError("This scenario has no step yet: call .when(event) or .after(delay) before checking")
        return run_to_completion(self._run)

    async def _run(self) -> _Outcome:
        sent: list[Sent] = []

        async def record(to: str | None, envelope: Envelope[Command]) -> None:
            sent.append(Sent(to, envelope))

        store = MemoryEventStore(clock=lambda: SCENARIO_START)
        with tempfile.TemporaryDirectory(prefix="twofold-saga-") as folder:
            read_store = SQLiteReadStore(Path(folder) / "read.db", readers=1)
            runner = SagaRunner(self.saga, store, read_store, record, upcasters=self.upcasters, clock=lambda: self._now)
            try:
                await ensure_saga_tables(read_store)
                await self._deliver(store, "given", self.history)
                await runner.catch_up()
                sent.clear()  # what the history sent is not the step's doing
                if self.event is not None:
                    await self._deliver(store, "when", [self.event])
                    await runner.catch_up()
                else:
                    await runner.fire_due(self._now)
                instance = self._instance
                return _Outcome(tuple(sent), None if instance is None else await runner.state(instance))
            finally:
                await read_store.close()
                await store.close()

    @staticmethod
    async def _deliver(store: MemoryEventStore, stream_id: str, deliveries: Sequence[_Delivery]) -> None:
        for delivery in deliveries:
            await store.append(
                f"{stream_id}-events", [new_event(delivery.event, principal=delivery.principal, tenant=delivery.tenant)]
            )


def _same(expected: Command, sent: Sent) -> bool:
    return same_message(expected, sent.command.type_name, sent.command.model_dump(mode="json"))


def _destination(to: str | None) -> str:
    return "this service" if to is None else to


def _sent_line(sent: Sent, to: Any) -> str:
    line = render(sent.command.type_name, sent.command.model_dump(mode="json"))
    return line if to is ANY_SERVICE else f"{line} to {_destination(sent.to)}"


def _expected_line(expected: Command, to: Any, sent: Sequence[Sent]) -> str:
    # An expected command equal in value to a sent one gets that command's line, so that a
    # difference in spelling alone ("19" for "19.00") never shows up in the diff.
    same = next((s for s in sent if _same(expected, s) and (to is ANY_SERVICE or s.to == to)), None)
    if same is not None:
        return _sent_line(same, to)
    line = render(expected.type_name, expected.model_dump(mode="json"))
    return line if to is ANY_SERVICE else f"{line} to {_destination(to)}"
