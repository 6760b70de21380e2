"""Commands, events and queries, declared as frozen pydantic models, and the envelope they travel in.

    class PlaceOrder(Command):
        order_id: str
        lines: list[OrderLine]

    class OrderPlaced(Event, name="shop.OrderPlaced", version=1):
        order_id: str
        lines: list[OrderLine]

An event's ``name`` is what the store records; it is decoupled from the class name so that a class
can be renamed without rewriting history. Left out, it defaults to the class name. Never rename or
retype a stored field; give new fields defaults. Anything else is a version bump plus an upcaster,
a pure function that turns one version's stored data into the next's, applied on every read:

    def _rename_customer(data: dict[str, Any]) -> dict[str, Any]:
        data["customer_id"] = data.pop("customer")
        return data

    upcasters = [Upcaster("shop.OrderPlaced", from_version=1, function=_rename_customer)]
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from twofold.errors import FieldError, InvalidMessage, StoreError
from twofold.personal import personal_fields

__all__ = [
    "Command",
    "Envelope",
    "Event",
    "EventTypes",
    "Message",
    "Query",
    "Upcaster",
    "field_path",
    "invalid",
    "new_id",
    "parse",
    "utc_now",
]


def new_id() -> str:
    """A fresh random id (UUID 4, text form)."""
    return str(uuid.uuid4())


def utc_now() -> datetime:
    return datetime.now(UTC)


class Message(BaseModel):
    """Base of commands, events and queries: immutable, and strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type_name: ClassVar[str]
    schema_version: ClassVar[int]

    def __init_subclass__(cls, *, name: str | None = None, version: int = 1, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if version < 1:
            raise ValueError(f"{cls.__name__}: version must be 1 or more (got {version})")
        cls.type_name = name or cls.__name__
        cls.schema_version = version


class Command(Message):
    """An intent to change state, named in the imperative: ``PlaceOrder``.

    ``internal=True`` marks a command only other services' sagas should send
    (``class PriceOrder(Command, name="catalog.PriceOrder", internal=True)``): over HTTP it needs
    its own scope (``commands:catalog.PriceOrder``) or ``commands:internal``, never ``commands:*``.
    A saga's commands do not come over HTTP, so they are unaffected.
    """

    internal: ClassVar[bool] = False

    def __init_subclass__(cls, *, internal: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.internal = internal


class Event(Message):
    """A fact that happened, named in the past tense: ``OrderPlaced``.

    A field ``Annotated[str, Personal(subject="user_id")]`` is stored encrypted (``twofold.personal``).
    """

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        personal_fields(cls)  # a personal field naming no subject field fails here, not at its first append


class Query(Message):
    """A question to a read model, named after what it returns: ``StockLevel``."""


M = TypeVar("M", bound=Message)


def parse(message_type: type[M], data: Mapping[str, Any]) -> M:
    """Validate ``data`` as ``message_type``, raising :class:`InvalidMessage` that names every bad field.

    Text with a NUL character is refused wherever it appears: PostgreSQL cannot store it, so a
    message carrying one would be accepted by one backend and poison another's read models.
    """
    nul = [FieldError(path, "Null characters are not allowed") for path in _nul_paths(data, ())]
    if nul:
        raise InvalidMessage(message_type.type_name, nul[:MAX_FIELD_ERRORS])
    try:
        return message_type.model_validate(data)
    except ValidationError as exc:
        raise invalid(message_type.type_name, exc) from None


def _nul_paths(value: Any, path: tuple[int | str, ...]) -> Iterator[str]:
    if isinstance(value, str):
        if "\x00" in value:
            yield field_path(path)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and "\x00" in key:
                yield field_path((*path, key))
            yield from _nul_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nul_paths(item, (*path, index))


MAX_FIELD_ERRORS = 100  # past this, a hostile body would get an answer far larger than itself


def invalid(message_type: str, exc: ValidationError) -> InvalidMessage:
    """Translate pydantic's errors into :class:`InvalidMessage` (``lines[0].quantity``-style paths).

    Every bad field is named, up to ``MAX_FIELD_ERRORS``; a last entry counts the rest.
    """
    errors = [FieldError(field_path(e["loc"]), e["msg"]) for e in exc.errors(include_url=False)]
    if len(errors) > MAX_FIELD_ERRORS:
        rest = len(errors) - MAX_FIELD_ERRORS
        errors = [*errors[:MAX_FIELD_ERRORS], FieldError("(more)", f"{rest} more errors not listed")]
    return InvalidMessage(message_type, errors)


def field_path(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(body)"


@dataclass(frozen=True, slots=True)
class Envelope(Generic[M]):
    """A message with who sent it and why.

    ``correlation_id`` ties together everything one request caused; ``causation_id`` is the id of
    the message that directly caused this one. Both default so that a first message starts a chain.
    ``traceparent`` and ``tracestate`` are the W3C trace context of the span that sent it, if any:
    the command's span continues that trace wherever the command is handled.
    """

    message: M
    message_id: str = field(default_factory=new_id)
    correlation_id: str = ""
    causation_id: str | None = None
    principal: str | None = None
    tenant: str | None = None
    time: datetime = field(default_factory=utc_now)
    traceparent: str | None = None
    tracestate: str | None = None

    def __post_init__(self) -> None:
        if not self.correlation_id:
            object.__setattr__(self, "correlation_id", self.message_id)

    @property
    def type_name(self) -> str:
        return self.message.type_name


E = TypeVar("E", bound=Event)


@dataclass(frozen=True, slots=True)
class Upcaster:
    """Turns an event's stored data at ``from_version`` into the data of ``from_version + 1``.

    ``function`` is pure: it gets a copy of the old data and returns the new, never reading
    anything else. Declare one per step; ``1 → 2`` and ``2 → 3`` chain to read version 1 as 3.
    """

    name: str
    from_version: int
    function: Callable[[dict[str, Any]], dict[str, Any]]

    def __post_init__(self) -> None:
        if self.from_version < 1:
            raise ValueError(f"Upcaster for {self.name}: from_version must be 1 or more (got {self.from_version})")


def _upcaster_steps(upcasters: Iterable[Upcaster]) -> dict[tuple[str, int], Upcaster]:
    """Index upcasters by ``(name, from_version)``, refusing two for the same step."""
    steps: dict[tuple[str, int], Upcaster] = {}
    for upcaster in upcasters:
        key = (upcaster.name, upcaster.from_version)
        if key in steps:
            raise ValueError(
                f"Two upcasters turn {upcaster.name} version {upcaster.from_version} into the next; declare one"
            )
        steps[key] = upcaster
    return steps


class EventTypes:
    """Maps stored type names to event classes, and stored data, of any schema version, to events.

    Args:
        classes: the event classes to decode.
        upcasters: the steps that bring older stored data up to each class's ``version``.
    """

    def __init__(self, classes: Iterable[type[Event]] = (), upcasters: Iterable[Upcaster] = ()) -> None:
        self._by_name: dict[str, type[Event]] = {}
        self._steps = _upcaster_steps(upcasters)
        for cls in classes:
            self.add(cls)

    def add(self, cls: type[Event]) -> None:
        known = self._by_name.setdefault(cls.type_name, cls)
        if known is not cls:
            raise ValueError(
                f"Event type name {cls.type_name!r} is used by both {known.__qualname__} and {cls.__qualname__}; "
                f"give one of them another name: class {cls.__name__}(Event, name='...')"
            )

    def __contains__(self, type_name: object) -> bool:
        return type_name in self._by_name

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._by_name)

    def class_of(self, type_name: str) -> type[Event] | None:
        """The class that decodes ``type_name``, if any."""
        return self._by_name.get(type_name)

    def decode(self, type_name: str, data: Mapping[str, Any], schema_version: int) -> Event:
        """The event stored as ``type_name`` at ``schema_version``, upcast to its class's version.

        Raises :class:`StoreError` when the stored version is newer than the class, or a step of
        the chain from it to the class's version has no upcaster.
        """
        cls = self._by_name.get(type_name)
        if cls is None:
            raise KeyError(f"Unknown event type {type_name!r}: no declared aggregate or projection handles it")
        return cls.model_validate(self._upcast(cls, data, schema_version))

    def _upcast(self, cls: type[Event], data: Mapping[str, Any], schema_version: int) -> Mapping[str, Any]:
        if schema_version > cls.schema_version:
            raise StoreError(
                f"Cannot read {cls.type_name} stored at schema version {schema_version}: "
                f"{cls.__qualname__} is version {cls.schema_version}; deploy the code that wrote it"
            )
        if schema_version == cls.schema_version:
            return data
        upgraded = copy.deepcopy(dict(data))  # upcasters may change what they are given; the record stays
        for version in range(schema_version, cls.schema_version):
            step = self._steps.get((cls.type_name, version))
            if step is None:
                raise StoreError(
                    f"Cannot read {cls.type_name} stored at schema version {schema_version} as version "
                    f"{cls.schema_version}: no upcaster from version {version} to {version + 1}; declare "
                    f"Upcaster({cls.type_name!r}, from_version={version}, function=...) in Service(upcasters=[...])"
                )
            upgraded = step.function(upgraded)
        return upgraded
