"""Sagas (process managers): work that spans aggregates and services, driven by events.

    class Checkout(Saga, name="checkout", key="order_id"):
        status: str = "new"

        def react(self, event: OrderPlaced | StockShortage | PaymentDeclined | Timeout, do: Actions) -> Checkout:
            match event:
                case OrderPlaced(order_id=order_id, lines=lines):
                    do.send(ReserveStock(order_id=order_id, lines=lines), to="inventory",
                            compensate=ReleaseStock(order_id=order_id))
                    do.schedule("payment", after=timedelta(minutes=15))
                    return self.model_copy(update={"status": "reserving"})
                case StockShortage() | PaymentDeclined() | Timeout(name="payment"):
                    do.compensate()
                    do.send(RejectOrder(order_id=self.id))
                    do.complete()
                    return self.model_copy(update={"status": "rejected"})
            return self

One instance runs per value of ``key`` (``order_id`` here): every event ``react`` names that
carries that field is delivered to that instance. ``react`` is pure, like an aggregate's
``evolve``: it returns the new state and says what to do through ``do``; the framework records
both as one event in the instance's own stream, ``saga.checkout-<order id>``, before doing it.

- ``do.send(command, to=service)`` sends a command (to this service when ``to`` is left out),
  with an id derived from the reaction, so a resend after a crash has no second effect.
- ``do.schedule(name, after=…)`` sets a deadline; when it passes, ``react`` receives
  ``Timeout(name=…, at=…)``, even if the process restarted in between. ``do.cancel(name)`` drops it.
- ``send(..., compensate=command)`` remembers what undoes a step; ``do.compensate()`` sends every
  remembered compensation, the latest first, and forgets them.
- ``do.complete()`` ends the instance: its deadlines are dropped and later events ignored.

Time inside ``react`` is ``do.now``: the time the triggering event was recorded, or the deadline
that fired, never the wall clock, so that a replay decides the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict

from twofold.aggregate import event_types_of
from twofold.messages import Command, Event

__all__ = ["Actions", "Saga", "SentCommand", "Timeout"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


class Timeout(Event, name="twofold.Timeout"):
    """A deadline a saga scheduled has passed."""

    name: str
    at: datetime


@dataclass(frozen=True, slots=True)
class SentCommand:
    """A command as a saga recorded it: which service, its type and JSON, and its id once assigned."""

    service: str | None
    type: str
    data: dict[str, Any]
    command_id: str = ""

    @classmethod
    def of(cls, command: Command, service: str | None) -> SentCommand:
        return cls(service, command.type_name, command.model_dump(mode="json"))

    def to_json(self) -> dict[str, Any]:
        return {"service": self.service, "type": self.type, "data": self.data, "command_id": self.command_id}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SentCommand:
        return cls(data["service"], data["type"], data["data"], data.get("command_id", ""))


@dataclass(slots=True)
class Actions:
    """What one reaction does, collected while ``react`` runs; handed to it as ``do``."""

    now: datetime
    timeouts: dict[str, datetime] = field(default_factory=dict)
    compensations: list[SentCommand] = field(default_factory=list)
    sends: list[SentCommand] = field(default_factory=list)
    completed: bool = False

    def send(self, command: Command, *, to: str | None = None, compensate: Command | None = None) -> None:
        """Send ``command`` to service ``to`` (this one when ``None``); remember ``compensate`` as its undo."""
        self.sends.append(SentCommand.of(command, to))
        if compensate is not None:
            self.compensations.append(SentCommand.of(compensate, to))

    def schedule(self, name: str, *, after: timedelta | None = None, at: datetime | None = None) -> None:
        """Set deadline ``name`` ``after`` a delay from ``now``, or ``at`` a time; setting it again moves it."""
        if (after is None) == (at is None):
            raise ValueError("schedule() takes exactly one of after= or at=")
        due = self.now + after if after is not None else at
        assert due is not None
        if due.tzinfo is None:
            raise ValueError(f"Deadline {name!r} needs a time zone (use UTC)")
        self.timeouts[name] = due

    def cancel(self, name: str) -> None:
        """Drop deadline ``name``, if it is set."""
        self.timeouts.pop(name, None)

    def compensate(self) -> None:
        """Send every remembered compensation, the latest step's first, and forget them."""
        self.sends.extend(reversed(self.compensations))
        self.compensations.clear()

    def complete(self) -> None:
        """End this instance: no deadline fires for it and later events are ignored."""
        self.completed = True
        self.timeouts.clear()


class Saga(BaseModel):
    """Base of sagas: the state of one instance, and ``react``.

    ``id`` is the instance's key value; ``version`` counts its reactions (the framework sets both).
    """

    model_config = ConfigDict(frozen=True)

    name: ClassVar[str]
    key: ClassVar[str]

    id: str
    version: int = 0

    def __init_subclass__(cls, *, name: str | None = None, key: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.name = name or cls.__name__.lower()
        if not _NAME.match(cls.name):
            raise ValueError(f"{cls.__name__}: saga name {cls.name!r} must be letters, digits, '_' or '.'")
        if key is not None:
            cls.key = key

    @property
    def stream_id(self) -> str:
        return stream_of(type(self), self.id)

    @classmethod
    def instance_of(cls, event: Event) -> str | None:
        """The instance ``event`` belongs to (``None``: no instance). By default its ``key`` field."""
        key = getattr(cls, "key", None)
        if key is None:
            raise TypeError(f"{cls.__name__} needs a key: class {cls.__name__}(Saga, key='order_id'), or instance_of")
        value = getattr(event, key, None)
        return None if value is None else str(value)

    def react(self, event: Any, do: Actions) -> Self:
        """Return the state after ``event`` and say what to do. Override; annotate ``event``."""
        raise TypeError(f"{type(self).__name__} must define react(self, event, do)")

    @classmethod
    def event_types(cls) -> tuple[type[Event], ...]:
        """The event classes named in ``react``'s annotation (``Timeout`` included if named)."""
        return event_types_of(cls.react, "event")


def stream_of(saga: type[Saga], instance: str) -> str:
    """Where an instance's reactions are recorded: ``saga.checkout-o-1``."""
    return f"saga.{saga.name}-{instance}"
