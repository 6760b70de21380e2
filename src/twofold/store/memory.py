"""An event store in a Python list: for tests, examples and the test kit. Nothing survives the process."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from datetime import datetime

from twofold._notify import Notifier
from twofold.messages import utc_now
from twofold.personal import new_key
from twofold.store import (
    AppendResult,
    StoredEvent,
    StreamSummary,
    StreamWrite,
    category_of,
    check_expected_version,
    validate_writes,
)
from twofold.store._base import EventStoreBase

__all__ = ["MemoryEventStore"]


class MemoryEventStore(EventStoreBase):
    """The reference implementation of :class:`~twofold.store.EventStore`.

    Appends run without awaiting, so each is atomic with respect to every other coroutine.

    Args:
        clock: gives each append's ``recorded_at``; the test kit passes a fixed time, so that
            what a projection or a saga derives from it is the same on every run.
    """

    def __init__(self, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._clock = clock
        self._events: list[StoredEvent] = []
        self._streams: dict[str, list[StoredEvent]] = {}
        self._event_ids: set[str] = set()
        self._commands: dict[str, AppendResult] = {}
        self._notifier = Notifier()
        self._keys: dict[str, bytes] = {}

    async def append_streams(self, writes: Sequence[StreamWrite], command_id: str | None = None) -> AppendResult:
        if command_id is not None and command_id in self._commands:
            return self._commands[command_id]
        validate_writes(writes)
        for write in writes:
            check_expected_version(write.stream_id, write.expected_version, len(self._streams.get(write.stream_id, ())))
        duplicate = next((e.event_id for w in writes for e in w.events if e.event_id in self._event_ids), None)
        if duplicate is not None:
            raise ValueError(f"Event id {duplicate} is already stored")
        result = AppendResult(command_id, *self._write(writes))
        if command_id is not None:
            self._commands[command_id] = result
        if result.events:
            self._notifier.announce(result.events[-1].position)
        return result

    def _write(self, writes: Sequence[StreamWrite]) -> tuple[dict[str, int], list[StoredEvent]]:
        now, versions, stored = self._clock(), {}, []
        for write in writes:
            stream = self._streams.setdefault(write.stream_id, [])
            for new in write.events:
                event = StoredEvent(
                    position=len(self._events) + 1,
                    stream_id=write.stream_id,
                    version=len(stream) + 1,
                    event_id=new.event_id,
                    type=new.type,
                    schema_version=new.schema_version,
                    data=copy.deepcopy(dict(new.data)),
                    metadata=copy.deepcopy(dict(new.metadata)),
                    recorded_at=now,
                )
                self._events.append(event)
                stream.append(event)
                self._event_ids.add(event.event_id)
                stored.append(event)
            versions[write.stream_id] = len(stream)
        return versions, stored

    async def read_stream(
        self, stream_id: str, from_version: int = 1, to_version: int | None = None
    ) -> AsyncIterator[StoredEvent]:
        stream = self._streams.get(stream_id, [])
        end = len(stream) if to_version is None else min(to_version, len(stream))
        for index in range(max(from_version, 1) - 1, end):
            yield stream[index]

    async def read_all(
        self,
        from_position: int = 1,
        limit: int | None = None,
        categories: Collection[str] | None = None,
        types: Collection[str] | None = None,
    ) -> AsyncIterator[StoredEvent]:
        remaining = limit
        index = max(from_position, 1) - 1
        while index < len(self._events) and remaining != 0:
            event = self._events[index]
            index += 1
            if (categories is None or event.category in categories) and (types is None or event.type in types):
                yield event
                remaining = None if remaining is None else remaining - 1

    async def streams(
        self, *, category: str | None = None, after: str | None = None, limit: int = 100
    ) -> list[StreamSummary]:
        chosen = sorted(
            stream_id
            for stream_id in self._streams
            if (after is None or stream_id > after) and (category is None or category_of(stream_id) == category)
        )
        return [_summary(self._streams[stream_id]) for stream_id in chosen[: max(limit, 0)]]

    async def read_correlated(self, correlation_id: str) -> AsyncIterator[StoredEvent]:
        for event in self._events:
            if event.metadata.get("correlation_id") == correlation_id:
                yield event

    async def wait_for_events(self, after_position: int, timeout: float) -> bool:
        return await self._notifier.wait(after_position, timeout)

    async def head_position(self) -> int:
        return len(self._events)

    async def stream_version(self, stream_id: str) -> int:
        return len(self._streams.get(stream_id, ()))

    async def command_result(self, command_id: str) -> AppendResult | None:
        return self._commands.get(command_id)

    async def close(self) -> None:
        return None

    # -- personal data keys (twofold.personal.KeyStore) -----------------------------------------

    async def subject_keys(self, subjects: Collection[str], *, create: bool = False) -> dict[str, bytes]:
        if create:
            for subject in subjects:
                self._keys.setdefault(subject, new_key())
        return {s: self._keys[s] for s in subjects if s in self._keys}

    async def forget_subject(self, subject: str) -> None:
        self._keys.pop(subject, None)


def _summary(stream: list[StoredEvent]) -> StreamSummary:
    first, last = stream[0], stream[-1]
    return StreamSummary(first.stream_id, last.version, first.position, last.position, last.recorded_at)
