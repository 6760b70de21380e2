"""What every backend derives the same way: ``append`` from ``append_streams``, ``subscribe`` from ``read_all``."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Collection, Sequence

from twofold.store import ANY, AppendResult, ExpectedVersion, NewEvent, StoredEvent, StreamWrite
from twofold.store._follow import follow


class EventStoreBase(abc.ABC):
    """A base for :class:`~twofold.store.EventStore` backends; each supplies the abstract methods."""

    async def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int | ExpectedVersion = ANY,
        command_id: str | None = None,
    ) -> AppendResult:
        return await self.append_streams([StreamWrite(stream_id, events, expected_version)], command_id)

    def subscribe(
        self,
        from_position: int = 1,
        categories: Collection[str] | None = None,
        types: Collection[str] | None = None,
    ) -> AsyncIterator[StoredEvent]:
        return follow(self, from_position, categories, types)

    @abc.abstractmethod
    async def append_streams(self, writes: Sequence[StreamWrite], command_id: str | None = None) -> AppendResult: ...

    @abc.abstractmethod
    def read_all(
        self,
        from_position: int = 1,
        limit: int | None = None,
        categories: Collection[str] | None = None,
        types: Collection[str] | None = None,
    ) -> AsyncIterator[StoredEvent]: ...

    @abc.abstractmethod
    async def head_position(self) -> int: ...

    @abc.abstractmethod
    async def wait_for_events(self, after_position: int, timeout: float) -> bool: ...
