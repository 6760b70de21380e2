"""Event-sourced aggregates: state folded from a stream's events, and decisions that emit new ones.

    class Product(Aggregate, category="product"):
        available: int = 0

        def receive(self, quantity: int) -> StockReceived:
            if not self.exists:
                raise DomainError(f"Unknown sku {self.id}")
            return StockReceived(sku=self.id, quantity=quantity)

        def evolve(self, event: ProductAdded | StockReceived) -> Product:
            match event:
                case StockReceived(quantity=quantity):
                    return self.model_copy(update={"available": self.available + quantity})
            return self

Decisions and ``evolve`` are pure: no I/O, no clock. The union in ``evolve``'s annotation says which
events belong to the aggregate, so the framework knows how to decode its stream.

A long-lived aggregate may declare ``snapshot_every=100``: every 100 events its state is saved,
and loading starts from the newest snapshot instead of the first event (docs/architecture.md).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict

from twofold.messages import Event

__all__ = ["SNAPSHOT_CATEGORY", "Aggregate", "event_types_of"]

SNAPSHOT_CATEGORY = "snapshot"  # an aggregate's snapshots live in stream f"snapshot-{stream_id}"


class Aggregate(BaseModel):
    """Base of aggregates. ``id`` is the entity id; the stream is ``f"{category}-{id}"``.

    ``version`` is the number of events folded so far (0: the stream does not exist yet); the
    framework sets it, ``evolve`` never needs to.
    """

    model_config = ConfigDict(frozen=True)

    category: ClassVar[str]
    snapshot_every: ClassVar[int | None] = None

    id: str
    version: int = 0

    def __init_subclass__(
        cls, *, category: str | None = None, snapshot_every: int | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        name = category or cls.__name__.lower()
        if "-" in name or not name:
            raise ValueError(f"{cls.__name__}: category {name!r} must be non-empty and contain no '-'")
        if name == SNAPSHOT_CATEGORY:
            raise ValueError(f"{cls.__name__}: category {name!r} holds snapshots; give the aggregate another category")
        if snapshot_every is not None and snapshot_every < 1:
            raise ValueError(f"{cls.__name__}: snapshot_every must be 1 or more, or None (got {snapshot_every})")
        cls.category = name
        cls.snapshot_every = snapshot_every

    @property
    def stream_id(self) -> str:
        return f"{self.category}-{self.id}"

    @property
    def exists(self) -> bool:
        """True once the stream has at least one event."""
        return self.version > 0

    def evolve(self, event: Any) -> Self:
        """Return the state after ``event``. Override it; annotate ``event`` with the events handled."""
        raise TypeError(f"{type(self).__name__} must define evolve(self, event)")

    def fold(self, events: Iterable[Event]) -> Self:
        """Apply ``events`` in order and count them into ``version``."""
        state, count = self, 0
        for event in events:
            state = state.evolve(event)
            count += 1
        return state.model_copy(update={"version": self.version + count}) if count else state

    @classmethod
    def event_types(cls) -> tuple[type[Event], ...]:
        """The event classes named in ``evolve``'s annotation."""
        return event_types_of(cls.evolve, "event")


def event_types_of(function: Any, parameter: str) -> tuple[type[Event], ...]:
    """Read the event classes out of a parameter's annotation (``A | B`` or a single class)."""
    hints = typing.get_type_hints(function)
    annotation = hints.get(parameter)
    if annotation is None:
        return ()
    members = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    return tuple(m for m in members if isinstance(m, type) and issubclass(m, Event))


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)
