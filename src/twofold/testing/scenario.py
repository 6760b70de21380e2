"""Given/when/then for a service's commands: past events in, one command, the events it emits out.

    scenario(shop) \\
        .given("product-A-1", ProductAdded(sku="A-1", name="Mug", price=Decimal("9.50")),
               StockReceived(sku="A-1", quantity=5)) \\
        .when(PlaceOrder(order_id="o-1", customer_id="c-1", lines=[OrderLine(sku="A-1", quantity=2)])) \\
        .then(OrderPlaced(...), StockReserved(sku="A-1", order_id="o-1", quantity=2))

The command runs through the service's own handlers and :class:`~twofold.commands.CommandDispatcher`,
against a fresh :class:`~twofold.store.memory.MemoryEventStore` that holds only the given events.
Emitted events are compared by type and by value, in order. A wrong expectation fails with a diff
of one line per event:

    PlaceOrder emitted other events than expected (- expected, + emitted):
      shop.OrderPlaced {"order_id": "o-1", ...}
    - shop.StockReserved {"sku": "A-1", "order_id": "o-1", "quantity": 3}
    ?                                                                  ^
    + shop.StockReserved {"sku": "A-1", "order_id": "o-1", "quantity": 2}
    ?                                                                  ^

The checks are plain functions, so they work in sync tests and in async ones alike: inside a
running event loop the scenario runs on a fresh loop in a worker thread.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, TypeVar

from twofold.commands import CommandDispatcher, CommandResult
from twofold.messages import Command, Envelope, Event
from twofold.service import Service
from twofold.store import StoredEvent
from twofold.store.memory import MemoryEventStore
from twofold.testing._checks import describe, diff, listing, new_event, render, run_to_completion, same_message

__all__ = ["Scenario", "scenario"]

E = TypeVar("E", bound=BaseException)


def scenario(service: Service) -> Scenario:
    """Start a given/when/then scenario for ``service``'s commands."""
    return Scenario(service)


@dataclass(frozen=True, slots=True)
class _Outcome:
    result: CommandResult | None
    error: Exception | None


@dataclass(frozen=True, eq=False)
class Scenario:
    """One command run against a history of events. ``given`` and ``when`` return new scenarios.

    Args:
        service: whose command handlers run.
        history: ``(stream_id, events)`` pairs, appended in order before the command runs, for
            the command's tenant (a stream belongs to one tenant).
        command: the command under test, set by :meth:`when`.
        envelope: ``command_id``, ``principal`` and the other envelope fields :meth:`when` was given.
    """

    service: Service
    history: tuple[tuple[str, tuple[Event, ...]], ...] = ()
    command: Command | None = None
    envelope: dict[str, Any] = field(default_factory=dict)

    def given(self, stream_id: str, *events: Event) -> Scenario:
        """Record ``events`` on ``stream_id`` before the command; chain it for several streams."""
        return replace(self, history=(*self.history, (stream_id, events)))

    def when(
        self,
        command: Command,
        *,
        command_id: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        principal: str | None = None,
        tenant: str | None = None,
    ) -> Scenario:
        """The command to run, with the envelope fields its handler may read."""
        if self.command is not None:
            raise ValueError(f"This scenario already runs {self.command.type_name}; start another with scenario()")
        fields = {
            "message_id": command_id,
            "correlation_id": correlation_id,
            "causation_id": causation_id,
            "principal": principal,
            "tenant": tenant,
        }
        return replace(self, command=command, envelope={k: v for k, v in fields.items() if v is not None})

    # -- expectations ----------------------------------------------------------------------------

    def then(self, *expected: Event) -> CommandResult:
        """Assert the command was accepted and emitted exactly ``expected``, in order."""
        __tracebackhide__ = True
        result = self._accepted(expected)
        if not _same(expected, result.events):
            raise AssertionError(
                f"{self._name} emitted other events than expected (- expected, + emitted):\n"
                + _diff(expected, result.events)
            )
        return result

    def then_nothing(self) -> CommandResult:
        """Assert the command was accepted and emitted no event."""
        __tracebackhide__ = True
        result = self._accepted(())
        if result.events:
            raise AssertionError(f"Expected {self._name} to emit nothing, but it emitted:\n{_listing(result.events)}")
        return result

    def then_rejected(self, error_type: type[E], match: str | None = None) -> E:
        """Assert the command raised ``error_type`` (its message searched for the regex ``match``).

        Returns the error, for checks on its fields.
        """
        __tracebackhide__ = True
        outcome = self._outcome
        wanted = error_type.__name__
        if outcome.error is None:
            emitted = _listing(outcome.result.events if outcome.result else ())
            raise AssertionError(f"Expected {self._name} to be rejected with {wanted}, but it was accepted:\n{emitted}")
        if not isinstance(outcome.error, error_type):
            raise AssertionError(
                f"Expected {self._name} to be rejected with {wanted}, but it raised {describe(outcome.error)}"
            ) from outcome.error
        if match is not None and re.search(match, str(outcome.error)) is None:
            raise AssertionError(
                f"{self._name} was rejected with {wanted} as expected, but its message does not match {match!r}:\n"
                f"  {str(outcome.error)!r}"
            ) from outcome.error
        return outcome.error

    # -- what happened ---------------------------------------------------------------------------

    @property
    def result(self) -> CommandResult:
        """The command's result; raises the command's error if it was rejected."""
        outcome = self._outcome
        if outcome.error is not None:
            raise outcome.error
        assert outcome.result is not None
        return outcome.result

    @property
    def error(self) -> Exception | None:
        """The error the command raised, or ``None`` if it was accepted."""
        return self._outcome.error

    @property
    def emitted(self) -> Sequence[StoredEvent]:
        """The events the command appended, as stored (empty if it was rejected)."""
        result = self._outcome.result
        return result.events if result else ()

    # -- running ---------------------------------------------------------------------------------

    @property
    def _name(self) -> str:
        return self._command.type_name

    @property
    def _command(self) -> Command:
        if self.command is None:
            raise ValueError("This scenario has no command yet: call .when(command) before checking what it did")
        return self.command

    def _accepted(self, expected: Sequence[Event]) -> CommandResult:
        __tracebackhide__ = True
        outcome = self._outcome
        if outcome.error is not None:
            raise AssertionError(
                f"{self._name} was rejected with {describe(outcome.error)}\nexpected it to emit:\n{_listing(expected)}"
            ) from outcome.error
        assert outcome.result is not None
        return outcome.result

    @cached_property
    def _outcome(self) -> _Outcome:
        envelope = Envelope(self._command, **self.envelope)
        return run_to_completion(lambda: self._run(envelope))

    async def _run(self, envelope: Envelope[Command]) -> _Outcome:
        store = MemoryEventStore()
        try:
            for stream_id, events in self.history:
                await store.append(stream_id, [new_event(e, tenant=envelope.tenant) for e in events])
            dispatcher = CommandDispatcher(store, self.service.commands, upcasters=self.service.upcasters)
            try:
                return _Outcome(await dispatcher.dispatch(envelope), None)
            except Exception as exc:
                return _Outcome(None, exc)
        finally:
            await store.close()


def _matches(expected: Event, actual: StoredEvent) -> bool:
    return actual.schema_version == expected.schema_version and same_message(expected, actual.type, actual.data)


def _same(expected: Sequence[Event], actual: Sequence[StoredEvent]) -> bool:
    return len(expected) == len(actual) and all(_matches(e, a) for e, a in zip(expected, actual, strict=True))


def _rendered_stored(event: StoredEvent) -> str:
    return render(event.type, event.data)


def _rendered_expected(event: Event, actual: Sequence[StoredEvent]) -> str:
    # An expected event equal in value to an emitted one gets that event's line, so that a
    # difference in spelling alone ("19" for "19.00") never shows up in the diff.
    same = next((a for a in actual if _matches(event, a)), None)
    return _rendered_stored(same) if same else render(event.type_name, event.model_dump(mode="json"))


def _diff(expected: Sequence[Event], actual: Sequence[StoredEvent]) -> str:
    return diff([_rendered_expected(e, actual) for e in expected], [_rendered_stored(a) for a in actual])


def _listing(events: Sequence[Event] | Sequence[StoredEvent]) -> str:
    return listing(
        [
            _rendered_stored(e) if isinstance(e, StoredEvent) else render(e.type_name, e.model_dump(mode="json"))
            for e in events
        ],
        "no events",
    )
