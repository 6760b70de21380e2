"""The event store contract: records, expected versions and the ``EventStore`` protocol.

Every backend (``memory``, ``sqlite``, ``postgres``) passes the one contract suite in
``twofold.testing.contracts``. Positions start at 1 and ``from_position`` is inclusive, so a
reader that has handled position ``p`` resumes from ``p + 1``.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from twofold.errors import ConcurrencyError
from twofold.messages import new_id

__all__ = [
    "ANY",
    "NO_STREAM",
    "AppendResult",
    "EventStore",
    "ExpectedVersion",
    "NewEvent",
    "StoredEvent",
    "StreamSummary",
    "StreamWrite",
    "category_of",
    "check_expected_version",
    "validate_writes",
]


class ExpectedVersion(enum.Enum):
    """What a writer expects of a stream besides an exact version."""

    NO_STREAM = "no stream"
    ANY = "any version"

    @property
    def description(self) -> str:
        return self.value


NO_STREAM = ExpectedVersion.NO_STREAM
ANY = ExpectedVersion.ANY


def category_of(stream_id: str) -> str:
    """``order-7f3c`` → ``order``: the text before the first ``-``."""
    return stream_id.split("-", 1)[0]


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event about to be appended: its type name, JSON-ready data and metadata."""

    type: str
    data: Mapping[str, Any]
    metadata: Mapping[str, Any] = field(default_factory=dict)
    event_id: str = field(default_factory=new_id)
    schema_version: int = 1


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as recorded: the stable shape every backend returns (see docs/architecture.md)."""

    position: int
    stream_id: str
    version: int
    event_id: str
    type: str
    schema_version: int
    data: Mapping[str, Any]
    metadata: Mapping[str, Any]
    recorded_at: datetime

    @property
    def category(self) -> str:
        return category_of(self.stream_id)


@dataclass(frozen=True, slots=True)
class StreamSummary:
    """One stream as a listing shows it: how far it has got, where its events sit in the global order."""

    stream_id: str
    version: int
    first_position: int
    last_position: int
    last_recorded_at: datetime

    @property
    def category(self) -> str:
        return category_of(self.stream_id)


@dataclass(frozen=True, slots=True)
class StreamWrite:
    """Events for one stream within an append, and the version the writer expects it to have."""

    stream_id: str
    events: Sequence[NewEvent]
    expected_version: int | ExpectedVersion = ANY


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append wrote: each stream's new version and the stored events, in position order.

    For a repeated ``command_id`` this is the first append's result, unchanged.
    """

    command_id: str | None
    versions: Mapping[str, int]
    events: Sequence[StoredEvent]

    @property
    def position(self) -> int | None:
        """The global position of the last event written (``None`` if nothing was)."""
        return self.events[-1].position if self.events else None


def check_expected_version(stream_id: str, expected: int | ExpectedVersion, actual: int) -> None:
    """Raise :class:`ConcurrencyError` unless ``actual`` is what ``expected`` allows."""
    if expected is ANY:
        return
    wanted = 0 if expected is NO_STREAM else expected
    if actual != wanted:
        raise ConcurrencyError(stream_id, expected, actual)


def validate_writes(writes: Sequence[StreamWrite]) -> None:
    """Refuse requests no backend could honour, before any transaction starts."""
    seen: set[str] = set()
    event_ids: set[str] = set()
    for write in writes:
        if not write.stream_id or len(write.stream_id) > 255:
            raise ValueError(f"Stream id must be 1 to 255 characters (got {write.stream_id!r})")
        if write.stream_id in seen:
            raise ValueError(f"Stream {write.stream_id} appears twice in one append")
        seen.add(write.stream_id)
        if isinstance(write.expected_version, int) and write.expected_version < 0:
            raise ValueError(f"Expected version must be 0 or more (got {write.expected_version})")
        for event in write.events:
            if event.event_id in event_ids:
                raise ValueError(f"Event id {event.event_id} appears twice in one append")
            event_ids.add(event.event_id)


class EventStore(Protocol):
    """An append-only log of streams with one global order.

    Error outcomes: ``ConcurrencyError`` (an expected version did not match; nothing written),
    ``StoreError`` (the backend failed; nothing written), ``ValueError`` (a malformed request).
    """

    async def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int | ExpectedVersion = ANY,
        command_id: str | None = None,
    ) -> AppendResult:
        """Append to one stream, all or nothing, at most once per ``command_id``."""
        ...

    async def append_streams(self, writes: Sequence[StreamWrite], command_id: str | None = None) -> AppendResult:
        """Append to several streams in one transaction, each checked against its expected version."""
        ...

    def read_stream(
        self, stream_id: str, from_version: int = 1, to_version: int | None = None
    ) -> AsyncIterator[StoredEvent]:
        """Stream one stream's events in version order, ``from_version`` to ``to_version`` inclusive."""
        ...

    def read_all(
        self,
        from_position: int = 1,
        limit: int | None = None,
        categories: Collection[str] | None = None,
        types: Collection[str] | None = None,
    ) -> AsyncIterator[StoredEvent]:
        """Stream committed events in global order, never skipping one that commits later."""
        ...

    def subscribe(
        self,
        from_position: int = 1,
        categories: Collection[str] | None = None,
        types: Collection[str] | None = None,
    ) -> AsyncIterator[StoredEvent]:
        """Catch up from ``from_position``, then follow new events live, forever."""
        ...

    async def streams(
        self, *, category: str | None = None, after: str | None = None, limit: int = 100
    ) -> list[StreamSummary]:
        """Up to ``limit`` streams in stream id order, those after ``after`` only (a page's last id gives the next).

        Only events a reader can see count: a stream appears once its first event has a position.
        """
        ...

    def read_correlated(self, correlation_id: str) -> AsyncIterator[StoredEvent]:
        """Stream every event whose metadata ``correlation_id`` is this one, in global order."""
        ...

    async def wait_for_events(self, after_position: int, timeout: float) -> bool:
        """Wait until an event past ``after_position`` may be readable; ``False`` on timeout."""
        ...

    async def head_position(self) -> int:
        """The position of the last committed event (0 when empty)."""
        ...

    async def stream_version(self, stream_id: str) -> int:
        """A stream's current version (0 when it does not exist)."""
        ...

    async def command_result(self, command_id: str) -> AppendResult | None:
        """The result recorded for ``command_id``, if it was ever appended."""
        ...

    async def close(self) -> None:
        """Release connections and threads."""
        ...
